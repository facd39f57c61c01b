/**
 * The durable journal (`--state-dir DIR`): which files are complete but not
 * yet in the bucket, and the last checkpoint, so that a restart after
 * SIGKILL, a crash or a reboot uploads what was pending and looks only at
 * what changed since (see startup.ts). One watcher per directory: `lock`
 * holds an exclusive advisory lock (flock) and the holder's pid.
 *
 * `DIR/journal.jsonl` is JSON lines, appended in order:
 *
 *   {"journal":"tablesnap","version":1}                header, always first
 *   {"op":"checkpoint","at":1767225600000}             see startup.ts
 *   {"op":"pending","path":"/var/lib/...","since":...} complete, not in the bucket
 *   {"op":"done","path":"/var/lib/..."}                in the bucket, skipped or gone
 *   {"op":"upload","path":..,"key":..,"uploadId":..,   a multipart upload began
 *    "partSize":..,"size":..,"mtime":..,"remake":..}   (remake: encrypted ones, a secret)
 *   {"op":"part","path":..,"n":3,"etag":"\"..\""}      its part 3 is stored
 *   {"op":"upload-end","path":..}                      completed or aborted
 *
 * A path is pending when its last `pending` line has no `done` after it;
 * the last checkpoint counts. A multipart upload is in flight from its
 * `upload` line to its `upload-end` (see multipart_resume.ts); its file
 * counts as pending too. Anything else (a line that is not one of these, a
 * last line without its newline, another version) makes the file
 * untrustworthy: the watcher then reconciles the whole tree. The upload
 * lines came without a version change: journals from before them read the
 * same, and an older tablesnap takes them for damage: a full
 * reconciliation; their uploads wait for a newer start's clean-up.
 *
 * Cost on the upload path: `pending` and `done` only update two maps. The
 * lines are written by a batch every `FLUSH_DELAY_MS`, one write and one
 * fdatasync, off the event loop; a file whose `done` comes before its
 * `pending` was written (most uploads take a few ms) is never written at
 * all. Files complete less than ~100 ms before a crash may be missing: the
 * checkpoint rules of startup.ts find them anyway.
 *
 * Compaction: when the file passes `max(1 MiB, 4 x the live lines)`, and at
 * every start and clean stop, it is rewritten from the live entries
 * (temp file, fsync, rename, fsync of the directory), so it stays the size
 * of the backlog however long the watcher runs.
 */
import { writeAll } from "../common/chunk_reader.ts";
import { errorMessage, FatalError } from "../common/errors.ts";
import { isGone } from "../common/fs.ts";
import { log } from "../common/log.ts";
import type { RecordJournal } from "./file_record.ts";
import type { InFlightUpload, UploadJournal } from "./multipart_resume.ts";

export const JOURNAL_FILE = "journal.jsonl";
export const LOCK_FILE = "lock";
export const JOURNAL_VERSION = 1;
/** Where a damaged journal is kept for a look (the last one only). */
export const DAMAGED_SUFFIX = ".damaged";

/** How long appends wait to be written together. */
const FLUSH_DELAY_MS = 100;
/** Below this size the journal is never compacted while running. */
const COMPACT_MIN_BYTES = 1024 * 1024;
/** Compact when the file is this many times the size of its live lines. */
const COMPACT_RATIO = 4;

const HEADER = JSON.stringify({ journal: "tablesnap", version: JOURNAL_VERSION });

/** What a journal file says. */
export interface JournalContents {
  /** Pending paths and since when (epoch ms) each has been complete. */
  pending: Map<string, number>;
  /** The last checkpoint (epoch ms), if any. */
  checkpoint: number | undefined;
  /** Multipart uploads in flight, by path. */
  uploads: Map<string, InFlightUpload>;
  /** Why the file cannot be trusted; `pending` then holds what came before. */
  damage: string | undefined;
}

/** Reads a journal's text. Never throws: damage is reported in `damage`. */
export function parseJournal(text: string): JournalContents {
  const contents: JournalContents = {
    pending: new Map(),
    checkpoint: undefined,
    uploads: new Map(),
    damage: undefined,
  };
  if (text === "") {
    contents.damage = "the file is empty";
    return contents;
  }
  const lines = text.split("\n");
  const last = lines.pop();
  if (last !== "") {
    // The newline is written with its line: without it, the line was cut short.
    contents.damage = `line ${lines.length + 1} is incomplete (no newline)`;
  }
  for (const [i, line] of lines.entries()) {
    const problem = i === 0 ? headerProblem(line) : applyLine(line, contents);
    if (problem) {
      contents.damage = `line ${i + 1}: ${problem}`;
      break;
    }
  }
  return contents;
}

function parseObject(line: string): Record<string, unknown> | string {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return "not JSON";
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "not a JSON object";
  }
  return value as Record<string, unknown>;
}

function headerProblem(line: string): string | undefined {
  const header = parseObject(line);
  if (typeof header === "string") return `${header} (expected the header)`;
  if (header.journal !== "tablesnap") return "not a tablesnap journal header";
  if (header.version !== JOURNAL_VERSION) {
    return `unknown version ${
      JSON.stringify(header.version)
    } (this tablesnap reads ${JOURNAL_VERSION})`;
  }
  return undefined;
}

function applyLine(line: string, contents: JournalContents): string | undefined {
  const entry = parseObject(line);
  if (typeof entry === "string") return entry;
  const { op, path } = entry;
  switch (op) {
    case "pending":
      if (typeof path !== "string" || !path.startsWith("/")) return "pending without a path";
      if (!isTime(entry.since)) return "pending without a since time";
      contents.pending.set(path, entry.since);
      return undefined;
    case "done":
      if (typeof path !== "string" || !path.startsWith("/")) return "done without a path";
      contents.pending.delete(path);
      return undefined;
    case "checkpoint":
      if (!isTime(entry.at)) return "checkpoint without a time";
      contents.checkpoint = entry.at;
      return undefined;
    case "upload": {
      const { key, uploadId, partSize, size, mtime, remake } = entry;
      if (typeof path !== "string" || !path.startsWith("/")) return "upload without a path";
      if (typeof key !== "string" || typeof uploadId !== "string" || uploadId === "") {
        return "upload without a key and upload id";
      }
      if (!isCount(partSize) || partSize === 0 || !isCount(size) || typeof mtime !== "number") {
        return "upload without a part size, size and mtime";
      }
      contents.uploads.set(path, {
        key,
        uploadId,
        partSize,
        size,
        mtimeMs: mtime,
        parts: new Map(),
        ...(typeof remake === "string" ? { remake } : {}),
      });
      return undefined;
    }
    case "part": {
      if (typeof path !== "string" || !path.startsWith("/")) return "part without a path";
      if (!isCount(entry.n) || entry.n === 0 || typeof entry.etag !== "string") {
        return "part without a number and etag";
      }
      // A part of an upload already ended is history: nothing to do.
      contents.uploads.get(path)?.parts.set(entry.n, entry.etag);
      return undefined;
    }
    case "upload-end":
      if (typeof path !== "string" || !path.startsWith("/")) return "upload-end without a path";
      contents.uploads.delete(path);
      return undefined;
    default:
      return `unknown op ${JSON.stringify(op)}`;
  }
}

function isTime(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value >= 0;
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function uploadLines(path: string, upload: InFlightUpload): string[] {
  const { key, uploadId, partSize, size, mtimeMs, remake } = upload;
  const lines = [
    JSON.stringify({ op: "upload", path, key, uploadId, partSize, size, mtime: mtimeMs, remake }),
  ];
  for (const [n, etag] of upload.parts) lines.push(partLine(path, n, etag));
  return lines;
}

function partLine(path: string, n: number, etag: string): string {
  return JSON.stringify({ op: "part", path, n, etag });
}

function uploadEndLine(path: string): string {
  return JSON.stringify({ op: "upload-end", path });
}

/** The bytes an upload's lines take (near enough for the compaction bound). */
function uploadBytes(path: string, upload: InFlightUpload): number {
  return 2 * path.length + upload.key.length + upload.uploadId.length + 160 +
    (upload.remake?.length ?? 0) +
    upload.parts.size * (path.length + 80);
}

function pendingLine(path: string, since: number): string {
  return JSON.stringify({ op: "pending", path, since });
}

function doneLine(path: string): string {
  return JSON.stringify({ op: "done", path });
}

function checkpointLine(at: number): string {
  return JSON.stringify({ op: "checkpoint", at });
}

/** What `Journal.open` found. */
export interface JournalRecovery {
  /** No journal existed: nothing is known of what happened before. */
  fresh: boolean;
  /** Pending files to queue again, with their since times (those of `uploads` too). */
  pending: Map<string, number>;
  /** Multipart uploads a crash left in flight, by path (multipart_resume.ts resumes them). */
  uploads: Map<string, InFlightUpload>;
  /** The last checkpoint, unless the journal was fresh or damaged. */
  checkpoint: number | undefined;
  /** The journal could not be trusted (already reported as a warning). */
  damaged: boolean;
}

export interface JournalOptions {
  flushDelayMs?: number;
  compactMinBytes?: number;
}

export class Journal implements RecordJournal, UploadJournal {
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
  /** Paths whose `done` waits for something else (a Data.db for its index). */
  #hold: ((path: string) => boolean) | undefined;
  readonly #held = new Set<string>();
  /** For the debug log and the benchmark notes: the last batch's cost. */
  readonly stats = { batches: 0, lines: 0, compactions: 0, lastBatchMs: 0, maxBatchMs: 0 };

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
    const cannot = (err: unknown) =>
      new FatalError(`Cannot use the state directory '${dir}': ${errorMessage(err)}`);
    let lock: Deno.FsFile;
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      lock = await Deno.open(`${dir}/${LOCK_FILE}`, { read: true, write: true, create: true });
    } catch (err) {
      throw cannot(err);
    }
    if (!await lock.tryLock(true)) {
      const holder = await Deno.readTextFile(`${dir}/${LOCK_FILE}`).catch(() => "");
      lock.close();
      const pid = holder.trim() ? ` (pid ${holder.trim()})` : "";
      throw new FatalError(`The state directory '${dir}' is in use by another tablesnap${pid}`);
    }
    const journal = new Journal(dir, lock, options);
    try {
      await lock.truncate(0);
      await writeAll(lock, new TextEncoder().encode(`${Deno.pid}\n`));
      const recovery = await journal.#recover();
      // Written at once: proves the directory is writable before the watcher starts.
      await journal.#compact();
      return { journal, recovery };
    } catch (err) {
      journal.#file?.close();
      lock.close();
      throw err instanceof FatalError ? err : cannot(err);
    }
  }

  async #recover(): Promise<JournalRecovery> {
    await Deno.remove(`${this.path}.tmp`).catch(() => {});
    let text: string;
    try {
      text = await Deno.readTextFile(this.path);
    } catch (err) {
      if (isGone(err)) {
        return {
          fresh: true,
          pending: new Map(),
          uploads: new Map(),
          checkpoint: undefined,
          damaged: false,
        };
      }
      throw err;
    }
    const contents = parseJournal(text);
    const { pending, uploads } = contents;
    // A file whose upload was in flight was pending, even if its pending
    // line was not written yet (both are written by the same batches).
    for (const path of uploads.keys()) if (!pending.has(path)) pending.set(path, Date.now());
    for (const [path, since] of pending) this.#setLive(path, since);
    for (const [path, upload] of uploads) this.#setUpload(path, upload);
    if (contents.damage === undefined) {
      this.#checkpoint = contents.checkpoint;
      return { fresh: false, pending, uploads, checkpoint: contents.checkpoint, damaged: false };
    }
    // Kept for a look; the journal itself is rewritten from what was readable.
    await Deno.rename(this.path, this.path + DAMAGED_SUFFIX).catch(() => {});
    log.warn("state journal damaged; reconciling the whole tree with the bucket", {
      file: this.path,
      problem: contents.damage,
      kept_as: this.path + DAMAGED_SUFFIX,
    });
    return { fresh: false, pending, uploads, checkpoint: undefined, damaged: true };
  }

  /** The last checkpoint recorded (or asked for). */
  get checkpointTime(): number | undefined {
    return this.#checkpointWanted ?? this.#checkpointReady ?? this.#checkpoint;
  }

  /** How many paths are pending (or held). */
  get size(): number {
    return this.#live.size;
  }

  /** The file is complete and not in the bucket. */
  pending(path: string, since: number): void {
    if (this.#closed) return;
    this.#held.delete(path);
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

  /** The file rests: in the bucket, skipped or gone (unless held, see `holdWhile`). */
  done(path: string): void {
    if (this.#closed) return;
    if (this.#hold?.(path)) {
      this.#held.add(path);
      return;
    }
    this.#remove(path);
  }

  /** `done` of a path for which `hold` is true waits for `release(path)`. */
  holdWhile(hold: (path: string) => boolean): void {
    this.#hold = hold;
  }

  /** A held path is done now. */
  release(path: string): void {
    if (this.#held.delete(path)) this.#remove(path);
  }

  /** Paths whose `done` is held. */
  heldPaths(): string[] {
    return [...this.#held];
  }

  /**
   * Records that every file changed before `at` is in the bucket or
   * pending here (startup.ts establishes it). Written only after every
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
    for (const [path, since] of batch) {
      if (since === null) {
        lines.push(doneLine(path));
        this.#written.delete(path);
      } else {
        lines.push(pendingLine(path, since));
        this.#written.add(path);
      }
    }
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
        if (wanted !== undefined || ready !== undefined) {
          this.#checkpointWanted = wanted ?? ready;
        }
        this.#checkpointReady = undefined;
        this.#failed(err);
        this.#flushSoon();
        return;
      }
      if (ready !== undefined) {
        this.#checkpoint = ready;
        this.#checkpointReady = undefined;
      }
      this.#noteBatch(started, lines.length);
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

  #noteBatch(started: number, lines: number): void {
    const ms = performance.now() - started;
    const s = this.stats;
    s.batches++;
    s.lines += lines;
    s.lastBatchMs = ms;
    s.maxBatchMs = Math.max(s.maxBatchMs, ms);
    log.debug("journal synced", { lines, ms: Math.round(ms * 100) / 100 });
  }

  /**
   * Rewrites the file from the live entries: a temp file, synced, renamed
   * over the journal, then the directory synced, so a crash leaves either
   * the old file or the new one.
   */
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
    const tmp = `${this.path}.tmp`;
    try {
      // 0600: encrypted uploads in flight keep their file keys here (docs/encryption.md).
      const out = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
      await Deno.chmod(tmp, 0o600);
      try {
        await writeAll(out, bytes);
        await out.sync();
      } finally {
        out.close();
      }
      await Deno.rename(tmp, this.path);
      await syncDirectory(this.dir);
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

/** The bytes one pending line takes (near enough for the compaction bound). */
function lineBytes(path: string): number {
  return path.length + 48;
}

/** fsync of a directory: makes a rename in it durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await Deno.open(dir, { read: true });
  try {
    await handle.sync();
  } finally {
    handle.close();
  }
}
