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
 *   size and MD5, fsynced, and only then renamed into place; each directory
 *   that got a file or a new directory is fsynced once, at the end;
 * - a re-run skips files already present with the right size and MD5.
 */
import { errorMessage, FatalError } from "../common/errors.ts";
import { formatBytes } from "../common/format.ts";
import { log } from "../common/log.ts";
import { FileHasher } from "../common/file_hasher.ts";
import { forEachLimited, Semaphore } from "../common/pool.ts";
import { ARCHIVING_PROPERTIES, archivingProperties } from "./commit_logs.ts";
import {
  DEFAULT_CONNECTIONS,
  type DownloadContext,
  downloadContext,
  MissingObjectError,
  restoreFile,
} from "./download.ts";
import { resolvePlan } from "./plan.ts";
import { Progress } from "./progress.ts";
import { describeIncomplete, printFindings, printPlan } from "./report.ts";
import { SafeDirectories } from "./safe_dirs.ts";
import { printLine } from "../common/escape.ts";
import type { RestorePlan, SlurpOptions, SlurpResult } from "./types.ts";

export type { PlannedFile, SlurpOptions, SlurpResult } from "./types.ts";
export { DEFAULT_CONNECTIONS } from "./download.ts";

/**
 * Restores (or with `plan`, only resolves) a file set. Never throws for a
 * single file: those are reported in `failed`. Throws `FatalError` when the
 * file set cannot be resolved (no index, malformed or hostile index).
 * Requires `--allow-read --allow-write`, and `--allow-net` for S3.
 */
export async function slurp(options: SlurpOptions): Promise<SlurpResult> {
  const print = options.print ?? printLine;
  const plan = await resolvePlan(options);
  const files = plan.files;
  const result: SlurpResult = {
    files: files.map((f) => f.planned),
    points: plan.points,
    tablesSkipped: plan.skipped,
    incomplete: plan.incomplete,
    restorePointInTime: plan.restorePointInTime,
    downloaded: 0,
    skipped: 0,
    bytes: files.reduce((sum, f) => sum + (f.planned.size ?? 0), 0),
    missing: files.filter((f) => f.planned.size === undefined).map((f) => f.source.key),
    later: [],
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
  refuseUnrestorable(options, plan);
  await downloadAll(options, plan, result);
  const restored = result.downloaded + result.skipped;
  print(
    `Restored ${restored} of ${files.length} files (${
      formatBytes(result.bytes)
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

/**
 * Before any download: files encrypted without an identity to read them
 * (known from the indexes' metadata; files it does not announce are
 * refused one by one, by the store), or incomplete SSTables without
 * --allow-incomplete, stop the restore with nothing written.
 */
function refuseUnrestorable(options: SlurpOptions, plan: RestorePlan): void {
  const encrypted = plan.encrypted[0];
  if (encrypted !== undefined && !options.store.traits.readsEncrypted) {
    throw new FatalError(
      `The files of index '${encrypted}' are encrypted with age: give --identity FILE to restore them`,
    );
  }
  if (plan.incomplete.length === 0) return;
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

/** Restores every file of the plan, counting outcomes and failures into `result`. */
async function downloadAll(
  options: SlurpOptions,
  plan: RestorePlan,
  result: SlurpResult,
): Promise<void> {
  const files = plan.files;
  const progress = new Progress(
    files.length,
    result.bytes,
    options.progressBar ?? Deno.stderr.isTerminal(),
  );
  const connections = options.threads ?? DEFAULT_CONNECTIONS;
  // Decrypting restores hash on this thread: their cipher buffers leave no
  // room in the memory bound for the hashing thread's 13-17 MB.
  const hasher = new FileHasher({ offThread: !options.store.traits.readsEncrypted });
  const ctx = downloadContext(options, progress, new Semaphore(connections), hasher);
  const dirs = new SafeDirectories();
  const restoreOne = async ({ source, planned }: RestorePlan["files"][number]) => {
    try {
      if (planned.size === undefined) {
        throw new FatalError(`Object '${source.key}' is missing from ${options.store.url}`);
      }
      const dir = await dirs.ensure(source.root, source.segments);
      const outcome = await restoreFile(ctx, { source, dir, size: planned.size });
      if (outcome === "skipped") result.skipped++;
      else {
        result.downloaded++;
        dirs.fileAdded(dir);
      }
    } catch (err) {
      failed(ctx, result, planned.path, source.key, err);
    }
  };
  progress.start();
  const memory = log.debugEnabled ? setInterval(() => logMemory(), 1000) : undefined;
  try {
    // Twice as many files as connections: a file being checked, fsynced and
    // renamed holds no connection, and the next one downloads meanwhile.
    // Largest first: the ranged downloads of large files start at once and
    // small files fill the connections around them, instead of one large
    // file met late being the restore's long tail.
    await forEachLimited(largestFirst(files), 2 * connections, restoreOne);
    await dirs.syncChanged();
  } finally {
    hasher.close();
    clearInterval(memory);
    progress.stop();
  }
  for (const { source, planned } of files) {
    if (source.later) result.later.push({ path: planned.path, reason: source.later });
  }
}

/** The plan's files, largest first (missing ones last). */
function largestFirst(files: RestorePlan["files"]): RestorePlan["files"] {
  return [...files].sort((a, b) => (b.planned.size ?? -1) - (a.planned.size ?? -1));
}

/** One file not restored: logged, listed in `result.failed`, counted as done. */
function failed(
  ctx: DownloadContext,
  result: SlurpResult,
  path: string,
  key: string,
  err: unknown,
): void {
  const reason = err instanceof FatalError || err instanceof MissingObjectError
    ? err.message
    : errorMessage(err);
  log.error("file not restored", { path, key, reason });
  result.failed.push({ path, key, reason });
  ctx.progress.fileDone(0);
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
