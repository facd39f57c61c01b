/**
 * What the ledger (ledger.ts) keeps and tells: the record of a file and of
 * a pending index, the compact store of resting files, and the events its
 * subscribers hear.
 */
import { Float64Column, PathSlots } from "../common/path_slots.ts";

export type FileState = "queued" | "uploading" | "retrying" | "resting";

/** How a file came to be in the bucket. */
export type StoredOutcome = "uploaded" | "present";

/** Why a path in the watched tree was skipped unread (detect tells, metrics count). */
export type SkipReason = "fifo" | "socket" | "device" | "symlink" | "bad_name";

/** What the bucket is known to hold for a file. */
export interface StoredVersion {
  size: number;
  mtimeMs: number;
}

export interface FileRecord {
  readonly path: string;
  /** Only `Ledger.move` changes it. */
  readonly state: FileState;
  /** Since when (epoch ms) the file has been complete and not in the bucket (the RPO metric). */
  since: number;
  /** Failed try-cycles in a row: the wait before the next one doubles. */
  failedCycles: number;
  /** The size the upload found (a queued file is not stat'ed yet). */
  bytes: number | undefined;
  /** The file became complete again while uploading: look at it once more after. */
  again: boolean;
  /** What the bucket holds for it, as far as this process knows (`Ledger.stored` sets it). */
  readonly stored: StoredVersion | undefined;
  /** While retrying: cancels the timer of the next cycle. */
  cancelRetry: (() => void) | undefined;
}

/**
 * One index still to be written (a `-listdir.json` beside a Data.db). The
 * publisher (index_publisher.ts) keeps its working facts on it.
 */
export interface IndexRecord {
  readonly dataPath: string;
  readonly directory: string;
  /** The generation's file name prefix (`nb-7-big-`). */
  prefix: string;
  /** Requested during the -B backlog: its wait starts when the directory stops uploading. */
  backlog: boolean;
  /** When the publisher last looked: it looks at most every `quietMs`. */
  checkedAt: number;
  /** Without a TOC: a file of the directory was stored since the last check. */
  storedSinceCheck?: boolean;
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

/** Every change the ledger makes, as its subscribers hear it. */
export type LedgerEvent =
  /** Complete (again): found by the watcher, a sweep, a retry or a restart. */
  | { type: "complete"; path: string }
  /** It was resting and is pending now (the journal's `pending` line). */
  | { type: "pending"; path: string; since: number }
  /** The bucket holds it now. */
  | { type: "stored"; path: string; outcome: StoredOutcome }
  /** It rests in the bucket, its index still to be written. */
  | { type: "held"; path: string }
  /** It rests for good: in the bucket (indexed), skipped or gone. */
  | { type: "released"; path: string }
  /** --pin: its pin was made or moved to the newest version. */
  | { type: "pinned"; path: string }
  /** --delete-on-backup removed it locally. */
  | { type: "deleted"; path: string }
  | { type: "index-requested"; dataPath: string }
  /** Written (`written`, `complete` false at its deadline) or given up. */
  | {
    type: "index-settled";
    dataPath: string;
    directory: string;
    written: boolean;
    complete: boolean;
  };

/** What readers ask of the files (the ledger answers; tests may stand in for it). */
export interface FileFacts {
  /** In the bucket (with this size, when given)? */
  isStored(path: string, size?: number): boolean;
  /** Complete and on its way: queued, uploading or waiting to retry? */
  isPending(path: string): boolean;
  /** Queued or uploading right now (a -B backlog waits for those)? */
  isInFlight(path: string): boolean;
}

export type LedgerListener = (event: LedgerEvent) => void;

export interface MoveOptions {
  /**
   * Resting without having reached its end (shutdown stopped it): neither
   * held nor released; the journal keeps it pending for the next start.
   */
  unfinished?: boolean;
}

/** Files and bytes not in the bucket yet, and since when the oldest has waited. */
export interface PendingSummary {
  files: number;
  bytes: number;
  oldestSince: number | null;
}

/**
 * The ledger's compact part: what the bucket holds for each resting file,
 * the bulk of a node's files once it is backed up. A full `FileRecord`
 * with its path and a version object costs about 330 bytes a file; here a
 * file costs its base name and a slot (its directory held once) and two
 * numbers in typed arrays. The ledger keeps full records only for files on
 * their way (queued, uploading, retrying).
 */
export class StoredFiles {
  readonly #slots = new PathSlots();
  readonly #sizes = new Float64Column();
  readonly #mtimes = new Float64Column();

  get size(): number {
    return this.#slots.size;
  }

  get(path: string): StoredVersion | undefined {
    const slot = this.#slots.slotOf(path);
    if (slot === undefined) return undefined;
    return { size: this.#sizes.get(slot), mtimeMs: this.#mtimes.get(slot) };
  }

  set(path: string, version: StoredVersion): void {
    const slot = this.#slots.add(path);
    this.#sizes.set(slot, version.size);
    this.#mtimes.set(slot, version.mtimeMs);
  }

  delete(path: string): boolean {
    return this.#slots.delete(path) !== undefined;
  }

  /** The directories of the files held (a snapshot). */
  directories(): string[] {
    return this.#slots.directories();
  }

  /** The names held in `directory` (a snapshot). */
  namesIn(directory: string): string[] {
    return this.#slots.namesIn(directory);
  }

  /** Every path held (rebuilt one at a time; deleting meanwhile is safe). */
  *paths(): IterableIterator<string> {
    for (const [path] of this.#slots.entries()) yield path;
  }
}
