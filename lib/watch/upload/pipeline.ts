/**
 * The upload pipeline: takes "this file is complete" facts and makes them
 * objects in the bucket. It owns the bounded pool (`-t` uploads at once) and
 * the retry rules: a try-cycle is 1 + `--retries` attempts; a file whose
 * cycle failed waits (5 s doubling up to 5 min) and is tried again, never
 * dropped. Each file is one `FileRecord` in the ledger (ledger.ts), moved
 * only through it; one upload is `FileUploader`'s (upload_file.ts). Who else
 * cares about a file (the journal, pins, the index publisher) follows the
 * ledger's events, not the pipeline. With `--pin` an upload reads the pin.
 */
import { FileHasher } from "../../common/file_hasher.ts";
import { errorMessage } from "../../common/errors.ts";
import { fileNamesOrNull } from "../../common/fs.ts";
import { log } from "../../common/log.ts";
import { roundSeconds } from "../../common/format.ts";
import { type Backoff, backoffMs, retry } from "../../common/retry.ts";
import { type KeyNaming, objectKey } from "../../bucket/keys.ts";
import { failureReason } from "../../store/failure.ts";
import type { Store } from "../../store/store.ts";
import { type Clock, sleepOn, systemClock } from "../clock.ts";
import { BucketView, type RemoteListing } from "./bucket_view.ts";
import {
  type FileRecord,
  Ledger,
  type PendingSummary,
  type StoredOutcome,
  type StoredVersion,
} from "../ledger.ts";
import type { UploadJournal } from "./multipart_resume.ts";
import { FileUploader } from "./upload_file.ts";

/** Between the attempts of one try-cycle. */
const ATTEMPT_BACKOFF: Backoff = { firstMs: 500, maxMs: 30_000, jitter: "half" };
/** Between try-cycles of a file that keeps failing. */
const CYCLE_BACKOFF: Backoff = { firstMs: 5_000, maxMs: 300_000, jitter: "half" };

/**
 * Queued files past which a sweep waits (`room()`), and to which the queue
 * falls before it goes on: a queued file holds a full record (about 350
 * bytes), and a -B start-up over a million files must not hold them all.
 */
const QUEUE_ROOM = 2_000;
const QUEUE_RESUME = 1_000;

/** Remembered stored files before the first pruning of deleted ones. */
const STORED_PRUNE_MIN = 10_000;

/** What the pipeline reports, for metrics. `Metrics` implements it. */
export interface UploadObserver {
  fileUploaded(root: string, bytes: number, seconds: number): void;
  uploadFailed(reason: string): void;
  uploadRetried(reason: string): void;
}

/** `--pin` as the pipeline uses it. `Pins` (pins.ts) implements it. */
export interface PipelinePins {
  /** The file an upload of `path` reads: its pin, or undefined (the original). */
  sourceOf(path: string): string | undefined;
}

export interface UploadPipelineOptions {
  store: Store;
  naming: KeyNaming;
  /** Uploads at once (`-t`). */
  threads: number;
  /** Extra attempts per try-cycle (`--retries`); then the file waits for a later cycle. */
  retries: number;
  /** Files larger than this many bytes go multipart (`--max-upload-size`). */
  multipartThreshold: number;
  /** Part size in bytes (`--multipart-chunk-size`). */
  partSize: number;
  /** Compare MD5s, not only sizes, with objects found in the bucket. */
  md5OnStart: boolean;
  observer?: UploadObserver;
  /** The watched root a path belongs to (a metrics label). */
  rootOf?: (path: string) => string;
  /** Stored files remembered before deleted ones are first pruned (default 10,000). */
  pruneStoredAfter?: number;
  /** The watcher's records (a new ledger of its own when not given). */
  ledger?: Ledger;
  /** The durable journal (`--state-dir`): which multipart uploads are in flight. */
  journal?: UploadJournal | undefined;
  /** `--pin`: complete files are uploaded from their pin. */
  pins?: PipelinePins | undefined;
  /** Time and timers (tests move them by hand). */
  clock?: Clock;
}

export type { StoredOutcome };

export interface PipelineSummary {
  uploaded: number;
  uploadedBytes: number;
  skipped: number;
  failed: number;
}

export class UploadPipeline {
  readonly #o: UploadPipelineOptions;
  /** The records (this pipeline moves them; everyone else reads them). */
  readonly ledger: Ledger;
  readonly #clock: Clock;
  readonly #bucket: BucketView;
  readonly #uploader: FileUploader;
  readonly #abort = new AbortController();
  /** Its thread runs while uploads are in flight, and stops when the pipeline is idle. */
  readonly #hasher: FileHasher;
  #pruneStoredAt: number;
  #pruning = false;
  #accepting = true;
  #idleWaiters: (() => void)[] = [];
  #roomWaiters: (() => void)[] = [];
  readonly summary: PipelineSummary = { uploaded: 0, uploadedBytes: 0, skipped: 0, failed: 0 };

  constructor(options: UploadPipelineOptions) {
    this.#o = options;
    this.#pruneStoredAt = options.pruneStoredAfter ?? STORED_PRUNE_MIN;
    this.ledger = options.ledger ?? new Ledger();
    this.#clock = options.clock ?? systemClock;
    this.#bucket = new BucketView(options.store);
    // An encrypting store hashes what it reads itself, and its cipher
    // buffers leave no room in the memory bound for the hashing thread.
    this.#hasher = new FileHasher({ offThread: options.store.traits.bodyIsFile });
    this.#uploader = new FileUploader({
      store: options.store,
      naming: options.naming,
      bucket: this.#bucket,
      multipartThreshold: options.multipartThreshold,
      partSize: options.partSize,
      md5OnStart: options.md5OnStart,
      signal: this.#abort.signal,
      journal: options.journal,
      hasher: this.#hasher,
    });
  }

  /** Uses a startup listing instead of asking the bucket per file (until set to undefined). */
  setListing(listing: RemoteListing | undefined): void {
    this.#bucket.setStartupListing(listing);
  }

  /**
   * Accepts a complete file. Returns at once; the upload happens in the
   * pool. `since` is when the file became complete (for the RPO metric).
   */
  enqueue(path: string, since = this.#clock.now()): void {
    if (!this.#accepting) return;
    const record = this.ledger.getOrCreate(path);
    let queue = true;
    switch (record.state) {
      case "uploading":
        record.again = true;
        queue = false;
        break;
      case "queued":
        queue = false;
        break;
      case "retrying":
        // A new fact about a failed file: try now rather than at its timer.
        record.since = Math.min(since, record.since);
        break;
      case "resting":
        record.since = since;
    }
    if (queue) this.ledger.move(record, "queued");
    // Once pending (whoever hears of the pin finds the file on its way), and
    // before its upload can start (which then reads the pin).
    this.ledger.complete(path);
    if (queue) this.#pump();
  }

  /**
   * Undefined while the queue has room for more files, else a promise that
   * resolves once it has drained to half (or the pipeline stops taking work).
   */
  room(): Promise<void> | undefined {
    if (!this.#accepting || this.ledger.count("queued") < QUEUE_ROOM) return undefined;
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  #wakeRoomWaiters(): void {
    if (this.#roomWaiters.length === 0) return;
    if (this.#accepting && this.ledger.count("queued") > QUEUE_RESUME) return;
    for (const resolve of this.#roomWaiters.splice(0)) resolve();
  }

  /** Files and the oldest completion time of everything not yet in the bucket. */
  pending(): PendingSummary {
    return this.ledger.pending();
  }

  /** Paths between failed try-cycles (what --once reports as failed). */
  failedPaths(): string[] {
    return this.ledger.inState("retrying").map((r) => r.path);
  }

  /** Resolves when nothing is queued or uploading (failed files may wait). */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Stops taking work, lets in-flight uploads finish for up to `graceMs`,
   * then aborts them (the store aborts multipart uploads). Returns the
   * paths that were not uploaded.
   */
  async shutdown(graceMs: number): Promise<string[]> {
    this.#accepting = false;
    this.#wakeRoomWaiters();
    const notStarted = [...this.ledger.inState("queued"), ...this.ledger.inState("retrying")];
    // Not uploaded: the journal keeps them for the next start.
    for (const record of notStarted) this.ledger.move(record, "resting", { unfinished: true });
    const inFlight = this.ledger.inState("uploading");
    if (inFlight.length > 0) {
      log.info("waiting for uploads in progress", {
        files: inFlight.length,
        grace: graceMs / 1000,
      });
      const graceOver = new AbortController();
      await Promise.race([this.idle(), sleepOn(this.#clock, graceMs, graceOver.signal)]);
      graceOver.abort();
      const still = this.ledger.count("uploading");
      if (still > 0) {
        log.warn("aborting uploads still in progress", { files: still });
        this.#abort.abort(new Error("shutting down"));
        await this.idle();
      }
    }
    this.#hasher.close();
    const unfinished = inFlight.filter((r) => !this.ledger.isStored(r.path)).map((r) => r.path);
    return [...notStarted.map((r) => r.path), ...unfinished];
  }

  #isIdle(): boolean {
    return this.ledger.count("queued") === 0 && this.ledger.count("uploading") === 0;
  }

  #pump(): void {
    while (this.ledger.count("uploading") < this.#o.threads) {
      const record = this.ledger.nextQueued();
      if (!record) break;
      this.ledger.move(record, "uploading");
      this.#wakeRoomWaiters();
      let finished = false;
      this.#runCycle(record).then((outcome) => finished = outcome).finally(() => {
        if (record.state === "uploading") {
          const again = record.again && this.#accepting;
          // Stopped by shutdown, or a newer version is not uploaded: still pending.
          const unfinished = !finished || record.again;
          // Unfinished (shutdown): neither held nor released, kept for the next start.
          this.ledger.move(record, again ? "queued" : "resting", { unfinished });
        }
        this.#pump();
        if (this.#isIdle()) {
          this.#hasher.close();
          for (const resolve of this.#idleWaiters.splice(0)) resolve();
        }
      });
    }
  }

  /**
   * One try-cycle: up to 1 + retries attempts; past them the file waits for
   * the next cycle. True when the file reached its outcome (in the bucket,
   * skipped, gone); false when it failed or shutdown aborted it.
   */
  async #runCycle(record: FileRecord): Promise<boolean> {
    const key = objectKey(this.#o.naming, record.path);
    const attempts = 1 + this.#o.retries;
    try {
      await retry(() => this.#uploadOnce(record), {
        attempts,
        backoff: ATTEMPT_BACKOFF,
        signal: this.#abort.signal,
        sleep: (ms, signal) => sleepOn(this.#clock, ms, signal),
        onRetry: (err, attempt, ms) => {
          const reason = failureReason(err);
          this.#o.observer?.uploadRetried(reason);
          // An outage fails every file alike: one line, then a count per period.
          log.repeated(
            `upload retry ${reason} ${errorMessage(err)}`,
            "warn",
            "upload failed, retrying",
            {
              key,
              reason,
              error: errorMessage(err),
              attempt,
              retry_in: roundSeconds(ms / 1000),
            },
          );
        },
      });
      record.failedCycles = 0;
      return true;
    } catch (err) {
      if (this.#abort.signal.aborted) return false;
      const reason = failureReason(err);
      this.#o.observer?.uploadFailed(reason);
      this.summary.failed++;
      record.failedCycles++;
      const wait = backoffMs(CYCLE_BACKOFF, record.failedCycles);
      log.repeated(
        `upload failed ${reason} ${errorMessage(err)}`,
        "error",
        "upload failed, will try again",
        {
          key,
          reason,
          error: errorMessage(err),
          attempts,
          retry_in: roundSeconds(wait / 1000),
        },
      );
      if (!this.#accepting) return false;
      this.ledger.move(record, "retrying");
      const timer = this.#clock.setTimeout(() => {
        if (record.state === "retrying") this.enqueue(record.path, record.since);
      }, wait);
      record.cancelRetry = () => this.#clock.clearTimeout(timer);
      return false;
    }
  }

  async #uploadOnce(record: FileRecord): Promise<void> {
    const source = this.#o.pins?.sourceOf(record.path);
    const outcome = await this.#uploader.upload(
      source ?? record.path,
      record.stored,
      (bytes) => record.bytes = bytes,
      record.path,
    );
    switch (outcome.kind) {
      case "skipped":
        return;
      case "conflict":
        this.summary.skipped++;
        return;
      case "present":
        this.summary.skipped++;
        this.#stored(record, outcome.version, "present");
        return;
      case "uploaded": {
        const { size } = outcome.version;
        this.summary.uploaded++;
        this.summary.uploadedBytes += size;
        this.#o.observer?.fileUploaded(
          this.#o.rootOf?.(record.path) ?? record.path,
          size,
          outcome.seconds,
        );
        log.info("uploaded", {
          key: objectKey(this.#o.naming, record.path),
          bytes: size,
          seconds: roundSeconds(outcome.seconds),
          parts: outcome.parts,
        });
        this.#stored(record, outcome.version, "uploaded");
      }
    }
  }

  #stored(record: FileRecord, version: StoredVersion, outcome: StoredOutcome): void {
    this.ledger.stored(record, version, outcome);
    if (this.ledger.storedCount() >= this.#pruneStoredAt && !this.#pruning) {
      void this.#pruneStored();
    }
  }

  /**
   * Compaction deletes files all day long: records of stored files that are
   * gone are dropped each time their number has doubled, so a watcher
   * running for months does not grow without end. A directory at a time:
   * one listing of it answers for all its files.
   */
  async #pruneStored(): Promise<void> {
    this.#pruning = true;
    try {
      let looked = 0;
      for (const directory of this.ledger.storedDirectories()) {
        try {
          this.ledger.forgetGone(directory, fileNamesOrNull(directory));
        } catch {
          // unreadable now (permissions): keep them, look again next time
        }
        if (++looked % 100 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
      }
    } finally {
      this.#pruneStoredAt = Math.max(
        this.#o.pruneStoredAfter ?? STORED_PRUNE_MIN,
        this.ledger.storedCount() * 2,
      );
      this.#pruning = false;
    }
  }
}
