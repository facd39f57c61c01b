/**
 * The `-listdir.json` index written beside every uploaded Data.db: a JSON
 * object mapping the directory to the names of its files. Every index is a
 * complete restore point of its directory at its cut time:
 *
 * - it names the directory's whole live set: every file that passes the
 *   filter and is complete (known to the pipeline: uploading or stored),
 *   except the generations still being written (a TOC.txt that lists a
 *   component not complete yet);
 * - its own generation must be whole: every component its TOC.txt lists,
 *   or, without a TOC, until the generation's files have stopped appearing
 *   for `quietMs`;
 * - it is published once all of those are in the bucket, or at `waitMs`
 *   with what is there (a warning, and the incomplete-index metric); in a
 *   -B backlog the wait starts when the directory's uploads stop, and only
 *   after the start-up sweep has queued all of the directory's files;
 * - its `cut-time` metadata is when the directory was read for it (ms).
 *
 * With `--pin` (pins.ts) the cut is taken early and kept: the index is
 * requested as soon as its Data.db is pinned, and once its generation is
 * whole and every file of the live set is in the bucket or pinned, that
 * live set and that moment are frozen as its cut. It is then published
 * when those files have reached the bucket, even if compaction has deleted
 * them meanwhile (their pins still hold them): an index cut before a
 * compaction names its inputs, and restores them.
 */
import { indexKey, type KeyNaming } from "../../bucket/keys.ts";
import { generationPrefix, mutableComponentOf, wantsIndex } from "../../bucket/sstable.ts";
import { errorMessage } from "../../common/errors.ts";
import { fileNamesOrNull } from "../../common/fs.ts";
import { log } from "../../common/log.ts";
import { basename, dirname } from "../../common/paths.ts";
import { type Backoff, backoffMs } from "../../common/retry.ts";
import type { Store } from "../../store/store.ts";
import type { FileFacts, IndexRecord, Ledger, StoredOutcome } from "../ledger.ts";
import { type Cut, type CutContext, earlierCutPending, frozenCut, liveSet } from "./cut.ts";
import { IndexWriter } from "./index_writer.ts";
import { TocReader } from "./toc_reader.ts";
import { type Clock, systemClock, type TimerId } from "../clock.ts";
import type { PathFilter } from "../detect/path_filter.ts";

/** Between failed uploads of one index. */
const INDEX_PUT_BACKOFF: Backoff = { firstMs: 2_000, maxMs: 60_000, jitter: "none" };

/** An index without a TOC is checked at most this often on stored files (the timer catches up). */
const NO_TOC_CHECK_MS = 250;

export interface IndexPublisherOptions {
  store: Store;
  naming: KeyNaming;
  filter: PathFilter;
  /** Where the pending indexes are kept; the publisher follows its events. */
  ledger: Ledger;
  /** What is known of each file: in the bucket, pending, in flight (the ledger, by default). */
  files?: FileFacts;
  /** `--pin`: is this file pinned (held for its upload whatever compaction does)? */
  isPinned?(path: string): boolean;
  waitMs: number;
  quietMs?: number;
  /** A TOC.txt was found unreadable (once per file): counted by the metrics. */
  onUnreadableToc?(tocPath: string): void;
  /** Time and timers (tests move them by hand). */
  clock?: Clock;
}

export class IndexPublisher {
  readonly #o: IndexPublisherOptions;
  readonly #ledger: Ledger;
  readonly #files: FileFacts;
  readonly #busy = new Set<string>();
  /** Indexes asked to be checked while a check was running: checked once more after. */
  readonly #again = new Set<string>();
  /** Names we deleted locally after upload (--delete-on-backup), per directory. */
  readonly #deletedByUs = new Map<string, Set<string>>();
  readonly #writer: IndexWriter;
  /** True while the -B start-up sweep is still queueing existing files. */
  #inBacklog = false;
  /** Directories the start-up sweep is done with, while `#inBacklog`. */
  readonly #swept = new Set<string>();
  readonly #tocs: TocReader;
  readonly #clock: Clock;
  #timer: TimerId | undefined;
  #idleWaiters: (() => void)[] = [];
  #settledWaiters: (() => void)[] = [];
  published = 0;

  constructor(options: IndexPublisherOptions) {
    this.#o = options;
    this.#writer = new IndexWriter(options.store, options.naming);
    this.#ledger = options.ledger;
    this.#clock = options.clock ?? systemClock;
    this.#files = options.files ?? options.ledger;
    this.#tocs = new TocReader(options.onUnreadableToc);
    options.ledger.subscribe((event) => {
      if (event.type === "stored") this.stored(event.path, event.outcome);
      else if (event.type === "pinned") this.pinned(event.path);
      else if (event.type === "deleted") this.deletedByUs(event.path);
    });
  }

  #now(): number {
    return this.#clock.now();
  }

  /** Starts the timer that re-checks waiting indexes. */
  start(intervalMs = 500): void {
    this.#timer ??= this.#clock.setInterval(() => this.checkDue(), intervalMs);
  }

  stop(): void {
    this.#clock.clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * The -B backlog: until `endBacklog()`, an index waits for the start-up
   * sweep to have queued every existing file of its directory
   * (`directorySwept`).
   */
  beginBacklog(): void {
    this.#inBacklog = true;
  }

  endBacklog(): void {
    this.#inBacklog = false;
    this.#swept.clear();
    for (const entry of this.#ledger.indexes()) this.#evaluate(entry.dataPath);
  }

  /**
   * The start-up sweep has queued every existing file of `directory`: its
   * indexes need not wait for the rest of the tree, which lasts about as
   * long as the uploads (the sweep waits while the upload queue is full).
   */
  directorySwept(directory: string): void {
    if (!this.#inBacklog) return;
    this.#swept.add(directory);
    for (const entry of this.#ledger.indexesIn(directory)) this.#evaluate(entry.dataPath);
  }

  /** A Data.db is in the bucket: publish its index once its directory's live set is. */
  request(dataPath: string): void {
    if (this.#ledger.index(dataPath)) return;
    const now = this.#now();
    this.#ledger.requestIndex({
      dataPath,
      directory: dirname(dataPath),
      prefix: generationPrefix(basename(dataPath)) ?? basename(dataPath),
      backlog: this.#inBacklog,
      checkedAt: now,
      deadline: now + this.#o.waitMs,
      seen: new Set(),
      changedAt: now,
      failures: 0,
      notBefore: 0,
      awaiting: null,
      frozen: null,
    });
    this.#evaluate(dataPath);
  }

  /**
   * A file reached the bucket (uploaded now, or found there): it may
   * complete a waiting index, and it may ask for one (`#indexAskedBy`).
   */
  stored(path: string, outcome: StoredOutcome): void {
    this.fileStored(path);
    const early = wantsIndex(path) ? this.#ledger.index(path) : undefined;
    if (early && !early.frozen && this.#o.isPinned) {
      // Requested when pinned: its wait counts from its upload, as without --pin.
      early.deadline = Math.max(early.deadline, this.#now() + this.#o.waitMs);
    }
    const dataPath = this.#indexAskedBy(path, outcome);
    if (dataPath !== undefined) this.request(dataPath);
  }

  /**
   * The one rule for when a file reaching the bucket asks for an index: an
   * uploaded Data.db; one the bucket held without its index at start
   * (reconciliation's `expectIndexes`); and a rewritten mutable component
   * (its generation's index is cut again, once that Data.db is stored).
   */
  #indexAskedBy(path: string, outcome: StoredOutcome): string | undefined {
    if (wantsIndex(path)) {
      return outcome === "uploaded" || this.#ledger.takeUnindexed(path) ? path : undefined;
    }
    const mutable = outcome === "uploaded" ? mutableComponentOf(path) : undefined;
    if (mutable === undefined) return undefined;
    const dataPath = `${path.slice(0, -mutable.length)}Data.db`;
    return this.#files.isStored(dataPath) ? dataPath : undefined;
  }

  /**
   * `--pin`: a file was pinned. A Data.db asks for its index now, so that
   * its cut can be taken before compaction deletes anything; a component
   * may complete the generation an index waits for to freeze its cut.
   * (Another generation's file counts in a live set only once known to
   * the pipeline, which is when it is pinned: it never holds a freeze back.)
   */
  pinned(path: string): void {
    if (wantsIndex(path)) {
      this.request(path);
      return;
    }
    const name = basename(path);
    for (const entry of this.#ledger.indexesIn(dirname(path))) {
      if (!entry.frozen && name.startsWith(entry.prefix)) this.#evaluate(entry.dataPath);
    }
  }

  /** A file reached the bucket: an index of its directory may be ready. */
  fileStored(path: string): void {
    const name = basename(path);
    for (const entry of this.#ledger.indexesIn(dirname(path))) {
      if (entry.awaiting === null) {
        // Without a TOC (none, or unreadable) every stored file of the
        // directory may complete it, and each check reads the directory:
        // in a busy directory, at most one check per NO_TOC_CHECK_MS.
        if (this.#now() - entry.checkedAt >= NO_TOC_CHECK_MS) this.#evaluate(entry.dataPath);
        else entry.storedSinceCheck = true;
      } else if (entry.awaiting.delete(name) && entry.awaiting.size === 0) {
        this.#evaluate(entry.dataPath);
      }
    }
  }

  /** Remembers a file we deleted after upload, so later indexes still name it. */
  deletedByUs(path: string): void {
    const directory = dirname(path);
    let names = this.#deletedByUs.get(directory);
    if (!names) this.#deletedByUs.set(directory, names = new Set());
    names.add(basename(path));
    // It may be the component an index was waiting for (deleted between its
    // upload and the check that found it missing): it counts as stored.
    this.fileStored(path);
  }

  pendingCount(): number {
    return this.#ledger.indexCount();
  }

  /** Resolves when no index is waiting. */
  idle(): Promise<void> {
    if (this.#ledger.indexCount() === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * The timer's work, callable with a fake clock: catches quiet periods and
   * deadlines, each index at most every `quietMs`. Resolves when the checks
   * it started are done.
   */
  checkDue(): Promise<void> {
    const now = this.#now();
    const every = this.#o.quietMs ?? 2_000;
    for (const entry of this.#ledger.indexes()) {
      // Waiting for named files, the stored-file notices drive the checks;
      // the timer then only looks now and then, in case one was missed.
      const interval = entry.awaiting?.size ? every * 5 : every;
      const stored = entry.storedSinceCheck && now - entry.checkedAt >= NO_TOC_CHECK_MS;
      if (now >= entry.deadline || now - entry.checkedAt >= interval || stored) {
        this.#evaluate(entry.dataPath);
      }
    }
    return this.settled();
  }

  /** Resolves when no check is running (tests: after `request` or `fileStored`). */
  settled(): Promise<void> {
    if (this.#busy.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#settledWaiters.push(resolve));
  }

  #evaluate(dataPath: string): void {
    if (this.#busy.has(dataPath)) {
      this.#again.add(dataPath);
      return;
    }
    this.#busy.add(dataPath);
    this.#tryPublish(dataPath)
      .catch((err) =>
        log.repeated(`index check ${dataPath}`, "error", "index check failed", {
          path: dataPath,
          error: errorMessage(err),
        })
      )
      .finally(() => {
        this.#busy.delete(dataPath);
        if (this.#again.delete(dataPath)) this.#evaluate(dataPath);
        if (this.#ledger.indexCount() === 0) {
          for (const resolve of this.#idleWaiters.splice(0)) resolve();
        }
        if (this.#busy.size === 0) {
          for (const resolve of this.#settledWaiters.splice(0)) resolve();
        }
      });
  }

  /** The index is written (`complete`: with its whole live set) or, unwritten, given up. */
  #settle(dataPath: string, written: boolean, complete = false): void {
    const wasFrozen = this.#ledger.index(dataPath)?.frozen;
    this.#ledger.settleIndex(dataPath, { written, complete });
    // Indexes of the directory cut later may have waited for this one.
    if (wasFrozen) {
      for (const other of this.#ledger.indexesIn(dirname(dataPath))) this.#evaluate(other.dataPath);
    }
  }

  async #tryPublish(dataPath: string): Promise<void> {
    const entry = this.#ledger.index(dataPath);
    if (!entry) return;
    const now = this.#now();
    const directory = dirname(dataPath);
    if (now < entry.notBefore || (this.#inBacklog && !this.#swept.has(directory))) return;
    entry.checkedAt = now;
    entry.storedSinceCheck = false;
    const cut = entry.frozen
      ? frozenCut(this.#cutContext(directory), entry)
      : this.#cutNow(entry, now);
    if (cut === null) return;
    if ((entry.backlog || entry.frozen) && cut.inFlight) {
      entry.deadline = Math.max(entry.deadline, now + this.#o.waitMs);
    }
    if (entry.frozen && cut.waiting.has(basename(dataPath))) {
      // Never published without its own Data.db: wait while it is on its way.
      if (this.#files.isPending(dataPath)) return;
      log.warn("index not written: its Data.db did not reach the bucket", { path: dataPath });
      this.#settle(dataPath, false);
      return;
    }
    if (!cut.complete && now < entry.deadline) return;
    if (earlierCutPending(this.#ledger, entry, cut.at)) return;
    if (!cut.complete) {
      log.warn("index written without some files of its directory", {
        path: dataPath,
        missing: [...cut.waiting].sort().join(",") || "(no TOC.txt)",
      });
    }
    let key: string;
    try {
      key = await this.#writer.write(dataPath, directory, cut);
    } catch (err) {
      key = indexKey(this.#o.naming, dataPath);
      entry.failures++;
      entry.notBefore = now + backoffMs(INDEX_PUT_BACKOFF, entry.failures);
      log.repeated(`index put ${key}`, "warn", "index upload failed, will retry", {
        key,
        error: errorMessage(err),
      });
      return;
    }
    this.published++;
    this.#settle(dataPath, true, cut.complete);
    log.info("index written", { key, files: cut.names.length });
  }

  /**
   * Reads the directory for a cut now; null when there is nothing to
   * publish yet (or ever: the entry is then dropped). With --pin a cut
   * whose every file is secured is frozen.
   */
  #cutNow(entry: IndexRecord, now: number): Cut | null {
    const dataPath = entry.dataPath;
    const directory = dirname(dataPath);
    const files = fileNamesOrNull(directory);
    if (files === null) {
      // The directory is gone (table dropped): nothing consistent to publish.
      log.warn("index not written: directory vanished", { path: dataPath });
      this.#settle(dataPath, false);
      return null;
    }
    if (!files.has(basename(dataPath))) {
      log.warn("index not written: its Data.db is no longer in the directory", {
        path: dataPath,
      });
      this.#settle(dataPath, false);
      return null;
    }
    const { secured, members, ...cut } = liveSet(this.#cutContext(directory), entry, files, now);
    if (secured) {
      entry.frozen = { names: members, at: now };
      return frozenCut(this.#cutContext(directory), entry);
    }
    // Requested when pinned: not published before its own Data.db is stored.
    if (!this.#files.isStored(dataPath)) return null;
    return { ...cut, at: now };
  }

  #cutContext(directory: string): CutContext {
    return {
      files: this.#files,
      filter: this.#o.filter,
      isPinned: this.#o.isPinned,
      quietMs: this.#o.quietMs ?? 2_000,
      deleted: this.#deletedByUs.get(directory) ?? new Set<string>(),
      tocComponents: (tocPath) => this.#tocs.components(tocPath),
    };
  }
}
