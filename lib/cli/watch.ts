/**
 * `tablesnap [options] BUCKET PATH...`: parsing is pure (the option table
 * is in watch_options.ts, the values that need checking in
 * watch_settings.ts); `watchMain` resolves the host name and hands the
 * settings to the watcher (lib/watch/run_watch.ts).
 */
import { UsageError } from "../common/errors.ts";
import { parseRate } from "../common/format.ts";
import { log, logOptionsFromEnv } from "../common/log.ts";
import { VERSION } from "../common/version.ts";
import { checkBucketArgument } from "../store/open_store.ts";
import { makePathFilter } from "../watch/detect/path_filter.ts";
import { runWatch, type WatchSettings } from "../watch/run_watch.ts";
import { LISTEN_EVENTS, type ListenEvent } from "../watch/detect/watch_rules.ts";
import { parseOptions } from "./options.ts";
import { connectionOf, type NamingFlags, namingOf, resolveNaming } from "./shared_options.ts";
import { objectStorageOf } from "./storage_options.ts";
import { WATCH_HELP, WATCH_OPTIONS } from "./watch_options.ts";
import { encryptionOf, normalizeRoot, objectLockOf, pinOf, stateDirOf } from "./watch_settings.ts";

const MB = 1024 * 1024;

/** The watcher's settings before the host name is resolved. */
export type WatchFlags = Omit<WatchSettings, "naming"> & {
  naming: NamingFlags;
  logFormat: "plain" | "json";
};

/**
 * Parses the watcher's command line (pure: no I/O but the working
 * directory). Returns "help"/"version" for those flags; throws `UsageError`
 * for anything wrong.
 */
export function parseWatchArgs(args: string[]): WatchFlags | "help" | "version" {
  const { values, positionals } = parseOptions(args, WATCH_OPTIONS);
  if (values.help) return "help";
  if (values.version) return "version";
  const logFormat = values["log-format"];
  if (logFormat !== "plain" && logFormat !== "json") {
    throw new UsageError(`Option '--log-format' takes plain or json, got '${logFormat}'`);
  }
  const [bucket, ...paths] = positionals;
  if (bucket === undefined) throw new UsageError("Missing BUCKET and PATH arguments");
  if (paths.length === 0) throw new UsageError("Missing PATH argument: which directories to watch");
  checkBucketArgument(bucket);
  const filter = makePathFilter({ include: values.include, exclude: values.exclude });
  const listen = new Set<ListenEvent>();
  for (const event of values["listen-events"]) {
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
  const rate = values["max-bandwidth"];
  if (rate !== undefined) {
    maxBandwidth = parseRate(rate) ?? undefined;
    if (maxBandwidth === undefined) {
      throw new UsageError(
        `Option '--max-bandwidth' needs a rate like 500K, 20M or 1G, got '${rate}'`,
      );
    }
  }
  const roots = [...new Set(paths.map((p) => normalizeRoot(p)))];
  const pin = pinOf(values.pin, values["pin-dir"], values["pin-max-bytes"], roots);
  const objectLock = objectLockOf(values["object-lock-mode"], values["object-lock-days"], bucket);
  const encryption = encryptionOf(
    values["encrypt-to"],
    values["encrypt-to-file"],
    values["encrypt-spool-dir"],
  );
  return {
    ...(objectLock ? { objectLock } : {}),
    ...(pin ? { pin } : {}),
    ...(encryption ? { encryption } : {}),
    bucket,
    connection: connectionOf(values),
    objectStorage: objectStorageOf(values, bucket),
    roots,
    naming: namingOf(values),
    filter,
    recursive: values.recursive,
    autoAdd: values["auto-add"],
    backup: values.backup,
    once: values.once,
    withoutIndex: values["without-index"],
    deleteOnBackup: values["delete-on-backup"],
    listen,
    threads: values.threads,
    retries: values.retries,
    md5OnStart: values["md5-on-start"],
    multipartThreshold: values["max-upload-size"] * MB,
    partSize: values["multipart-chunk-size"] * MB,
    maxBandwidth,
    sweepIntervalMs: values["sweep-interval"] * 1000,
    settleMs: values["settle-seconds"] * 1000,
    indexWaitMs: values["index-wait"] * 1000,
    shutdownGraceMs: values["shutdown-grace"] * 1000,
    metricsListen: values["metrics-listen"],
    stateDir: stateDirOf(values["state-dir"]),
    logFormat,
  };
}

/** `tablesnap [options] BUCKET PATH...`: returns the exit code. */
export async function watchMain(args: string[]): Promise<number> {
  const flags = parseWatchArgs(args);
  if (flags === "help") {
    console.log(WATCH_HELP);
    return 0;
  }
  if (flags === "version") {
    console.log(`tablesnap ${VERSION}`);
    return 0;
  }
  log.configure(logOptionsFromEnv(flags.logFormat));
  return await runWatch({ ...flags, naming: await resolveNaming(flags.naming) });
}
