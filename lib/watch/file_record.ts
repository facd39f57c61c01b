/**
 * One record per file in the upload pipeline. A file is known once it is
 * complete; it is then queued, uploading, or waiting between failed
 * try-cycles, until it rests (in the bucket, or skipped). Whatever the
 * bucket is known to hold for it stays on the record while it rests.
 *
 * `FileRecords.move` is the only way a record changes state: it keeps the
 * queue order and the per-state counts with it, so nothing else has to be
 * kept in step by hand. It also tells the durable journal (`--state-dir`,
 * journal.ts) when a file starts and stops being pending, so the journal
 * holds exactly the records that are queued, uploading or retrying.
 */

export type FileState = "queued" | "uploading" | "retrying" | "resting";

/** What the durable journal hears of the records (journal.ts implements it). */
export interface RecordJournal {
  /** The file became pending (queued) after resting; `since` as on the record. */
  pending(path: string, since: number): void;
  /** The file rests again for good: in the bucket, skipped or gone. */
  done(path: string): void;
}

export interface MoveOptions {
  /**
   * Resting without having reached the bucket (shutdown stopped it): the
   * journal keeps it pending, for the next start.
   */
  unfinished?: boolean;
}

/** What the bucket is known to hold for a file. */
export interface StoredVersion {
  size: number;
  mtimeMs: number;
}

export interface FileRecord {
  readonly path: string;
  /** Only `FileRecords.move` changes it. */
  readonly state: FileState;
  /** Since when (epoch ms) the file has been complete and not in the bucket (the RPO metric). */
  since: number;
  /** Failed try-cycles in a row: the wait before the next one doubles. */
  failedCycles: number;
  /** The size the upload found (a queued file is not stat'ed yet). */
  bytes: number | undefined;
  /** The file became complete again while uploading: look at it once more after. */
  again: boolean;
  /** What the bucket holds for it, as far as this process knows (`FileRecords.remember` sets it). */
  readonly stored: StoredVersion | undefined;
  /** While retrying: the timer of the next cycle. */
  retryTimer: ReturnType<typeof setTimeout> | undefined;
}

export class FileRecords {
  readonly #journal: RecordJournal | undefined;
  readonly #records = new Map<string, FileRecord>();
  /** Queued records in the order they were queued. */
  readonly #queue = new Set<FileRecord>();
  readonly #counts: Record<FileState, number> = {
    queued: 0,
    uploading: 0,
    retrying: 0,
    resting: 0,
  };
  /** Records with a stored version: counted, not counted up, once per stored file. */
  #stored = 0;

  constructor(journal?: RecordJournal) {
    this.#journal = journal;
  }

  get(path: string): FileRecord | undefined {
    return this.#records.get(path);
  }

  /** The file's record; a new one rests, with nothing stored. */
  getOrCreate(path: string): FileRecord {
    let record = this.#records.get(path);
    if (!record) {
      record = {
        path,
        state: "resting",
        since: 0,
        failedCycles: 0,
        bytes: undefined,
        again: false,
        stored: undefined,
        retryTimer: undefined,
      };
      this.#records.set(path, record);
      this.#counts.resting++;
    }
    return record;
  }

  /**
   * Moves a record to `to`. Leaving "retrying" clears its timer; resting
   * with nothing stored, the record is forgotten (it holds nothing of use).
   * Leaving or reaching "resting" is told to the journal.
   */
  move(record: FileRecord, to: FileState, options: MoveOptions = {}): void {
    const from = record.state;
    if (from === "resting" && to !== "resting") this.#journal?.pending(record.path, record.since);
    if (from !== "resting" && to === "resting" && !options.unfinished) {
      this.#journal?.done(record.path);
    }
    if (from === "queued") this.#queue.delete(record);
    if (from === "retrying" && to !== "retrying") {
      clearTimeout(record.retryTimer);
      record.retryTimer = undefined;
    }
    this.#counts[from]--;
    this.#counts[to]++;
    (record as { state: FileState }).state = to;
    if (to === "queued") this.#queue.add(record);
    // A fact that arrives while uploading asks for one more look, after this upload.
    if (to === "uploading") record.again = false;
    if (to === "resting") {
      record.bytes = undefined;
      record.again = false;
      if (record.stored === undefined) this.forget(record);
    }
  }

  /** Records what the bucket now holds for the file. */
  remember(record: FileRecord, version: StoredVersion): void {
    if (record.stored === undefined && this.#records.get(record.path) === record) this.#stored++;
    (record as { stored: StoredVersion | undefined }).stored = version;
  }

  /** Drops a resting record (the file is gone from disk). */
  forget(record: FileRecord): void {
    if (record.state !== "resting" || this.#records.get(record.path) !== record) return;
    this.#records.delete(record.path);
    this.#counts.resting--;
    if (record.stored !== undefined) this.#stored--;
  }

  /** The record queued first, if any. */
  nextQueued(): FileRecord | undefined {
    return this.#queue.values().next().value;
  }

  count(state: FileState): number {
    return this.#counts[state];
  }

  /** Records not resting: queued, uploading or retrying. */
  pendingCount(): number {
    return this.#counts.queued + this.#counts.uploading + this.#counts.retrying;
  }

  /** Every record in `state` (a snapshot: safe to move records meanwhile). */
  inState(state: FileState): FileRecord[] {
    if (state === "queued") return [...this.#queue];
    return [...this.#records.values()].filter((r) => r.state === state);
  }

  /** Records that rest with a stored version (what pruning walks). */
  storedPaths(): string[] {
    const paths: string[] = [];
    for (const record of this.#records.values()) {
      if (record.state === "resting" && record.stored) paths.push(record.path);
    }
    return paths;
  }

  /** How many files have a known stored version (resting or pending again). */
  storedCount(): number {
    return this.#stored;
  }

  /** Files, bytes and the oldest completion time of everything not yet in the bucket. */
  pending(): { files: number; bytes: number; oldestSince: number | null } {
    let oldest: number | null = null;
    let bytes = 0;
    for (const record of this.#records.values()) {
      if (record.state === "resting") continue;
      if (oldest === null || record.since < oldest) oldest = record.since;
      bytes += record.bytes ?? 0;
    }
    return { files: this.pendingCount(), bytes, oldestSince: oldest };
  }
}
