/**
 * The watcher job, composed: it builds the parts, subscribes them to the
 * ledger (ledger.ts), starts and stops them.
 *
 *   FileWatcher (complete files) -> UploadPipeline (the bucket)
 *        -> Ledger (one record per file and per pending index)
 *             -> Journal, Pins, IndexPublisher, LocalCleanup, Metrics
 *
 * plus start-up reconciliation (-B, --state-dir), --once and signals.
 */
import { errorMessage, FatalError } from "../common/errors.ts";
import { log } from "../common/log.ts";
import { VERSION } from "../common/version.ts";
import { keyHead, type KeyNaming, objectKey } from "../bucket/keys.ts";
import { type Connection, type ObjectLockRetention, openStore } from "../store/open_store.ts";
import { wrapStore } from "../store/wrapped_store.ts";
import { type ObjectStorage, objectStorageFields } from "../store/object_storage.ts";
import type { Store } from "../store/store.ts";
import { FileWatcher } from "./detect/file_watcher.ts";
import { checkRoot } from "./detect/watch_setup.ts";
import { IndexPublisher } from "./index/index_publisher.ts";
import { Ledger } from "./ledger.ts";
import { LocalCleanup } from "./keepers/local_cleanup.ts";
import { Metrics } from "./metrics/metrics.ts";
import { serveMetrics } from "./metrics/metrics_server.ts";
import type { PathFilter } from "./detect/path_filter.ts";
import { Pins } from "./keepers/pins.ts";
import { UploadPipeline } from "./upload/pipeline.ts";
import { abortStaleUploads, uploadsToKeep } from "./upload/stale_uploads.ts";
import { DurableState } from "./durable/durable_state.ts";
import { reconcileAtStart } from "./durable/reconcile.ts";
import { finishOnce, logStopped, reportMemoryWhenDebugging } from "./finish.ts";
import { listenForStopSignals } from "./stop_signals.ts";
import type { ListenEvent } from "./detect/watch_rules.ts";

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
export async function runWatch(settings: WatchSettings): Promise<number> {
  const w = await buildWatch(settings);
  const signals = listenForStopSignals();
  const memoryReport = reportMemoryWhenDebugging(w.pipeline);
  const started = performance.now();
  try {
    await startWatch(w);
    if (w.s.once) {
      const code = await finishOnce(w.pipeline, w.publisher, w.s.indexWaitMs, signals.stopped);
      // --delete-on-backup: the files that waited for their index go before the exit.
      await w.cleanup?.idle();
      return code;
    }
    log.info("signal received, stopping", { signal: await signals.stopped });
    return 0;
  } finally {
    signals.dispose();
    clearInterval(memoryReport);
    await w.state?.stop();
    await w.watcher.close();
    const notUploaded = await w.pipeline.shutdown(w.s.shutdownGraceMs);
    w.publisher?.stop();
    await w.state?.close();
    logStopped(w.pipeline, w.publisher, notUploaded, started, w.state !== undefined);
    await w.server?.shutdown();
    w.store.close();
  }
}

/** The watcher's parts, built and subscribed to the ledger. */
interface WatchParts {
  /** The settings, with pin paths filtered out. */
  s: WatchSettings;
  /** -B, or a journal that cannot say what changed while we were down. */
  backup: boolean;
  state: DurableState | undefined;
  ledger: Ledger;
  pins: Pins | undefined;
  store: Store;
  server: ReturnType<typeof serveMetrics> | undefined;
  pipeline: UploadPipeline;
  publisher: IndexPublisher | undefined;
  cleanup: LocalCleanup | undefined;
  watcher: FileWatcher;
}

/**
 * Builds the parts and subscribes each to the ledger, in the order they
 * must hear its events: the journal first, the publisher before the cleanup
 * (a stored Data.db asks for its index before its directory is cleaned).
 */
async function buildWatch(s: WatchSettings): Promise<WatchParts> {
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
  const ledger = new Ledger();
  state?.journal.follow(ledger);
  const metrics = new Metrics();
  const rootOf = (path: string) => s.roots.find((r) => path.startsWith(r + "/")) ?? path;
  metrics.follow(ledger, rootOf);
  const pins = s.pin ? Pins.open({ roots: s.roots, ...s.pin, observer: metrics }) : undefined;
  if (pins) {
    pins.follow(ledger);
    metrics.pinsFrom(() => pins.usage());
    // Pin paths are neither watched, swept, indexed nor uploaded.
    s = { ...s, filter: pins.excluding(s.filter) };
  }
  const store = openWatchStore(s, metrics);
  const reachable = await checkReachable(store, metrics, backup);
  const server = s.metricsListen === undefined ? undefined : serveMetrics(metrics, s.metricsListen);
  // Before any upload of ours: whatever is listed is an earlier run's. (Not
  // while S3 is unreachable: the start would wait for the listing's timeouts.)
  if ((backup || state) && reachable) await abortEarlierUploads(s, store, state, rootOf);
  const journal = state?.journal;
  const pipeline = new UploadPipeline({
    ...s,
    store,
    observer: metrics,
    rootOf,
    ledger,
    journal,
    pins,
  });
  const publisher = s.withoutIndex ? undefined : new IndexPublisher({
    store,
    naming: s.naming,
    filter: s.filter,
    ledger,
    ...(pins ? { isPinned: (path: string) => pins.isPinned(path) } : {}),
    waitMs: s.indexWaitMs,
    onUnreadableToc: () => metrics.tocUnreadable(),
  });
  const cleanup = s.deleteOnBackup ? new LocalCleanup(ledger) : undefined;
  const watcher = newFileWatcher({ ...s, backup }, ledger, { pipeline, publisher, metrics });
  return { s, backup, state, ledger, pins, store, server, pipeline, publisher, cleanup, watcher };
}

/** Starts watching, then reconciles with the bucket (-B, --state-dir). */
async function startWatch(w: WatchParts): Promise<void> {
  const { s, pins, publisher, watcher, pipeline, state } = w;
  // Pins left by a killed run, adopted before any file is pinned or queued.
  const recovered = pins ? await pins.recover(s.filter) : [];
  publisher?.start();
  await watcher.prepare();
  if (!s.once) watcher.watch();
  log.info("tablesnap started", {
    version: VERSION,
    bucket: w.store.url,
    paths: s.roots.join(","),
    threads: s.threads,
    ...objectStorageFields(s.objectStorage),
  });
  if (w.backup || state) {
    // Indexes of the backlog wait until every existing file is queued.
    publisher?.beginBacklog();
    try {
      // `backup` as given (-B): the state decides itself whether its journal needs a full one.
      const parts = { ...w, ...s, indexing: publisher !== undefined };
      if (state) await state.reconcile(parts);
      else await reconcileAtStart(parts);
    } finally {
      publisher?.endBacklog();
    }
  }
  // Uploaded to their originals' keys, from the pin where the original is gone.
  for (const path of recovered) pipeline.enqueue(path);
}

/** Multipart uploads an earlier run left, aborted (unless the journal resumes them). */
async function abortEarlierUploads(
  s: WatchSettings,
  store: Store,
  state: DurableState | undefined,
  rootOf: (path: string) => string,
): Promise<void> {
  const backsUp = (path: string) => rootOf(path) !== path && s.filter.accepts(path);
  const keep = state ? uploadsToKeep(state.journal, backsUp) : new Set<string>();
  const prefixes = s.roots.map((root) => objectKey(s.naming, `${root}/`));
  await abortStaleUploads(store, prefixes, keep);
}

/**
 * The watcher, feeding complete files to the pipeline (and telling the
 * publisher which directories the start-up sweep is done with); its
 * candidates count as pending.
 */
function newFileWatcher(
  s: WatchSettings,
  ledger: Ledger,
  { pipeline, publisher, metrics }: {
    pipeline: UploadPipeline;
    publisher: IndexPublisher | undefined;
    metrics: Metrics;
  },
): FileWatcher {
  const watcher = new FileWatcher({
    ...s,
    onComplete: (path, how) => {
      log.debug("complete", { path, how });
      pipeline.enqueue(path);
    },
    room: () => pipeline.room(),
    onSwept: (dir) => publisher?.directorySwept(dir),
    isHandled: (path, info) => ledger.handles(path, info.size, info.mtime?.getTime() ?? 0),
    includeExisting: s.backup,
    sweepIntervalMs: s.once ? 0 : s.sweepIntervalMs,
    onWatching: (ok) => metrics.setWatching(ok),
    onSkipped: (reason) => metrics.pathSkipped(reason),
  });
  // Files still settling count as pending too.
  metrics.pendingFrom(() => {
    const pending = ledger.pending();
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
