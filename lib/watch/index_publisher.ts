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
 *   with what is there (a warning, and the incomplete-index metric). For a
 *   -B backlog, the wait starts once the directory's files have stopped
 *   uploading, and nothing is published before the start-up sweep has
 *   queued every existing file, so each names the whole directory;
 * - it records its cut time (when the directory was read for it) to the
 *   millisecond in its `cut-time` metadata.
 *
 * With `--pin` (pins.ts) the cut is taken early and kept: the index is
 * requested as soon as its Data.db is pinned, and once its generation is
 * whole and every file of the live set is in the bucket or pinned, that
 * live set and that moment are frozen as its cut. It is then published
 * when those files have reached the bucket, even if compaction has deleted
 * them meanwhile (their pins still hold them): an index cut before a
 * compaction names its inputs, and restores them.
 */
import { indexBody } from "../bucket/index_body.ts";
import { CUT_TIME_METADATA } from "../bucket/index_reader.ts";
import { indexKey, type KeyNaming, recutIndexKey } from "../bucket/keys.ts";
import { generationPrefix, parseToc, wantsIndex } from "../bucket/sstable.ts";
import { errorMessage } from "../common/errors.ts";
import { fileNamesOrNull, lstatOrNull, readTextOrNull } from "../common/fs.ts";
import { log } from "../common/log.ts";
import { basename, dirname } from "../common/paths.ts";
import { type Backoff, backoffMs } from "../common/retry.ts";
import type { Store } from "../store/store.ts";
import type { PathFilter } from "./path_filter.ts";

/** Between failed uploads of one index. */
const INDEX_PUT_BACKOFF: Backoff = { firstMs: 2_000, maxMs: 60_000, jitter: "none" };

/** Components Cassandra rewrites in place: a new version means a new live set. */
const MUTABLE_COMPONENTS = ["Statistics.db", "Summary.db", "TOC.txt"];

export interface IndexPublisherOptions {
  store: Store;
  naming: KeyNaming;
  filter: PathFilter;
  /** Is this file in the bucket with this size? (the pipeline knows) */
  isStored(path: string, size?: number): boolean;
  /** Is this file complete and on its way: queued, uploading or waiting to retry? */
  isPending?(path: string): boolean;
  /** Is it queued or uploading right now (a -B backlog waits for those)? */
  isInFlight?(path: string): boolean;
  /** `--pin`: is this file pinned (held for its upload whatever compaction does)? */
  isPinned?(path: string): boolean;
  waitMs: number;
  quietMs?: number;
  now?: () => number;
}

interface PendingIndex {
  dataPath: string;
  /** The generation's file name prefix (`nb-7-big-`). */
  prefix: string;
  /** Requested during the -B backlog: its wait starts when the directory stops uploading. */
  backlog: boolean;
  /** When the timer last looked: it looks at most every `quietMs`. */
  checkedAt: number;
  deadline: number;
  /** Generation file names seen so far, and when that set last grew. */
  seen: Set<string>;
  changedAt: number;
  failures: number;
  notBefore: number;
  /**
   * The files the last check waited for, when the own generation has a
   * TOC.txt: nothing needs re-reading the directory until the last one is
   * stored (or the deadline comes). Null without a TOC (the quiet period
   * needs looking).
   */
  awaiting: Set<string> | null;
  /** With --pin: the live set and the moment it was cut, once every file of it was secured. */
  frozen: { names: string[]; at: number } | null;
}

/** What an index names now, and whether it may be published. */
interface Cut {
  names: string[];
  /** Files it waits for (named once in the bucket). */
  waiting: Set<string>;
  complete: boolean;
  /** Some of `waiting` are queued or uploading. */
  inFlight: boolean;
  /** The cut time (epoch ms) it records. */
  at: number;
}

/** Told after each index is written: `complete` is false when published at its deadline. */
export type PublishedListener = (dataPath: string, directory: string, complete: boolean) => void;

export class IndexPublisher {
  readonly #o: IndexPublisherOptions;
  readonly #pending = new Map<string, PendingIndex>();
  /** Pending data paths by directory: a stored file concerns only its directory's indexes. */
  readonly #byDirectory = new Map<string, Set<string>>();
  readonly #busy = new Set<string>();
  /** Indexes asked to be checked while a check was running: checked once more after. */
  readonly #again = new Set<string>();
  /** Names we deleted locally after upload (--delete-on-backup), per directory. */
  readonly #deletedByUs = new Map<string, Set<string>>();
  /** Data.db files found in the bucket at start without their index. */
  #unindexed = new Set<string>();
  /** True while the -B start-up sweep is still queueing existing files. */
  #inBacklog = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #idleWaiters: (() => void)[] = [];
  #settledWaiters: (() => void)[] = [];
  readonly #publishedListeners: PublishedListener[] = [];
  readonly #settledListeners: ((dataPath: string) => void)[] = [];
  published = 0;

  constructor(options: IndexPublisherOptions) {
    this.#o = options;
  }

  #now(): number {
    return this.#o.now?.() ?? Date.now();
  }

  /** Calls `listener` after each index is written. */
  onPublished(listener: PublishedListener): void {
    this.#publishedListeners.push(listener);
  }

  /** Calls `listener` when no index is pending for a Data.db any more (written or given up). */
  onSettled(listener: (dataPath: string) => void): void {
    this.#settledListeners.push(listener);
  }

  /** Starts the timer that re-checks waiting indexes. */
  start(intervalMs = 500): void {
    this.#timer ??= setInterval(() => this.checkDue(), intervalMs);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * The -B backlog: indexes requested until `endBacklog()` wait for the
   * start-up sweep to have queued every existing file.
   */
  beginBacklog(): void {
    this.#inBacklog = true;
  }

  endBacklog(): void {
    this.#inBacklog = false;
    for (const dataPath of this.#pending.keys()) this.#evaluate(dataPath);
  }

  /** A Data.db is in the bucket: publish its index once its directory's live set is. */
  request(dataPath: string): void {
    if (this.#pending.has(dataPath)) return;
    const now = this.#now();
    this.#pending.set(dataPath, {
      dataPath,
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
    const directory = dirname(dataPath);
    let inDirectory = this.#byDirectory.get(directory);
    if (!inDirectory) this.#byDirectory.set(directory, inDirectory = new Set());
    inDirectory.add(dataPath);
    this.#evaluate(dataPath);
  }

  /**
   * A file reached the bucket (uploaded now, or found there). An uploaded
   * Data.db asks for its index; so does one found without an index at start
   * (see `expectIndexes`), and a rewritten mutable component (its
   * generation's index is cut again). Any file may complete a waiting index.
   */
  stored(path: string, outcome: "uploaded" | "present"): void {
    this.fileStored(path);
    if (wantsIndex(path)) {
      const early = this.#pending.get(path);
      if (early && !early.frozen && this.#o.isPinned) {
        // Requested when pinned: its wait counts from its upload, as without --pin.
        early.deadline = Math.max(early.deadline, this.#now() + this.#o.waitMs);
      }
      if (outcome === "uploaded" || this.#unindexed.delete(path)) this.request(path);
      return;
    }
    const name = basename(path);
    const mutable = MUTABLE_COMPONENTS.find((c) => name.endsWith(c));
    if (outcome === "uploaded" && mutable) {
      const dataPath = `${dirname(path)}/${name.slice(0, -mutable.length)}Data.db`;
      if (this.#o.isStored(dataPath)) this.request(dataPath);
    }
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
    for (const dataPath of this.#byDirectory.get(dirname(path)) ?? []) {
      const entry = this.#pending.get(dataPath)!;
      if (!entry.frozen && name.startsWith(entry.prefix)) this.#evaluate(dataPath);
    }
  }

  /** True while the index of this Data.db is still to be written. */
  hasPendingIndex(dataPath: string): boolean {
    return this.#pending.has(dataPath);
  }

  /** Data.db files the bucket holds without their index (-B writes those indexes). */
  expectIndexes(dataPaths: Set<string>): void {
    this.#unindexed = dataPaths;
  }

  /** A file reached the bucket: an index of its directory may be ready. */
  fileStored(path: string): void {
    const name = basename(path);
    for (const dataPath of this.#byDirectory.get(dirname(path)) ?? []) {
      const entry = this.#pending.get(dataPath)!;
      if (entry.awaiting === null) {
        this.#evaluate(dataPath);
      } else if (entry.awaiting.delete(name) && entry.awaiting.size === 0) {
        this.#evaluate(dataPath);
      }
    }
  }

  /** Directories with an index still to publish (delete-on-backup waits for them). */
  hasPendingIn(directory: string): boolean {
    return (this.#byDirectory.get(directory)?.size ?? 0) > 0;
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
    return this.#pending.size;
  }

  /** Resolves when no index is waiting. */
  idle(): Promise<void> {
    if (this.#pending.size === 0) return Promise.resolve();
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
    for (const [dataPath, entry] of this.#pending) {
      // Waiting for named files, the stored-file notices drive the checks;
      // the timer then only looks now and then, in case one was missed.
      const interval = entry.awaiting?.size ? every * 5 : every;
      if (now >= entry.deadline || now - entry.checkedAt >= interval) this.#evaluate(dataPath);
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
      .catch((err) => log.error("index check failed", { path: dataPath, error: errorMessage(err) }))
      .finally(() => {
        this.#busy.delete(dataPath);
        if (this.#again.delete(dataPath)) this.#evaluate(dataPath);
        if (this.#pending.size === 0) {
          for (const resolve of this.#idleWaiters.splice(0)) resolve();
        }
        if (this.#busy.size === 0) {
          for (const resolve of this.#settledWaiters.splice(0)) resolve();
        }
      });
  }

  #forget(dataPath: string): void {
    const wasFrozen = this.#pending.get(dataPath)?.frozen;
    this.#pending.delete(dataPath);
    const inDirectory = this.#byDirectory.get(dirname(dataPath));
    inDirectory?.delete(dataPath);
    if (inDirectory?.size === 0) this.#byDirectory.delete(dirname(dataPath));
    for (const listener of this.#settledListeners) listener(dataPath);
    // Indexes of the directory cut later may have waited for this one.
    if (wasFrozen) { for (const other of inDirectory ?? []) this.#evaluate(other); }
  }

  /**
   * A frozen cut of the same directory, earlier than `at`, still to be
   * published: this index waits for it. So a directory's indexes reach the
   * bucket in the order of their cuts, even when one was cut long before
   * its files were uploaded (--pin), and readers that order indexes by
   * upload time (LastModified, see index_reader.ts) still find the newest.
   */
  #earlierCutPending(entry: PendingIndex, at: number): boolean {
    for (const other of this.#byDirectory.get(dirname(entry.dataPath)) ?? []) {
      const frozen = other === entry.dataPath ? null : this.#pending.get(other)?.frozen;
      if (!frozen) continue;
      // Cut in the same millisecond: the one named first goes first.
      if (frozen.at < at || (frozen.at === at && other < entry.dataPath)) return true;
    }
    return false;
  }

  async #tryPublish(dataPath: string): Promise<void> {
    const entry = this.#pending.get(dataPath);
    if (!entry) return;
    const now = this.#now();
    if (now < entry.notBefore || this.#inBacklog) return;
    entry.checkedAt = now;
    const directory = dirname(dataPath);
    const cut = entry.frozen ? this.#frozenCut(entry, directory) : this.#cutNow(entry, now);
    if (cut === null) return;
    if ((entry.backlog || entry.frozen) && cut.inFlight) {
      entry.deadline = Math.max(entry.deadline, now + this.#o.waitMs);
    }
    if (entry.frozen && cut.waiting.has(basename(dataPath))) {
      // Never published without its own Data.db: wait while it is on its way.
      if (this.#o.isPending?.(dataPath)) return;
      log.warn("index not written: its Data.db did not reach the bucket", { path: dataPath });
      this.#forget(dataPath);
      return;
    }
    if (!cut.complete && now < entry.deadline) return;
    if (this.#earlierCutPending(entry, cut.at)) return;
    if (!cut.complete) {
      log.warn("index written without some files of its directory", {
        path: dataPath,
        missing: [...cut.waiting].sort().join(",") || "(no TOC.txt)",
      });
    }
    let key = indexKey(this.#o.naming, dataPath);
    try {
      key = await this.#freeKey(dataPath, cut.at);
      await this.#o.store.putBytes(
        key,
        new TextEncoder().encode(indexBody(directory, cut.names)),
        {
          contentType: "application/json",
          metadata: { [CUT_TIME_METADATA]: new Date(cut.at).toISOString() },
        },
      );
    } catch (err) {
      entry.failures++;
      entry.notBefore = now + backoffMs(INDEX_PUT_BACKOFF, entry.failures);
      log.warn("index upload failed, will retry", { key, error: errorMessage(err) });
      return;
    }
    this.#forget(dataPath);
    this.published++;
    log.info("index written", { key, files: cut.names.length });
    for (const listener of this.#publishedListeners) listener(dataPath, directory, cut.complete);
  }

  /**
   * Where this cut goes: an index is never overwritten by another cut, so
   * that every restore point stays (a rewritten Statistics.db re-cuts its
   * generation). The generation's first index takes `<Data.db key>-listdir.json`,
   * later cuts `recutIndexKey`. One HEAD per index; the same cut again (a
   * retried put whose answer was lost) goes to the same key.
   */
  async #freeKey(dataPath: string, at: number): Promise<string> {
    const first = indexKey(this.#o.naming, dataPath);
    const head = await this.#o.store.head(first);
    if (head === null || head.metadata[CUT_TIME_METADATA] === new Date(at).toISOString()) {
      return first;
    }
    return recutIndexKey(this.#o.naming, dataPath, at);
  }

  /**
   * Reads the directory for a cut now; null when there is nothing to
   * publish yet (or ever: the entry is then dropped). With --pin a cut
   * whose every file is secured is frozen.
   */
  #cutNow(entry: PendingIndex, now: number): Cut | null {
    const dataPath = entry.dataPath;
    const directory = dirname(dataPath);
    const files = fileNamesOrNull(directory);
    if (files === null) {
      // The directory is gone (table dropped): nothing consistent to publish.
      log.warn("index not written: directory vanished", { path: dataPath });
      this.#forget(dataPath);
      return null;
    }
    if (!files.has(basename(dataPath))) {
      log.warn("index not written: its Data.db is no longer in the directory", {
        path: dataPath,
      });
      this.#forget(dataPath);
      return null;
    }
    const { secured, members, ...cut } = this.#liveSet(entry, directory, files, now);
    if (secured) {
      entry.frozen = { names: members, at: now };
      return this.#frozenCut(entry, directory);
    }
    // Requested when pinned: not published before its own Data.db is stored.
    if (!this.#o.isStored(dataPath)) return null;
    return { ...cut, at: now };
  }

  /** A frozen cut: its names, once in the bucket (their originals may be gone). */
  #frozenCut(entry: PendingIndex, directory: string): Cut {
    const { names, at } = entry.frozen!;
    const deleted = this.#deletedByUs.get(directory) ?? new Set<string>();
    const stored = (name: string) => {
      const path = `${directory}/${name}`;
      return deleted.has(name) || this.#o.isStored(path, lstatOrNull(path)?.size);
    };
    const waiting = new Set(names.filter((name) => !stored(name)));
    const inFlight = [...waiting].some((name) =>
      this.#o.isInFlight?.(`${directory}/${name}`) ?? false
    );
    entry.awaiting = waiting;
    return {
      names: names.filter((name) => !waiting.has(name)),
      waiting,
      complete: waiting.size === 0,
      inFlight,
      at,
    };
  }

  /**
   * The directory's live set as of now: the names an index cut now would
   * give (only files in the bucket), and whether it is complete yet.
   */
  #liveSet(entry: PendingIndex, directory: string, files: Set<string>, now: number) {
    const pathOf = (name: string) => `${directory}/${name}`;
    const accepted = [...files].filter((n) => this.#o.filter.accepts(pathOf(n)));
    const deleted = this.#deletedByUs.get(directory) ?? new Set<string>();
    const stored = (name: string) => {
      if (deleted.has(name)) return true;
      const size = lstatOrNull(pathOf(name))?.size;
      return size !== undefined && this.#o.isStored(pathOf(name), size);
    };
    const known = (name: string) =>
      deleted.has(name) || this.#o.isPending?.(pathOf(name)) || this.#o.isStored(pathOf(name));
    const tocOf = (prefix: string) => {
      const text = readTextOrNull(pathOf(`${prefix}TOC.txt`));
      return text === null ? null : parseToc(text).map((c) => `${prefix}${c}`)
        .filter((name) => this.#o.filter.accepts(pathOf(name)));
    };

    // The own generation: every component its TOC lists, else what has appeared.
    const own = accepted.filter((n) => n.startsWith(entry.prefix));
    for (const name of own) {
      if (!entry.seen.has(name)) {
        entry.seen.add(name);
        entry.changedAt = now;
      }
    }
    const ownToc = tocOf(entry.prefix);
    const members = new Set([...own, ...(ownToc ?? [])]);

    // Other generations with a TOC count only once whole; everything else once complete.
    const tocPrefixes = accepted.filter((n) => n.endsWith("TOC.txt") && !n.startsWith(entry.prefix))
      .map((n) => n.slice(0, -"TOC.txt".length))
      .sort((a, b) => b.length - a.length);
    const wholeGenerations = new Map<string, boolean>();
    for (const name of accepted) {
      if (members.has(name)) continue;
      const prefix = tocPrefixes.find((p) => name.startsWith(p));
      if (prefix === undefined) {
        if (known(name)) members.add(name);
        continue;
      }
      let whole = wholeGenerations.get(prefix);
      if (whole === undefined) {
        const toc = tocOf(prefix) ?? [];
        whole = toc.every((c) => files.has(c) ? known(c) : deleted.has(c));
        wholeGenerations.set(prefix, whole);
      }
      if (whole && known(name)) members.add(name);
    }
    for (const name of deleted) members.add(name);

    const waiting = new Set([...members].filter((name) => !stored(name)));
    const inFlight = [...waiting].some((name) => this.#o.isInFlight?.(pathOf(name)) ?? false);
    entry.awaiting = ownToc ? waiting : null;
    const quiet = now - entry.changedAt >= (this.#o.quietMs ?? 2_000);
    const whole = ownToc !== null || quiet;
    const complete = waiting.size === 0 && whole;
    const names = [...members].filter((name) => !waiting.has(name)).sort();
    // --pin: every file named is in the bucket or pinned, so will be.
    const isPinned = this.#o.isPinned;
    const secured = isPinned !== undefined && whole &&
      [...waiting].every((name) => isPinned(pathOf(name)));
    return { names, waiting, complete, inFlight, secured, members: [...members].sort() };
  }
}
