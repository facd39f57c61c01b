/**
 * The durable journal (`--state-dir DIR`): which files are complete but not
 * yet in the bucket, and the last checkpoint, so that a restart after
 * SIGKILL, a crash or a reboot uploads what was pending and looks only at
 * what changed since (see durable_state.ts). It persists the ledger's
 * transitions (`follow`) and the multipart uploads in flight. The file's
 * format is journal_format.ts's; the lock and durable rewrites,
 * journal_files.ts's.
 *
 * Cost on the upload path: `pending` and `done` only update two maps. The
 * lines are written by a batch every `FLUSH_DELAY_MS`, one write and one
 * fdatasync, off the event loop; a file whose `done` comes before its
 * `pending` was written (most uploads take a few ms) is never written at
 * all. Files complete less than ~100 ms before a crash may be missing: the
 * checkpoint rules of durable_state.ts find them anyway.
 *
 * Compaction: when the file passes `max(1 MiB, 4 x the live lines)`, and at
 * every start and clean stop, it is rewritten from the live entries
 * (temp file, fsync, rename, fsync of the directory), so it stays the size
 * of the backlog however long the watcher runs.
 */
import { writeAll } from "../../common/chunk_reader.ts";
import { errorMessage, FatalError } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import type { Ledger } from "../ledger.ts";
import type { InFlightUpload, UploadJournal } from "../upload/multipart_resume.ts";
import {
  batchLines,
  checkpointLine,
  HEADER,
  JOURNAL_FILE,
  type JournalRecovery,
  lineBytes,
  partLine,
  pendingLine,
  uploadBytes,
  uploadEndLine,
  uploadLines,
} from "./journal_format.ts";
import {
  type BatchStats,
  cannotUse,
  lockStateDir,
  noteBatch,
  readJournalFile,
  replaceDurably,
} from "./journal_files.ts";

/** What `open` finds without a journal: nothing is known of what happened before. */
const NO_JOURNAL = (): JournalRecovery => ({
  fresh: true,
  pending: new Map(),
  uploads: new Map(),
  checkpoint: undefined,
  damaged: false,
});

/** How long appends wait to be written together. */
const FLUSH_DELAY_MS = 100;
/** Below this size the journal is never compacted while running. */
const COMPACT_MIN_BYTES = 1024 * 1024;
/** Compact when the file is this many times the size of its live lines. */
const COMPACT_RATIO = 4;

export interface JournalOptions {
  flushDelayMs?: number;
  compactMinBytes?: number;
}

export class Journal implements UploadJournal {
  readonly dir: string;
  readonly path: string;
  readonly #lock: Deno.FsFile;
  #file: Deno.FsFile | undefined;
  readonly #flushDelayMs: number;
  readonly #compactMinBytes: number;
  /** Pending paths: what the file says plus what is waiting to be written. */
  readonly #live = new Map<string, number>();
  #liveBytes = 0;
  /** Multipart uploads in flight, by path: what the file says plus what is waiting. */
  readonly #uploads = new Map<string, InFlightUpload>();
  /** Upload lines not written yet, in order (uploads are few: each line is kept). */
  #uploadLines: string[] = [];
  /** Paths pending in the file as written (or being written right now). */
  #written = new Set<string>();
  /** Lines not written yet, by path: a since time for pending, null for done. */
  #unwritten = new Map<string, number | null>();
  /** A checkpoint asked for; written once the lines before it are synced. */
  #checkpointWanted: number | undefined;
  #checkpointReady: number | undefined;
  #checkpoint: number | undefined;
  #fileBytes = 0;
  /** The last write failed: the next one rewrites the file rather than append to it. */
  #broken = false;
  /** A write failure was logged (once until the journal is written again). */
  #reported = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  /** For the debug log and the benchmark notes: the last batch's cost. */
  readonly stats: BatchStats = {
    batches: 0,
    lines: 0,
    compactions: 0,
    lastBatchMs: 0,
    maxBatchMs: 0,
  };

  private constructor(dir: string, lock: Deno.FsFile, options: JournalOptions) {
    this.dir = dir;
    this.path = `${dir}/${JOURNAL_FILE}`;
    this.#lock = lock;
    this.#flushDelayMs = options.flushDelayMs ?? FLUSH_DELAY_MS;
    this.#compactMinBytes = options.compactMinBytes ?? COMPACT_MIN_BYTES;
  }

  /**
   * Creates the directory if needed, takes its lock, reads the journal
   * (reporting damage in one warning) and rewrites it compacted. Throws
   * `FatalError` (one line) when the directory cannot be used or another
   * watcher holds it.
   */
  static async open(
    dir: string,
    options: JournalOptions = {},
  ): Promise<{ journal: Journal; recovery: JournalRecovery }> {
    const lock = await lockStateDir(dir);
    const journal = new Journal(dir, lock, options);
    try {
      const recovery = await journal.#recover();
      // Written at once: proves the directory is writable before the watcher starts.
      await journal.#compact();
      return { journal, recovery };
    } catch (err) {
      journal.#file?.close();
      lock.close();
      throw err instanceof FatalError ? err : cannotUse(dir, err);
    }
  }

  async #recover(): Promise<JournalRecovery> {
    const contents = await readJournalFile(this.path);
    if (!contents) return NO_JOURNAL();
    const { pending, uploads } = contents;
    // A file whose upload was in flight was pending, even if its pending
    // line was not written yet (both are written by the same batches).
    for (const path of uploads.keys()) if (!pending.has(path)) pending.set(path, Date.now());
    for (const [path, since] of pending) this.#setLive(path, since);
    for (const [path, upload] of uploads) this.#setUpload(path, upload);
    const damaged = contents.damage !== undefined;
    // A damaged journal's checkpoint cannot be trusted: the whole tree is reconciled.
    const checkpoint = damaged ? undefined : contents.checkpoint;
    this.#checkpoint = checkpoint;
    return { fresh: false, pending, uploads, checkpoint, damaged };
  }

  /** The last checkpoint recorded (or asked for). */
  get checkpointTime(): number | undefined {
    return this.#checkpointWanted ?? this.#checkpointReady ?? this.#checkpoint;
  }

  /** How many paths are pending (or held). */
  get size(): number {
    return this.#live.size;
  }

  /**
   * Persists the ledger's transitions: leaving rest is `pending`, released
   * is `done`. A Data.db is released once its index is written: after a
   * crash before, it is queued again, found in the bucket, and indexed.
   */
  follow(ledger: Ledger): void {
    ledger.subscribe((event) => {
      if (event.type === "pending") this.pending(event.path, event.since);
      else if (event.type === "released") this.done(event.path);
    });
  }

  /** The file is complete and not in the bucket. */
  pending(path: string, since: number): void {
    if (this.#closed) return;
    if (this.#live.get(path) === since && this.#written.has(path) && !this.#unwritten.has(path)) {
      return; // already in the file as it is (a replayed entry queued again)
    }
    this.#setLive(path, since);
    this.#unwritten.set(path, since);
    this.#flushSoon();
  }

  /** The multipart upload in flight for `path`, if any. */
  upload(path: string): InFlightUpload | undefined {
    return this.#uploads.get(path);
  }

  /** Every multipart upload in flight, by path (a snapshot). */
  uploads(): [string, InFlightUpload][] {
    return [...this.#uploads];
  }

  /** A multipart upload of `path` began (it replaces any earlier one of the path). */
  uploadStarted(path: string, upload: Omit<InFlightUpload, "parts">): void {
    if (this.#closed) return;
    const entry = { ...upload, parts: new Map<number, string>() };
    this.#setUpload(path, entry);
    this.#uploadLines.push(...uploadLines(path, entry));
    this.#flushSoon();
  }

  /** Part `n` of the upload in flight for `path` is stored. */
  partDone(path: string, n: number, etag: string): void {
    const upload = this.#uploads.get(path);
    if (this.#closed || !upload) return;
    this.#liveBytes -= uploadBytes(path, upload);
    upload.parts.set(n, etag);
    this.#liveBytes += uploadBytes(path, upload);
    this.#uploadLines.push(partLine(path, n, etag));
    this.#flushSoon();
  }

  /** The upload in flight for `path` completed or was aborted. */
  uploadEnded(path: string): void {
    const upload = this.#uploads.get(path);
    if (this.#closed || !upload) return;
    this.#uploads.delete(path);
    this.#liveBytes -= uploadBytes(path, upload);
    this.#uploadLines.push(uploadEndLine(path));
    this.#flushSoon();
  }

  /** The file rests for good: in the bucket (and indexed), skipped or gone. */
  done(path: string): void {
    if (this.#closed) return;
    this.#remove(path);
  }

  /**
   * Records that every file changed before `at` is in the bucket or
   * pending here (durable_state.ts establishes it). Written only after every
   * line appended before it is synced; never moves back.
   */
  checkpoint(at: number): void {
    if (this.#closed) return;
    const current = this.checkpointTime;
    if (current !== undefined && at <= current) return;
    this.#checkpointWanted = at;
    this.#flushSoon();
  }

  /** Writes and syncs everything appended so far. */
  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#chain = this.#chain.then(() => this.#writeBatch());
    return this.#chain;
  }

  /** Flushes, compacts, releases the lock. Later appends are ignored. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#chain = this.#chain.then(() => this.#compact().catch((err) => this.#failed(err)));
    await this.#chain;
    this.#file?.close();
    this.#file = undefined;
    await this.#lock.unlock().catch(() => {});
    this.#lock.close();
  }

  #setLive(path: string, since: number): void {
    const before = this.#live.get(path);
    if (before === undefined) this.#liveBytes += lineBytes(path);
    this.#live.set(path, since);
  }

  #setUpload(path: string, upload: InFlightUpload): void {
    const before = this.#uploads.get(path);
    if (before) this.#liveBytes -= uploadBytes(path, before);
    this.#uploads.set(path, upload);
    this.#liveBytes += uploadBytes(path, upload);
  }

  #remove(path: string): void {
    if (!this.#live.delete(path)) return;
    this.#liveBytes -= lineBytes(path);
    // Its pending line never reached the file: neither line has to.
    if (this.#written.has(path)) this.#unwritten.set(path, null);
    else this.#unwritten.delete(path);
    this.#flushSoon();
  }

  #flushSoon(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.flush();
    }, this.#flushDelayMs);
  }

  async #writeBatch(): Promise<void> {
    if (this.#broken) {
      await this.#compact().catch((err) => this.#failed(err));
      return;
    }
    const started = performance.now();
    const lines: string[] = [];
    const ready = this.#checkpointReady;
    if (ready !== undefined) lines.push(checkpointLine(ready));
    // Before the pending lines of the batch: only the upload lines' own order matters.
    lines.push(...this.#uploadLines);
    this.#uploadLines = [];
    const batch = this.#unwritten;
    this.#unwritten = new Map();
    // Counted as written from now: later lines are appended after these.
    lines.push(...batchLines(batch, this.#written));
    const wanted = this.#checkpointWanted;
    this.#checkpointWanted = undefined;
    if (lines.length > 0) {
      try {
        const bytes = new TextEncoder().encode(lines.join("\n") + "\n");
        await writeAll(this.#file!, bytes);
        await this.#file!.syncData();
        this.#fileBytes += bytes.length;
      } catch (err) {
        this.#broken = true;
        this.#checkpointWanted = wanted ?? ready ?? this.#checkpointWanted;
        this.#checkpointReady = undefined;
        this.#failed(err);
        this.#flushSoon();
        return;
      }
      if (ready !== undefined) {
        this.#checkpoint = ready;
        this.#checkpointReady = undefined;
      }
      noteBatch(this.stats, started, lines.length);
    }
    if (wanted !== undefined) {
      // The lines it covers are synced now: it goes first in the next batch.
      this.#checkpointReady = wanted;
      this.#flushSoon();
    }
    if (this.#unwritten.size > 0) this.#flushSoon();
    if (this.#fileBytes > Math.max(this.#compactMinBytes, COMPACT_RATIO * this.#liveBytes)) {
      await this.#compact().catch((err) => this.#failed(err));
    }
  }

  /** Rewrites the file from the live entries (durably: a crash leaves the old or the new). */
  async #compact(): Promise<void> {
    const checkpoint = this.checkpointTime;
    const lines = [HEADER];
    if (checkpoint !== undefined) lines.push(checkpointLine(checkpoint));
    for (const [path, since] of this.#live) lines.push(pendingLine(path, since));
    for (const [path, upload] of this.#uploads) lines.push(...uploadLines(path, upload));
    // Everything live is in this file: what was waiting is written with it.
    this.#uploadLines = [];
    const unwritten = this.#unwritten;
    const written = this.#written;
    this.#unwritten = new Map();
    this.#written = new Set(this.#live.keys());
    this.#checkpointWanted = undefined;
    this.#checkpointReady = undefined;
    const bytes = new TextEncoder().encode(lines.join("\n") + "\n");
    try {
      await replaceDurably(this.dir, this.path, bytes);
      this.#file?.close();
      this.#file = await Deno.open(this.path, { append: true });
    } catch (err) {
      // Put things back as they were: the next batch tries again.
      for (const [path, since] of unwritten) {
        if (!this.#unwritten.has(path)) this.#unwritten.set(path, since);
      }
      this.#written = written;
      this.#checkpointWanted = checkpoint;
      this.#broken = true;
      throw err;
    }
    this.#checkpoint = checkpoint;
    this.#fileBytes = bytes.length;
    this.stats.compactions++;
    this.#broken = false;
    if (this.#reported) {
      this.#reported = false;
      log.info("state journal written again", { file: this.path });
    }
  }

  #failed(err: unknown): void {
    // Once per outage, not per batch: uploads go on, the journal catches up.
    if (this.#reported) return;
    this.#reported = true;
    log.error("cannot write the state journal; will retry", {
      file: this.path,
      error: errorMessage(err),
    });
  }
}
