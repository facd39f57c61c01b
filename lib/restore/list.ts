/**
 * `tablesnap list`: the restore points under a path. One listing of the
 * prefix gives every index and every object's size; each index is read
 * once (its body names the files, its metadata the exact cut time), so no
 * object is HEADed. Directories are handled as the listing passes them.
 */
import {
  chooseRestorePoint,
  compareIndexes,
  cutTimeOf,
  type KnownIndex,
  readIndex,
} from "../bucket/index_reader.ts";
import {
  directoryPrefix,
  isIndexKey,
  keyDirectory,
  keyHead,
  type KeyNaming,
} from "../bucket/keys.ts";
import { errorMessage } from "../common/errors.ts";
import { formatBytes } from "../common/format.ts";
import { basename } from "../common/paths.ts";
import { Semaphore } from "../common/pool.ts";
import type { ObjectInfo, Store } from "../store/store.ts";
import { printLine, safeJson } from "../common/escape.ts";

export interface ListOptions {
  store: Store;
  naming: KeyNaming;
  /** The directory (as the watcher saw it) whose restore points, and those below it, are listed. */
  path: string;
  /** Mark the point `slurp --at` would use. */
  at?: Date | undefined;
  /** One JSON object per line instead of text. */
  json?: boolean | undefined;
  /** Concurrent index reads (default 8). */
  parallel?: number | undefined;
  print?: ((line: string) => void) | undefined;
}

/** One restore point: an index, when it was cut, and whether its files are all there. */
export interface ListedPoint {
  /** The directory the index describes, as the watcher saw it. */
  directory: string;
  index: string;
  time: Date;
  /** True when `time` is the recorded cut time (else LastModified). */
  exact: boolean;
  files: number;
  bytes: number;
  complete: boolean;
  missing: string[];
  newest: boolean;
  /** The point `slurp --at` would use (with `at`). */
  atChoice: boolean;
  /** Why the index could not be read, if it could not. */
  error?: string;
  /** Each file's storage class, by name, and the index's own (stores with classes: S3). */
  storageClasses?: Record<string, string>;
  indexStorageClass?: string;
}

/** One key directory of the listing: its objects' sizes and its indexes. */
interface ListedDirectory {
  dir: string;
  sizes: Map<string, number>;
  /** Storage classes by key, kept for --json only (the store's listing names them). */
  classes: Map<string, string>;
  indexes: ObjectInfo[];
}

/**
 * Lists every restore point under `path`, oldest first per directory.
 * Memory: the listing is streamed and each key directory is handled once
 * the listing has passed it (keys come in order, so a directory's keys,
 * those below it included, are contiguous): only the sizes of the
 * directories being read are held, and the points found, never every key.
 */
export async function listRestorePoints(options: ListOptions): Promise<ListedPoint[]> {
  const { store } = options;
  const print = options.print ?? printLine;
  const prefix = directoryPrefix(options.naming, options.path);
  const parallel = options.parallel ?? 8;
  const reads = new Semaphore(parallel);
  const groups: [string, ListedPoint[]][] = [];
  const running = new Set<Promise<void>>();
  const done = async (directory: ListedDirectory) => {
    if (directory.indexes.length === 0) return;
    // The listing waits while `parallel` directories are being read.
    while (running.size >= parallel) await Promise.race(running);
    const task = (async () => {
      groups.push([directory.dir, await directoryPoints(options, directory, reads)]);
    })();
    running.add(task);
    task.then(() => running.delete(task), () => running.delete(task));
  };
  // PATH's own indexes and those of every directory below it, in one listing;
  // `open` holds the directory being listed and those it is below.
  const open: ListedDirectory[] = [];
  for await (const info of store.list(prefix)) {
    const dir = keyDirectory(info.key);
    while (open.length > 0 && !`${dir}/`.startsWith(`${open.at(-1)!.dir}/`)) {
      await done(open.pop()!);
    }
    if (open.at(-1)?.dir !== dir) {
      open.push({ dir, sizes: new Map(), classes: new Map(), indexes: [] });
    }
    const current = open.at(-1)!;
    if (isIndexKey(info.key)) current.indexes.push(info);
    else current.sizes.set(info.key, info.size);
    if (options.json && info.storageClass !== undefined) {
      current.classes.set(info.key, info.storageClass);
    }
  }
  while (open.length > 0) await done(open.pop()!);
  await Promise.all(running);
  const points = groups.sort(([a], [b]) => (a < b ? -1 : 1)).flatMap(([, listed]) => listed);
  if (options.json) {
    for (const p of points) print(safeJson(jsonOf(p, options.at !== undefined)));
  } else {
    printText(print, points, options.at);
  }
  return points;
}

/** The restore points of one key directory, oldest first, each index read once. */
async function directoryPoints(
  options: ListOptions,
  { dir, sizes, classes, indexes }: ListedDirectory,
  reads: Semaphore,
): Promise<ListedPoint[]> {
  const { store } = options;
  const head = keyHead(options.naming);
  const byKey = new Map<string, ListedPoint>();
  // What each GET told: choosing the newest (and the --at) point then needs no HEAD.
  const known = new Map<string, KnownIndex>();
  await Promise.all(indexes.map((info) =>
    reads.use(async () => {
      const point: ListedPoint = {
        directory: dir.startsWith(head) ? dir.slice(head.length) : dir,
        index: info.key,
        time: info.lastModified,
        exact: false,
        files: 0,
        bytes: 0,
        complete: false,
        missing: [],
        newest: false,
        atChoice: false,
        ...(info.storageClass !== undefined ? { indexStorageClass: info.storageClass } : {}),
      };
      try {
        const listing = await readIndex(store, info.key);
        const cut = cutTimeOf(listing.head);
        if (cut) [point.time, point.exact] = [cut, true];
        point.directory = listing.directory;
        point.files = listing.names.length;
        known.set(info.key, { cut, files: listing.names.length });
        for (const name of listing.names) {
          const size = sizes.get(`${dir}/${name}`);
          if (size === undefined) point.missing.push(name);
          else point.bytes += size;
          const storageClass = classes.get(`${dir}/${name}`);
          // No prototype: a file named "__proto__" is a name like any other.
          if (storageClass !== undefined) {
            point.storageClasses ??= Object.create(null) as Record<string, string>;
            point.storageClasses[name] = storageClass;
          }
        }
        point.complete = point.missing.length === 0;
      } catch (err) {
        point.error = errorMessage(err);
      }
      byKey.set(info.key, point);
    })
  ));
  const timeOf = (info: ObjectInfo) => byKey.get(info.key)!.time.getTime();
  const newest = await chooseRestorePoint(store, indexes, undefined, known);
  const chosen = options.at ? await chooseRestorePoint(store, indexes, options.at, known) : null;
  const listed = [...indexes]
    .sort((a, b) => timeOf(a) - timeOf(b) || compareIndexes(a, b))
    .map((info) => byKey.get(info.key)!);
  for (const point of listed) {
    point.newest = point.index === newest?.info.key;
    point.atChoice = point.index === chosen?.info.key;
  }
  return listed;
}

function jsonOf(p: ListedPoint, withAt: boolean): Record<string, unknown> {
  return {
    directory: p.directory,
    index: p.index,
    time: p.time.toISOString(),
    exact_time: p.exact,
    files: p.files,
    bytes: p.bytes,
    complete: p.complete,
    missing: p.missing,
    newest: p.newest,
    ...(withAt ? { at_choice: p.atChoice } : {}),
    ...(p.error !== undefined ? { error: p.error } : {}),
    ...(p.indexStorageClass !== undefined ? { index_storage_class: p.indexStorageClass } : {}),
    ...(p.storageClasses !== undefined ? { storage_classes: p.storageClasses } : {}),
  };
}

function printText(print: (line: string) => void, points: ListedPoint[], at?: Date): void {
  let directory: string | undefined;
  for (const p of points) {
    if (p.directory !== directory) {
      if (directory !== undefined) print("");
      directory = p.directory;
      print(directory);
    }
    const marks = [p.newest ? "newest" : "", p.atChoice ? `used --at ${at?.toISOString()}` : ""]
      .filter(Boolean).join(", ");
    const state = p.error !== undefined
      ? `UNREADABLE: ${p.error}`
      : p.complete
      ? "complete"
      : `INCOMPLETE, missing ${p.missing.join(" ")}`;
    const time = p.exact ? p.time.toISOString() : `${p.time.toISOString()} (bucket time)`;
    print(
      `  ${time}  ${basename(p.index)}  ${p.files} files  ${formatBytes(p.bytes)}  ${state}` +
        (marks ? `  <- ${marks}` : ""),
    );
  }
  if (points.length === 0) print("No restore points.");
}
