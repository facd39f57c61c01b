/**
 * `tablesnap slurp`: restore a directory (or a whole data directory with
 * `-r`) from the files an index names, like the original `tableslurp`:
 * plan.ts picks the file set, download.ts fetches each file into
 * safe_dirs.ts's directories, progress.ts reports.
 *
 * Safe by construction:
 * - names from the bucket are checked (no "/", "..", NUL, absolute paths)
 *   before any path is formed, and every directory below TARGET is created
 *   one level at a time, refusing symlinks, so nothing is written outside it;
 * - a download goes to `.<name>.tablesnap-partial` (created with O_EXCL, so
 *   an existing symlink is never followed), is checked against the object's
 *   size and MD5, fsynced, and only then renamed into place;
 * - a re-run skips files already present with the right size and MD5.
 */
import type { KeyNaming } from "../bucket/keys.ts";
import { Accounts } from "../common/accounts.ts";
import { errorMessage, FatalError } from "../common/errors.ts";
import { formatBytes } from "../common/format.ts";
import { log } from "../common/log.ts";
import { forEachLimited, Semaphore } from "../common/pool.ts";
import type { RestorePoint } from "../bucket/index_reader.ts";
import type { Store } from "../store/store.ts";
import { MissingObjectError, restoreFile } from "./download.ts";
import {
  ARCHIVING_PROPERTIES,
  archivingProperties,
  describeIncomplete,
  type IncompleteGeneration,
  printFindings,
  printPlan,
  resolvePlan,
} from "./plan.ts";
import { Progress } from "./progress.ts";
import { SafeDirectories } from "./safe_dirs.ts";

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
  /** Concurrent downloads (default 4). */
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
  /** Files that could not be restored, with the reason. */
  failed: { path: string; key: string; reason: string }[];
}

/**
 * Restores (or with `plan`, only resolves) a file set. Never throws for a
 * single file: those are reported in `failed`. Throws `FatalError` when the
 * file set cannot be resolved (no index, malformed or hostile index).
 * Requires `--allow-read --allow-write`, and `--allow-net` for S3.
 */
export async function slurp(options: SlurpOptions): Promise<SlurpResult> {
  const print = options.print ?? ((line: string) => console.log(line));
  const plan = await resolvePlan(options);
  const files = plan.files;
  const missing = files.filter((f) => f.planned.size === undefined).map((f) => f.source.key);
  const bytes = files.reduce((sum, f) => sum + (f.planned.size ?? 0), 0);
  const result: SlurpResult = {
    files: files.map((f) => f.planned),
    points: plan.points,
    tablesSkipped: plan.skipped,
    incomplete: plan.incomplete,
    restorePointInTime: plan.restorePointInTime,
    downloaded: 0,
    skipped: 0,
    bytes,
    missing,
    failed: [],
  };
  if (options.plan) {
    printPlan(print, options.store, result);
    if (plan.encrypted.length > 0) {
      print(
        `Encrypted with age: ${plan.encrypted.length} of the indexes' file sets (needs --identity)`,
      );
    }
    return result;
  }
  // Known from the indexes' metadata, before any download. (Files the
  // index metadata does not announce are refused one by one, by the store.)
  const encrypted = plan.encrypted[0];
  if (encrypted !== undefined && !options.store.traits.readsEncrypted) {
    throw new FatalError(
      `The files of index '${encrypted}' are encrypted with age: give --identity FILE to restore them`,
    );
  }
  if (plan.incomplete.length > 0) {
    if (!options.allowIncomplete) {
      throw new FatalError(
        `Refusing to restore, nothing written: ${
          plan.incomplete.map(describeIncomplete).join("; ")
        }` +
          " (--allow-incomplete restores anyway)",
      );
    }
    for (const g of plan.incomplete) {
      log.warn("restoring an incomplete SSTable (--allow-incomplete)", {
        directory: g.directory,
        generation: g.generation,
        missing: g.missing.join(","),
      });
    }
  }

  const progress = new Progress(
    files.length,
    bytes,
    options.progressBar ?? Deno.stderr.isTerminal(),
  );
  const owners = new Accounts();
  const dirs = new SafeDirectories();
  // -t bounds connections: whole-file GETs and the ranges of large files alike.
  const connections = new Semaphore(options.threads ?? 4);
  const restoreOne = async ({ source, planned }: (typeof files)[number]) => {
    try {
      if (planned.size === undefined) {
        throw new FatalError(`Object '${source.key}' is missing from ${options.store.url}`);
      }
      const dir = await dirs.ensure(source.root, source.segments);
      const outcome = await restoreFile(
        options,
        source,
        dir,
        planned.size,
        owners,
        progress,
        connections,
      );
      if (outcome === "skipped") result.skipped++;
      else result.downloaded++;
    } catch (err) {
      const reason = err instanceof FatalError || err instanceof MissingObjectError
        ? err.message
        : errorMessage(err);
      log.error("file not restored", { path: planned.path, key: source.key, reason });
      result.failed.push({ path: planned.path, key: source.key, reason });
      progress.fileDone(0);
    }
  };
  progress.start();
  const memory = log.debugEnabled ? setInterval(() => logMemory(), 1000) : undefined;
  try {
    // Twice as many files as connections: a file being checked, fsynced and
    // renamed holds no connection, and the next one downloads meanwhile.
    await forEachLimited(files, 2 * (options.threads ?? 4), restoreOne);
  } finally {
    clearInterval(memory);
    progress.stop();
  }
  const restored = result.downloaded + result.skipped;
  print(
    `Restored ${restored} of ${files.length} files (${
      formatBytes(bytes)
    }) into ${options.target}: ` +
      `${result.downloaded} downloaded, ${result.skipped} already present, ${result.failed.length} failed`,
  );
  if (result.failed.length > 0) {
    print(`Not restored (${result.failed.length}):`);
    for (const f of result.failed) print(`  ${f.path}: ${f.reason}`);
  }
  if (plan.restorePointInTime !== null && options.at) {
    const dir = options.commitlogsTarget ?? `${options.target}/commitlogs`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(
      `${dir}/${ARCHIVING_PROPERTIES}`,
      archivingProperties(await Deno.realPath(dir), plan.restorePointInTime, options.at),
    );
  }
  printFindings(print, result);
  return result;
}

/** With TDEBUG, a memory line every second (for profiling memory by hand). */
function logMemory(): void {
  const m = Deno.memoryUsage();
  const mb = (n: number) => Math.round(n / 1024 / 1024);
  log.debug("memory", {
    rss_mb: mb(m.rss),
    heap_mb: mb(m.heapUsed),
    heap_total_mb: mb(m.heapTotal),
    external_mb: mb(m.external),
  });
}
