/**
 * `tablesnap chop`: retention, like the original `tablechop`. Under
 * `<name>:<PATH>` it keeps every index younger than AGE days and the newest
 * index of every directory, every file those indexes name, and every object
 * younger than AGE days; it deletes the rest in batches of 1,000.
 *
 * Safer than the original: it never deletes an object younger than the
 * cutoff, keeps the newest index of each table (not only the newest overall),
 * and deletes nothing at all when an index it needs cannot be read or parsed,
 * or when there is no index under the prefix.
 *
 * Memory: the listing is streamed twice; only index keys, the names of kept
 * indexes and one delete batch are held, never the whole listing.
 */
import {
  CONNECTION_HELP,
  CONNECTION_OPTIONS,
  intOption,
  numberOption,
  openStore,
  parseCli,
} from "../cli/options.ts";
import { errorMessage, FatalError, UsageError } from "../common/errors.ts";
import { forEachLimited } from "../common/pool.ts";
import {
  isIndexKey,
  keyDirectory,
  newestIndexPerDirectory,
  readIndex,
  trimSlashes,
} from "../bucket/index_reader.ts";
import { keyHead, type KeyNaming, namingFromFlags } from "../bucket/keys.ts";
import { log } from "../common/log.ts";
import { formatBytes } from "../restore/slurp.ts";
import type { ObjectInfo, Store } from "../store/store.ts";

export const CHOP_HELP = `Usage: tablesnap chop [options] BUCKET PATH AGE_DAYS

Delete old backups under <name>:<PATH>. Kept: every index younger than
AGE_DAYS days, the newest index of every directory whatever its age, every
file a kept index names, and every object younger than AGE_DAYS days.
Everything else under the prefix is deleted (DeleteObjects, 1,000 keys a request).
Nothing is deleted if an index that must be kept cannot be read or parsed,
or if there is no index under the prefix at all.

Options:
  -d, --debug, --dry-run     dry run: delete nothing, report what would be deleted
  -l, --list-deletes         print every key deleted (or that would be)
  -j, --parallel N           concurrent index reads (default 5)
  -n, --name NAME            host name in the keys (default: this host's FQDN)
  -p, --prefix PREFIX        key prefix the watcher was run with (default: none)
  --keyname-separator SEP    separator between name and path (default ':')
  --now TIME                 pretend the time is TIME (ISO 8601): for tests and what-ifs
  -h, --help                 show this help

PATH is used verbatim as a key prefix, as the original did: /data/ks also
matches /data/ks2 (whose indexes then protect their own files the same way).
Exit status: 0 done, 1 aborted or a delete failed, 2 usage error.

${CONNECTION_HELP}
  --key KEY, --secret SECRET  same as --aws-key/--aws-secret (the original tablechop's names)`;

const CHOP_OPTIONS = {
  ...CONNECTION_OPTIONS,
  key: { type: "string" },
  secret: { type: "string" },
  debug: { type: "boolean", short: "d" },
  "dry-run": { type: "boolean" },
  "list-deletes": { type: "boolean", short: "l" },
  parallel: { type: "string", short: "j" },
  name: { type: "string", short: "n" },
  prefix: { type: "string", short: "p" },
  "keyname-separator": { type: "string" },
  now: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** What to chop and how. */
export interface ChopOptions {
  store: Store;
  naming: KeyNaming;
  /** Path part of the keys, used verbatim as a prefix (no "/" added). */
  path: string;
  /** Objects and indexes younger than this many days are kept. */
  ageDays: number;
  /** The current time (default: now). */
  now?: Date;
  /** Delete nothing; count and list what would be deleted. */
  dryRun?: boolean;
  /** Print every key deleted. */
  listDeletes?: boolean;
  /** Concurrent index reads (default 5). */
  parallel?: number;
  /** Where list and summary lines go (default: stdout). */
  print?: (line: string) => void;
}

/** What a chop did (or, dry, would do). */
export interface ChopResult {
  prefix: string;
  cutoff: Date;
  indexes: number;
  indexesKept: number;
  kept: number;
  keptBytes: number;
  deleted: number;
  deletedBytes: number;
}

const BATCH = 1000;
const DAY_MS = 86_400_000;

/**
 * Applies retention under `<head><path>`. Throws `FatalError`, having deleted
 * nothing, when there is no index or a kept index is unreadable.
 */
export async function chop(options: ChopOptions): Promise<ChopResult> {
  const { store } = options;
  const print = options.print ?? ((line: string) => console.log(line));
  const prefix = keyHead(options.naming) + options.path;
  const now = options.now ?? new Date();
  const cutoff = new Date(now.getTime() - options.ageDays * DAY_MS);
  const isYoung = (info: ObjectInfo) => info.lastModified.getTime() >= cutoff.getTime();

  // Pass 1: the indexes only.
  const indexes = new Map<string, ObjectInfo>();
  const newestPerDir = await newestIndexPerDirectory(
    store,
    prefix,
    (info) => indexes.set(info.key, info),
  );
  if (indexes.size === 0) {
    throw new FatalError(
      `No index under '${prefix}' in ${store.url}: nothing to base retention on, nothing deleted`,
    );
  }
  const keptIndexes = new Set<string>();
  for (const info of indexes.values()) if (isYoung(info)) keptIndexes.add(info.key);
  for (const info of newestPerDir.values()) keptIndexes.add(info.key);
  log.info("chop: reading kept indexes", {
    prefix,
    indexes: indexes.size,
    kept: keptIndexes.size,
    cutoff: cutoff.toISOString(),
  });

  const keepFiles = new Set<string>();
  const head = keyHead(options.naming);
  const keepNamesOf = async (key: string, deletedSoFar = 0) => {
    let listing;
    try {
      listing = await readIndex(store, key);
    } catch (err) {
      const done = deletedSoFar === 0
        ? "nothing deleted"
        : `stopped after deleting ${deletedSoFar} objects`;
      throw new FatalError(`Cannot read index '${key}', ${done}: ${errorMessage(err)}`);
    }
    // Both the directory the index states and the one its key is in: keeping more is safe.
    const dirs = new Set([`${head}${trimSlashes(listing.directory)}/`, `${keyDirectory(key)}/`]);
    for (const name of listing.names) for (const dir of dirs) keepFiles.add(dir + name);
  };
  await forEachLimited([...keptIndexes], options.parallel ?? 5, keepNamesOf);

  // Pass 2: stream the listing again and delete in batches as we go.
  const result: ChopResult = {
    prefix,
    cutoff,
    indexes: indexes.size,
    indexesKept: keptIndexes.size,
    kept: 0,
    keptBytes: 0,
    deleted: 0,
    deletedBytes: 0,
  };
  let pending: ObjectInfo[] = [];
  const flush = async () => {
    // An index published since pass 1 may have added names: filter again.
    const batch = pending.filter((info) => !keepFiles.has(info.key));
    for (const info of pending) {
      if (keepFiles.has(info.key)) {
        result.kept++;
        result.keptBytes += info.size;
      }
    }
    pending = [];
    if (batch.length === 0) return;
    if (!options.dryRun) await store.deleteMany(batch.map((info) => info.key));
    for (const info of batch) {
      result.deleted++;
      result.deletedBytes += info.size;
      if (options.listDeletes) print(`${options.dryRun ? "would delete" : "deleted"} ${info.key}`);
    }
  };
  for await (const info of store.list(prefix)) {
    if (isIndexKey(info.key) && !indexes.has(info.key)) {
      // Published during this run: young, so kept; its files must be kept too.
      await keepNamesOf(info.key, options.dryRun ? 0 : result.deleted);
    }
    if (keptIndexes.has(info.key) || keepFiles.has(info.key) || isYoung(info)) {
      result.kept++;
      result.keptBytes += info.size;
      continue;
    }
    pending.push(info);
    if (pending.length >= BATCH) await flush();
  }
  await flush();

  const verb = options.dryRun ? "would delete" : "deleted";
  print(
    `${
      options.dryRun ? "Dry run: " : ""
    }under '${prefix}' in ${store.url}, cutoff ${cutoff.toISOString()}: ` +
      `${result.indexes} indexes (${result.indexesKept} kept); ` +
      `kept ${result.kept} objects (${formatBytes(result.keptBytes)}), ` +
      `${verb} ${result.deleted} objects (${formatBytes(result.deletedBytes)})`,
  );
  return result;
}

/** `tablesnap chop ARGS`: parses the command line, chops, returns the exit code. */
export async function chopMain(args: string[]): Promise<number> {
  const { values, positionals } = parseCli(args, CHOP_OPTIONS);
  if (values.help) {
    console.log(CHOP_HELP);
    return 0;
  }
  if (positionals.length !== 3) {
    throw new UsageError(`Expected BUCKET PATH AGE_DAYS, got ${positionals.length} arguments`);
  }
  const [bucket, path, age] = positionals as [string, string, string];
  const ageDays = numberOption(age, "AGE_DAYS", 0);
  let now: Date | undefined;
  if (values.now !== undefined) {
    now = new Date(values.now);
    if (Number.isNaN(now.getTime())) {
      throw new UsageError(`Option '--now' needs an ISO 8601 time, got '${values.now}'`);
    }
  }
  const connection = { ...values };
  if (values.key !== undefined) connection["aws-key"] ??= values.key;
  if (values.secret !== undefined) connection["aws-secret"] ??= values.secret;
  const store = openStore(bucket, connection);
  try {
    await store.check();
    const options: ChopOptions = {
      store,
      naming: await namingFromFlags(values),
      path,
      ageDays,
      dryRun: (values.debug ?? false) || (values["dry-run"] ?? false),
      listDeletes: values["list-deletes"] ?? false,
      parallel: intOption(values.parallel, "--parallel", 5, 1),
    };
    if (now !== undefined) options.now = now;
    await chop(options);
    return 0;
  } finally {
    store.close();
  }
}
