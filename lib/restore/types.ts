/**
 * The shapes a restore passes between its steps: what was asked
 * (`SlurpOptions`), what the plan resolved (`RestorePlan`, `Source`), and
 * what the restore did (`SlurpResult`). Types only, so that plan.ts,
 * download.ts, report.ts and slurp.ts depend on this module and not on each
 * other in a circle.
 */
import type { KeyNaming } from "../bucket/keys.ts";
import type { RestorePoint } from "../bucket/index_reader.ts";
import type { ObjectHead, Store } from "../store/store.ts";

/** What to restore, from where, and how. */
export interface SlurpOptions {
  store: Store;
  naming: KeyNaming;
  /** The directory path as the watcher saw it (the keys' path part). */
  origin: string;
  /** Local directory to restore into; created if missing. */
  target: string;
  /** Restore the file set of this file's index instead of the newest. */
  file?: string | undefined;
  /** The newest restore point at or before this time instead of the newest of all. */
  at?: Date | undefined;
  /** Restore even SSTables whose TOC.txt names components the set lacks (loudly). */
  allowIncomplete?: boolean | undefined;
  /** ORIGIN is a data directory: one newest index per keyspace/table. */
  recursive?: boolean | undefined;
  /** Also restore the commit logs of this directory. */
  commitlogs?: string | undefined;
  /** Where commit logs go (default `<target>/commitlogs`). */
  commitlogsTarget?: string | undefined;
  /** chown restored files to this uid / gid. */
  owner?: number | undefined;
  group?: number | undefined;
  /** chown from each object's `stat` metadata instead (overrides owner/group). */
  preserve?: boolean | undefined;
  /** Connections (default `DEFAULT_CONNECTIONS`, 16: not the watcher's 4). */
  threads?: number | undefined;
  /** Download even files already present and verified. */
  force?: boolean | undefined;
  /** Resolve and check only; download nothing. */
  plan?: boolean | undefined;
  /** Attempts per file (default 5), and the first pause between them (doubling). */
  attempts?: number | undefined;
  retryDelayMs?: number | undefined;
  /** Redraw a progress bar on stderr (default: when stderr is a terminal). */
  progressBar?: boolean | undefined;
  /** Where plan and summary lines go (default: stdout). */
  print?: ((line: string) => void) | undefined;
}

/** A file of the restore: where it comes from and where it goes. */
export interface PlannedFile {
  key: string;
  /** Absolute path it is restored to. */
  path: string;
  /** Size from the bucket listing; undefined when the object is missing. */
  size?: number;
}

/** The key to restore and the directory it goes into, before sizes are known. */
export interface Source {
  key: string;
  /** Root the destination must stay in, and the path segments below it. */
  root: string;
  segments: string[];
  name: string;
  /** The time of the restore point naming it: a rewritten component's bytes of then. */
  at?: number;
  /** Set when `key` is a superseded copy: the key the index names (`<dir>/<name>`). */
  named?: string;
  /** Set by the download when the bytes restored were written after `at`: why. */
  later?: string | undefined;
  /**
   * The object as the plan already read it (each TOC.txt, for the whole-SSTable
   * check): its first download attempt uses these bytes instead of a GET.
   */
  fetched?: { head: ObjectHead; bytes: Uint8Array<ArrayBuffer> };
}

/** An SSTable generation whose TOC.txt names components the restore would not have. */
export interface IncompleteGeneration {
  /** The index that names the generation. */
  index: string;
  /** The directory (as the watcher saw it) and the generation's name prefix (`nb-7-big-`). */
  directory: string;
  generation: string;
  /** Components the TOC lists that the index does not name or the bucket lacks. */
  missing: string[];
}

/** Everything a restore resolved before it downloads anything. */
export interface RestorePlan {
  sources: Source[];
  /** Each source with its size from one listing per key directory (none: missing). */
  files: { source: Source; planned: PlannedFile }[];
  /** The chosen restore points, with their exact times where recorded. */
  points: RestorePoint[];
  /** With -r and --at: tables with no restore point by then (their directories). */
  skipped: string[];
  incomplete: IncompleteGeneration[];
  /** With --commitlogs and --at: Cassandra's `restore_point_in_time` value. */
  restorePointInTime: string | null;
  /** Chosen indexes written by an encrypting watcher: their files need --identity. */
  encrypted: string[];
}

/** What a restore did. */
export interface SlurpResult {
  files: PlannedFile[];
  /** The restore points used, with their times. */
  points: RestorePoint[];
  /** With -r and --at: tables that had no restore point by then. */
  tablesSkipped: string[];
  /** Generations whose TOC.txt lists components the set lacks. */
  incomplete: IncompleteGeneration[];
  /** With --commitlogs and --at: the `restore_point_in_time` written beside them. */
  restorePointInTime: string | null;
  downloaded: number;
  skipped: number;
  /** Bytes of the file set (present objects). */
  bytes: number;
  /** Keys named by an index but not in the bucket. */
  missing: string[];
  /** Rewritten components whose bytes of the point's time are not in the bucket. */
  later: { path: string; reason: string }[];
  /** Files that could not be restored, with the reason. */
  failed: { path: string; key: string; reason: string }[];
}
