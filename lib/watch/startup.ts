/**
 * Start-up reconciliation (-B): one listing of what the bucket already holds
 * under each root (one request per 1,000 keys instead of a HEAD per file),
 * then a sweep that queues every local file, checked against that listing.
 *
 * With `--state-dir` (`DurableState`), a restart without -B queues what the
 * journal lists as pending, then reconciles only the directories changed
 * since the last checkpoint, each listed with one request per 1,000 keys.
 *
 * A checkpoint C means: every file whose last change (ctime) is before C is
 * in the bucket or pending in the journal. A file created, renamed or
 * linked into a directory, or written in place, gets a ctime at that moment
 * (and its directory an mtime), so after a restart every file changed since
 * C is in a directory with an entry touched since C; the rest is covered by
 * C itself. C is taken when a scan of the tree starts, and recorded once
 * that scan has queued every file that was neither handled nor covered by
 * the start, bounded by the ctime of any file still being written, after
 * the journal lines of those files are synced (journal.ts). Timestamps are
 * compared with `CHANGE_MARGIN_MS` of slack: Deno reports ctime in whole
 * seconds and the kernel's file clock lags the wall clock by a tick.
 */
import { errorMessage, FatalError } from "../common/errors.ts";
import { secondsSince } from "../common/format.ts";
import { lstatOrNull } from "../common/fs.ts";
import { log } from "../common/log.ts";
import { forEachLimited } from "../common/pool.ts";
import { dirname } from "../common/paths.ts";
import { collectDirs, walkTree } from "../common/tree.ts";
import {
  directoryPrefix,
  INDEX_SUFFIX,
  type KeyNaming,
  objectKey,
  pathOfKey,
} from "../bucket/keys.ts";
import { wantsIndex } from "../bucket/sstable.ts";
import type { Store } from "../store/store.ts";
import type { RemoteListing, RemoteObject } from "./bucket_view.ts";
import type { FileWatcher } from "./file_watcher.ts";
import type { IndexPublisher } from "./index_publisher.ts";
import { Journal, type JournalRecovery } from "./journal.ts";
import type { PathFilter } from "./path_filter.ts";
import type { UploadPipeline } from "./pipeline.ts";
import { isWatchedDir } from "./watch_rules.ts";

/** Slack when comparing file times with a checkpoint (see above). */
export const CHANGE_MARGIN_MS = 2_000;

export interface StartupParts {
  store: Store;
  naming: KeyNaming;
  roots: string[];
  /** With --once a failed listing is fatal; otherwise files are checked one by one. */
  once: boolean;
  pipeline: UploadPipeline;
  publisher: IndexPublisher | undefined;
  watcher: FileWatcher;
}

/** What the journal's reconciliations add to the -B one. */
interface StartupExtras {
  /** Runs once the listing is in place, before the sweep (queues the journal's files). */
  beforeSweep?: () => void;
  /** Data.db files whose index is to be written if found in the bucket; more are added to it. */
  expected?: Set<string>;
}

/**
 * Lists the bucket, queues every existing file, and frees the listing once
 * they are checked. Returns the Data.db files expected to get an index.
 */
export async function reconcileAtStart(
  parts: StartupParts,
  extras: StartupExtras = {},
): Promise<Set<string>> {
  const { pipeline, naming } = parts;
  const listing = await listExisting(parts);
  const expected = extras.expected ?? new Set<string>();
  if (listing) {
    pipeline.setListing(listing);
    for (const path of dataFilesWithoutIndex(listing, naming)) expected.add(path);
  }
  // A copy: the publisher takes paths out of its set as it handles them.
  if (listing || expected.size > 0) parts.publisher?.expectIndexes(new Set(expected));
  extras.beforeSweep?.();
  await parts.watcher.sweep("startup", true);
  // The sweep only queues files: keep the listing until they are checked
  // against it (one request per file otherwise), then free it.
  void pipeline.idle().then(() => pipeline.setListing(undefined));
  return expected;
}

async function listExisting(parts: StartupParts): Promise<RemoteListing | undefined> {
  const { store, naming, roots, once } = parts;
  const objects = new Map<string, { size: number; etag: string }>();
  const prefixes = roots.map((root) => objectKey(naming, root + "/"));
  const started = performance.now();
  try {
    for (const prefix of prefixes) {
      for await (const item of store.list(prefix)) {
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
  log.info("bucket listed", { objects: objects.size, seconds: secondsSince(started) });
  return { objects, prefixes };
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
 * `--state-dir`: the journal, the reconciliation at start that uses it, and
 * the checkpoint scans that keep the next start cheap.
 */
export class DurableState {
  readonly journal: Journal;
  readonly recovery: JournalRecovery;
  #parts: DurableParts | undefined;
  /** Directories that existed at start (for -r without -a, or -a without -r). */
  #startDirs = new Set<string>();
  /** Files with a ctime before this were covered by the reconciliation at start. */
  #coveredBefore = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #scanning: Promise<void> | undefined;
  /** Data.db files whose index is still to be written: they stay in the journal until it is. */
  readonly #awaitingIndex = new Set<string>();
  /** Data.db files expected to get an index when found in the bucket (as the publisher's). */
  readonly #expected = new Set<string>();

  private constructor(journal: Journal, recovery: JournalRecovery) {
    this.journal = journal;
    this.recovery = recovery;
  }

  /** Locks and reads the state directory (`FatalError` when it cannot be used). */
  static async open(dir: string): Promise<DurableState> {
    const { journal, recovery } = await Journal.open(dir);
    return new DurableState(journal, recovery);
  }

  /** A new or damaged journal cannot say what changed while we were down: reconcile everything. */
  get needsFullReconciliation(): boolean {
    return this.recovery.checkpoint === undefined;
  }

  /**
   * At start, with the watches in place: queues the journal's pending
   * files, reconciles (the whole tree with -B or without a checkpoint, else
   * the directories changed since it), and records the first checkpoint.
   */
  async reconcile(parts: DurableParts): Promise<void> {
    let startedAt = Date.now();
    this.#keepDataUntilIndexed(parts);
    if (parts.recursive !== parts.autoAdd) {
      for (const root of parts.roots) await collectDirs(root, this.#startDirs);
    }
    // Replayed Data.db files may have been stored before their index was written.
    for (const path of this.recovery.pending.keys()) if (wantsIndex(path)) this.#expected.add(path);
    const extras = { beforeSweep: () => this.#queuePending(parts), expected: this.#expected };
    const checkpoint = this.recovery.checkpoint;
    if (parts.backup || checkpoint === undefined) {
      if (!parts.backup && !this.recovery.damaged) {
        log.info("no checkpoint in the state directory yet; reconciling the whole tree", {
          dir: this.journal.dir,
        });
      }
      await reconcileAtStart(parts, extras);
      // A sweep already running when the start-up one was asked for leaves
      // the files modified within --settle-seconds waiting to settle rather
      // than queued: their ctimes are at most that much before the start.
      if (parts.watcher.candidates() > 0) startedAt -= parts.settleMs;
    } else {
      await reconcileChanged(parts, checkpoint, extras);
    }
    this.#coveredBefore = startedAt - CHANGE_MARGIN_MS;
    this.journal.checkpoint(startedAt);
    // Only now: a scan before the reconciliation is done would skip what it has to queue.
    this.#parts = parts;
    if (parts.sweepIntervalMs > 0 && !parts.once) {
      this.#timer = setInterval(() => void this.checkpointScan(), parts.sweepIntervalMs);
    }
  }

  /**
   * Walks the tree, queues every file that is neither handled nor covered
   * by the start, and records a checkpoint (see the top of this file).
   */
  checkpointScan(): Promise<void> {
    const parts = this.#parts;
    if (!parts) return Promise.resolve();
    this.#scanning ??= this.#scan(parts)
      .catch((err) => log.warn("checkpoint scan failed", { error: errorMessage(err) }))
      .finally(() => this.#scanning = undefined);
    return this.#scanning;
  }

  /** At shutdown, before the watches close: stops the scans, then one last checkpoint. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#scanning;
    await this.checkpointScan();
  }

  /** After the pipeline has shut down: syncs and compacts the journal, releases the lock. */
  async close(): Promise<void> {
    await this.journal.close();
  }

  async #scan(parts: DurableParts): Promise<void> {
    const started = performance.now();
    const at = Date.now();
    let bound = at;
    let queued = 0;
    const { pipeline, settleMs } = parts;
    const scope = { ...parts, startDirs: this.#startDirs };
    await walkAccepted(
      parts.roots,
      parts.filter,
      (dir) => isWatchedDir(dir, scope),
      (_, __, files) => {
        for (const { path, info } of files) {
          const mtime = info.mtime?.getTime() ?? 0;
          if (pipeline.isPending(path) || pipeline.isStoredUnchanged(path, info.size, mtime)) {
            continue;
          }
          const ctime = info.ctime?.getTime() ?? mtime;
          if (ctime < this.#coveredBefore) continue;
          if ((info.nlink ?? 1) > 1 || Date.now() - mtime >= settleMs) {
            pipeline.enqueue(path);
            queued++;
          } else {
            // Still being written: the next start must look at its directory.
            bound = Math.min(bound, ctime);
          }
        }
      },
    );
    for (const path of this.journal.heldPaths()) {
      if (!lstatOrNull(path)) this.journal.release(path);
    }
    this.journal.checkpoint(bound);
    log.debug("checkpoint scan done", {
      checkpoint: new Date(bound).toISOString(),
      queued,
      seconds: secondsSince(started),
    });
  }

  /** Queues what the journal lists (gone files are dropped by the upload, quietly). */
  #queuePending(parts: DurableParts): void {
    let queued = 0;
    for (const [path, since] of this.recovery.pending) {
      const root = parts.roots.find((r) => path.startsWith(r + "/"));
      if (root === undefined || !parts.filter.accepts(path)) {
        this.journal.done(path); // no longer watched or filtered out
        continue;
      }
      parts.pipeline.enqueue(path, since);
      queued++;
    }
    if (queued > 0) log.info("queued the files pending in the state journal", { files: queued });
  }

  /**
   * A Data.db stays in the journal until its index is written, so that a
   * crash in between still gets it an index: at the next start it is
   * queued again, found in the bucket, and expected to get its index.
   */
  #keepDataUntilIndexed(parts: DurableParts): void {
    const { pipeline, publisher } = parts;
    if (!publisher) return;
    pipeline.onStored((path, outcome) => {
      if (!wantsIndex(path)) return;
      // Exactly when the publisher asks for an index (index_publisher.ts `stored`).
      if (outcome === "uploaded" || this.#expected.delete(path)) this.#awaitingIndex.add(path);
    });
    publisher.onPublished((dataPath) => {
      this.#awaitingIndex.delete(dataPath);
      if (!pipeline.isPending(dataPath)) this.journal.release(dataPath);
    });
    this.journal.holdWhile((path) => this.#awaitingIndex.has(path));
  }
}

/**
 * Without -B and with a checkpoint: lists only the directories with an
 * entry changed since it (one request per 1,000 keys each) and queues their
 * files, checked against those listings. Returns the Data.db files expected
 * to get an index.
 */
async function reconcileChanged(
  parts: DurableParts,
  checkpoint: number,
  extras: StartupExtras,
): Promise<Set<string>> {
  const { pipeline, naming, store } = parts;
  const started = performance.now();
  const since = checkpoint - CHANGE_MARGIN_MS;
  const changed: ScannedFile[][] = [];
  const touched = (info: Deno.FileInfo) =>
    Math.max(info.mtime?.getTime() ?? 0, info.ctime?.getTime() ?? 0) >= since;
  // At start every directory exists already: -r decides (see isWatchedDir).
  const descend = (dir: string) => parts.recursive || parts.roots.includes(dir);
  await walkAccepted(parts.roots, parts.filter, descend, (_, info, files, inherited) => {
    if (files.length > 0 && (inherited || touched(info) || files.some((f) => touched(f.info)))) {
      changed.push(files);
    }
    // A directory renamed in keeps its mtime and its files their ctimes; its
    // own ctime moves past its mtime: everything below it counts as changed.
    const ctime = info.ctime?.getTime() ?? 0;
    return ctime >= since && ctime > (info.mtime?.getTime() ?? 0);
  });
  const expected = extras.expected ?? new Set<string>();
  const objects = new Map<string, RemoteObject>();
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
  if (expected.size > 0) parts.publisher?.expectIndexes(new Set(expected));
  extras.beforeSweep?.();
  let queued = 0;
  for (const files of changed) {
    for (const { path, info } of files) {
      const mtime = info.mtime?.getTime() ?? 0;
      if (pipeline.isPending(path) || pipeline.isStoredUnchanged(path, info.size, mtime)) continue;
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
  return expected;
}

/** A regular file found by a walk, with its lstat. */
interface ScannedFile {
  path: string;
  info: Deno.FileInfo;
}

/**
 * Walks the directories under `roots` for which `descend` holds, calling
 * `visit` with each one's accepted regular files. `visit` returns true to
 * mark everything below the directory (`inherited`).
 */
async function walkAccepted(
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
  const marked = new Set<string>();
  for await (const listing of walkTree(roots, { descend })) {
    const files: ScannedFile[] = [];
    for (const path of listing.files) {
      if (!filter.accepts(path)) continue;
      const info = lstatOrNull(path);
      if (info?.isFile) files.push({ path, info });
    }
    const inherited = marked.has(listing.dir);
    marked.delete(listing.dir);
    if (visit(listing.dir, listing.info, files, inherited) === true || inherited) {
      for (const sub of listing.dirs) marked.add(sub);
    }
  }
}
