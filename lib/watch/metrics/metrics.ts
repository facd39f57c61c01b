/**
 * Prometheus metrics for the watcher, rendered in the text exposition format
 * 0.0.4 (served by metrics_server.ts).
 *
 * The writer is our own, about a hundred lines: prom-client (npm) runs under
 * Deno, but its registry renders asynchronously and pulls in four packages,
 * while all we need is a handful of counters, gauges and two histograms
 * rendered on demand. `tests/metrics_test.ts` parses the output against the
 * format rules.
 *
 * Everything that depends on time (the age of the oldest pending file) is
 * computed at scrape time from the injected clock, so a stalled watcher shows
 * a growing age even if nothing calls into this module any more.
 */
import { VERSION } from "../../common/version.ts";
import { FAILURE_REASONS } from "../../store/failure.ts";
import type { Ledger } from "../ledger.ts";
import { log } from "../../common/log.ts";
import type { SkipReason } from "../records.ts";
import { Histogram, increment, labelled, timestamps, Writer } from "./prometheus_text.ts";

/** Options for `Metrics`. */
export interface MetricsOptions {
  /** Milliseconds since the epoch; injectable for tests. Default `Date.now`. */
  now?: () => number;
}

/** S3 request latency: fast HEADs to multi-minute 256 MB parts. */
const S3_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** Whole-file upload time, small components to multi-GB Data.db files. */
const UPLOAD_BUCKETS = [0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600];

/**
 * What is not in the bucket yet. `oldestSince`: since when (epoch ms) the
 * oldest of those files has been complete; `null` when nothing is pending.
 */
export interface PendingWork {
  files: number;
  bytes: number;
  oldestSince: number | null;
}

const SKIP_REASONS: readonly SkipReason[] = ["fifo", "socket", "device", "symlink", "bad_name"];

/**
 * The watcher's metrics. Methods record events; `render()` writes the
 * Prometheus text format. No method needs a permission.
 */
export class Metrics {
  readonly #now: () => number;
  readonly #startedMs: number;
  #uploadedFiles = 0;
  #uploadedBytes = 0;
  readonly #uploadDuration = new Histogram(UPLOAD_BUCKETS);
  readonly #failures = new Map<string, number>(FAILURE_REASONS.map((r) => [r, 0]));
  readonly #retries = new Map<string, number>(FAILURE_REASONS.map((r) => [r, 0]));
  #pending: () => PendingWork = () => ({ files: 0, bytes: 0, oldestSince: null });
  readonly #lastUpload = new Map<string, number>();
  readonly #lastIndex = new Map<string, number>();
  readonly #s3Duration = new Map<string, Histogram>();
  readonly #s3Failures = new Map<string, number>();
  #incompleteIndexes = 0;
  readonly #skippedPaths = new Map<string, number>(SKIP_REASONS.map((r) => [r, 0]));
  #unreadableTocs = 0;
  #pins: (() => { files: number; bytes: number }) | undefined;
  readonly #pinsRefused = new Map<string, number>();
  #watching = false;
  #s3Reachable = false;

  constructor(options: MetricsOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#startedMs = this.#now();
  }

  /** Follows the ledger: each index written, under the watched path `rootOf` gives. */
  follow(ledger: Ledger, rootOf: (path: string) => string): void {
    ledger.subscribe((event) => {
      if (event.type === "index-settled" && event.written) {
        this.indexWritten(rootOf(`${event.directory}/x`), event.complete);
      }
    });
  }

  /** A file under the watched path `root` was uploaded in `seconds`. */
  fileUploaded(root: string, bytes: number, seconds: number): void {
    this.#s3Reachable = true;
    this.#uploadedFiles += 1;
    this.#uploadedBytes += bytes;
    this.#uploadDuration.observe(seconds);
    this.#lastUpload.set(root, this.#now());
  }

  /** An upload gave up (after its retries), for `reason` (see `failureReason`). */
  uploadFailed(reason: string): void {
    // Given up on for one of these reasons, S3 counts as out of reach until
    // a request succeeds again.
    if (reason === "network" || reason === "access_denied") this.#s3Reachable = false;
    increment(this.#failures, reason);
  }

  /** An upload attempt failed and will be tried again. */
  uploadRetried(reason: string): void {
    increment(this.#retries, reason);
  }

  /**
   * Where to read what is not in the bucket yet, when scraped (walking the
   * pipeline's queues costs time proportional to the backlog: only on demand).
   */
  pendingFrom(source: () => PendingWork): void {
    this.#pending = source;
  }

  /** `--pin`: where to read what is pinned, when scraped (the pin metrics appear with it). */
  pinsFrom(source: () => { files: number; bytes: number }): void {
    this.#pins = source;
    for (const reason of ["limit", "unavailable"]) this.#pinsRefused.set(reason, 0);
  }

  /** A complete file was not pinned: past --pin-max-bytes, or its pin directory failed. */
  pinRefused(reason: string): void {
    increment(this.#pinsRefused, reason);
  }

  /**
   * An index was published for a directory under the watched path `root`;
   * not `complete` when its wait ran out before every file was stored.
   */
  indexWritten(root: string, complete = true): void {
    this.#lastIndex.set(root, this.#now());
    if (!complete) this.#incompleteIndexes++;
  }

  /** A path in the watched tree was skipped, never read (see `SKIP_REASONS`); once per path. */
  pathSkipped(reason: SkipReason): void {
    increment(this.#skippedPaths, reason);
  }

  /** A TOC.txt was not a list of component names: its generation is indexed unchecked. */
  tocUnreadable(): void {
    this.#unreadableTocs++;
  }

  /** One S3 request (`operation` like "PutObject") took `seconds`. */
  s3Request(operation: string, seconds: number, failed: boolean): void {
    let histogram = this.#s3Duration.get(operation);
    if (!histogram) {
      histogram = new Histogram(S3_BUCKETS);
      this.#s3Duration.set(operation, histogram);
      this.#s3Failures.set(operation, 0);
    }
    histogram.observe(seconds);
    if (failed) increment(this.#s3Failures, operation);
    else this.#s3Reachable = true;
  }

  /** Whether the file system watches are in place. */
  setWatching(ok: boolean): void {
    this.#watching = ok;
  }

  /**
   * Whether S3 can be reached, as the start-up check found; later every
   * request and upload updates it.
   */
  setS3Reachable(ok: boolean): void {
    this.#s3Reachable = ok;
  }

  /** True while the watcher runs and S3 is reachable (`/healthz` answers 200). */
  healthy(): boolean {
    return this.#watching && this.#s3Reachable;
  }

  /** The Prometheus text exposition format 0.0.4, ending in a newline. */
  render(): string {
    const w = new Writer();
    this.#renderState(w);
    this.#renderUploads(w);
    this.#renderPending(w);
    this.#renderProblems(w);
    if (this.#pins) this.#renderPins(w, this.#pins());
    this.#renderRequests(w);
    return w.text();
  }

  /** Build, health, watches and S3 reachability. */
  #renderState(w: Writer): void {
    w.metric("tablesnap_build_info", "gauge", "Always 1; the version is a label", [
      [{ version: VERSION }, 1],
    ]);
    w.metric("tablesnap_healthy", "gauge", "1 while watching and S3 is reachable, else 0", [
      [{}, this.healthy() ? 1 : 0],
    ]);
    w.metric("tablesnap_watching", "gauge", "1 while the file system watches are in place", [
      [{}, this.#watching ? 1 : 0],
    ]);
    w.metric("tablesnap_s3_reachable", "gauge", "1 if the last contact with S3 succeeded", [
      [{}, this.#s3Reachable ? 1 : 0],
    ]);
  }

  /** Uploads done, failed and retried. */
  #renderUploads(w: Writer): void {
    w.metric("tablesnap_uploaded_files_total", "counter", "Files uploaded", [
      [{}, this.#uploadedFiles],
    ]);
    w.metric("tablesnap_uploaded_bytes_total", "counter", "Bytes of files uploaded", [
      [{}, this.#uploadedBytes],
    ]);
    w.histogram("tablesnap_upload_duration_seconds", "Time to upload one file", [
      [{}, this.#uploadDuration],
    ]);
    w.metric(
      "tablesnap_upload_failures_total",
      "counter",
      "Uploads given up after their retries, by reason",
      labelled(this.#failures, "reason"),
    );
    w.metric(
      "tablesnap_upload_retries_total",
      "counter",
      "Failed upload attempts that were tried again, by reason",
      labelled(this.#retries, "reason"),
    );
  }

  /** What is not in the bucket yet, and the last upload and index. */
  #renderPending(w: Writer): void {
    const now = this.#now();
    const pending = this.#pending();
    w.metric("tablesnap_pending_files", "gauge", "Files complete but not yet in the bucket", [
      [{}, pending.files],
    ]);
    w.metric("tablesnap_pending_bytes", "gauge", "Bytes of files not yet in the bucket", [
      [{}, pending.bytes],
    ]);
    const age = pending.oldestSince === null ? 0 : Math.max(0, now - pending.oldestSince) / 1000;
    w.metric(
      "tablesnap_oldest_pending_age_seconds",
      "gauge",
      "Seconds since the oldest file not yet in the bucket was complete (0 when none)",
      [[{}, age]],
    );
    w.metric(
      "tablesnap_last_upload_timestamp_seconds",
      "gauge",
      "Unix time of the last successful upload, by watched path",
      timestamps(this.#lastUpload),
    );
    w.metric(
      "tablesnap_last_index_timestamp_seconds",
      "gauge",
      "Unix time of the last index written, by watched path",
      timestamps(this.#lastIndex),
    );
    w.metric(
      "tablesnap_incomplete_indexes_total",
      "counter",
      "Indexes written at their --index-wait deadline without every file of their directory",
      [[{}, this.#incompleteIndexes]],
    );
  }

  /** What was skipped, held back or failed to parse: problems counted, not only logged. */
  #renderProblems(w: Writer): void {
    w.metric(
      "tablesnap_skipped_paths_total",
      "counter",
      "Paths in the watched tree skipped without being read, by reason (fifo, socket, device, symlink: not a regular file; bad_name: not UTF-8 or holding control characters)",
      labelled(this.#skippedPaths, "reason"),
    );
    w.metric(
      "tablesnap_repeated_log_lines_total",
      "counter",
      "Occurrences of recurring problems counted instead of logged (each is logged once, then summarised once a period)",
      [[{}, log.repeatsSuppressed]],
    );
    w.metric(
      "tablesnap_unreadable_tocs_total",
      "counter",
      "TOC.txt files that were not a list of component names: their generation was indexed as without a TOC",
      [[{}, this.#unreadableTocs]],
    );
  }

  /** `--pin`: what is pinned, and what could not be. */
  #renderPins(w: Writer, pins: { files: number; bytes: number }): void {
    w.metric("tablesnap_pinned_files", "gauge", "Files held by --pin links", [
      [{}, pins.files],
    ]);
    w.metric("tablesnap_pinned_bytes", "gauge", "Bytes of the files held by --pin links", [
      [{}, pins.bytes],
    ]);
    w.metric(
      "tablesnap_pins_refused_total",
      "counter",
      "Complete files not pinned, by reason (limit: past --pin-max-bytes; unavailable: pinning is off for their path)",
      labelled(this.#pinsRefused, "reason"),
    );
  }

  /** S3 requests, and the process. */
  #renderRequests(w: Writer): void {
    w.histogram(
      "tablesnap_s3_request_duration_seconds",
      "S3 request latency, by operation",
      [...this.#s3Duration].map(([operation, h]) => [{ operation }, h]),
    );
    w.metric(
      "tablesnap_s3_request_failures_total",
      "counter",
      "S3 requests that failed, by operation",
      labelled(this.#s3Failures, "operation"),
    );
    w.metric("tablesnap_process_resident_memory_bytes", "gauge", "Resident set size", [
      [{}, Deno.memoryUsage().rss],
    ]);
    w.metric("tablesnap_process_start_time_seconds", "gauge", "Unix time the process started", [
      [{}, this.#startedMs / 1000],
    ]);
  }
}
