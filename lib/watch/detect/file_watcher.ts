/**
 * The watcher turns raw file-system events into one fact, "this file is
 * complete", and nothing else. Events are hints (inotify drops them, see
 * docs/design.md), so three paths lead to that fact:
 *
 * - events: close-after-write (`access`), the last path of a `rename`, and
 *   a `create` that is a hard link (a link is complete the moment it
 *   appears; a plain new file is not);
 * - scans: a directory that appears is scanned at once (files written into
 *   it before its watch existed produce no events), and the whole tree is
 *   rescanned when Deno reports its own queue overflowed (`rescan`);
 * - sweeps: every `sweepIntervalMs` the tree is walked, catching anything
 *   the kernel dropped silently. A file found only by a scan or sweep is
 *   complete once it has not been modified for `settleMs` (hard links at once).
 *
 * The event loop does no I/O: it pushes paths to a queue (probe_queue.ts)
 * drained by one async worker, so Deno's 1,024-event queue never fills
 * because of us. The pure rules of watch_rules.ts decide what events mean.
 */
import { collectDirs } from "../../common/tree.ts";
import { errorMessage, UsageError } from "../../common/errors.ts";
import { secondsSince } from "../../common/format.ts";
import { lstatOrNull } from "../../common/fs.ts";
import { log } from "../../common/log.ts";
import { dirname } from "../../common/paths.ts";
import { type Clock, systemClock, type TimerId } from "../clock.ts";
import { FifoGuard } from "./fifo_guard.ts";
import type { SkipReason } from "../records.ts";
import { OddPaths } from "./odd_paths.ts";
import type { PathFilter } from "./path_filter.ts";
import { ProbeQueue } from "./probe_queue.ts";
import { SettlingFiles } from "./settling_files.ts";
import { checkRoot, warnOnSmallInotifyQueue, WatchLimitError } from "./watch_setup.ts";
import {
  existedBeforeStart,
  fileVerdict,
  isWatchedDir,
  type ListenEvent,
  type ProbeKind,
  probeKindOf,
} from "./watch_rules.ts";

/** When a new directory is scanned again after its first scan. */
const NEW_DIR_RESCANS_MS = [250, 2_000];

export interface WatcherOptions {
  roots: string[];
  recursive: boolean;
  autoAdd: boolean;
  listen: Set<ListenEvent>;
  filter: PathFilter;
  /** Receives every complete file; must return at once. */
  onComplete: (path: string, how: string) => void;
  /** A promise while `onComplete`'s queue is full: sweeps wait (memory stays bounded). */
  room?: () => Promise<void> | undefined;
  /** The start-up sweep has handed on every existing file directly in `dir`. */
  onSwept?: (dir: string) => void;
  /** Is this file already handled (in the bucket or on its way)? Sweeps skip it. */
  isHandled: (path: string, info: Deno.FileInfo) => boolean;
  /** Include files that existed before start in sweeps (`-B`). */
  includeExisting: boolean;
  settleMs: number;
  sweepIntervalMs: number;
  /** A path was skipped unread (once per path): counted by the metrics. */
  onSkipped?: (reason: SkipReason) => void;
  /** Reports whether events are flowing (for /healthz). */
  onWatching?: (ok: boolean) => void;
  /** Time and timers (tests move them by hand). */
  clock?: Clock;
}

/** A file seen by a scan, waiting to stop changing. */
export class FileWatcher {
  readonly #o: WatcherOptions;
  readonly #startedAt: number;
  /** Directories that existed at start (for the -r / -a distinction). */
  #startDirs = new Set<string>();
  #fsWatcher: Deno.FsWatcher | undefined;
  /** Frees Deno's watcher thread from a FIFO's open (see fifo_guard.ts). */
  #fifoGuard: FifoGuard | undefined;
  #closed = false;
  readonly #probes = new ProbeQueue((path, kind) => this.#classify(path, kind));
  readonly #candidates: SettlingFiles;
  readonly #clock: Clock;
  #sweepTimer: TimerId | undefined;
  #sweeping: Promise<void> | undefined;
  #sweepAgain = false;
  #loop: Promise<void> | undefined;
  /** Skips what is not a regular file with a usable name, warning once each. */
  readonly #oddPaths: OddPaths;

  constructor(options: WatcherOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#startedAt = this.#clock.now();
    this.#oddPaths = new OddPaths({
      ...(options.onSkipped ? { onSkipped: options.onSkipped } : {}),
      holdFifo: (path) => this.#fifoGuard?.hold(path),
      now: () => this.#clock.now(),
    });
    this.#candidates = new SettlingFiles({
      clock: this.#clock,
      settleMs: options.settleMs,
      isHandled: options.isHandled,
      onSettled: (path) => options.onComplete(path, "settled"),
    });
  }

  /**
   * Checks the roots (a missing one is a `UsageError`) and notes which
   * directories exist now. Enough for sweeps (`--once`).
   */
  async prepare(): Promise<void> {
    for (const root of this.#o.roots) await checkRoot(root);
    if (this.#o.recursive !== this.#o.autoAdd) {
      // Only then does "existed at start" decide whether a directory is watched.
      for (const root of this.#o.roots) await collectDirs(root, this.#startDirs);
    }
  }

  /** Starts watching and the periodic sweeps; the caller runs the first sweep. */
  watch(): void {
    void warnOnSmallInotifyQueue();
    this.#fifoGuard = new FifoGuard(this.#o.roots, {
      onStuck: (stuck) => {
        this.#o.onWatching?.(!stuck);
        if (stuck) this.sweep("file watch stuck");
      },
    });
    this.#fifoGuard.start();
    this.#openWatcher();
    if (this.#o.sweepIntervalMs > 0) {
      this.#sweepTimer = this.#clock.setInterval(
        () => this.sweep("periodic"),
        this.#o.sweepIntervalMs,
      );
    }
  }

  /** Stops watching; pending candidates are dropped (a later -B finds them). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#clock.clearInterval(this.#sweepTimer);
    this.#candidates.close();
    // A close would hang while the watch's thread waits in a FIFO's open: left to the exit.
    if (await this.#fifoGuard?.stop() === false) {
      log.warn("the file watch is stuck on a FIFO; leaving it to the exit");
    } else {
      try {
        this.#fsWatcher?.close();
      } catch {
        // already closed
      }
      await this.#loop;
    }
    await this.#sweeping;
  }

  /** Files seen by scans that have not settled yet. */
  candidates(): number {
    return this.#candidates.size;
  }

  /**
   * Walks the watched tree. Files not yet handled become complete when they
   * have settled (`immediate`: at once, for `--once` and startup backups).
   */
  sweep(why: string, immediate = false): Promise<void> {
    if (this.#sweeping) {
      this.#sweepAgain = true;
      return this.#sweeping;
    }
    this.#sweeping = (async () => {
      do {
        this.#sweepAgain = false;
        const started = performance.now();
        let files = 0;
        for (const root of this.#o.roots) {
          files += await this.#scanTree(root, immediate);
        }
        log.debug("sweep done", { why, files, seconds: secondsSince(started) });
      } while (this.#sweepAgain && !this.#closed);
    })().catch((err) =>
      log.repeated("sweep", "error", "sweep failed", { error: errorMessage(err) })
    )
      .finally(() => this.#sweeping = undefined);
    return this.#sweeping;
  }

  #openWatcher(): void {
    if (this.#closed) return;
    try {
      this.#fsWatcher = Deno.watchFs(this.#o.roots, {
        recursive: this.#o.recursive || this.#o.autoAdd,
      });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new UsageError(`Path '${this.#o.roots.join("', '")}' does not exist`);
      }
      throw new WatchLimitError(err);
    }
    this.#o.onWatching?.(true);
    const watcher = this.#fsWatcher;
    this.#loop = (async () => {
      try {
        await this.#readEvents(watcher);
      } catch (err) {
        if (!this.#closed) {
          log.error("file watch failed; relying on sweeps until it can be restarted", {
            error: errorMessage(err),
            hint: "raise fs.inotify.max_user_watches if it says the limit was reached",
          });
        }
      }
      if (!this.#closed) {
        this.#o.onWatching?.(false);
        this.#restartLater();
      }
    })();
  }

  /**
   * Hands every event to `#onEvent` until the watch ends. An event whose
   * path is not UTF-8 cannot reach JavaScript (Deno throws a TypeError for
   * it, which used to end the watch): that one event is lost, not the
   * watch; its file is skipped anyway (keys are UTF-8), and a sweep soon
   * after finds what a rename of it may have hidden.
   */
  async #readEvents(watcher: Deno.FsWatcher): Promise<void> {
    const events = watcher[Symbol.asyncIterator]();
    for (;;) {
      let next: IteratorResult<Deno.FsEvent>;
      try {
        next = await events.next();
      } catch (err) {
        if (!(err instanceof TypeError) || this.#closed) throw err;
        this.#oddPaths.unreadableEvent(err, () => {
          if (!this.#closed) this.sweep("path not UTF-8");
        });
        continue;
      }
      if (next.done) return;
      this.#onEvent(next.value);
    }
  }

  /** Re-creates the watcher after it ended (root removed, watch limit). */
  #restartLater(): void {
    this.#clock.setTimeout(async () => {
      if (this.#closed) return;
      if (this.#fifoGuard?.stuck) {
        this.#restartLater(); // a new watch would wait on the lock the stuck thread holds
        return;
      }
      try {
        for (const root of this.#o.roots) await checkRoot(root);
        this.#openWatcher();
        log.info("file watch restarted");
        this.sweep("watch restarted");
      } catch (err) {
        log.warn("file watch still down", { error: errorMessage(err) });
        this.#restartLater();
      }
    }, 5_000);
  }

  /** The event loop body: classification only, no I/O, no awaits. */
  #onEvent(event: Deno.FsEvent): void {
    if (event.flag === "rescan") {
      log.warn("file events were dropped by the watcher queue; rescanning the tree");
      this.sweep("rescan");
      return;
    }
    const path = event.paths[event.paths.length - 1];
    if (path === undefined) return;
    const kind = probeKindOf(event.kind, this.#o.listen);
    if (kind !== null) {
      this.#probes.add(path, kind);
      return;
    }
    if (event.kind !== "remove") return;
    this.#candidates.delete(path);
    if (this.#o.roots.includes(path)) {
      log.error("watched path was removed; waiting for it to come back", { path });
      try {
        this.#fsWatcher?.close();
      } catch {
        // already closed
      }
    }
  }

  /** Decides what an event path is: a complete file, a new directory, or nothing yet. */
  async #classify(path: string, kind: ProbeKind): Promise<void> {
    const info = lstatOrNull(path);
    if (!info) return; // vanished (compaction): nothing to do
    if (info.isDirectory) {
      if (!this.#isWatchedDir(path)) return;
      await this.#scanTree(path, false);
      // Deno adds the new directory's watch on its own thread, maybe after
      // this scan: files (hard links above all) made in that gap produce no
      // event. Scanning again shortly after closes the gap.
      for (const ms of NEW_DIR_RESCANS_MS) {
        this.#clock.setTimeout(() => {
          if (!this.#closed) this.#scanTree(path, false).catch(() => {});
        }, ms);
      }
      return;
    }
    if (!this.#isWatchedDir(dirname(path))) return;
    if (!this.#oddPaths.usable(path, info)) return;
    if (!this.#o.filter.accepts(path)) {
      log.debug("skipped: filtered out", { path, reason: this.#o.filter.describe() });
      return;
    }
    const verdict = fileVerdict(kind, (info.nlink ?? 1) > 1, this.#o.listen);
    if (verdict.complete) {
      this.#candidates.delete(path);
      this.#o.onComplete(path, verdict.how);
    } else if (verdict.candidate) {
      this.#candidates.add(path, info);
    }
  }

  /** Walks a directory (recursively as configured); returns files looked at. */
  async #scanTree(dir: string, immediate: boolean): Promise<number> {
    let count = 0;
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) return 0;
      throw err;
    }
    for (const entry of entries) {
      await this.#o.room?.();
      if (this.#closed) break;
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) {
        if (this.#isWatchedDir(path)) count += await this.#scanTree(path, immediate);
        continue;
      }
      if (!this.#o.filter.accepts(path)) continue;
      const info = lstatOrNull(path);
      if (!this.#oddPaths.usable(path, info) || !info) continue;
      count++;
      if (this.#o.isHandled(path, info)) continue;
      if (!this.#o.includeExisting && existedBeforeStart(info, this.#startedAt)) continue;
      if (immediate || (info.nlink ?? 1) > 1) {
        this.#o.onComplete(path, immediate ? "existing" : "hard-link");
      } else {
        this.#candidates.add(path, info);
      }
    }
    if (immediate && !this.#closed) this.#o.onSwept?.(dir);
    return count;
  }

  #isWatchedDir(dir: string): boolean {
    return isWatchedDir(dir, {
      roots: this.#o.roots,
      recursive: this.#o.recursive,
      autoAdd: this.#o.autoAdd,
      startDirs: this.#startDirs,
    });
  }
}
