/**
 * A bucket listing held compactly: the -B start-up listing of a node's
 * 100,000 files would otherwise hold every key in full with an object and
 * a quoted and an unquoted ETag string each (about 270 bytes a key). Here a
 * key costs its base name and a slot (its "directory" held once), its size
 * eight bytes and its ETag, when it is an MD5, sixteen. Lookups rebuild the
 * small `RemoteObject` they return.
 */
import { isMd5Hex } from "../../common/digest.ts";
import { BytesColumn, Float64Column, PathSlots } from "../../common/path_slots.ts";

/** What the bucket holds under a key. */
export interface RemoteObject {
  size: number;
  etag: string;
  /** The `md5sum` metadata, when known (HEAD, or our own upload). */
  md5sum?: string | undefined;
  /** The file's mtime the `mtime` metadata records, when known (HEAD, or our own upload). */
  mtimeMs?: number | undefined;
}

export class ListedObjects {
  readonly #slots = new PathSlots();
  readonly #sizes = new Float64Column();
  readonly #md5s = new BytesColumn(16);
  /** ETags that are not an MD5 (multipart uploads, other servers), by slot. */
  readonly #otherEtags = new Map<number, string>();
  /** Objects with more than a listing tells (our own uploads), by slot, as given. */
  readonly #full = new Map<number, RemoteObject>();

  get size(): number {
    return this.#slots.size;
  }

  has(key: string): boolean {
    return this.#slots.slotOf(key) !== undefined;
  }

  get(key: string): RemoteObject | undefined {
    const slot = this.#slots.slotOf(key);
    if (slot === undefined) return undefined;
    const full = this.#full.get(slot);
    if (full) return full;
    return {
      size: this.#sizes.get(slot),
      etag: this.#otherEtags.get(slot) ?? this.#md5s.get(slot).toHex(),
    };
  }

  set(key: string, object: RemoteObject): void {
    const slot = this.#slots.add(key);
    this.#full.delete(slot);
    this.#otherEtags.delete(slot);
    if (object.md5sum !== undefined || object.mtimeMs !== undefined) {
      this.#full.set(slot, object);
      return;
    }
    this.#sizes.set(slot, object.size);
    if (isMd5Hex(object.etag)) this.#md5s.set(slot, Uint8Array.fromHex(object.etag));
    else this.#otherEtags.set(slot, object.etag);
  }

  delete(key: string): boolean {
    const slot = this.#slots.delete(key);
    if (slot === undefined) return false;
    this.#full.delete(slot);
    this.#otherEtags.delete(slot);
    return true;
  }

  /** Every key held (rebuilt one at a time). */
  *keys(): IterableIterator<string> {
    for (const [key] of this.#slots.entries()) yield key;
  }
}
