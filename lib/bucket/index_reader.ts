/**
 * Finding and reading indexes (`<key of a Data.db>-listdir.json`) in a
 * bucket, for the jobs that read backups back (slurp, chop, verify), and
 * ordering them: which one is the newest restore point of a directory.
 */
import { FatalError } from "../common/errors.ts";
import type { ObjectInfo, Store } from "../store/store.ts";
import { type IndexListing, MAX_INDEX_BYTES, parseIndex } from "./index_body.ts";
import { isIndexKey, keyDirectory } from "./keys.ts";
import { generationOf } from "./sstable.ts";

/**
 * Downloads and parses one index. Throws `FatalError` naming the key when it
 * is missing, too large, not UTF-8, or malformed (see `parseIndex`).
 */
export async function readIndex(store: Store, key: string): Promise<IndexListing> {
  const object = await store.get(key);
  if (object === null) throw new FatalError(`Index '${key}' is missing from ${store.url}`);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of object.body) {
    total += chunk.byteLength;
    if (total > MAX_INDEX_BYTES) {
      await object.body.cancel().catch(() => {});
      throw new FatalError(`Index '${key}' is larger than ${MAX_INDEX_BYTES} bytes; refusing it`);
    }
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    throw new FatalError(`Index '${key}' is not UTF-8 text`);
  }
  return parseIndex(key, text);
}

/**
 * Orders indexes oldest first: by LastModified, then (S3 times have
 * one-second resolution) by the SSTable generation in the Data.db's name,
 * then by key.
 */
export function compareIndexes(a: ObjectInfo, b: ObjectInfo): number {
  const byTime = a.lastModified.getTime() - b.lastModified.getTime();
  if (byTime !== 0) return byTime;
  const ga = generationOf(a.key);
  const gb = generationOf(b.key);
  if (ga !== null && gb !== null && ga !== gb) return ga < gb ? -1 : 1;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/** The newest of two indexes (either may be undefined). */
export function newer(a: ObjectInfo | undefined, b: ObjectInfo): ObjectInfo {
  return a === undefined || compareIndexes(a, b) < 0 ? b : a;
}

/** The newest index directly under `dirPrefix` (a key prefix ending in "/"), or null. */
export async function newestIndexIn(store: Store, dirPrefix: string): Promise<ObjectInfo | null> {
  let best: ObjectInfo | undefined;
  for await (const info of store.list(dirPrefix, { delimiter: "/" })) {
    if (isIndexKey(info.key)) best = newer(best, info);
  }
  return best ?? null;
}

/**
 * The newest index of every key directory under `prefix`, keyed by that
 * directory (the index key up to its last "/"). Memory: one entry per
 * directory, whatever the number of objects.
 */
export async function newestIndexPerDirectory(
  store: Store,
  prefix: string,
  /** Sees every index on the way (chop and `verify --all` need them all). */
  eachIndex?: (info: ObjectInfo) => void,
): Promise<Map<string, ObjectInfo>> {
  const newest = new Map<string, ObjectInfo>();
  for await (const info of store.list(prefix)) {
    if (!isIndexKey(info.key)) continue;
    eachIndex?.(info);
    const dir = keyDirectory(info.key);
    newest.set(dir, newer(newest.get(dir), info));
  }
  return newest;
}
