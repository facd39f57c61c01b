/**
 * The watcher job: `tablesnap [options] BUCKET PATH...`. Parses the
 * original's flags, then wires the pieces together:
 *
 *   FileWatcher (complete files) -> UploadPipeline (the bucket)
 *        -> IndexPublisher (-listdir.json) -> --delete-on-backup
 *
 * and handles startup reconciliation (-B), --once, metrics and signals.
 */
import { resolve } from "node:path";
import {
  CONNECTION_HELP,
  CONNECTION_OPTIONS,
  intOption,
  numberOption,
  openStore,
  parseCli,
} from "../cli/options.ts";
import { errorMessage, FatalError, UsageError } from "../common/errors.ts";
import { log, logOptionsFromEnv } from "../common/log.ts";
import {
  INDEX_SUFFIX,
  type KeyNaming,
  namingFromFlags,
  objectKey,
  pathOfKey,
} from "../bucket/keys.ts";
import { makePathFilter, type PathFilter } from "./path_filter.ts";
import { type RemoteListing, UploadPipeline } from "./pipeline.ts";
import { dirname, IndexPublisher, wantsIndex } from "./index_publisher.ts";
import { checkRoot, FileWatcher, type ListenEvent } from "./file_watcher.ts";
import { parseRate, RateLimiter } from "../store/rate_limit.ts";
import { failureReason, Metrics, serveMetrics } from "./metrics.ts";
import { VERSION } from "../common/version.ts";
import type { Store } from "../store/store.ts";

const MB = 1024 * 1024;

export const WATCH_OPTIONS = {
  ...CONNECTION_OPTIONS,
  recursive: { type: "boolean", short: "r" },
  "auto-add": { type: "boolean", short: "a" },
  backup: { type: "boolean", short: "B" },
  "reduced-redundancy": { type: "boolean", short: "R" },
  prefix: { type: "string", short: "p" },
  name: { type: "string", short: "n" },
  "keyname-separator": { type: "string" },
  "without-index": { type: "boolean" },
  "with-sse": { type: "boolean" },
  threads: { type: "string", short: "t" },
  "md5-on-start": { type: "boolean" },
  "listen-events": { type: "string", multiple: true },
  "delete-on-backup": { type: "boolean" },
  exclude: { type: "string", short: "e", multiple: true },
  include: { type: "string", short: "i", multiple: true },
  "max-upload-size": { type: "string" },
  "multipart-chunk-size": { type: "string" },
  retries: { type: "string" },
  once: { type: "boolean" },
  "max-bandwidth": { type: "string" },
  "sweep-interval": { type: "string" },
  "settle-seconds": { type: "string" },
  "index-wait": { type: "string" },
  "shutdown-grace": { type: "string" },
  "log-format": { type: "string" },
  "metrics-listen": { type: "string" },
  version: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export const WATCH_HELP = `Usage: tablesnap [options] BUCKET PATH...

Watches PATH(s) and uploads every finished file to BUCKET, with a JSON index
of the directory beside every Data.db. Other jobs: tablesnap slurp|chop|verify --help

${CONNECTION_HELP}

What to watch:
  -r, --recursive             watch the whole tree under each PATH
  -a, --auto-add              also watch directories created after start
  -B, --backup                at start, upload existing files not yet in the bucket
      --once                  with -B: upload what is missing, write indexes, exit
  -e, --exclude REGEX         skip paths matching REGEX (repeatable)
  -i, --include REGEX         upload only paths matching REGEX (repeatable)
                              with neither, paths containing "-tmp" are skipped
      --listen-events EVENT   IN_MOVED_TO, IN_CLOSE_WRITE, IN_CREATE (repeatable;
                              default IN_MOVED_TO and IN_CLOSE_WRITE)
      --delete-on-backup      delete each local file once it is safely uploaded

Keys and objects:
  -p, --prefix PREFIX         string before every key (default none)
  -n, --name NAME             host name in keys (default this host's FQDN)
      --keyname-separator S   between name and path (default ":")
      --without-index         do not write -listdir.json indexes
  -R, --reduced-redundancy    storage class REDUCED_REDUNDANCY
      --with-sse              server-side encryption (AES256)
      --max-upload-size MB    larger files go multipart (default 5120)
      --multipart-chunk-size MB  part size (default 256)
      --md5-on-start          compare MD5s, not only sizes, with objects found at start

Behaviour:
  -t, --threads N             uploads at once (default 4)
      --retries N             extra attempts per failed upload before it waits
                              for the next retry cycle (default 0; never dropped)
      --max-bandwidth RATE    bytes per second over all uploads, e.g. 50M (K/M/G)
      --sweep-interval SEC    rescan the tree this often for missed files (default 300, 0: off)
      --settle-seconds SEC    a file found only by a scan is complete when unmodified
                              this long (default 10)
      --index-wait SEC        how long an index waits for its SSTable's components (default 60)
      --shutdown-grace SEC    on SIGTERM, how long in-flight uploads may finish (default 30)
      --log-format FORMAT     plain (default) or json
      --metrics-listen ADDR   serve Prometheus /metrics and /healthz on HOST:PORT
      --version               print the version
  -h, --help                  this help

Environment: TDEBUG=1 debug logs; TABLESNAP_SYSLOG=1 logs to syslog (DAEMON, tag tablesnap).`;

/** Everything the watcher needs, parsed and checked. */
export interface WatchOptions {
  store: Store;
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
  maxBandwidth?: number;
  sweepIntervalMs: number;
  settleMs: number;
  indexWaitMs: number;
  shutdownGraceMs: number;
  metrics: Metrics;
  metricsListen?: string;
}

const LISTEN_EVENTS: ListenEvent[] = ["IN_MOVED_TO", "IN_CLOSE_WRITE", "IN_CREATE"];

/**
 * Parses the watcher's command line. Returns "help"/"version" for those
 * flags. Throws `UsageError` for anything wrong.
 */
export async function parseWatchArgs(args: string[]): Promise<WatchOptions | "help" | "version"> {
  const { values, positionals } = parseCli(args, WATCH_OPTIONS);
  if (values.help) return "help";
  if (values.version) return "version";
  const logFormat = values["log-format"] ?? "plain";
  if (logFormat !== "plain" && logFormat !== "json") {
    throw new UsageError(`Option '--log-format' takes plain or json, got '${logFormat}'`);
  }
  log.configure(logOptionsFromEnv(logFormat));
  const [bucket, ...paths] = positionals;
  if (bucket === undefined) throw new UsageError("Missing BUCKET and PATH arguments");
  if (paths.length === 0) throw new UsageError("Missing PATH argument: which directories to watch");
  const filter = makePathFilter({
    ...(values.include ? { include: values.include } : {}),
    ...(values.exclude ? { exclude: values.exclude } : {}),
  });
  const listen = new Set<ListenEvent>();
  for (const event of values["listen-events"] ?? ["IN_MOVED_TO", "IN_CLOSE_WRITE"]) {
    if (!LISTEN_EVENTS.includes(event as ListenEvent)) {
      throw new UsageError(
        `Option '--listen-events' takes ${LISTEN_EVENTS.join(", ")}, got '${event}'`,
      );
    }
    listen.add(event as ListenEvent);
  }
  if (values.once && !values.backup) {
    throw new UsageError("Option '--once' needs '-B/--backup' (it uploads what exists)");
  }
  let maxBandwidth: number | undefined;
  if (values["max-bandwidth"] !== undefined) {
    maxBandwidth = parseRate(values["max-bandwidth"]) ?? undefined;
    if (maxBandwidth === undefined) {
      throw new UsageError(
        `Option '--max-bandwidth' needs a rate like 500K, 20M or 1G, got '${
          values["max-bandwidth"]
        }'`,
      );
    }
  }
  const threads = intOption(values.threads, "--threads", 4, 1);
  const retries = intOption(values.retries, "--retries", 0);
  const maxUploadMb = intOption(values["max-upload-size"], "--max-upload-size", 5120, 1);
  const chunkMb = intOption(values["multipart-chunk-size"], "--multipart-chunk-size", 256, 5);
  const sweepSeconds = numberOption(values["sweep-interval"], "--sweep-interval", 300);
  const settleSeconds = numberOption(values["settle-seconds"], "--settle-seconds", 10);
  const indexWait = numberOption(values["index-wait"], "--index-wait", 60);
  const grace = numberOption(values["shutdown-grace"], "--shutdown-grace", 30);
  const metricsListen = values["metrics-listen"];
  const roots = [...new Set(paths.map((p) => normalizeRoot(p)))];
  const metrics = new Metrics();
  const store = openStore(bucket, values, {
    reducedRedundancy: values["reduced-redundancy"] ?? false,
    serverSideEncryption: values["with-sse"] ?? false,
    onRequest: (operation, seconds, failed) => {
      metrics.s3Request(operation, seconds, failed);
      if (!failed) metrics.setS3Reachable(true);
    },
  });
  return {
    store,
    roots,
    naming: await namingFromFlags(values),
    filter,
    recursive: values.recursive ?? false,
    autoAdd: values["auto-add"] ?? false,
    backup: values.backup ?? false,
    once: values.once ?? false,
    withoutIndex: values["without-index"] ?? false,
    deleteOnBackup: values["delete-on-backup"] ?? false,
    listen,
    threads,
    retries,
    md5OnStart: values["md5-on-start"] ?? false,
    multipartThreshold: maxUploadMb * MB,
    partSize: chunkMb * MB,
    ...(maxBandwidth !== undefined ? { maxBandwidth } : {}),
    sweepIntervalMs: sweepSeconds * 1000,
    settleMs: settleSeconds * 1000,
    indexWaitMs: indexWait * 1000,
    shutdownGraceMs: grace * 1000,
    metrics,
    ...(metricsListen !== undefined ? { metricsListen } : {}),
  };
}

/** An absolute, normalized path without a trailing slash (keys use it verbatim). */
function normalizeRoot(path: string): string {
  if (path.includes("\0")) throw new UsageError("Path contains a NUL byte");
  const absolute = resolve(Deno.cwd(), path);
  return absolute.length > 1 ? absolute.replace(/\/+$/, "") : absolute;
}

/** CLI entry: returns the exit code. */
export async function watchMain(args: string[]): Promise<number> {
  const parsed = await parseWatchArgs(args);
  if (parsed === "help") {
    console.log(WATCH_HELP);
    return 0;
  }
  if (parsed === "version") {
    console.log(`tablesnap ${VERSION}`);
    return 0;
  }
  return await runWatch(parsed);
}

/**
 * Runs the watcher until SIGTERM/SIGINT (or, with `once`, until everything
 * that existed is uploaded). Returns the exit code.
 */
export async function runWatch(o: WatchOptions): Promise<number> {
  const { store, metrics, naming } = o;
  const rootOf = (path: string) => o.roots.find((r) => path.startsWith(r + "/")) ?? path;

  // A missing path is a usage error, found before any request is made.
  for (const root of o.roots) await checkRoot(root);

  // Permanent problems (no bucket, denied) stop us here; a network outage
  // does not: the pipeline retries until S3 is back. With -B the startup
  // listing proves the same (with the same errors), one request cheaper.
  try {
    if (!o.backup) await store.check();
    metrics.setS3Reachable(true);
  } catch (err) {
    if (err instanceof FatalError) throw err;
    log.warn("cannot reach the bucket yet; uploads will retry", {
      bucket: store.url,
      error: errorMessage(err),
    });
    metrics.setS3Reachable(false);
  }

  let server: { shutdown(): Promise<void> } | undefined;
  if (o.metricsListen !== undefined) {
    server = serveMetrics(metrics, o.metricsListen);
  }

  let publisher: IndexPublisher | undefined;
  /** Data.db files found in the bucket without their index (filled by -B). */
  let unindexed = new Set<string>();
  const pipeline: UploadPipeline = new UploadPipeline({
    store,
    naming,
    threads: o.threads,
    retries: o.retries,
    multipartThreshold: o.multipartThreshold,
    partSize: o.partSize,
    md5OnStart: o.md5OnStart,
    ...(o.maxBandwidth ? { limiter: new RateLimiter(o.maxBandwidth) } : {}),
    observer: {
      fileUploaded(root, bytes, seconds) {
        metrics.fileUploaded(root, bytes, seconds);
        metrics.setS3Reachable(true);
      },
      uploadFailed(reason) {
        metrics.uploadFailed(reason);
        if (reason === "network" || reason === "access_denied") metrics.setS3Reachable(false);
      },
      uploadRetried: (reason) => metrics.uploadRetried(reason),
    },
    reasonOf: failureReason,
    rootOf,
    onStored(path, outcome) {
      publisher?.fileStored(path);
      const needsIndex = wantsIndex(path) && (outcome === "uploaded" || unindexed.delete(path));
      if (publisher && needsIndex) publisher.request(path);
      else if (o.deleteOnBackup) deleteAfterBackup(path);
    },
  });

  const deleteAfterBackup = (path: string) => {
    // An index still to be written for this directory must see the file
    // first; it is deleted when that index is published.
    if (publisher?.hasPendingIn(dirname(path))) return;
    Deno.remove(path).then(
      () => {
        publisher?.deletedByUs(path);
        log.info("deleted local file after backup", { path });
      },
      (err) => {
        if (!(err instanceof Deno.errors.NotFound)) {
          log.warn("could not delete local file after backup", { path, error: errorMessage(err) });
        }
      },
    );
  };

  if (!o.withoutIndex) {
    publisher = new IndexPublisher({
      store,
      naming,
      filter: o.filter,
      isStored: (path, size) => pipeline.isStored(path, size),
      waitMs: o.indexWaitMs,
      onPublished(_dataPath, directory) {
        metrics.indexWritten(rootOf(`${directory}/x`));
        if (o.deleteOnBackup) void deleteStoredIn(directory);
      },
    });
    publisher.start();
  }

  /** After an index: delete the directory's files that are in the bucket. */
  const deleteStoredIn = async (directory: string) => {
    for await (const entry of Deno.readDir(directory)) {
      const path = `${directory}/${entry.name}`;
      if (entry.isFile && pipeline.isStored(path)) deleteAfterBackup(path);
    }
  };

  const watcher = new FileWatcher({
    roots: o.roots,
    recursive: o.recursive,
    autoAdd: o.autoAdd,
    listen: o.listen,
    filter: o.filter,
    onComplete: (path, how) => {
      log.debug("complete", { path, how });
      pipeline.enqueue(path);
    },
    isHandled: (path, info) =>
      pipeline.isPending(path) ||
      pipeline.isStoredUnchanged(path, info.size, info.mtime?.getTime() ?? 0),
    includeExisting: o.backup,
    settleMs: o.settleMs,
    sweepIntervalMs: o.once ? 0 : o.sweepIntervalMs,
    onWatching: (ok) => metrics.setWatching(ok),
  });

  metrics.pendingFrom(() => {
    const pending = pipeline.pending();
    return { ...pending, files: pending.files + watcher.candidates() };
  });
  const reportMemory = log.debugEnabled
    ? setInterval(() => {
      const m = Deno.memoryUsage();
      const mb = (n: number) => Math.round(n / 1024 / 1024);
      log.debug("memory", {
        rss_mb: mb(m.rss),
        heap_mb: mb(m.heapUsed),
        heap_total_mb: mb(m.heapTotal),
        external_mb: mb(m.external),
        pending: pipeline.pending().files,
      });
    }, 1000)
    : undefined;

  // Signals: stop taking work, drain within the grace period, exit 0.
  let stopping: ((signal: string) => void) | undefined;
  const stopped = new Promise<string>((resolve) => stopping = resolve);
  const onSignal = (signal: Deno.Signal) => () => stopping?.(signal);
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGTERM", onSignal("SIGTERM")],
    ["SIGINT", onSignal("SIGINT")],
    // There is no configuration file to re-read: a stray HUP must not kill
    // the watcher (systemd would not restart it after a signal death).
    ["SIGHUP", () => log.info("SIGHUP ignored: tablesnap has no configuration file to reload")],
  ];
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);

  const started = performance.now();
  let exitCode = 0;
  try {
    await watcher.prepare();
    if (!o.once) watcher.watch();
    log.info("tablesnap started", {
      version: VERSION,
      bucket: store.url,
      paths: o.roots.join(","),
      threads: o.threads,
    });
    if (o.backup) {
      const listing = await listExisting(store, naming, o.roots, o.once);
      if (listing) {
        pipeline.setListing(listing);
        unindexed = dataFilesWithoutIndex(listing, naming);
      }
      await watcher.sweep("startup", true);
      // The sweep only queues files: keep the listing until they are checked
      // against it (one HEAD per file otherwise), then free it.
      void pipeline.idle().then(() => pipeline.setListing(undefined));
    }
    if (o.once) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finished = (async () => {
        await pipeline.idle();
        // An index whose upload keeps failing must not hold --once forever.
        const limit = new Promise<void>((resolve) => {
          timer = setTimeout(resolve, o.indexWaitMs + 30_000);
        });
        await Promise.race([publisher?.idle(), limit]);
      })();
      const signal = await Promise.race([finished.then(() => undefined), stopped]);
      clearTimeout(timer);
      if (signal) log.info("signal received, stopping", { signal });
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
    } else {
      const signal = await stopped;
      log.info("signal received, stopping", { signal });
    }
  } finally {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    clearInterval(reportMemory);
    await watcher.close();
    const notUploaded = await pipeline.shutdown(o.shutdownGraceMs);
    publisher?.stop();
    const s = pipeline.summary;
    log.info("tablesnap stopped", {
      uploaded: s.uploaded,
      bytes: s.uploadedBytes,
      already_present: s.skipped,
      indexes: publisher?.published ?? 0,
      not_uploaded: notUploaded.length,
      unpublished_indexes: publisher?.pendingCount() ?? 0,
      seconds: round((performance.now() - started) / 1000),
    });
    if (notUploaded.length > 0) {
      log.warn("files not uploaded yet; run with -B next time to pick them up", {
        files: notUploaded.length,
      });
    }
    await server?.shutdown();
    store.close();
  }
  return exitCode;
}

/**
 * Lists what the bucket already holds under each root: one request per
 * 1,000 keys instead of one HEAD per file.
 */
async function listExisting(
  store: Store,
  naming: KeyNaming,
  roots: string[],
  once: boolean,
): Promise<RemoteListing | undefined> {
  const objects = new Map<string, { size: number; etag: string }>();
  const prefixes = roots.map((root) => objectKey(naming, root + "/"));
  const started = performance.now();
  try {
    for (const prefix of prefixes) {
      for await (const item of store.list(prefix)) {
        objects.set(item.key, { size: item.size, etag: item.etag });
      }
    }
  } catch (err) {
    if (once || err instanceof FatalError) throw err;
    log.warn("could not list the bucket at start; checking files one by one", {
      error: errorMessage(err),
    });
    return undefined;
  }
  log.info("bucket listed", {
    objects: objects.size,
    seconds: round((performance.now() - started) / 1000),
  });
  return { objects, prefixes };
}

/** Data.db files the bucket holds without an index (-B writes those indexes). */
function dataFilesWithoutIndex(listing: RemoteListing, naming: KeyNaming): Set<string> {
  const paths = new Set<string>();
  for (const key of listing.objects.keys()) {
    const path = pathOfKey(naming, key);
    if (path === null || key.endsWith(INDEX_SUFFIX)) continue;
    if (wantsIndex(path) && !listing.objects.has(key + INDEX_SUFFIX)) paths.add(path);
  }
  return paths;
}

/** Seconds with millisecond precision, as a number (JSON logs keep it numeric). */
function round(seconds: number): number {
  return Math.round(seconds * 1000) / 1000;
}
