/**
 * The watcher's ledger: one record per file and one per pending index, in
 * one place. Everything else reads it, and hears of its changes through
 * typed events (`LedgerEvent`): the durable journal persists them, pins and
 * local cleanup act on them, the index publisher and the metrics follow
 * them. What stage a file is in, and when it is let go, is decided here
 * only; the others keep just their own resources (journal lines, links,
 * the publisher's working notes on each index record).
 *
 * A file's life, as the ledger tells it:
 *
 *   complete --> queued --> uploading --> resting        (move())
 *                  ^  <-- retrying <--'      |
 *                  '-------------------------'  (complete again)
 *
 *   stored:   the bucket holds it (uploaded, or found there)
 *   held:     it rests, in the bucket, while its index is still to be
 *             written (a Data.db): the journal keeps its line, pins keep
 *             its link, and nothing else ends
 *   released: it rests for good: the journal writes `done`, its pin goes.
 *
 * "Hold until indexed" is that one stage: a resting file is held exactly
 * while the ledger has a pending index record for its path, and released
 * when that record settles (written or given up) or, with no index
 * pending, when it comes to rest. The one place to change when a pin, a
 * journal line or a local file is released is `#rested` / `settleIndex`
 * below; the keepers only follow `released` (and `index-settled` for a
 * directory's local files, see local_cleanup.ts).
 */

import type {
  FileFacts,
  FileRecord,
  FileState,
  IndexRecord,
  LedgerEvent,
  LedgerListener,
  MoveOptions,
  PendingSummary,
  StoredOutcome,
  StoredVersion,
} from "./records.ts";
import { StoredFiles } from "./records.ts";

// The ledger speaks in the records' types: its users import them from here.
export type * from "./records.ts";

export class Ledger implements FileFacts {
  /**
   * Full records: files on their way, and resting ones only until they have
   * a stored version. Disjoint from `#rest`.
   */
  readonly #active = new Map<string, FileRecord>();
  /** Resting files with a stored version, held compactly (stored_files.ts). */
  readonly #rest = new StoredFiles();
  /** Queued records in the order they were queued. */
  readonly #queue = new Set<FileRecord>();
  readonly #counts: Record<FileState, number> = {
    queued: 0,
    uploading: 0,
    retrying: 0,
    resting: 0,
  };
  /** Records of `#active` with a stored version (`#rest` holds the others). */
  #activeStored = 0;
  /** Resting files waiting for their index. */
  readonly #held = new Set<string>();
  readonly #indexes = new Map<string, IndexRecord>();
  /** Pending indexes by directory: a stored file concerns only its directory's indexes. */
  readonly #indexesByDirectory = new Map<string, Set<string>>();
  /** Data.db files the bucket holds without their index (reconciliation's facts). */
  #unindexed = new Set<string>();
  readonly #listeners: LedgerListener[] = [];

  /** Calls `listener` with every event, in the order they happen. */
  subscribe(listener: LedgerListener): void {
    this.#listeners.push(listener);
  }

  #emit(event: LedgerEvent): void {
    for (const listener of this.#listeners) listener(event);
  }

  // ---- files ----

  /**
   * The file's record. A resting file with a stored version comes as a
   * snapshot of its compact entry: to change it, take `getOrCreate`'s.
   */
  get(path: string): FileRecord | undefined {
    const active = this.#active.get(path);
    if (active) return active;
    const stored = this.#rest.get(path);
    return stored && restingRecord(path, stored);
  }

  /** The file's record, to change; a new one rests, with nothing stored. */
  getOrCreate(path: string): FileRecord {
    let record = this.#active.get(path);
    if (record) return record;
    const stored = this.#rest.get(path);
    record = restingRecord(path, stored);
    this.#active.set(path, record);
    if (stored) {
      this.#rest.delete(path);
      this.#activeStored++;
    } else {
      this.#counts.resting++;
    }
    return record;
  }

  /** The file was found complete (again): pins follow it. */
  complete(path: string): void {
    this.#emit({ type: "complete", path });
  }

  /**
   * Moves a record to `to`. Leaving "retrying" clears its timer; resting
   * with nothing stored, the record is forgotten (it holds nothing of use),
   * with a stored version it goes into the compact store. Leaving rest is
   * `pending`; coming to rest, `held` or `released`.
   */
  move(record: FileRecord, to: FileState, options: MoveOptions = {}): void {
    const from = record.state;
    if (from === "resting" && to !== "resting") {
      this.#held.delete(record.path);
      this.#emit({ type: "pending", path: record.path, since: record.since });
    }
    if (from === "queued") this.#queue.delete(record);
    if (from === "retrying" && to !== "retrying") {
      record.cancelRetry?.();
      record.cancelRetry = undefined;
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
      else this.#compact(record);
      if (from !== "resting" && !options.unfinished) this.#rested(record.path);
    }
  }

  /** A resting record with a stored version leaves `#active` for the compact store. */
  #compact(record: FileRecord): void {
    if (this.#active.get(record.path) !== record || record.stored === undefined) return;
    this.#active.delete(record.path);
    this.#activeStored--;
    this.#rest.set(record.path, record.stored);
  }

  /** A file came to rest for good: held while its index is pending, else released. */
  #rested(path: string): void {
    if (this.#indexes.has(path)) {
      this.#held.add(path);
      this.#emit({ type: "held", path });
    } else {
      this.#emit({ type: "released", path });
    }
  }

  /** The bucket holds `version` of the file now. */
  stored(record: FileRecord, version: StoredVersion, outcome: StoredOutcome): void {
    this.remember(record, version);
    this.#emit({ type: "stored", path: record.path, outcome });
  }

  /** Records what the bucket holds for the file (no event: known, not newly stored). */
  remember(record: FileRecord, version: StoredVersion): void {
    const active = this.#active.get(record.path) === record;
    if (active && record.stored === undefined) this.#activeStored++;
    (record as { stored: StoredVersion | undefined }).stored = version;
    if (active && record.state === "resting") this.#compact(record);
    else if (!active && record.state === "resting" && !this.#active.has(record.path)) {
      this.#rest.set(record.path, version);
    }
  }

  /** Drops a resting record (the file is gone from disk). */
  forget(record: FileRecord): void {
    if (record.state !== "resting") return;
    if (this.#active.get(record.path) === record) {
      this.#active.delete(record.path);
      if (record.stored !== undefined) this.#activeStored--;
    } else if (this.#active.has(record.path) || !this.#rest.delete(record.path)) {
      return;
    }
    this.#counts.resting--;
  }

  /** --pin made or moved the file's pin. */
  pinned(path: string): void {
    this.#emit({ type: "pinned", path });
  }

  /** --delete-on-backup removed the file locally (later indexes still name it). */
  deleted(path: string): void {
    this.#emit({ type: "deleted", path });
  }

  #storedVersion(path: string): StoredVersion | undefined {
    const active = this.#active.get(path);
    return active ? active.stored : this.#rest.get(path);
  }

  /** True when `path` with this size is known to be in the bucket. */
  isStored(path: string, size?: number): boolean {
    const stored = this.#storedVersion(path);
    return stored !== undefined && (size === undefined || stored.size === size);
  }

  /** True when the file is known in the bucket with exactly this size and mtime. */
  isStoredUnchanged(path: string, size: number, mtimeMs: number): boolean {
    const stored = this.#storedVersion(path);
    return stored !== undefined && stored.size === size && stored.mtimeMs === mtimeMs;
  }

  /** True when the file is queued or uploading now (not waiting for a retry). */
  isInFlight(path: string): boolean {
    const state = this.#active.get(path)?.state;
    return state === "queued" || state === "uploading";
  }

  /** True when the file is queued, uploading or waiting for a retry. */
  isPending(path: string): boolean {
    const state = this.#active.get(path)?.state;
    return state !== undefined && state !== "resting";
  }

  /** Already taken care of: on its way, or in the bucket in exactly this version. */
  handles(path: string, size: number, mtimeMs: number): boolean {
    return this.isPending(path) || this.isStoredUnchanged(path, size, mtimeMs);
  }

  /** True while the file rests waiting for its index. */
  isHeld(path: string): boolean {
    return this.#held.has(path);
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
    const records = [...this.#active.values()].filter((r) => r.state === state);
    if (state !== "resting") return records;
    for (const path of this.#rest.paths()) records.push(this.get(path)!);
    return records;
  }

  /** The directories of the resting stored files (a snapshot: what pruning walks). */
  storedDirectories(): string[] {
    return this.#rest.directories();
  }

  /**
   * Forgets the resting stored files of `directory` that are not among
   * `present`, its file names now (null: the directory is gone).
   */
  forgetGone(directory: string, present: Set<string> | null): void {
    for (const name of this.#rest.namesIn(directory)) {
      if (present?.has(name)) continue;
      this.#rest.delete(`${directory}/${name}`);
      this.#counts.resting--;
    }
  }

  /** How many files have a known stored version (resting or pending again). */
  storedCount(): number {
    return this.#activeStored + this.#rest.size;
  }

  /** Files, bytes and the oldest completion time of everything not yet in the bucket. */
  pending(): PendingSummary {
    let oldest: number | null = null;
    let bytes = 0;
    for (const record of this.#active.values()) {
      if (record.state === "resting") continue;
      if (oldest === null || record.since < oldest) oldest = record.since;
      bytes += record.bytes ?? 0;
    }
    return { files: this.pendingCount(), bytes, oldestSince: oldest };
  }

  // ---- indexes ----

  /**
   * Reconciliation's fact: these Data.db files are in the bucket without
   * their index; one found there asks for it (`takeUnindexed`).
   */
  expectIndexes(dataPaths: Iterable<string>): void {
    for (const path of dataPaths) this.#unindexed.add(path);
  }

  /** True (once) when the bucket held `dataPath` without its index at start. */
  takeUnindexed(dataPath: string): boolean {
    return this.#unindexed.delete(dataPath);
  }

  /** Opens an index record (none when one is pending already). */
  requestIndex(record: IndexRecord): boolean {
    if (this.#indexes.has(record.dataPath)) return false;
    this.#indexes.set(record.dataPath, record);
    let inDirectory = this.#indexesByDirectory.get(record.directory);
    if (!inDirectory) this.#indexesByDirectory.set(record.directory, inDirectory = new Set());
    inDirectory.add(record.dataPath);
    this.#emit({ type: "index-requested", dataPath: record.dataPath });
    return true;
  }

  index(dataPath: string): IndexRecord | undefined {
    return this.#indexes.get(dataPath);
  }

  /** Every pending index, in the order they were asked for (a snapshot). */
  indexes(): IndexRecord[] {
    return [...this.#indexes.values()];
  }

  /** The pending indexes of a directory (a snapshot). */
  indexesIn(directory: string): IndexRecord[] {
    const paths = this.#indexesByDirectory.get(directory) ?? [];
    return [...paths].map((path) => this.#indexes.get(path)!);
  }

  /** True while an index of `directory` is still to be written. */
  hasIndexIn(directory: string): boolean {
    return (this.#indexesByDirectory.get(directory)?.size ?? 0) > 0;
  }

  indexCount(): number {
    return this.#indexes.size;
  }

  /** The index was written or given up: a Data.db held for it is released. */
  settleIndex(dataPath: string, outcome: { written: boolean; complete: boolean }): void {
    const record = this.#indexes.get(dataPath);
    if (!record) return;
    this.#indexes.delete(dataPath);
    const inDirectory = this.#indexesByDirectory.get(record.directory);
    inDirectory?.delete(dataPath);
    if (inDirectory?.size === 0) this.#indexesByDirectory.delete(record.directory);
    this.#emit({ type: "index-settled", dataPath, directory: record.directory, ...outcome });
    if (this.#held.delete(dataPath)) this.#emit({ type: "released", path: dataPath });
  }
}

/** A resting record (a new one, or a snapshot of a compact entry). */
function restingRecord(path: string, stored: StoredVersion | undefined): FileRecord {
  return {
    path,
    state: "resting",
    since: 0,
    failedCycles: 0,
    bytes: undefined,
    again: false,
    stored,
    cancelRetry: undefined,
  };
}
