/**
 * `tablesnap [options] BUCKET PATH...`: the original tablesnap's flags, and
 * a few of ours. Parsing is pure; `watchMain` resolves the host name and
 * hands the settings to the watcher (lib/watch/run_watch.ts).
 */
import { resolve } from "node:path";
import { UsageError } from "../common/errors.ts";
import { parseRate, parseSize } from "../common/format.ts";
import { log, logOptionsFromEnv } from "../common/log.ts";
import { VERSION } from "../common/version.ts";
import { readRecipients } from "../store/age_keys.ts";
import { checkBucketArgument, type ObjectLockRetention } from "../store/open_store.ts";
import { makePathFilter } from "../watch/detect/path_filter.ts";
import { DEFAULT_PIN_DIR } from "../watch/keepers/pins.ts";
import {
  type PinSettings,
  runWatch,
  type WatchEncryption,
  type WatchSettings,
} from "../watch/run_watch.ts";
import { LISTEN_EVENTS, type ListenEvent } from "../watch/detect/watch_rules.ts";
import { helpText, type OptionTable, parseOptions } from "./options.ts";
import {
  BUCKET_NOTE,
  CONNECTION_OPTIONS,
  connectionOf,
  type NamingFlags,
  namingOf,
  namingOptions,
  resolveNaming,
} from "./shared_options.ts";
import { objectStorageOf, STORAGE_OPTIONS } from "./storage_options.ts";

const MB = 1024 * 1024;

/** Disk that pins may hold at most: a day's compaction inputs on a busy node, say. */
const DEFAULT_PIN_MAX_BYTES = "10G";

const WATCH = "What to watch";
const OBJECTS = "Keys and objects";
const BEHAVIOUR = "Behaviour";
const ENCRYPTION = "Encryption";

export const WATCH_OPTIONS = {
  ...CONNECTION_OPTIONS,
  recursive: {
    group: WATCH,
    kind: "flag",
    short: "r",
    help: "watch the whole tree under each PATH",
  },
  "auto-add": {
    group: WATCH,
    kind: "flag",
    short: "a",
    help: "also watch directories created after start",
  },
  backup: {
    group: WATCH,
    kind: "flag",
    short: "B",
    help: "at start, upload existing files not yet in the bucket",
  },
  once: {
    group: WATCH,
    kind: "flag",
    help: "with -B: upload what is missing, write indexes, exit",
  },
  exclude: {
    group: WATCH,
    kind: "texts",
    short: "e",
    arg: "REGEX",
    help: "skip paths matching REGEX (repeatable)",
  },
  include: {
    group: WATCH,
    kind: "texts",
    short: "i",
    arg: "REGEX",
    help:
      'upload only paths matching REGEX (repeatable)\nwith neither, paths containing "-tmp" are skipped',
  },
  "listen-events": {
    group: WATCH,
    kind: "texts",
    arg: "EVENT",
    help: "IN_MOVED_TO, IN_CLOSE_WRITE, IN_CREATE (repeatable)",
    default: ["IN_MOVED_TO", "IN_CLOSE_WRITE"],
  },
  "delete-on-backup": {
    group: WATCH,
    kind: "flag",
    help: "delete each local file once it is safely uploaded",
  },
  pin: {
    group: WATCH,
    kind: "flag",
    help:
      `hard-link each complete file into a staging directory\n(PATH/${DEFAULT_PIN_DIR}/) until it is in the bucket:\ncompaction deleting it first no longer loses it`,
  },
  "pin-dir": {
    group: WATCH,
    kind: "text",
    arg: "DIR",
    help:
      "with --pin: stage links under DIR (mirroring full paths);\nmust be on the same file system (and mount) as PATH",
  },
  "pin-max-bytes": {
    group: WATCH,
    kind: "text",
    arg: "SIZE",
    help:
      `with --pin: pin no new file past SIZE of pinned files\n(K/M/G/T; default ${DEFAULT_PIN_MAX_BYTES})`,
  },
  ...namingOptions(OBJECTS),
  "without-index": { group: OBJECTS, kind: "flag", help: "do not write -listdir.json indexes" },
  "max-upload-size": {
    group: OBJECTS,
    kind: "count",
    arg: "MB",
    help: "larger files go multipart",
    default: 5120,
    min: 1,
  },
  "multipart-chunk-size": {
    group: OBJECTS,
    kind: "count",
    arg: "MB",
    help: "part size",
    default: 256,
    min: 5,
  },
  "object-lock-mode": {
    group: OBJECTS,
    kind: "text",
    arg: "MODE",
    help:
      "Object Lock retention of every new object: GOVERNANCE\nor COMPLIANCE (with --object-lock-days)",
  },
  "object-lock-days": {
    group: OBJECTS,
    kind: "count",
    arg: "N",
    help:
      "retain every new object N days from its upload\n(with --object-lock-mode; needs s3:PutObjectRetention)",
    min: 1,
  },
  "md5-on-start": {
    group: OBJECTS,
    kind: "flag",
    help: "compare MD5s, not only sizes, with objects found at start",
  },
  ...STORAGE_OPTIONS,
  "encrypt-to": {
    group: ENCRYPTION,
    kind: "texts",
    arg: "RECIPIENT",
    help:
      "encrypt file bodies with age to this X25519 recipient\n(age1..., repeatable; indexes stay plaintext)",
  },
  "encrypt-to-file": {
    group: ENCRYPTION,
    kind: "texts",
    arg: "FILE",
    help: "encrypt to the recipients listed in FILE, one per line\n(# comments; repeatable)",
  },
  "encrypt-spool-dir": {
    group: ENCRYPTION,
    kind: "text",
    arg: "DIR",
    help:
      "unused (nothing is spooled any more); accepted so that\nolder configurations still start",
  },
  threads: {
    group: BEHAVIOUR,
    kind: "count",
    short: "t",
    arg: "N",
    help: "uploads at once",
    default: 4,
    min: 1,
  },
  retries: {
    group: BEHAVIOUR,
    kind: "count",
    arg: "N",
    help:
      "extra attempts per failed upload before it waits\nfor the next retry cycle; never dropped",
    default: 0,
  },
  "max-bandwidth": {
    group: BEHAVIOUR,
    kind: "text",
    arg: "RATE",
    help: "bytes per second over all uploads, e.g. 50M (K/M/G)",
  },
  "sweep-interval": {
    group: BEHAVIOUR,
    kind: "seconds",
    arg: "SEC",
    help: "rescan the tree this often for missed files (0: off)",
    default: 300,
  },
  "settle-seconds": {
    group: BEHAVIOUR,
    kind: "seconds",
    arg: "SEC",
    help: "a file found only by a scan is complete when unmodified\nthis long",
    default: 10,
  },
  "index-wait": {
    group: BEHAVIOUR,
    kind: "seconds",
    arg: "SEC",
    help: "how long an index waits for its SSTable's components",
    default: 60,
  },
  "shutdown-grace": {
    group: BEHAVIOUR,
    kind: "seconds",
    arg: "SEC",
    help: "on SIGTERM, how long in-flight uploads may finish",
    default: 30,
  },
  "state-dir": {
    group: BEHAVIOUR,
    kind: "text",
    arg: "DIR",
    help:
      "journal pending files and checkpoints in DIR: a restart\nuploads what was pending and finds what changed\nmeanwhile without -B (one watcher per DIR)",
  },
  "log-format": {
    group: BEHAVIOUR,
    kind: "text",
    arg: "FORMAT",
    help: "plain or json",
    default: "plain",
  },
  "metrics-listen": {
    group: BEHAVIOUR,
    kind: "text",
    arg: "ADDR",
    help: "serve Prometheus /metrics and /healthz on HOST:PORT",
  },
  version: { group: BEHAVIOUR, kind: "flag", help: "print the version" },
  help: { group: BEHAVIOUR, kind: "flag", short: "h", help: "this help" },
} as const satisfies OptionTable;

export const WATCH_HELP = helpText(WATCH_OPTIONS, {
  usage: "tablesnap [options] BUCKET PATH...",
  description: "Watches PATH(s) and uploads every finished file to BUCKET, with a JSON index\n" +
    "of the directory beside every Data.db. Other jobs: tablesnap slurp|chop|verify|list --help\n" +
    BUCKET_NOTE,
  epilogue:
    "Environment: TDEBUG=1 debug logs; TABLESNAP_SYSLOG=1 logs to syslog (DAEMON, tag tablesnap).",
});

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

/** --state-dir, absolute (the lock and the journal must not move with the working directory). */
function stateDirOf(dir: string | undefined): string | undefined {
  if (dir === undefined) return undefined;
  if (dir === "" || dir.includes("\0")) {
    throw new UsageError("Option '--state-dir' needs a directory path");
  }
  return resolve(Deno.cwd(), dir);
}

/**
 * --pin, --pin-dir, --pin-max-bytes; the other two only with --pin. A pin
 * directory holding a watched path would exclude that whole tree.
 */
function pinOf(
  pin: boolean,
  dir: string | undefined,
  maxBytes: string | undefined,
  roots: string[],
): PinSettings | undefined {
  if (!pin) {
    if (dir !== undefined) throw new UsageError("Option '--pin-dir' needs '--pin'");
    if (maxBytes !== undefined) throw new UsageError("Option '--pin-max-bytes' needs '--pin'");
    return undefined;
  }
  maxBytes ??= DEFAULT_PIN_MAX_BYTES;
  const bytes = parseSize(maxBytes);
  if (bytes === null) {
    throw new UsageError(
      `Option '--pin-max-bytes' needs a size like 500M, 10G or 1T, got '${maxBytes}'`,
    );
  }
  if (dir === undefined) return { dir: undefined, maxBytes: bytes };
  if (dir === "" || dir.includes("\0")) {
    throw new UsageError("Option '--pin-dir' needs a directory path");
  }
  const absolute = resolve(Deno.cwd(), dir);
  const covered = roots.find((r) =>
    absolute === "/" || r === absolute || r.startsWith(absolute + "/")
  );
  if (covered !== undefined) {
    throw new UsageError(
      `Option '--pin-dir' must not contain a watched path: '${absolute}' holds '${covered}'`,
    );
  }
  return { dir: absolute, maxBytes: bytes };
}

/**
 * --encrypt-to and --encrypt-to-file (read and checked now: a bad
 * recipient is a usage error before anything starts), --encrypt-spool-dir.
 */
function encryptionOf(
  recipients: string[],
  files: string[],
  spoolDir: string | undefined,
): WatchEncryption | undefined {
  const all = readRecipients(recipients, files);
  if (all.length === 0) {
    if (spoolDir !== undefined) {
      throw new UsageError(
        "Option '--encrypt-spool-dir' needs '--encrypt-to' or '--encrypt-to-file'",
      );
    }
    return undefined;
  }
  if (spoolDir === "" || spoolDir?.includes("\0")) {
    throw new UsageError("Option '--encrypt-spool-dir' needs a directory path");
  }
  return {
    recipients: all,
    ...(spoolDir !== undefined ? { spoolDir: resolve(Deno.cwd(), spoolDir) } : {}),
  };
}

/** S3 takes retain-until dates up to 100 years ahead; more is surely a typo. */
const MAX_LOCK_DAYS = 36_500;

/** --object-lock-mode and --object-lock-days: both or neither, for an S3 bucket. */
function objectLockOf(
  mode: string | undefined,
  days: number | undefined,
  bucket: string,
): ObjectLockRetention | undefined {
  if (mode === undefined && days === undefined) return undefined;
  if (mode === undefined) {
    throw new UsageError("Option '--object-lock-days' needs '--object-lock-mode' too");
  }
  if (days === undefined) {
    throw new UsageError("Option '--object-lock-mode' needs '--object-lock-days' too");
  }
  const upper = mode.toUpperCase();
  if (upper !== "GOVERNANCE" && upper !== "COMPLIANCE") {
    throw new UsageError(
      `Option '--object-lock-mode' takes GOVERNANCE or COMPLIANCE, got '${mode}'`,
    );
  }
  if (days > MAX_LOCK_DAYS) {
    throw new UsageError(
      `Option '--object-lock-days' must be at most ${MAX_LOCK_DAYS}, got ${days}`,
    );
  }
  if (bucket.startsWith("file://")) {
    throw new UsageError("Options '--object-lock-*' need an S3 bucket, not a local store");
  }
  return { mode: upper, days };
}

/** An absolute, normalized path without a trailing slash (keys use it verbatim). */
function normalizeRoot(path: string): string {
  if (path.includes("\0")) throw new UsageError("Path contains a NUL byte");
  const absolute = resolve(Deno.cwd(), path);
  return absolute.length > 1 ? absolute.replace(/\/+$/, "") : absolute;
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
