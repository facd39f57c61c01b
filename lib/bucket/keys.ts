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

/** The key of the first index written for the Data.db at `path`. */
export function indexKey(naming: KeyNaming, path: string): string {
  return objectKey(naming, path) + INDEX_SUFFIX;
}

/**
 * Between a Data.db's key and the cut time in the key of a later cut of its
 * generation. It sorts after the first index's `-listdir.json` ("r" > "l"),
 * so among indexes of one second the Python tableslurp (newest by
 * LastModified, ties to the last key listed) also takes the later cut.
 */
const RECUT_MARK = "-recut-";

/**
 * The key of a later cut (epoch ms `cutMs`) of the generation of the Data.db
 * at `path`, whose first index is taken: `<Data.db key>-recut-<time>-listdir.json`.
 * Indexes are never overwritten, so every earlier point stays.
 */
export function recutIndexKey(naming: KeyNaming, path: string, cutMs: number): string {
  return `${objectKey(naming, path)}${RECUT_MARK}${keyTime(cutMs)}${INDEX_SUFFIX}`;
}

/**
 * The key of the Data.db an index belongs to: the index key without its
 * suffix and, for a later cut, without `-recut-<time>`.
 */
export function dataKeyOfIndex(key: string): string {
  const bare = key.endsWith(INDEX_SUFFIX) ? key.slice(0, -INDEX_SUFFIX.length) : key;
  const match = RECUT_TAIL.exec(bare);
  return match ? bare.slice(0, match.index) : bare;
}

const RECUT_TAIL = new RegExp(`${RECUT_MARK}\\d{8}T\\d{6}\\.\\d{3}Z$`);

/**
 * A time in a key: ISO 8601 UTC, basic format, to the millisecond
 * (`20261207T210841.123Z`): fixed width, so keys sort in time order.
 */
export function keyTime(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, "");
}

/** The epoch ms of a `keyTime`, or null when `text` is not one. */
export function parseKeyTime(text: string): number | null {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z$/.exec(text);
  if (!m) return null;
  const ms = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!, +m[7]!);
  return Number.isNaN(ms) ? null : ms;
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
