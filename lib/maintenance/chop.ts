/**
 * `tablesnap chop`: retention, like the original `tablechop`. Under
 * `<name>:<PATH>` it keeps every index younger than AGE days and the newest
 * index of every directory, every file those indexes name, and every object
 * younger than AGE days; it deletes the rest in batches of 1,000.
 *
 * Safer than the original: it never deletes an object younger than the
 * cutoff, keeps the newest index of each table (not only the newest overall),
 * and deletes nothing at all when an index it needs cannot be read or parsed,
 * or when there is no index under the prefix.
 *
 * On a versioned bucket it decides per key as above and deletes every
 * version of the keys that go (see `keepsVersions`). What Object Lock
 * refuses to delete is kept and counted, not an error: the run goes on.
 *
 * Memory: the listing is streamed twice; only index keys, the names of kept
 * indexes (by directory, see `KeptNames`), one key's versions and one
 * delete batch are held, never the whole listing.
 */
import {
  chooseRestorePoint,
  cutTimeOf,
  indexesPerDirectory,
  readIndex,
} from "../bucket/index_reader.ts";
import { isIndexKey, keyDirectory, keyHead, type KeyNaming, trimSlashes } from "../bucket/keys.ts";
import { parseSupersededKey } from "../bucket/superseded.ts";
import { errorMessage, FatalError } from "../common/errors.ts";
import { formatBytes } from "../common/format.ts";
import { log } from "../common/log.ts";
import { forEachLimited } from "../common/pool.ts";
import type { DeleteRefusal, ObjectInfo, ObjectVersion, Store } from "../store/store.ts";
import { printLine } from "../common/escape.ts";

/** What to chop and how. */
export interface ChopOptions {
  store: Store;
  naming: KeyNaming;
  /** Path part of the keys, used verbatim as a prefix (no "/" added). */
  path: string;
  /** Objects and indexes younger than this many days are kept. */
  ageDays: number;
  /** The current time (default: now). */
  now?: Date;
  /** Delete nothing; count and list what would be deleted. */
  dryRun?: boolean;
  /** Print every key deleted. */
  listDeletes?: boolean;
  /** Concurrent index reads (default 5). */
  parallel?: number;
  /** Where list and summary lines go (default: stdout). */
  print?: (line: string) => void;
}

/** What a chop did (or, dry, would do). */
export interface ChopResult {
  prefix: string;
  cutoff: Date;
  /** The bucket keeps versions: the counts below are of versions, deleted for good. */
  versioned: boolean;
  indexes: number;
  indexesKept: number;
  kept: number;
  keptBytes: number;
  deleted: number;
  deletedBytes: number;
  /** Delete markers removed (versioned buckets), not counted in `deleted`. */
  deleteMarkers: number;
  /** Objects (or versions) Object Lock refused to delete: kept, not an error. */
  keptByLock: number;
  keptByLockBytes: number;
}

const BATCH = 1000;
const DAY_MS = 86_400_000;

/**
 * Applies retention under `<head><path>`. Throws `FatalError`, having deleted
 * nothing, when there is no index or a kept index is unreadable.
 */
export async function chop(options: ChopOptions): Promise<ChopResult> {
  const { store } = options;
  const prefix = keyHead(options.naming) + options.path;
  const now = options.now ?? new Date();
  const cutoff = new Date(now.getTime() - options.ageDays * DAY_MS);
  const run = new ChopRun(options, cutoff);

  // Pass 1: the indexes only.
  for (const [, inDirectory] of await indexesPerDirectory(store, prefix)) {
    for (const info of inDirectory) {
      run.indexes.set(info.key, info);
      if (run.isYoung(info)) run.keptIndexes.add(info.key);
    }
    // Each directory's newest restore point is kept, whatever its age.
    const newest = await chooseRestorePoint(store, inDirectory);
    if (newest) run.keptIndexes.add(newest.info.key);
  }
  if (run.indexes.size === 0) {
    throw new FatalError(
      `No index under '${prefix}' in ${store.url}: nothing to base retention on, nothing deleted`,
    );
  }
  log.info("chop: reading kept indexes", {
    prefix,
    indexes: run.indexes.size,
    kept: run.keptIndexes.size,
    cutoff: cutoff.toISOString(),
  });
  await forEachLimited([...run.keptIndexes], options.parallel ?? 5, (key) => run.keepNamesOf(key));

  // Pass 2: stream the listing again and delete in batches as we go.
  const result: ChopResult = {
    prefix,
    cutoff,
    versioned: await keepsVersions(store),
    indexes: run.indexes.size,
    indexesKept: run.keptIndexes.size,
    kept: 0,
    keptBytes: 0,
    deleted: 0,
    deletedBytes: 0,
    deleteMarkers: 0,
    keptByLock: 0,
    keptByLockBytes: 0,
  };
  run.result = result;
  if (result.versioned) await run.chopVersions(prefix);
  else await run.chopKeys(prefix);

  const unit = result.versioned ? "versions" : "objects";
  const markers = result.deleteMarkers > 0 ? ` and ${result.deleteMarkers} delete markers` : "";
  run.print(
    `${options.dryRun ? "Dry run: " : ""}under '${prefix}' in ${store.url}${
      result.versioned ? " (versioned)" : ""
    }, cutoff ${cutoff.toISOString()}: ` +
      `${result.indexes} indexes (${result.indexesKept} kept); ` +
      `kept ${result.kept} ${unit} (${formatBytes(result.keptBytes)}), ` +
      `${run.verb} ${result.deleted} ${unit} (${formatBytes(result.deletedBytes)})${markers}, ` +
      `kept by lock ${result.keptByLock} ${unit} (${formatBytes(result.keptByLockBytes)})`,
  );
  return result;
}

/** One chop's state: the indexes, what they keep, and the counts. */
class ChopRun {
  readonly indexes = new Map<string, ObjectInfo>();
  readonly keptIndexes = new Set<string>();
  readonly keepFiles = new KeptNames();
  readonly print: (line: string) => void;
  readonly verb: string;
  result!: ChopResult;
  readonly #options: ChopOptions;
  readonly #cutoff: Date;
  /** Keys and versions refused by Object Lock in the batch being deleted. */
  readonly #locked = new Set<string>();
  readonly #onLocked = (refusal: DeleteRefusal) =>
    this.#locked.add(versionName(refusal.key, refusal.versionId));

  constructor(options: ChopOptions, cutoff: Date) {
    this.#options = options;
    this.#cutoff = cutoff;
    this.print = options.print ?? printLine;
    this.verb = options.dryRun ? "would delete" : "deleted";
  }

  isYoung(info: ObjectInfo): boolean {
    return info.lastModified.getTime() >= this.#cutoff.getTime();
  }

  /** Keeps what the index at `key` names; one that cannot be read stops the run. */
  async keepNamesOf(key: string): Promise<void> {
    const deletedSoFar = this.#options.dryRun ? 0 : this.result?.deleted ?? 0;
    let listing;
    try {
      listing = await readIndex(this.#options.store, key);
    } catch (err) {
      const done = deletedSoFar === 0
        ? "nothing deleted"
        : `stopped after deleting ${deletedSoFar} objects`;
      throw new FatalError(`Cannot read index '${key}', ${done}: ${errorMessage(err)}`);
    }
    // Both the directory the index states and the one its key is in: keeping more is safe.
    const head = keyHead(this.#options.naming);
    const dirs = new Set([`${head}${trimSlashes(listing.directory)}/`, `${keyDirectory(key)}/`]);
    const cut = (cutTimeOf(listing.head) ?? listing.head.lastModified).getTime();
    for (const dir of dirs) this.keepFiles.add(dir, listing.names, cut);
  }

  #keep(info: ObjectInfo): void {
    this.result.kept++;
    this.result.keptBytes += info.size;
  }

  /** Counts (and with -l prints) a key or version the batch deleted, or the lock kept. */
  #settle(info: ObjectInfo, versionId?: string, marker = false): void {
    const { result, print } = this;
    const name = versionId === undefined
      ? info.key
      : `${info.key} (${marker ? "delete marker" : "version"} ${versionId})`;
    if (this.#locked.has(versionName(info.key, versionId))) {
      result.keptByLock++;
      result.keptByLockBytes += info.size;
      if (this.#options.listDeletes) print(`kept by lock ${name}`);
      return;
    }
    if (marker) result.deleteMarkers++;
    else {
      result.deleted++;
      result.deletedBytes += info.size;
    }
    if (this.#options.listDeletes) print(`${this.verb} ${name}`);
  }

  /**
   * A versioned bucket: every version of a key goes or stays together: a
   * key is kept (all its versions) when a kept index names it or its newest
   * version is young.
   */
  async chopVersions(prefix: string): Promise<void> {
    const { store, dryRun } = this.#options;
    let pending: ObjectVersion[] = [];
    const flush = async () => {
      const batch = pending.filter((v) => !this.keepFiles.has(v.key));
      for (const v of pending) if (this.keepFiles.has(v.key) && !v.deleteMarker) this.#keep(v);
      pending = [];
      if (batch.length === 0) return;
      this.#locked.clear();
      if (!dryRun) await store.deleteVersions!(batch, { onLocked: this.#onLocked });
      for (const v of batch) this.#settle(v, v.versionId, v.deleteMarker);
    };
    let group: ObjectVersion[] = [];
    const decide = async () => {
      const versions = group;
      group = [];
      const first = versions[0];
      if (!first) return;
      const latest = versions.find((v) => v.latest) ?? first;
      if (isIndexKey(first.key) && !this.indexes.has(first.key) && !latest.deleteMarker) {
        await this.keepNamesOf(first.key);
      }
      const key = first.key;
      if (this.keptIndexes.has(key) || this.keepFiles.has(key) || this.isYoung(latest)) {
        for (const v of versions) if (!v.deleteMarker) this.#keep(v);
        return;
      }
      pending.push(...versions);
      if (pending.length >= BATCH) await flush();
    };
    for await (const version of store.listVersions!(prefix)) {
      if (group[0] && group[0].key !== version.key) await decide();
      group.push(version);
    }
    await decide();
    await flush();
  }

  /** An unversioned bucket: keys deleted in batches as the listing streams by. */
  async chopKeys(prefix: string): Promise<void> {
    const { store, dryRun } = this.#options;
    let pending: ObjectInfo[] = [];
    const flush = async () => {
      // An index published since pass 1 may have added names: filter again.
      const batch = pending.filter((info) => !this.keepFiles.has(info.key));
      for (const info of pending) if (this.keepFiles.has(info.key)) this.#keep(info);
      pending = [];
      if (batch.length === 0) return;
      this.#locked.clear();
      if (!dryRun) {
        await store.deleteMany(batch.map((info) => info.key), { onLocked: this.#onLocked });
      }
      for (const info of batch) this.#settle(info);
    };
    for await (const info of store.list(prefix)) {
      if (isIndexKey(info.key) && !this.indexes.has(info.key)) {
        // Published during this run: young, so kept; its files must be kept too.
        await this.keepNamesOf(info.key);
      }
      const key = info.key;
      if (this.keptIndexes.has(key) || this.keepFiles.has(key) || this.isYoung(info)) {
        this.#keep(info);
        continue;
      }
      pending.push(info);
      if (pending.length >= BATCH) await flush();
    }
    await flush();
  }
}

/**
 * Whether to chop versions rather than keys. Deleting a key of a versioned
 * bucket only stacks a delete marker on it (the lock does not refuse
 * that), and every version stays billed: there, chop deletes the versions
 * themselves, and Object Lock refuses those it protects. A bucket whose
 * versioning cannot be read (s3:GetBucketVersioning denied, a server
 * without it) is treated as unversioned, which at worst leaves delete
 * markers: never more deleted than asked.
 */
async function keepsVersions(store: Store): Promise<boolean> {
  if (!store.versioning || !store.listVersions || !store.deleteVersions) return false;
  try {
    return (await store.versioning()) !== "off";
  } catch (err) {
    log.warn(
      "chop: cannot tell whether the bucket keeps versions; deleting keys, which on a versioned bucket only adds delete markers",
      { error: errorMessage(err) },
    );
    return false;
  }
}

/**
 * The keys kept indexes name, as file names per key directory: a million-key
 * prefix keeps hundreds of thousands of them, and a bare name is a fraction
 * of a full key (the directory part is held once).
 */
class KeptNames {
  /** Per directory, the kept names and the earliest cut time (epoch ms) of the points naming them. */
  readonly #byDirectory = new Map<string, { names: Set<string>; earliestCut: number }>();

  /** Keeps `names` in `dirPrefix` (a key directory with its trailing "/"), named by a point cut at `cutMs`. */
  add(dirPrefix: string, names: readonly string[], cutMs: number): void {
    for (const name of names) {
      // A name with "/" (an unsafe index, which slurp refuses) still keeps the key it spells.
      const key = name.includes("/") ? dirPrefix + name : undefined;
      const dir = key === undefined ? dirPrefix : key.slice(0, key.lastIndexOf("/") + 1);
      let kept = this.#byDirectory.get(dir);
      if (!kept) this.#byDirectory.set(dir, kept = { names: new Set(), earliestCut: cutMs });
      kept.names.add(key === undefined ? name : key.slice(dir.length));
      kept.earliestCut = Math.min(kept.earliestCut, cutMs);
    }
  }

  /**
   * A kept point names the key; or it is a superseded copy of a kept
   * component, and a kept point of its directory was cut before the copy's
   * `until`, so may need those bytes (kept points are the newest: few
   * copies are kept spare, and one number per directory is held, not one
   * per name).
   */
  has(key: string): boolean {
    const copy = parseSupersededKey(key);
    const named = copy?.key ?? key;
    const slash = named.lastIndexOf("/");
    const kept = this.#byDirectory.get(named.slice(0, slash + 1));
    if (!kept?.names.has(named.slice(slash + 1))) return false;
    return copy === null || kept.earliestCut < copy.until;
  }
}

/** A key, or one version of it, as one string. */
function versionName(key: string, versionId: string | undefined): string {
  return versionId === undefined ? key : `${versionId}\n${key}`;
}
