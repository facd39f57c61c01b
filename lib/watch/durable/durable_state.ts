/**
 * `--state-dir`: the journal, the reconciliation at start that uses it
 * (reconcile.ts), and the checkpoint scans that keep the next start cheap.
 * A restart without -B queues what the journal lists as pending, then
 * reconciles only the directories changed since the last checkpoint.
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
import { collectDirs } from "../../common/tree.ts";
import { errorMessage } from "../../common/errors.ts";
import { secondsSince } from "../../common/format.ts";
import { log } from "../../common/log.ts";
import { wantsIndex } from "../../bucket/sstable.ts";
import { isWatchedDir } from "../detect/watch_rules.ts";
import { type Clock, systemClock, type TimerId } from "../clock.ts";
import { Journal } from "./journal.ts";
import type { JournalRecovery } from "./journal_format.ts";
import {
  CHANGE_MARGIN_MS,
  type DurableParts,
  reconcileAtStart,
  reconcileChanged,
  walkTree,
} from "./reconcile.ts";

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
  readonly #clock: Clock;
  #timer: TimerId | undefined;
  #scanning: Promise<void> | undefined;

  private constructor(journal: Journal, recovery: JournalRecovery, clock: Clock) {
    this.journal = journal;
    this.recovery = recovery;
    this.#clock = clock;
  }

  /** Locks and reads the state directory (`FatalError` when it cannot be used). */
  static async open(dir: string, clock: Clock = systemClock): Promise<DurableState> {
    const { journal, recovery } = await Journal.open(dir);
    return new DurableState(journal, recovery, clock);
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
    let startedAt = this.#clock.now();
    if (parts.recursive !== parts.autoAdd) {
      for (const root of parts.roots) await collectDirs(root, this.#startDirs);
    }
    // Replayed Data.db files may have been stored before their index was written.
    const expected = [...this.recovery.pending.keys()].filter(wantsIndex);
    const extras = { beforeSweep: () => this.#queuePending(parts), expected };
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
      this.#timer = this.#clock.setInterval(
        () => void this.checkpointScan(),
        parts.sweepIntervalMs,
      );
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
    this.#clock.clearInterval(this.#timer);
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
    const at = this.#clock.now();
    let bound = at;
    let queued = 0;
    const { ledger, pipeline, settleMs } = parts;
    const scope = { ...parts, startDirs: this.#startDirs };
    await walkTree(parts.roots, parts.filter, (dir) => isWatchedDir(dir, scope), (_, __, files) => {
      for (const { path, info } of files) {
        const mtime = info.mtime?.getTime() ?? 0;
        if (ledger.handles(path, info.size, mtime)) continue;
        const ctime = info.ctime?.getTime() ?? mtime;
        if (ctime < this.#coveredBefore) continue;
        if ((info.nlink ?? 1) > 1 || this.#clock.now() - mtime >= settleMs) {
          pipeline.enqueue(path);
          queued++;
        } else {
          // Still being written: the next start must look at its directory.
          bound = Math.min(bound, ctime);
        }
      }
    });
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
}
