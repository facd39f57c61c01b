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
import { chooseRestorePoint, indexesPerDirectory, readIndex } from "../bucket/index_reader.ts";
import { isIndexKey, keyDirectory, keyHead, type KeyNaming, trimSlashes } from "../bucket/keys.ts";
import { errorMessage, FatalError } from "../common/errors.ts";
import { formatBytes } from "../common/format.ts";
import { log } from "../common/log.ts";
import { forEachLimited } from "../common/pool.ts";
import type { DeleteRefusal, ObjectInfo, ObjectVersion, Store } from "../store/store.ts";

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
  const print = options.print ?? ((line: string) => console.log(line));
  const prefix = keyHead(options.naming) + options.path;
  const now = options.now ?? new Date();
  const cutoff = new Date(now.getTime() - options.ageDays * DAY_MS);
  const retention = await readRetention(options, prefix, cutoff);

  // Pass 2: stream the listing again and delete in batches as we go.
  const result: ChopResult = {
    prefix,
    cutoff,
    versioned: await keepsVersions(store),
    indexes: retention.indexes.size,
    indexesKept: retention.keptIndexes.size,
    kept: 0,
    keptBytes: 0,
    deleted: 0,
    deletedBytes: 0,
    deleteMarkers: 0,
    keptByLock: 0,
    keptByLockBytes: 0,
  };
  const tally = new Tally(result, options.dryRun ?? false, options.listDeletes ? print : undefined);
  if (result.versioned) await chopVersions(options, prefix, retention, tally);
  else await chopKeys(options, prefix, retention, tally);
  print(summaryLine(result, options.dryRun ?? false, store.url));
  return result;
}

/** What pass 1 decided: the indexes under the prefix, the kept ones and the names they keep. */
interface Retention {
  indexes: Map<string, ObjectInfo>;
  keptIndexes: Set<string>;
  keepFiles: KeptNames;
  isYoung(info: ObjectInfo): boolean;
  /** Reads index `key` and keeps the names it lists (`deletedSoFar` for the error). */
  keepNamesOf(key: string, deletedSoFar?: number): Promise<void>;
}

/** Pass 1: the indexes only, and the names the kept ones list. */
async function readRetention(
  options: ChopOptions,
  prefix: string,
  cutoff: Date,
): Promise<Retention> {
  const { store } = options;
  const isYoung = (info: ObjectInfo) => info.lastModified.getTime() >= cutoff.getTime();
  const indexes = new Map<string, ObjectInfo>();
  const keptIndexes = new Set<string>();
  for (const [, inDirectory] of await indexesPerDirectory(store, prefix)) {
    for (const info of inDirectory) {
      indexes.set(info.key, info);
      if (isYoung(info)) keptIndexes.add(info.key);
    }
    // Each directory's newest restore point is kept, whatever its age.
    const newest = await chooseRestorePoint(store, inDirectory);
    if (newest) keptIndexes.add(newest.info.key);
  }
  if (indexes.size === 0) {
    throw new FatalError(
      `No index under '${prefix}' in ${store.url}: nothing to base retention on, nothing deleted`,
    );
  }
  log.info("chop: reading kept indexes", {
    prefix,
    indexes: indexes.size,
    kept: keptIndexes.size,
    cutoff: cutoff.toISOString(),
  });

  const keepFiles = new KeptNames();
  const head = keyHead(options.naming);
  const keepNamesOf = async (key: string, deletedSoFar = 0) => {
    let listing;
    try {
      listing = await readIndex(store, key);
    } catch (err) {
      const done = deletedSoFar === 0
        ? "nothing deleted"
        : `stopped after deleting ${deletedSoFar} objects`;
      throw new FatalError(`Cannot read index '${key}', ${done}: ${errorMessage(err)}`);
    }
    // Both the directory the index states and the one its key is in: keeping more is safe.
    const dirs = new Set([`${head}${trimSlashes(listing.directory)}/`, `${keyDirectory(key)}/`]);
    for (const dir of dirs) keepFiles.add(dir, listing.names);
  };
  await forEachLimited([...keptIndexes], options.parallel ?? 5, keepNamesOf);
  return { indexes, keptIndexes, keepFiles, isYoung, keepNamesOf };
}

/** Counts what is kept and deleted into a `ChopResult`, and lists deletions when asked. */
class Tally {
  /** Keys and versions refused by Object Lock in the batch being deleted. */
  readonly locked = new Set<string>();
  readonly onLocked = (refusal: DeleteRefusal) =>
    this.locked.add(versionName(refusal.key, refusal.versionId));
  readonly result: ChopResult;
  readonly #verb: string;
  readonly #list: ((line: string) => void) | undefined;

  constructor(result: ChopResult, dryRun: boolean, list: ((line: string) => void) | undefined) {
    this.result = result;
    this.#verb = dryRun ? "would delete" : "deleted";
    this.#list = list;
  }

  keep(info: ObjectInfo): void {
    this.result.kept++;
    this.result.keptBytes += info.size;
  }

  /** Counts one key or version of the batch just deleted: gone, or kept by the lock. */
  settle(info: ObjectInfo, versionId?: string, marker = false): void {
    const result = this.result;
    const name = versionId === undefined
      ? info.key
      : `${info.key} (${marker ? "delete marker" : "version"} ${versionId})`;
    if (this.locked.has(versionName(info.key, versionId))) {
      result.keptByLock++;
      result.keptByLockBytes += info.size;
      this.#list?.(`kept by lock ${name}`);
      return;
    }
    if (marker) result.deleteMarkers++;
    else {
      result.deleted++;
      result.deletedBytes += info.size;
    }
    this.#list?.(`${this.#verb} ${name}`);
  }
}

/**
 * Pass 2 on a versioned bucket. Every version of a key goes or stays
 * together: a key is kept (all its versions) when a kept index names it or
 * its newest version is young.
 */
async function chopVersions(
  options: ChopOptions,
  prefix: string,
  retention: Retention,
  tally: Tally,
): Promise<void> {
  const { store } = options;
  const { indexes, keptIndexes, keepFiles, isYoung, keepNamesOf } = retention;
  const result = tally.result;
  let pending: ObjectVersion[] = [];
  const flush = async () => {
    const batch = pending.filter((v) => !keepFiles.has(v.key));
    for (const v of pending) if (keepFiles.has(v.key) && !v.deleteMarker) tally.keep(v);
    pending = [];
    if (batch.length === 0) return;
    tally.locked.clear();
    if (!options.dryRun) await store.deleteVersions!(batch, { onLocked: tally.onLocked });
    for (const v of batch) tally.settle(v, v.versionId, v.deleteMarker);
  };
  let group: ObjectVersion[] = [];
  const decide = async () => {
    const versions = group;
    group = [];
    const first = versions[0];
    if (!first) return;
    const latest = versions.find((v) => v.latest) ?? first;
    if (isIndexKey(first.key) && !indexes.has(first.key) && !latest.deleteMarker) {
      await keepNamesOf(first.key, options.dryRun ? 0 : result.deleted);
    }
    if (keptIndexes.has(first.key) || keepFiles.has(first.key) || isYoung(latest)) {
      for (const v of versions) if (!v.deleteMarker) tally.keep(v);
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

/** Pass 2 on an unversioned bucket: key by key. */
async function chopKeys(
  options: ChopOptions,
  prefix: string,
  retention: Retention,
  tally: Tally,
): Promise<void> {
  const { store } = options;
  const { indexes, keptIndexes, keepFiles, isYoung, keepNamesOf } = retention;
  let pending: ObjectInfo[] = [];
  const flush = async () => {
    // An index published since pass 1 may have added names: filter again.
    const batch = pending.filter((info) => !keepFiles.has(info.key));
    for (const info of pending) if (keepFiles.has(info.key)) tally.keep(info);
    pending = [];
    if (batch.length === 0) return;
    tally.locked.clear();
    if (!options.dryRun) {
      await store.deleteMany(batch.map((info) => info.key), { onLocked: tally.onLocked });
    }
    for (const info of batch) tally.settle(info);
  };
  for await (const info of store.list(prefix)) {
    if (isIndexKey(info.key) && !indexes.has(info.key)) {
      // Published during this run: young, so kept; its files must be kept too.
      await keepNamesOf(info.key, options.dryRun ? 0 : tally.result.deleted);
    }
    if (keptIndexes.has(info.key) || keepFiles.has(info.key) || isYoung(info)) {
      tally.keep(info);
      continue;
    }
    pending.push(info);
    if (pending.length >= BATCH) await flush();
  }
  await flush();
}

/** The closing line: indexes, what was kept, deleted and kept by the lock. */
function summaryLine(result: ChopResult, dryRun: boolean, storeUrl: string): string {
  const verb = dryRun ? "would delete" : "deleted";
  const unit = result.versioned ? "versions" : "objects";
  const markers = result.deleteMarkers > 0 ? ` and ${result.deleteMarkers} delete markers` : "";
  return `${dryRun ? "Dry run: " : ""}under '${result.prefix}' in ${storeUrl}${
    result.versioned ? " (versioned)" : ""
  }, cutoff ${result.cutoff.toISOString()}: ` +
    `${result.indexes} indexes (${result.indexesKept} kept); ` +
    `kept ${result.kept} ${unit} (${formatBytes(result.keptBytes)}), ` +
    `${verb} ${result.deleted} ${unit} (${formatBytes(result.deletedBytes)})${markers}, ` +
    `kept by lock ${result.keptByLock} ${unit} (${formatBytes(result.keptByLockBytes)})`;
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
  readonly #byDirectory = new Map<string, Set<string>>();

  /** Keeps `names` in `dirPrefix` (a key directory with its trailing "/"). */
  add(dirPrefix: string, names: readonly string[]): void {
    for (const name of names) {
      // A name with "/" (an unsafe index, which slurp refuses) still keeps the key it spells.
      const key = name.includes("/") ? dirPrefix + name : undefined;
      const dir = key === undefined ? dirPrefix : key.slice(0, key.lastIndexOf("/") + 1);
      let kept = this.#byDirectory.get(dir);
      if (!kept) this.#byDirectory.set(dir, kept = new Set());
      kept.add(key === undefined ? name : key.slice(dir.length));
    }
  }

  has(key: string): boolean {
    const slash = key.lastIndexOf("/");
    return this.#byDirectory.get(key.slice(0, slash + 1))?.has(key.slice(slash + 1)) ?? false;
  }
}

/** A key, or one version of it, as one string. */
function versionName(key: string, versionId: string | undefined): string {
  return versionId === undefined ? key : `${versionId}\n${key}`;
}
