/**
 * Object key naming, exactly as the Python tablesnap wrote it:
 * `<prefix><name><separator><absolute path>`, and the index of a Data.db at
 * `<that key>-listdir.json`. Pure: the host name is resolved by the jobs'
 * runners (lib/common/hostname.ts).
 */

/** How keys are formed for one host. */
export interface KeyNaming {
  prefix: string;
  name: string;
  separator: string;
}

/** The start of every key of one host: `<prefix><name><separator>`. */
export function keyHead(naming: KeyNaming): string {
  return `${naming.prefix}${naming.name}${naming.separator}`;
}

/**
 * Why a file name cannot become part of a key as it is, or null when it
 * can. A name that is not valid UTF-8 reaches us from Deno with U+FFFD in
 * place of the bad bytes (the path no longer names the file), and control
 * characters are no part of any name Cassandra writes: such files are
 * skipped, with a warning, not mapped.
 */
export function unusableNameReason(name: string): string | null {
  if (name.includes("\ufffd")) return "not valid UTF-8";
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return "holds control characters";
  return null;
}

/** The key of a local file (absolute path). */
export function objectKey(naming: KeyNaming, path: string): string {
  return keyHead(naming) + path;
}

/** The key of the index written for the Data.db at `path`. */
export function indexKey(naming: KeyNaming, path: string): string {
  return objectKey(naming, path) + INDEX_SUFFIX;
}

/** The local path a key stands for, or null if the key is not this host's. */
export function pathOfKey(naming: KeyNaming, key: string): string | null {
  const head = keyHead(naming);
  return key.startsWith(head) ? key.slice(head.length) : null;
}

/** Index keys end like this; the file they belong to is the key without it. */
export const INDEX_SUFFIX = "-listdir.json";

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

/**
 * The key without its last `/` segment: the "directory" of a key. Unlike a
 * path's dirname, a key with no "/" has the empty directory.
 */
export function keyDirectory(key: string): string {
  const slash = key.lastIndexOf("/");
  return slash < 0 ? "" : key.slice(0, slash);
}
