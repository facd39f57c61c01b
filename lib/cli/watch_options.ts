/**
 * The watcher's option table (`tablesnap [options] BUCKET PATH...`): the
 * original tablesnap's flags and a few of ours, grouped for --help.
 */
import { DEFAULT_PIN_DIR } from "../watch/keepers/pins.ts";
import { helpText, type OptionTable } from "./options.ts";
import { BUCKET_NOTE, CONNECTION_OPTIONS, namingOptions } from "./shared_options.ts";
import { STORAGE_OPTIONS } from "./storage_options.ts";

/** Disk that pins may hold at most: a day's compaction inputs on a busy node, say. */
export const DEFAULT_PIN_MAX_BYTES = "10G";

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
