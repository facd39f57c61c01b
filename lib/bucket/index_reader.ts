/**
 * Finding and reading indexes (`<key of a Data.db>-listdir.json`) in a
 * bucket, for the jobs that read backups back (slurp, chop, verify), and
 * ordering them: which one is the newest restore point of a directory.
 */
import { FatalError } from "../common/errors.ts";
import { log } from "../common/log.ts";
import type { ObjectHead, ObjectInfo, Store } from "../store/store.ts";
import { type IndexListing, MAX_INDEX_BYTES, parseIndex } from "./index_body.ts";
import { isIndexKey, keyDirectory } from "./keys.ts";
import { generationOf, MAX_TOC_BYTES, readToc } from "./sstable.ts";

/**
 * Downloads and parses one index. Throws `FatalError` naming the key when it
 * is missing, too large, not UTF-8, or malformed (see `parseIndex`).
 */
export async function readIndex(
  store: Store,
  key: string,
): Promise<IndexListing & { head: ObjectHead }> {
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
  return { ...parseIndex(key, text), head: object.head };
}

/**
 * The metadata where the watcher records each index's cut time, to the
 * millisecond (ISO 8601 UTC): the moment the directory was read for it.
 * S3's LastModified has one-second resolution and is the upload's end.
 */
export const CUT_TIME_METADATA = "cut-time";

/** The cut time an index's metadata records, or null (Python tablesnap, other writers). */
export function cutTimeOf(head: Pick<ObjectHead, "metadata">): Date | null {
  const text = head.metadata[CUT_TIME_METADATA];
  if (text === undefined) return null;
  const time = new Date(text);
  return Number.isNaN(time.getTime()) ? null : time;
}

/**
 * How far before its LastModified an index may have been cut: LastModified
 * is truncated to the second and marks the end of the upload, a few
 * milliseconds after the cut. Indexes closer than this are told apart by
 * their exact times (a HEAD each); farther apart, LastModified decides.
 */
export const CUT_WINDOW_MS = 2_000;

/**
 * S3 gives LastModified to the second, truncated: an upload that ended at
 * 12:00:00.900 shows 12:00:00.000, and was cut up to then.
 */
const LAST_MODIFIED_RESOLUTION_MS = 1_000;

/** What a caller that read an index already knows of it. */
export interface KnownIndex {
  cut: Date | null;
  files: number;
}

/** An index and its time: the recorded cut time, else LastModified. */
export interface RestorePoint {
  info: ObjectInfo;
  time: Date;
  /** True when `time` is the recorded cut time. */
  exact: boolean;
}

/**
 * The newest index at or before `at` (default: the newest of all), or null.
 * Indexes are ordered by their cut time where recorded, else by
 * LastModified; among indexes tied with no recorded time (buckets written by
 * the Python tablesnap: many indexes of a backlog in one second), the one
 * naming the most files wins. A HEAD (or, for ties, a GET) is spent only on
 * indexes within `CUT_WINDOW_MS` of each other or of `at`, and none on an
 * index the caller has read already (`known`, by key).
 *
 * With `at`, an index uploaded long after it was cut (the watcher's --pin
 * keeps an early cut until its files are uploaded) may be the one: see
 * `latestLateCut`, usually one more HEAD.
 */
export async function chooseRestorePoint(
  store: Store,
  indexes: readonly ObjectInfo[],
  at?: Date,
  known?: ReadonlyMap<string, KnownIndex>,
): Promise<RestorePoint | null> {
  const limit = at?.getTime() ?? Infinity;
  const candidates = indexes
    .filter((i) => i.lastModified.getTime() - CUT_WINDOW_MS <= limit)
    .sort((a, b) => -compareIndexes(a, b));
  const counts = new Map<string, number>();
  const fileCount = async (info: ObjectInfo) => {
    let n = counts.get(info.key) ?? known?.get(info.key)?.files;
    if (n === undefined) counts.set(info.key, n = (await readIndex(store, info.key)).names.length);
    return n;
  };
  let best: RestorePoint | null = null;
  for (let k = 0; k < candidates.length; k++) {
    const info = candidates[k]!;
    const modified = info.lastModified.getTime();
    // Its cut is before its upload ended, within LastModified's second: past
    // that, it can only be earlier than the best so far, and so is the rest.
    if (best && modified + LAST_MODIFIED_RESOLUTION_MS <= best.time.getTime()) break;
    const next = candidates[k + 1];
    const alone = next === undefined || next.lastModified.getTime() < modified - CUT_WINDOW_MS;
    if (!best && alone && modified + CUT_WINDOW_MS <= limit) {
      best = { info, time: info.lastModified, exact: false };
      break;
    }
    let cut: Date | null;
    const read = known?.get(info.key);
    if (read) {
      cut = read.cut;
    } else {
      const head = await store.head(info.key);
      if (head === null) continue; // deleted meanwhile (chop)
      cut = cutTimeOf(head);
    }
    const point = { info, time: cut ?? info.lastModified, exact: cut !== null };
    if (point.time.getTime() > limit) continue;
    const byTime = best ? point.time.getTime() - best.time.getTime() : 1;
    if (byTime > 0) best = point;
    else if (byTime === 0 && best && !point.exact && !best.exact) {
      if (await fileCount(point.info) > await fileCount(best.info)) best = point;
    }
  }
  if (at === undefined) return best;
  const late = indexes.filter((i) => i.lastModified.getTime() - CUT_WINDOW_MS > limit);
  const found = await latestLateCut(store, late, limit, known);
  return found && (!best || found.time.getTime() >= best.time.getTime()) ? found : best;
}

/**
 * Among indexes uploaded after `limit` (plus the window), the newest whose
 * recorded cut is at or before it, or null. The watcher publishes a
 * directory's indexes in the order of their cuts (index_publisher.ts), so
 * cut times grow with LastModified from one second to the next: a binary
 * search over the seconds finds the last one holding such a cut, with one
 * HEAD when there is none (the earliest second's cuts are already later).
 */
async function latestLateCut(
  store: Store,
  late: readonly ObjectInfo[],
  limit: number,
  known?: ReadonlyMap<string, KnownIndex>,
): Promise<RestorePoint | null> {
  const seconds = new Map<number, ObjectInfo[]>();
  for (const info of late) {
    const second = info.lastModified.getTime();
    seconds.set(second, [...(seconds.get(second) ?? []), info]);
  }
  const groups = [...seconds.keys()].sort((a, b) => a - b).map((s) => seconds.get(s)!);
  /** The newest exact cut at or before `limit` among one second's indexes. */
  const newestIn = async (group: ObjectInfo[]): Promise<RestorePoint | null> => {
    let newest: RestorePoint | null = null;
    for (const info of group) {
      const cut = known?.has(info.key)
        ? known.get(info.key)!.cut
        : await store.head(info.key).then((head) => head && cutTimeOf(head));
      if (!cut || cut.getTime() > limit) continue;
      if (!newest || cut.getTime() > newest.time.getTime()) {
        newest = { info, time: cut, exact: true };
      }
    }
    return newest;
  };
  let lo = 0;
  let found = groups.length > 0 ? await newestIn(groups[0]!) : null;
  if (!found) return null;
  let hi = groups.length;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    const point = await newestIn(groups[mid]!);
    if (point) {
      lo = mid;
      found = point;
    } else {
      hi = mid;
    }
  }
  return found;
}

/**
 * Orders indexes oldest first by LastModified, then (S3 times have
 * one-second resolution) by the SSTable generation in the Data.db's name,
 * then by key. Recorded cut times refine this: see `chooseRestorePoint`.
 */
export function compareIndexes(a: ObjectInfo, b: ObjectInfo): number {
  const byTime = a.lastModified.getTime() - b.lastModified.getTime();
  if (byTime !== 0) return byTime;
  const ga = generationOf(a.key);
  const gb = generationOf(b.key);
  if (ga !== null && gb !== null && ga !== gb) return ga < gb ? -1 : 1;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/** The indexes directly under `dirPrefix` (one listing of that key directory). */
export async function indexesIn(store: Store, dirPrefix: string): Promise<ObjectInfo[]> {
  const indexes: ObjectInfo[] = [];
  for await (const info of store.list(dirPrefix, { delimiter: "/" })) {
    if (isIndexKey(info.key)) indexes.push(info);
  }
  return indexes;
}

/**
 * Every index under `prefix`, by key directory (the index key up to its
 * last "/"). Memory: the index keys, not the other objects.
 */
export async function indexesPerDirectory(
  store: Store,
  prefix: string,
  /** Shown every other key of the listing (verify picks the superseded copies). */
  onOther?: (info: ObjectInfo) => void,
): Promise<Map<string, ObjectInfo[]>> {
  const byDirectory = new Map<string, ObjectInfo[]>();
  for await (const info of store.list(prefix)) {
    if (!isIndexKey(info.key)) {
      onOther?.(info);
      continue;
    }
    const dir = keyDirectory(info.key);
    let list = byDirectory.get(dir);
    if (!list) byDirectory.set(dir, list = []);
    list.push(info);
  }
  return byDirectory;
}

/** A generation of an index's file set whose TOC.txt lists components the set lacks. */
export interface TocGap {
  /** The generation's name prefix (`nb-7-big-`). */
  generation: string;
  /** Components (as the TOC names them) not named by the index or not in the bucket. */
  missing: string[];
}

/**
 * Checks every generation of a file set that has a TOC.txt (one GET each):
 * each component it lists must be named by the index and, per `present`,
 * be in the bucket. Cassandra refuses an SSTable with a component missing.
 * `keyDir` is the index's key directory (the key up to its last "/").
 * `onToc` is given each TOC.txt as read (a restore writes it from memory).
 * A TOC.txt that is not a list of component names (see `readToc`) leaves
 * its generation unchecked: `onUnreadable` is told (default: a warning).
 */
export async function tocGaps(
  store: Store,
  keyDir: string,
  names: readonly string[],
  present: (key: string) => boolean,
  options: {
    onToc?: (key: string, head: ObjectHead, bytes: Uint8Array<ArrayBuffer>) => void;
    onUnreadable?: (key: string, reason: string) => void;
    /** The object holding a named key's bytes for this point (a superseded copy), if not itself. */
    keyOf?: (key: string) => string;
  } = {},
): Promise<TocGap[]> {
  const onUnreadable = options.onUnreadable ??
    ((key: string, reason: string) =>
      log.warn("TOC.txt unreadable; its generation was not checked for whole", { key, reason }));
  const named = new Set(names);
  const gaps: TocGap[] = [];
  const keyOf = (name: string) => options.keyOf?.(`${keyDir}/${name}`) ?? `${keyDir}/${name}`;
  for (const toc of [...named].filter((n) => n.endsWith("TOC.txt")).sort()) {
    const generation = toc.slice(0, -"TOC.txt".length);
    const tocKey = keyOf(toc);
    const object = present(tocKey) ? await store.get(tocKey) : null;
    if (object === null) continue; // a missing object, reported as such
    const bytes = await readAtMost(object.body, MAX_TOC_BYTES);
    if (bytes === null) {
      onUnreadable(tocKey, `larger than ${MAX_TOC_BYTES} bytes`);
      continue;
    }
    options.onToc?.(tocKey, object.head, bytes);
    const reading = readToc(bytes);
    if ("unreadable" in reading) {
      onUnreadable(tocKey, reading.unreadable);
      continue;
    }
    const missing = reading.components
      .filter((component) => {
        const name = generation + component;
        return !named.has(name) || !present(keyOf(name));
      })
      .sort();
    if (missing.length > 0) gaps.push({ generation, missing });
  }
  return gaps;
}

/** A body read whole when it is at most `limit` bytes; null (and cancelled) when larger. */
async function readAtMost(
  body: ReadableStream<Uint8Array>,
  limit: number,
): Promise<Uint8Array<ArrayBuffer> | null> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.byteLength;
    if (total > limit) {
      await body.cancel().catch(() => {});
      return null;
    }
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}
