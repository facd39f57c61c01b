/**
 * Start-up reconciliation (-B): one listing of what the bucket already holds
 * under each root (one request per 1,000 keys instead of a HEAD per file),
 * then a sweep that queues every local file, checked against that listing.
 * Data.db files the bucket holds without an index are facts for the ledger
 * (`expectIndexes`): found there again, they ask for their index.
 *
 * With `--state-dir` (durable_state.ts), a restart without -B reconciles
 * only the directories changed since the last checkpoint
 * (`reconcileChanged`), each listed with one request per 1,000 keys.
 */
import { errorMessage, FatalError } from "../../common/errors.ts";
import { secondsSince } from "../../common/format.ts";
import { fileNamesOrNull, lstatOrNull } from "../../common/fs.ts";
import { log } from "../../common/log.ts";
import { forEachLimited } from "../../common/pool.ts";
import { basename, dirname } from "../../common/paths.ts";
import {
  dataKeyOfIndex,
  directoryPrefix,
  INDEX_SUFFIX,
  isIndexKey,
  keyDirectory,
  type KeyNaming,
  objectKey,
  pathOfKey,
} from "../../bucket/keys.ts";
import { wantsIndex } from "../../bucket/sstable.ts";
import type { Store } from "../../store/store.ts";
import { ListedObjects, type RemoteListing } from "../upload/bucket_view.ts";
import type { FileWatcher } from "../detect/file_watcher.ts";
import type { Ledger } from "../ledger.ts";
import type { PathFilter } from "../detect/path_filter.ts";
import type { UploadPipeline } from "../upload/pipeline.ts";

/** Slack when comparing file times with a checkpoint (see durable_state.ts). */
export const CHANGE_MARGIN_MS = 2_000;

export interface StartupParts {
  store: Store;
  naming: KeyNaming;
  roots: string[];
  /** With --once a failed listing is fatal; otherwise files are checked one by one. */
  once: boolean;
  pipeline: UploadPipeline;
  /** The records: reconciliation reads them and feeds them the bucket's facts. */
  ledger: Ledger;
  /** Indexes are written (not --without-index): Data.db files without one are worth noting. */
  indexing: boolean;
  watcher: FileWatcher;
}

/** What the journal's reconciliations add to the -B one. */
interface StartupExtras {
  /** Runs once the listing is in place, before the sweep (queues the journal's files). */
  beforeSweep?: () => void;
  /** Data.db files whose index is to be written if found in the bucket. */
  expected?: Iterable<string>;
}

/**
 * Lists the bucket, tells the ledger which Data.db files it holds without
 * an index, queues every existing file, and frees the listing once they are
 * checked.
 */
export async function reconcileAtStart(
  parts: StartupParts,
  extras: StartupExtras = {},
): Promise<void> {
  const { pipeline, naming } = parts;
  const listing = await listExisting(parts);
  if (listing) pipeline.setListing(listing);
  if (parts.indexing) {
    parts.ledger.expectIndexes(extras.expected ?? []);
    if (listing) parts.ledger.expectIndexes(dataFilesWithoutIndex(listing, naming));
  }
  extras.beforeSweep?.();
  await parts.watcher.sweep("startup", true);
  // The sweep only queues files: keep the listing until they are checked
  // against it (one request per file otherwise), then free it.
  void pipeline.idle().then(() => pipeline.setListing(undefined));
}

async function listExisting(parts: StartupParts): Promise<RemoteListing | undefined> {
  const { store, naming, roots, once } = parts;
  const objects = new ListedObjects();
  const partial = new Set<string>();
  const local = new LocalNames();
  const prefixes = roots.map((root) => objectKey(naming, root + "/"));
  const started = performance.now();
  let skipped = 0;
  try {
    for (const prefix of prefixes) {
      for await (const item of store.list(prefix)) {
        // The bucket's history (compacted files, dropped tables) answers no
        // local file: not held, so memory follows the node, not the bucket.
        const path = pathOfKey(naming, isIndexKey(item.key) ? dataKeyOfIndex(item.key) : item.key);
        if (path !== null && !local.has(path)) {
          partial.add(`${keyDirectory(item.key)}/`);
          skipped++;
          continue;
        }
        objects.set(item.key, { size: item.size, etag: item.etag });
      }
    }
  } catch (err) {
    if (once || err instanceof FatalError) throw err;
    log.warn("could not list the bucket at start; checking files one by one", {
      error: errorMessage(err),
    });
    return undefined;
  }
  log.info("bucket listed", { objects: objects.size, skipped, seconds: secondsSince(started) });
  return { objects, prefixes, partial };
}

/**
 * Whether a local file exists, from one read of its directory: the names
 * of the last few directories asked about are kept (a listing comes
 * directory by directory, subdirectories in between).
 */
class LocalNames {
  readonly #recent = new Map<string, Set<string> | null>();

  has(path: string): boolean {
    const dir = dirname(path);
    let names = this.#recent.get(dir);
    if (names === undefined) {
      try {
        names = fileNamesOrNull(dir);
      } catch {
        names = null; // unreadable: its keys count as history (partial: asked again later)
      }
      this.#recent.set(dir, names);
      for (const [old] of this.#recent) {
        if (this.#recent.size <= 8) break;
        this.#recent.delete(old);
      }
    }
    return names?.has(basename(path)) ?? false;
  }
}

/** Data.db files the bucket holds without an index (-B writes those indexes). */
function dataFilesWithoutIndex(listing: RemoteListing, naming: KeyNaming): Set<string> {
  const paths = new Set<string>();
  for (const key of listing.objects.keys()) {
    const path = pathOfKey(naming, key);
    if (path === null || key.endsWith(INDEX_SUFFIX)) continue;
    if (wantsIndex(path) && !listing.objects.has(key + INDEX_SUFFIX)) paths.add(path);
  }
  return paths;
}

/** What the durable state's reconciliations and checkpoints need. */
export interface DurableParts extends StartupParts {
  /** -B: reconcile the whole tree whatever the journal says. */
  backup: boolean;
  filter: PathFilter;
  recursive: boolean;
  autoAdd: boolean;
  settleMs: number;
  /** Checkpoint scans run this often (the sweep interval; 0: only at start and stop). */
  sweepIntervalMs: number;
  /** Directories listed at once at start (`-t`). */
  threads: number;
}

/**
 * Without -B and with a checkpoint: lists only the directories with an
 * entry changed since it (one request per 1,000 keys each) and queues their
 * files, checked against those listings. Data.db files found there
 * without an index are told to the ledger.
 */
export async function reconcileChanged(
  parts: DurableParts,
  checkpoint: number,
  extras: StartupExtras,
): Promise<void> {
  const { ledger, pipeline, naming, store } = parts;
  const started = performance.now();
  const since = checkpoint - CHANGE_MARGIN_MS;
  const changed: ScannedFile[][] = [];
  const touched = (info: Deno.FileInfo) =>
    Math.max(info.mtime?.getTime() ?? 0, info.ctime?.getTime() ?? 0) >= since;
  // At start every directory exists already: -r decides (see isWatchedDir).
  const descend = (dir: string) => parts.recursive || parts.roots.includes(dir);
  await walkTree(parts.roots, parts.filter, descend, (_, info, files, inherited) => {
    if (files.length > 0 && (inherited || touched(info) || files.some((f) => touched(f.info)))) {
      changed.push(files);
    }
    // A directory renamed in keeps its mtime and its files their ctimes; its
    // own ctime moves past its mtime: everything below it counts as changed.
    const ctime = info.ctime?.getTime() ?? 0;
    return ctime >= since && ctime > (info.mtime?.getTime() ?? 0);
  });
  const expected = new Set(extras.expected);
  const objects = new ListedObjects();
  const directories = new Set<string>();
  let listing: RemoteListing | undefined = { objects, prefixes: [], directories };
  try {
    // -t listings at once: many directories change on a busy node.
    await forEachLimited(changed, parts.threads, async (files) => {
      const prefix = directoryPrefix(naming, dirname(files[0]!.path));
      for await (const item of store.list(prefix, { delimiter: "/" })) {
        objects.set(item.key, { size: item.size, etag: item.etag });
      }
      directories.add(prefix);
    });
  } catch (err) {
    if (parts.once || err instanceof FatalError) throw err;
    log.warn("could not list the changed directories at start; checking files one by one", {
      error: errorMessage(err),
    });
    listing = undefined;
  }
  if (listing) {
    pipeline.setListing(listing);
    for (const files of changed) {
      for (const { path } of files) {
        const key = objectKey(naming, path);
        if (
          wantsIndex(path) && listing.objects.has(key) && !listing.objects.has(key + INDEX_SUFFIX)
        ) {
          expected.add(path);
        }
      }
    }
  }
  if (parts.indexing) ledger.expectIndexes(expected);
  extras.beforeSweep?.();
  let queued = 0;
  for (const files of changed) {
    for (const { path, info } of files) {
      const mtime = info.mtime?.getTime() ?? 0;
      if (ledger.handles(path, info.size, mtime)) continue;
      pipeline.enqueue(path);
      queued++;
    }
  }
  log.info("reconciled the directories changed since the last checkpoint", {
    checkpoint: new Date(checkpoint).toISOString(),
    directories: changed.length,
    objects: listing?.objects.size ?? 0,
    queued,
    seconds: secondsSince(started),
  });
  // Kept until the queued files are checked against it, as -B does.
  if (listing) void pipeline.idle().then(() => pipeline.setListing(undefined));
}

/** A regular file found by a walk, with its lstat. */
export interface ScannedFile {
  path: string;
  info: Deno.FileInfo;
}

/**
 * Walks the directories under `roots` for which `descend` holds, calling
 * `visit` with each one's accepted regular files. `visit` returns true to
 * mark everything below the directory (`inherited`).
 */
export async function walkTree(
  roots: string[],
  filter: PathFilter,
  descend: (dir: string) => boolean,
  visit: (
    dir: string,
    info: Deno.FileInfo,
    files: ScannedFile[],
    inherited: boolean,
  ) => boolean | void,
): Promise<void> {
  const stack: [string, boolean][] = roots.map((root) => [root, false]);
  let looked = 0;
  while (stack.length > 0) {
    const [dir, inherited] = stack.pop()!;
    const info = lstatOrNull(dir);
    if (!info?.isDirectory) continue;
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) continue;
      throw err;
    }
    const files: ScannedFile[] = [];
    const subdirs: string[] = [];
    for (const entry of entries) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) {
        if (descend(path)) subdirs.push(path);
      } else if (entry.isFile && filter.accepts(path)) {
        const fileInfo = lstatOrNull(path);
        if (fileInfo?.isFile) files.push({ path, info: fileInfo });
      }
    }
    const below = visit(dir, info, files, inherited) === true || inherited;
    for (const sub of subdirs) stack.push([sub, below]);
    // lstat is synchronous: let uploads and events through on large trees.
    looked += files.length + 1;
    if (looked >= 1000) {
      looked = 0;
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
}
