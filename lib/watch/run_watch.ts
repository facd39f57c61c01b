/**
 * The watcher job, composed: each part is built after the parts it needs,
 * and later parts attach themselves to earlier ones' events.
 *
 *   FileWatcher (complete files) -> UploadPipeline (the bucket)
 *        -> IndexPublisher (-listdir.json) -> LocalCleanup (--delete-on-backup)
 *
 * plus pins (--pin: the pipeline pins each complete file; a Data.db's pin
 * waits for its index), start-up reconciliation (-B), --once, metrics and
 * signals.
 */
import { errorMessage, FatalError } from "../common/errors.ts";
import { secondsSince } from "../common/format.ts";
import { log } from "../common/log.ts";
import { VERSION } from "../common/version.ts";
import { keyHead, type KeyNaming, objectKey } from "../bucket/keys.ts";
import { type Connection, type ObjectLockRetention, openStore } from "../store/open_store.ts";
import { wrapStore } from "../store/wrapped_store.ts";
import { type ObjectStorage, objectStorageFields } from "../store/object_storage.ts";
import type { Store } from "../store/store.ts";
import { checkRoot, FileWatcher } from "./file_watcher.ts";
import { IndexPublisher } from "./index_publisher.ts";
import { LocalCleanup } from "./local_cleanup.ts";
import { Metrics } from "./metrics.ts";
import { serveMetrics } from "./metrics_server.ts";
import type { PathFilter } from "./path_filter.ts";
import { Pins } from "./pins.ts";
import { UploadPipeline } from "./pipeline.ts";
import { abortStaleUploads, uploadsToKeep } from "./stale_uploads.ts";
import { DurableState, reconcileAtStart } from "./startup.ts";
import { listenForStopSignals } from "./stop_signals.ts";
import type { ListenEvent } from "./watch_rules.ts";

/** Everything the watcher needs, parsed and checked (lib/cli/watch.ts makes it). */
export interface WatchSettings {
  bucket: string;
  connection: Connection;
  /** Storage classes and server-side encryption of the objects written (S3). */
  objectStorage: ObjectStorage;
  roots: string[];
  naming: KeyNaming;
  filter: PathFilter;
  recursive: boolean;
  autoAdd: boolean;
  backup: boolean;
  once: boolean;
  withoutIndex: boolean;
  deleteOnBackup: boolean;
  listen: Set<ListenEvent>;
  threads: number;
  retries: number;
  md5OnStart: boolean;
  multipartThreshold: number;
  partSize: number;
  /** Bytes per second over all uploads; undefined: no limit. */
  maxBandwidth: number | undefined;
  sweepIntervalMs: number;
  settleMs: number;
  indexWaitMs: number;
  shutdownGraceMs: number;
  metricsListen: string | undefined;
  /** --state-dir: the journal of pending files and checkpoints; undefined: none. */
  stateDir?: string | undefined;
  /** --object-lock-mode/-days: explicit retention on every object written; unset: the bucket's default. */
  objectLock?: ObjectLockRetention | undefined;
  /** --pin: complete files are hard-linked until in the bucket; unset: off. */
  pin?: PinSettings | undefined;
  /** --encrypt-to/--encrypt-to-file: file bodies are encrypted with age; unset: plaintext. */
  encryption?: WatchEncryption | undefined;
}

/** --pin-dir (undefined: `PATH/.tablesnap-pins` per PATH) and --pin-max-bytes. */
export interface PinSettings {
  dir: string | undefined;
  maxBytes: number;
}

/** Client-side encryption of file bodies (lib/store/encrypting_store.ts). */
export interface WatchEncryption {
  /** X25519 recipients, checked. */
  recipients: string[];
  /** --encrypt-spool-dir: accepted for old configurations, unused. */
  spoolDir?: string;
}

/**
 * Runs the watcher until SIGTERM/SIGINT (or, with `once`, until everything
 * that existed is uploaded). Returns the exit code.
 */
export async function runWatch(s: WatchSettings): Promise<number> {
  // A missing path is a usage error, found before any request is made.
  for (const root of s.roots) await checkRoot(root);
  if (s.encryption?.spoolDir !== undefined) {
    log.warn("--encrypt-spool-dir is no longer used: nothing is spooled", {
      dir: s.encryption.spoolDir,
    });
  }
  // Locked and read first: a second watcher or an unusable directory stops here.
  const state = s.stateDir === undefined ? undefined : await DurableState.open(s.stateDir);
  // A new or damaged journal cannot say what changed meanwhile: reconcile as -B does.
  const backup = s.backup || (state?.needsFullReconciliation ?? false);
  const metrics = new Metrics();
  const pins = s.pin ? Pins.open({ roots: s.roots, ...s.pin, observer: metrics }) : undefined;
  if (pins) {
    metrics.pinsFrom(() => pins.usage());
    // Pin paths are neither watched, swept, indexed nor uploaded.
    s = { ...s, filter: pins.excluding(s.filter) };
  }
  const store = openWatchStore(s, metrics);
  const reachable = await checkReachable(store, metrics, backup);
  const server = s.metricsListen === undefined ? undefined : serveMetrics(metrics, s.metricsListen);
  const rootOf = (path: string) => s.roots.find((r) => path.startsWith(r + "/")) ?? path;
  // Before any upload of ours: whatever is listed is an earlier run's. (Not
  // while S3 is unreachable: the start would wait for the listing's timeouts.)
  if ((backup || state) && reachable) {
    const backsUp = (path: string) => rootOf(path) !== path && s.filter.accepts(path);
    const keep = state ? uploadsToKeep(state.journal, backsUp) : new Set<string>();
    const prefixes = s.roots.map((root) => objectKey(s.naming, `${root}/`));
    await abortStaleUploads(store, prefixes, keep);
  }

  const journal = state?.journal;
  const pipeline = new UploadPipeline({
    ...s,
    store,
    observer: metrics,
    rootOf,
    journal,
    pins,
  });
  const publisher = s.withoutIndex
    ? undefined
    : startIndexing(s, store, pipeline, metrics, rootOf, pins);
  const cleanup = s.deleteOnBackup ? new LocalCleanup(pipeline, publisher) : undefined;
  if (cleanup) {
    pipeline.onStored((path) => cleanup.fileStored(path));
    publisher?.onPublished((_, directory) => cleanup.directoryIndexed(directory));
  }
  const watcher = newFileWatcher({ ...s, backup }, pipeline, metrics);

  const signals = listenForStopSignals();
  const memoryReport = reportMemoryWhenDebugging(pipeline);
  const started = performance.now();
  try {
    // Pins left by a killed run, adopted before any file is pinned or queued.
    const recovered = pins ? await pins.recover(s.filter) : [];
    await watcher.prepare();
    if (!s.once) watcher.watch();
    log.info("tablesnap started", {
      version: VERSION,
      bucket: store.url,
      paths: s.roots.join(","),
      threads: s.threads,
      ...objectStorageFields(s.objectStorage),
    });
    if (backup || state) {
      // Indexes of the backlog wait until every existing file is queued.
      publisher?.beginBacklog();
      try {
        const parts = { ...s, store, pipeline, publisher, watcher };
        if (state) await state.reconcile(parts);
        else await reconcileAtStart(parts);
      } finally {
        publisher?.endBacklog();
      }
    }
    // Uploaded to their originals' keys, from the pin where the original is gone.
    for (const path of recovered) pipeline.enqueue(path);
    if (s.once) {
      const code = await finishOnce(pipeline, publisher, s.indexWaitMs, signals.stopped);
      // --delete-on-backup: the files that waited for their index go before the exit.
      await cleanup?.idle();
      return code;
    }
    log.info("signal received, stopping", { signal: await signals.stopped });
    return 0;
  } finally {
    signals.dispose();
    clearInterval(memoryReport);
    await state?.stop();
    await watcher.close();
    const notUploaded = await pipeline.shutdown(s.shutdownGraceMs);
    publisher?.stop();
    await state?.close();
    logStopped(pipeline, publisher, notUploaded, started, state !== undefined);
    await server?.shutdown();
    store.close();
  }
}

/** The index publisher, told of every stored file by the pipeline. */
function startIndexing(
  s: WatchSettings,
  store: Store,
  pipeline: UploadPipeline,
  metrics: Metrics,
  rootOf: (path: string) => string,
  pins: Pins | undefined,
): IndexPublisher {
  const publisher = new IndexPublisher({
    store,
    naming: s.naming,
    filter: s.filter,
    isStored: (path, size) => pipeline.isStored(path, size),
    isPending: (path) => pipeline.isPending(path),
    isInFlight: (path) => pipeline.isInFlight(path),
    ...(pins ? { isPinned: (path: string) => pins.isPinned(path) } : {}),
    waitMs: s.indexWaitMs,
  });
  pipeline.onStored((path, outcome) => publisher.stored(path, outcome));
  if (pins) {
    // A Data.db keeps its pin until its index is written (or given up).
    pins.onPinned((path) => publisher.pinned(path));
    pins.holdWhile((path) => publisher.hasPendingIndex(path));
    publisher.onSettled((dataPath) => {
      if (!pipeline.isPending(dataPath)) pins.release(dataPath);
    });
  }
  publisher.onPublished((_, directory, complete) =>
    metrics.indexWritten(rootOf(`${directory}/x`), complete)
  );
  publisher.start();
  return publisher;
}

/** The watcher, feeding complete files to the pipeline; its candidates count as pending. */
function newFileWatcher(s: WatchSettings, pipeline: UploadPipeline, metrics: Metrics): FileWatcher {
  const watcher = new FileWatcher({
    ...s,
    onComplete: (path, how) => {
      log.debug("complete", { path, how });
      pipeline.enqueue(path);
    },
    isHandled: (path, info) =>
      pipeline.isPending(path) ||
      pipeline.isStoredUnchanged(path, info.size, info.mtime?.getTime() ?? 0),
    includeExisting: s.backup,
    sweepIntervalMs: s.once ? 0 : s.sweepIntervalMs,
    onWatching: (ok) => metrics.setWatching(ok),
  });
  metrics.pendingFrom(() => {
    const pending = pipeline.pending();
    return { ...pending, files: pending.files + watcher.candidates() };
  });
  return watcher;
}

/**
 * The bucket, rate-limited with --max-bandwidth, its requests counted by the
 * metrics. Its start-up check lists only this host's keys, which is all
 * the agent policy (packaging/iam/agent.json) lets the watcher list.
 */
function openWatchStore(s: WatchSettings, metrics: Metrics): Store {
  const store = openStore(s.bucket, s.connection, {
    objectStorage: s.objectStorage,
    onRequest: (operation, seconds, failed) => metrics.s3Request(operation, seconds, failed),
    checkPrefix: keyHead(s.naming),
    ...(s.objectLock ? { objectLock: s.objectLock } : {}),
  });
  return wrapStore(store, {
    maxBandwidth: s.maxBandwidth,
    encryption: s.encryption && {
      recipients: s.encryption.recipients,
      // Component names only (the index names them too): verify and slurp
      // check whole SSTables against them without the secret key.
      plaintext: (key) => key.endsWith("TOC.txt"),
    },
  });
}

/**
 * Permanent problems (no bucket, denied) stop us here; a network outage
 * does not: the pipeline retries until S3 is back. False when it was out. With -B the startup
 * listing proves the same (with the same errors), one request cheaper.
 */
async function checkReachable(store: Store, metrics: Metrics, backup: boolean): Promise<boolean> {
  try {
    if (!backup) await store.check();
    metrics.setS3Reachable(true);
    return true;
  } catch (err) {
    if (err instanceof FatalError) throw err;
    log.warn("cannot reach the bucket yet; uploads will retry", {
      bucket: store.url,
      error: errorMessage(err),
    });
    metrics.setS3Reachable(false);
    return false;
  }
}

/**
 * --once: waits until every file found is uploaded and its indexes written
 * (or a stop signal); 1 when some file or index could not be.
 */
async function finishOnce(
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

function logStopped(
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
function reportMemoryWhenDebugging(
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
