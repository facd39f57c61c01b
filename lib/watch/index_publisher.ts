/**
 * The `-listdir.json` index written beside every uploaded Data.db: a JSON
 * object mapping the directory to the names of its files, so a restore can
 * fetch exactly one consistent set.
 *
 * Rule (stricter than the original, which listed the directory blindly): an
 * index names only files already in the bucket, so every index is a
 * complete restore point. It waits, up to `waitMs`, for every component of
 * the Data.db's own SSTable generation (`nb-7-big-*` for `nb-7-big-Data.db`,
 * `ks-tbl-ka-7-*` in the older naming): when the generation's TOC.txt is
 * there, for every component it lists; without one, until the generation's
 * files have stopped appearing for `quietMs`.
 */
import { indexBody } from "../bucket/index_body.ts";
import { indexKey, type KeyNaming } from "../bucket/keys.ts";
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

export interface IndexPublisherOptions {
  store: Store;
  naming: KeyNaming;
  filter: PathFilter;
  /** Is this file in the bucket with this size? (the pipeline knows) */
  isStored(path: string, size?: number): boolean;
  waitMs: number;
  quietMs?: number;
  now?: () => number;
}

interface PendingIndex {
  dataPath: string;
  /** The generation's file name prefix (`nb-7-big-`). */
  prefix: string;
  /** When the timer last looked: it looks at most every `quietMs`. */
  checkedAt: number;
  deadline: number;
  /** Generation file names seen so far, and when that set last grew. */
  seen: Set<string>;
  changedAt: number;
  failures: number;
  notBefore: number;
  /**
   * With a TOC.txt, the components the last check found missing: the TOC
   * names them all, so nothing needs re-reading the directory until the
   * last one is stored (or the deadline comes). Null without a TOC.
   */
  awaiting: Set<string> | null;
}

export class IndexPublisher {
  readonly #o: IndexPublisherOptions;
  readonly #pending = new Map<string, PendingIndex>();
  readonly #busy = new Set<string>();
  /** Indexes asked to be checked while a check was running: checked once more after. */
  readonly #again = new Set<string>();
  /** Names we deleted locally after upload (--delete-on-backup), per directory. */
  readonly #deletedByUs = new Map<string, Set<string>>();
  /** Data.db files found in the bucket at start without their index. */
  #unindexed = new Set<string>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #idleWaiters: (() => void)[] = [];
  #settledWaiters: (() => void)[] = [];
  readonly #publishedListeners: ((dataPath: string, directory: string) => void)[] = [];
  published = 0;

  constructor(options: IndexPublisherOptions) {
    this.#o = options;
  }

  #now(): number {
    return this.#o.now?.() ?? Date.now();
  }

  /** Calls `listener` after each index is written. */
  onPublished(listener: (dataPath: string, directory: string) => void): void {
    this.#publishedListeners.push(listener);
  }

  /** Starts the timer that re-checks waiting indexes. */
  start(intervalMs = 500): void {
    this.#timer ??= setInterval(() => this.checkDue(), intervalMs);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** A Data.db is in the bucket: publish its index once its generation is. */
  request(dataPath: string): void {
    if (this.#pending.has(dataPath)) return;
    const now = this.#now();
    this.#pending.set(dataPath, {
      dataPath,
      prefix: generationPrefix(basename(dataPath)) ?? basename(dataPath),
      checkedAt: now,
      deadline: now + this.#o.waitMs,
      seen: new Set(),
      changedAt: now,
      failures: 0,
      notBefore: 0,
      awaiting: null,
    });
    this.#evaluate(dataPath);
  }

  /**
   * A file reached the bucket (uploaded now, or found there). An uploaded
   * Data.db asks for its index; so does one found without an index at start
   * (see `expectIndexes`). Other files may complete a waiting index.
   */
  stored(path: string, outcome: "uploaded" | "present"): void {
    this.fileStored(path);
    if (wantsIndex(path) && (outcome === "uploaded" || this.#unindexed.delete(path))) {
      this.request(path);
    }
  }

  /** Data.db files the bucket holds without their index (-B writes those indexes). */
  expectIndexes(dataPaths: Set<string>): void {
    this.#unindexed = dataPaths;
  }

  /** A file reached the bucket: the index of its own generation may be ready. */
  fileStored(path: string): void {
    const directory = dirname(path);
    const name = basename(path);
    for (const [dataPath, entry] of this.#pending) {
      if (dirname(dataPath) === directory && name.startsWith(entry.prefix)) {
        entry.awaiting?.delete(name);
        if (!entry.awaiting?.size) this.#evaluate(dataPath);
      }
    }
  }

  /** Directories with an index still to publish (delete-on-backup waits for them). */
  hasPendingIn(directory: string): boolean {
    for (const dataPath of this.#pending.keys()) if (dirname(dataPath) === directory) return true;
    return false;
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
      // Waiting for named components, the stored-file notices drive the
      // checks; the timer then only looks now and then, in case one was missed.
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

  async #tryPublish(dataPath: string): Promise<void> {
    const entry = this.#pending.get(dataPath);
    if (!entry) return;
    const now = this.#now();
    if (now < entry.notBefore) return;
    entry.checkedAt = now;
    const directory = dirname(dataPath);
    const prefix = entry.prefix;
    const files = fileNamesOrNull(directory);
    if (files === null) {
      // The directory is gone (table dropped): nothing consistent to publish.
      log.warn("index not written: directory vanished", { path: dataPath });
      this.#pending.delete(dataPath);
      return;
    }
    const accepts = (name: string) => this.#o.filter.accepts(`${directory}/${name}`);
    // Until it publishes, a check only needs the Data.db's own generation.
    const generation = [...files].filter((n) => n.startsWith(prefix) && accepts(n));
    const sizes = sizesOf(directory, generation);
    for (const name of generation) {
      if (!entry.seen.has(name)) {
        entry.seen.add(name);
        entry.changedAt = now;
      }
    }
    const missing = new Set(
      generation.filter((n) => !this.#o.isStored(`${directory}/${n}`, sizes.get(n) ?? -1)),
    );
    // Components we uploaded and then deleted (--delete-on-backup) are safe.
    const deleted = this.#deletedByUs.get(directory) ?? new Set<string>();
    const tocText = readTextOrNull(`${directory}/${prefix}TOC.txt`);
    const toc = tocText === null ? null : parseToc(tocText);
    if (toc) {
      for (const component of toc) {
        const name = `${prefix}${component}`;
        if (deleted.has(name)) continue;
        if (!files.has(name) || !this.#o.isStored(`${directory}/${name}`, sizes.get(name) ?? -1)) {
          if (this.#o.filter.accepts(`${directory}/${name}`)) missing.add(name);
        }
      }
    }
    entry.awaiting = toc ? missing : null;
    const quiet = now - entry.changedAt >= (this.#o.quietMs ?? 2_000);
    const complete = missing.size === 0 && (toc !== null || quiet);
    if (!complete && now < entry.deadline) return;
    if (!complete) {
      log.warn("index written without some components of its generation", {
        path: dataPath,
        missing: [...missing].sort().join(",") || "(no TOC.txt)",
      });
    }
    const names = [
      ...new Set([
        ...[...files].filter((n) =>
          accepts(n) && this.#o.isStored(`${directory}/${n}`, sizes.get(n))
        ),
        ...deleted,
      ]),
    ].sort();
    if (!names.includes(basename(dataPath))) {
      log.warn("index not written: its Data.db is no longer in the directory", {
        path: dataPath,
      });
      this.#pending.delete(dataPath);
      return;
    }
    const key = indexKey(this.#o.naming, dataPath);
    try {
      await this.#o.store.putBytes(key, new TextEncoder().encode(indexBody(directory, names)), {
        contentType: "application/json",
      });
    } catch (err) {
      entry.failures++;
      entry.notBefore = now + backoffMs(INDEX_PUT_BACKOFF, entry.failures);
      log.warn("index upload failed, will retry", { key, error: errorMessage(err) });
      return;
    }
    this.#pending.delete(dataPath);
    this.published++;
    log.info("index written", { key, files: names.length });
    for (const listener of this.#publishedListeners) listener(dataPath, directory);
  }
}

/**
 * Sizes of the named files (only a generation's few files are stat'ed).
 * Synchronous, like every local read of a check: microseconds each, where
 * the async forms cost several times the CPU (measured with 10,000 files).
 */
function sizesOf(directory: string, names: string[]): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const name of names) {
    const info = lstatOrNull(`${directory}/${name}`);
    if (info) sizes.set(name, info.size);
  }
  return sizes;
}
