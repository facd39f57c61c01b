/**
 * What the bucket holds under a key, as far as a skip decision needs, asked
 * as cheaply as possible: the start-up listing (-B) while it lasts, else one
 * listing of the key's "directory" (kept for the most recently used
 * directories), else a HEAD. A new file would otherwise cost a HEAD, a round
 * trip before every upload and most of the close->visible latency; one
 * listing answers for all the files of a directory.
 *
 * Listings are trusted the way the -B listing is: this host's keys are
 * written only by this host's tablesnap, and our own uploads (including
 * those whose file changed during the send: the object is then the version
 * that was sent) are applied to them.
 */
import { keyDirectory } from "../../bucket/keys.ts";
import { mtimeOf } from "../../bucket/object_meta.ts";
import type { Store } from "../../store/store.ts";
import { ListedObjects, type RemoteObject } from "./listed_objects.ts";

export { ListedObjects, type RemoteObject };

/** A bucket listing taken at startup: absent from it means absent. */
export interface RemoteListing {
  objects: ListedObjects;
  /** Key prefixes the listing covered completely, every key below them (-B). */
  prefixes: string[];
  /**
   * Key directories (ending in "/") listed with the "/" delimiter: only their
   * own keys are covered (a restart with --state-dir lists the changed ones).
   */
  directories?: ReadonlySet<string>;
  /**
   * Key directories (ending in "/") some of whose keys were left out (no
   * such local file then): absent from the listing there means unknown.
   */
  partial?: ReadonlySet<string>;
}

/** Directory listings kept at once, and the most keys one may hold (else HEAD per file). */
const DIR_LISTINGS_KEPT = 16;
const DIR_LISTING_MAX_KEYS = 5_000;

/** The objects of one key directory, by key. */
type DirObjects = ListedObjects;

export class BucketView {
  readonly #store: Store;
  #startup: RemoteListing | undefined;
  /** Key directories listed, most recently used last. */
  readonly #dirListings = new Map<string, Promise<DirObjects | null>>();
  /** Directories with more keys than a listing may hold: HEAD per file there. */
  readonly #tooLarge = new Set<string>();

  constructor(store: Store) {
    this.#store = store;
  }

  /** Uses a startup listing until it is set back to undefined. */
  setStartupListing(listing: RemoteListing | undefined): void {
    this.#startup = listing;
  }

  /** What the bucket holds under `key`, or null when nothing. */
  async lookup(key: string): Promise<RemoteObject | null> {
    const startup = this.#startup;
    if (startup && covers(startup, key)) {
      const listed = startup.objects.get(key);
      if (listed || !startup.partial?.has(dirPrefixOf(key))) return listed ?? null;
    }
    const listed = await this.#fromDirectoryListing(key);
    if (listed !== undefined) return listed;
    return await this.headOf(key);
  }

  /** A HEAD of the key (it has the `md5sum` a listing lacks). */
  async headOf(key: string): Promise<RemoteObject | null> {
    const head = await this.#store.head(key);
    return head && {
      size: head.size,
      etag: head.etag,
      md5sum: head.metadata["md5sum"],
      mtimeMs: mtimeOf(head.metadata),
    };
  }

  /**
   * Applies our own upload (or delete, with null) to the key's directory
   * listing, once the listing has loaded, so it is never lost to one still
   * in flight.
   */
  record(key: string, object: RemoteObject | null): void {
    const startup = this.#startup;
    if (startup && covers(startup, key)) {
      if (object) startup.objects.set(key, object);
      else startup.objects.delete(key);
    }
    this.#dirListings.get(dirPrefixOf(key))?.then((objects) => {
      if (object) objects?.set(key, object);
      else objects?.delete(key);
    }, () => {});
  }

  /** The listing's answer (null: absent), or undefined when the directory is too large to keep. */
  async #fromDirectoryListing(key: string): Promise<RemoteObject | null | undefined> {
    const directory = dirPrefixOf(key);
    if (this.#tooLarge.has(directory)) return undefined;
    let listing = this.#dirListings.get(directory);
    if (listing) {
      this.#dirListings.delete(directory); // most recently used goes last
    } else {
      const created = this.#listDirectory(directory);
      created.catch(() => {
        // A failed listing is not kept (the upload fails and is retried).
        if (this.#dirListings.get(directory) === created) this.#dirListings.delete(directory);
      });
      listing = created;
    }
    this.#dirListings.set(directory, listing);
    for (const [old] of this.#dirListings) {
      if (this.#dirListings.size <= DIR_LISTINGS_KEPT) break;
      this.#dirListings.delete(old);
    }
    const objects = await listing;
    if (!objects) return undefined;
    return objects.get(key) ?? null;
  }

  async #listDirectory(directory: string): Promise<DirObjects | null> {
    const objects: DirObjects = new ListedObjects();
    for await (const item of this.#store.list(directory, { delimiter: "/" })) {
      if (objects.size >= DIR_LISTING_MAX_KEYS) {
        this.#tooLarge.add(directory);
        return null;
      }
      objects.set(item.key, { size: item.size, etag: item.etag });
    }
    return objects;
  }
}

/** Whether the listing answers for `key` (absent from it means absent). */
function covers(listing: RemoteListing, key: string): boolean {
  return listing.prefixes.some((p) => key.startsWith(p)) ||
    (listing.directories?.has(dirPrefixOf(key)) ?? false);
}

/** The key's "directory" as a listing prefix (ending in "/"). */
function dirPrefixOf(key: string): string {
  return `${keyDirectory(key)}/`;
}
