/**
 * How a watcher run ends: --once's wait and exit code, the closing log
 * line, and (TDEBUG) the memory lines for profiling by hand.
 */
import { secondsSince } from "../common/format.ts";
import { log } from "../common/log.ts";
import type { IndexPublisher } from "./index/index_publisher.ts";
import type { UploadPipeline } from "./upload/pipeline.ts";

/**
 * --once: waits until every file found is uploaded and its indexes written
 * (or a stop signal); 1 when some file or index could not be.
 */
export async function finishOnce(
  pipeline: UploadPipeline,
  publisher: IndexPublisher | undefined,
  indexWaitMs: number,
  stopped: Promise<string>,
): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const finished = (async () => {
    await pipeline.idle();
    // An index whose upload keeps failing must not hold --once forever.
    const limit = new Promise<void>((resolve) => timer = setTimeout(resolve, indexWaitMs + 30_000));
    await Promise.race([publisher?.idle(), limit]);
  })();
  const signal = await Promise.race([finished.then(() => undefined), stopped]);
  clearTimeout(timer);
  if (signal) log.info("signal received, stopping", { signal });
  let exitCode = 0;
  const failed = pipeline.failedPaths();
  if (failed.length > 0) {
    log.error("some files could not be uploaded", { files: failed.length });
    for (const path of failed) log.error("not uploaded", { path });
    exitCode = 1;
  }
  if ((publisher?.pendingCount() ?? 0) > 0) {
    log.error("some indexes could not be written", { indexes: publisher?.pendingCount() });
    exitCode = 1;
  }
  return exitCode;
}

export function logStopped(
  pipeline: UploadPipeline,
  publisher: IndexPublisher | undefined,
  notUploaded: string[],
  started: number,
  journaled: boolean,
): void {
  const s = pipeline.summary;
  log.info("tablesnap stopped", {
    uploaded: s.uploaded,
    bytes: s.uploadedBytes,
    already_present: s.skipped,
    indexes: publisher?.published ?? 0,
    not_uploaded: notUploaded.length,
    unpublished_indexes: publisher?.pendingCount() ?? 0,
    seconds: secondsSince(started),
  });
  if (notUploaded.length > 0) {
    // With a state directory they are in the journal; without, only -B finds them again.
    const hint = journaled
      ? "files not uploaded yet; the journal keeps them for the next start"
      : "files not uploaded yet; run with -B next time to pick them up";
    log.warn(hint, { files: notUploaded.length });
  }
}

/** With TDEBUG, a memory line every second (for profiling memory by hand). */
export function reportMemoryWhenDebugging(
  pipeline: UploadPipeline,
): ReturnType<typeof setInterval> | undefined {
  if (!log.debugEnabled) return undefined;
  const mb = (n: number) => Math.round(n / 1024 / 1024);
  return setInterval(() => {
    const m = Deno.memoryUsage();
    log.debug("memory", {
      rss_mb: mb(m.rss),
      heap_mb: mb(m.heapUsed),
      heap_total_mb: mb(m.heapTotal),
      external_mb: mb(m.external),
      pending: pipeline.pending().files,
    });
  }, 1000);
}
