/**
 * Reading what the watcher left in a bucket, for the jobs that read it back
 * (slurp, chop, verify): finding indexes (`<key of a Data.db>-listdir.json`),
 * parsing them safely, and telling which digest an object can be checked
 * against.
 *
 * An index comes from a bucket, which is input, not trust: its body is parsed
 * strictly and every file name it gives is checked before it is used as a
 * path. Errors name the index key.
 */
import { FatalError } from "../common/errors.ts";
import { INDEX_SUFFIX, keyHead, type KeyNaming } from "./keys.ts";
import type { ObjectHead, ObjectInfo, Store } from "../store/store.ts";

/** What one index says: the directory it describes and the file names in it. */
export interface IndexListing {
  /** The index's object key. */
  key: string;
  /** The absolute directory the index describes (its one JSON member). */
  directory: string;
  /** Bare file names, in the order the index gives them, duplicates removed. */
  names: string[];
}

/** Index bodies are small (one name per SSTable component); refuse giant ones. */
export const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/**
 * The key prefix of the objects directly in `directory` (an absolute path):
 * `<head><directory>/`. Trailing slashes of `directory` are ignored.
 */
export function directoryPrefix(naming: KeyNaming, directory: string): string {
  return `${keyHead(naming)}${trimSlashes(directory)}/`;
}

/** `directory` without trailing slashes ("/" stays empty: keys are `<head>/file`). */
export function trimSlashes(directory: string): string {
  return directory.replace(/\/+$/, "");
}

/** True for an index key. */
export function isIndexKey(key: string): boolean {
  return key.endsWith(INDEX_SUFFIX);
}

/** The key without its last `/` segment: the "directory" of a key. */
export function keyDirectory(key: string): string {
  const slash = key.lastIndexOf("/");
  return slash < 0 ? "" : key.slice(0, slash);
}

/** The last `/` segment of a key. */
export function keyBaseName(key: string): string {
  return key.slice(key.lastIndexOf("/") + 1);
}

/**
 * Why `name` cannot be used as a file name inside a restore directory, or
 * `null` when it can. Refused: "", ".", "..", anything containing "/" (which
 * includes absolute paths) or a NUL byte.
 */
export function unsafeNameReason(name: string): string | null {
  if (name === "") return "it is empty";
  if (name === "." || name === "..") return "it is a relative directory reference";
  if (name.includes("/")) return "it contains '/'";
  if (name.includes("\0")) return "it contains a NUL byte";
  return null;
}

/**
 * Throws `FatalError` when `name` (given by `source`, e.g. an index key) is
 * not a safe bare file name.
 */
export function checkFileName(name: string, source: string): void {
  const reason = unsafeNameReason(name);
  if (reason !== null) {
    throw new FatalError(
      `Index '${source}' names an unsafe file ${JSON.stringify(name)}: ${reason}; refusing it`,
    );
  }
}

/**
 * Parses an index body. It must be JSON, an object with exactly one member,
 * whose value is a list of strings. Throws `FatalError` naming `key`
 * otherwise. Names are not checked for safety here: see `checkFileName`.
 */
export function parseIndex(key: string, body: string): IndexListing {
  let data: unknown;
  try {
    data = JSON.parse(body);
  } catch (err) {
    const reason = err instanceof SyntaxError ? err.message : String(err);
    throw new FatalError(`Index '${key}' is not valid JSON: ${reason}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new FatalError(
      `Index '${key}' is not a JSON object (directory mapped to file names)`,
    );
  }
  const entries = Object.entries(data);
  if (entries.length !== 1) {
    throw new FatalError(
      `Index '${key}' must have exactly one member (directory mapped to file names), found ${entries.length}`,
    );
  }
  const [directory, value] = entries[0]!;
  if (!Array.isArray(value) || !value.every((name) => typeof name === "string")) {
    throw new FatalError(`Index '${key}' does not map '${directory}' to a list of file names`);
  }
  return { key, directory, names: [...new Set(value as string[])] };
}

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

/** The numeric SSTable generation of an index key's Data.db, if it has one. */
function generationOf(key: string): bigint | null {
  const match = keyBaseName(key).match(/-(\d+)-(?:[a-z]+-)?Data\.db-listdir\.json$/);
  return match ? BigInt(match[1]!) : null;
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

/**
 * The MD5 (lowercase hex) an object's bytes must have: the `md5sum`
 * metadata, else the ETag of a single-part upload (a multipart ETag, with
 * "-N", is not an MD5). `null` when neither is available.
 */
export function expectedMd5(head: Pick<ObjectHead, "etag" | "metadata">): string | null {
  const meta = head.metadata["md5sum"]?.trim().toLowerCase();
  if (meta !== undefined && /^[0-9a-f]{32}$/.test(meta)) return meta;
  const etag = head.etag.toLowerCase();
  return /^[0-9a-f]{32}$/.test(etag) ? etag : null;
}

/** The `stat` metadata of an object, as far as it could be read. */
export interface StatMetadata {
  uid?: number;
  gid?: number;
  mode?: number;
  user?: string;
  group?: string;
}

/** Parses the `stat` metadata; fields of the wrong type are dropped, bad JSON gives null. */
export function parseStatMetadata(text: string | undefined): StatMetadata | null {
  if (text === undefined) return null;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    if (err instanceof SyntaxError) return null;
    throw err;
  }
  if (typeof data !== "object" || data === null) return null;
  const record = data as Record<string, unknown>;
  const out: StatMetadata = {};
  for (const field of ["uid", "gid", "mode"] as const) {
    const value = record[field];
    if (typeof value === "number" && Number.isInteger(value) && value >= 0) out[field] = value;
  }
  for (const field of ["user", "group"] as const) {
    const value = record[field];
    if (typeof value === "string" && value !== "") out[field] = value;
  }
  return out;
}
