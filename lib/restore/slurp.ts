/**
 * `tablesnap slurp`: restore a directory (or a whole data directory with
 * `-r`) from the files an index names, like the original `tableslurp`.
 *
 * Safe by construction:
 * - names from the bucket are checked (no "/", "..", NUL, absolute paths)
 *   before any path is formed, and every directory below TARGET is created
 *   one level at a time, refusing symlinks, so nothing is written outside it;
 * - a download goes to `.<name>.tablesnap-partial` (created with O_EXCL, so
 *   an existing symlink is never followed), is checked against the object's
 *   size and MD5, fsynced, and only then renamed into place;
 * - a re-run skips files already present with the right size and MD5.
 */
import { createHash } from "node:crypto";
import {
  CONNECTION_HELP,
  CONNECTION_OPTIONS,
  intOption,
  openStore,
  parseCli,
} from "../cli/options.ts";
import { errorMessage, FatalError, UsageError } from "../common/errors.ts";
import { forEachLimited } from "../common/pool.ts";
import {
  checkFileName,
  directoryPrefix,
  expectedMd5,
  keyDirectory,
  newestIndexIn,
  newestIndexPerDirectory,
  parseStatMetadata,
  readIndex,
  trimSlashes,
  unsafeNameReason,
} from "../bucket/index_reader.ts";
import { indexKey, type KeyNaming, namingFromFlags } from "../bucket/keys.ts";
import { log } from "../common/log.ts";
import type { ObjectInfo, Store } from "../store/store.ts";

export const SLURP_HELP = `Usage: tablesnap slurp [options] BUCKET ORIGIN TARGET

Restore the files of ORIGIN (a directory path as the watcher saw it) from the
newest index under <name>:<ORIGIN>/ into the local directory TARGET.

Options:
  -f, --file FILE            restore the file set of FILE's index (FILE is a bare name
                             such as nb-7-big-Data.db) instead of the newest index
  -r, --recursive            ORIGIN is a data directory: restore every keyspace/table
                             below it from its own newest index into TARGET/<ks>/<table>
  --commitlogs DIR           also restore the commit logs under <name>:DIR/ written
                             since the oldest index restored
  --commitlogs-target DIR    where to put them (default: TARGET/commitlogs)
  -o, --owner USER           chown restored files to USER (name or uid)
  -g, --group GROUP          chgrp restored files to GROUP (name or gid)
  -p, --preserve             owner and group from each file's stat metadata (overrides -o/-g)
  -t, --threads N            concurrent downloads (default 4)
  --force                    download even files already present and verified
  --plan                     resolve and check the file set, print it, download nothing
  -n, --name NAME            host name in the keys (default: this host's FQDN)
  --prefix PREFIX            key prefix the watcher was run with (default: none)
  --keyname-separator SEP    separator between name and path (default ':')
  -h, --help                 show this help

Every file is checked against its size and MD5 (md5sum metadata, else a
single-part ETag) and downloaded again if it does not match (5 attempts).
Exit status: 0 all restored, 1 some file not restored (named), 2 usage error.

${CONNECTION_HELP}
  --token TOKEN            same as --aws-token (the original tableslurp's name)`;

const SLURP_OPTIONS = {
  ...CONNECTION_OPTIONS,
  token: { type: "string" },
  file: { type: "string", short: "f" },
  recursive: { type: "boolean", short: "r" },
  commitlogs: { type: "string" },
  "commitlogs-target": { type: "string" },
  owner: { type: "string", short: "o" },
  group: { type: "string", short: "g" },
  preserve: { type: "boolean", short: "p" },
  threads: { type: "string", short: "t" },
  force: { type: "boolean" },
  plan: { type: "boolean" },
  name: { type: "string", short: "n" },
  prefix: { type: "string" },
  "keyname-separator": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** What to restore, from where, and how. */
export interface SlurpOptions {
  store: Store;
  naming: KeyNaming;
  /** The directory path as the watcher saw it (the keys' path part). */
  origin: string;
  /** Local directory to restore into; created if missing. */
  target: string;
  /** Restore the file set of this file's index instead of the newest. */
  file?: string;
  /** ORIGIN is a data directory: one newest index per keyspace/table. */
  recursive?: boolean;
  /** Also restore the commit logs of this directory. */
  commitlogs?: string;
  /** Where commit logs go (default `<target>/commitlogs`). */
  commitlogsTarget?: string;
  /** chown restored files to this uid / gid. */
  owner?: number;
  group?: number;
  /** chown from each object's `stat` metadata instead (overrides owner/group). */
  preserve?: boolean;
  /** Concurrent downloads (default 4). */
  threads?: number;
  /** Download even files already present and verified. */
  force?: boolean;
  /** Resolve and check only; download nothing. */
  plan?: boolean;
  /** Attempts per file (default 5) and the pause before attempt n (n-1 times this). */
  attempts?: number;
  retryDelayMs?: number;
  /** Redraw a progress bar on stderr (default: when stderr is a terminal). */
  progressBar?: boolean;
  /** Where plan and summary lines go (default: stdout). */
  print?: (line: string) => void;
}

/** A file of the restore: where it comes from and where it goes. */
export interface PlannedFile {
  key: string;
  /** Absolute path it is restored to. */
  path: string;
  /** Size from the bucket listing; undefined when the object is missing. */
  size?: number;
}

/** What a restore did. */
export interface SlurpResult {
  files: PlannedFile[];
  /** Index keys used, with their LastModified. */
  indexes: ObjectInfo[];
  downloaded: number;
  skipped: number;
  /** Bytes of the file set (present objects). */
  bytes: number;
  /** Keys named by an index but not in the bucket. */
  missing: string[];
  /** Files that could not be restored, with the reason. */
  failed: { path: string; key: string; reason: string }[];
}

const PARTIAL_SUFFIX = ".tablesnap-partial";
const COMMIT_LOG = /^CommitLog-\d+-(\d+)\.log$/;

/** The key to restore and the directory it goes into, before sizes are known. */
interface Source {
  key: string;
  /** Root the destination must stay in, and the path segments below it. */
  root: string;
  segments: string[];
  name: string;
}

/**
 * Restores (or with `plan`, only resolves) a file set. Never throws for a
 * single file: those are reported in `failed`. Throws `FatalError` when the
 * file set cannot be resolved (no index, malformed or hostile index).
 * Requires `--allow-read --allow-write`, and `--allow-net` for S3.
 */
export async function slurp(options: SlurpOptions): Promise<SlurpResult> {
  const print = options.print ?? ((line: string) => console.log(line));
  const { sources, indexes } = await resolveSources(options);
  const files = await sizeSources(options.store, sources);
  const missing = files.filter((f) => f.planned.size === undefined).map((f) => f.source.key);
  const bytes = files.reduce((sum, f) => sum + (f.planned.size ?? 0), 0);
  const result: SlurpResult = {
    files: files.map((f) => f.planned),
    indexes,
    downloaded: 0,
    skipped: 0,
    bytes,
    missing,
    failed: [],
  };
  if (options.plan) {
    printPlan(print, options.store, result);
    return result;
  }

  const progress = new Progress(
    files.length,
    bytes,
    options.progressBar ?? Deno.stderr.isTerminal(),
  );
  const owners = new OwnerResolver();
  const dirs = new SafeDirectories();
  const restoreOne = async ({ source, planned }: (typeof files)[number]) => {
    try {
      if (planned.size === undefined) {
        throw new FatalError(`Object '${source.key}' is missing from ${options.store.url}`);
      }
      const dir = await dirs.ensure(source.root, source.segments);
      const outcome = await restoreFile(options, source, dir, planned.size, owners, progress);
      if (outcome === "skipped") result.skipped++;
      else result.downloaded++;
    } catch (err) {
      const reason = err instanceof FatalError || err instanceof MissingObjectError
        ? err.message
        : errorMessage(err);
      log.error("file not restored", { path: planned.path, key: source.key, reason });
      result.failed.push({ path: planned.path, key: source.key, reason });
      progress.fileDone(0);
    }
  };
  progress.start();
  try {
    await forEachLimited(files, options.threads ?? 4, restoreOne);
  } finally {
    progress.stop();
  }
  const restored = result.downloaded + result.skipped;
  print(
    `Restored ${restored} of ${files.length} files (${
      formatBytes(bytes)
    }) into ${options.target}: ` +
      `${result.downloaded} downloaded, ${result.skipped} already present, ${result.failed.length} failed`,
  );
  if (result.failed.length > 0) {
    print(`Not restored (${result.failed.length}):`);
    for (const f of result.failed) print(`  ${f.path}: ${f.reason}`);
  }
  return result;
}

/** Finds the indexes, reads and checks them, and lists what to restore where. */
async function resolveSources(
  options: SlurpOptions,
): Promise<{ sources: Source[]; indexes: ObjectInfo[] }> {
  const { store, naming } = options;
  const origin = trimSlashes(options.origin);
  const originPrefix = directoryPrefix(naming, origin);
  const target = options.target;
  const sources: Source[] = [];
  const indexes: ObjectInfo[] = [];

  const addIndex = async (info: ObjectInfo, directory: string, segments: string[]) => {
    const listing = await readIndex(store, info.key);
    if (trimSlashes(listing.directory) !== directory) {
      throw new FatalError(
        `Index '${info.key}' describes directory '${listing.directory}', expected '${directory}'`,
      );
    }
    for (const name of listing.names) checkFileName(name, info.key);
    indexes.push(info);
    const prefix = `${keyDirectory(info.key)}/`;
    for (const name of listing.names) {
      sources.push({ key: prefix + name, root: target, segments, name });
    }
  };

  if (options.recursive) {
    if (options.file !== undefined) {
      throw new UsageError("Options '--file' and '--recursive' cannot be used together");
    }
    const newest = await newestIndexPerDirectory(store, originPrefix);
    const tables = [...newest.entries()]
      .map(([dir, info]) => ({ rel: dir.slice(originPrefix.length).split("/"), info }))
      .filter(({ rel }) => rel.length === 2)
      .sort((a, b) => (a.info.key < b.info.key ? -1 : 1));
    if (tables.length === 0) {
      throw new FatalError(`No keyspace/table index under '${originPrefix}' in ${store.url}`);
    }
    for (const { rel, info } of tables) {
      for (const segment of rel) {
        const reason = unsafeNameReason(segment);
        if (reason !== null) {
          throw new FatalError(
            `Index '${info.key}' has an unsafe directory name ${
              JSON.stringify(segment)
            }: ${reason}`,
          );
        }
      }
      await addIndex(info, `${origin}/${rel.join("/")}`, rel);
    }
  } else {
    let info: ObjectInfo | null;
    if (options.file !== undefined) {
      if (unsafeNameReason(options.file) !== null) {
        throw new UsageError(
          `Option '--file' needs a bare file name such as nb-1-big-Data.db, got '${options.file}'`,
        );
      }
      const key = indexKey(naming, `${origin}/${options.file}`);
      info = await store.head(key);
      if (info === null) throw new FatalError(`No index '${key}' in ${store.url}`);
    } else {
      info = await newestIndexIn(store, originPrefix);
      if (info === null) {
        throw new FatalError(
          `No index under '${originPrefix}' in ${store.url}: nothing to restore`,
        );
      }
    }
    await addIndex(info, origin, []);
  }

  if (options.commitlogs !== undefined) {
    const since = Math.min(...indexes.map((i) => i.lastModified.getTime()));
    const prefix = directoryPrefix(naming, options.commitlogs);
    const root = options.commitlogsTarget ?? `${target}/commitlogs`;
    for await (const info of store.list(prefix)) {
      const name = info.key.slice(prefix.length);
      const match = name.match(COMMIT_LOG);
      if (!match) continue;
      // Inclusive on purpose: replaying a segment twice is harmless, missing one loses writes.
      if (info.lastModified.getTime() >= since || Number(match[1]) >= since) {
        sources.push({ key: info.key, root, segments: [], name });
      }
    }
  }
  // One destination, one download: an index may repeat a name across tables only by path.
  const seen = new Set<string>();
  return {
    sources: sources.filter((s) => {
      const path = destination(s);
      if (seen.has(path)) return false;
      seen.add(path);
      return true;
    }),
    indexes,
  };
}

function destination(source: Source): string {
  return [source.root, ...source.segments, source.name].join("/");
}

/** Lists each source directory once to learn sizes (missing objects get none). */
async function sizeSources(
  store: Store,
  sources: Source[],
): Promise<{ source: Source; planned: PlannedFile }[]> {
  const byKey = new Map<string, PlannedFile>();
  const out = sources.map((source) => {
    const planned: PlannedFile = { key: source.key, path: destination(source) };
    byKey.set(source.key, planned);
    return { source, planned };
  });
  const dirs = new Set(sources.map((s) => `${keyDirectory(s.key)}/`));
  for (const dir of dirs) {
    for await (const info of store.list(dir, { delimiter: "/" })) {
      const planned = byKey.get(info.key);
      if (planned) planned.size = info.size;
    }
  }
  return out;
}

function printPlan(print: (line: string) => void, store: Store, result: SlurpResult): void {
  const times = result.indexes.map((i) => i.lastModified.getTime());
  for (const index of result.indexes) {
    print(`index ${index.lastModified.toISOString()} ${index.key}`);
  }
  for (const file of result.files) {
    const size = file.size === undefined ? "MISSING" : String(file.size);
    print(`${size.padStart(12)} ${file.key} -> ${file.path}`);
  }
  print(
    `${result.files.length} files, ${
      formatBytes(result.bytes)
    } (${result.bytes} bytes) from ${store.url}; ` +
      `newest index ${new Date(Math.max(...times)).toISOString()}, ` +
      `oldest index ${new Date(Math.min(...times)).toISOString()}`,
  );
  if (result.missing.length > 0) {
    print(`Missing from the bucket (${result.missing.length}):`);
    for (const key of result.missing) print(`  ${key}`);
  }
}

/**
 * Creates directories below a root one level at a time, refusing any
 * component that is a symlink or not a directory, so a restore can never be
 * redirected outside its root. Each directory is checked once per run.
 */
class SafeDirectories {
  #done = new Map<string, Promise<string>>();

  ensure(root: string, segments: string[]): Promise<string> {
    const path = [root, ...segments].join("/");
    let pending = this.#done.get(path);
    if (!pending) {
      pending = this.#create(root, segments);
      this.#done.set(path, pending);
    }
    return pending;
  }

  async #create(root: string, segments: string[]): Promise<string> {
    await Deno.mkdir(root, { recursive: true });
    const realRoot = await Deno.realPath(root);
    let path = realRoot;
    for (const segment of segments) {
      path = `${path}/${segment}`;
      let info: Deno.FileInfo | null = null;
      try {
        info = await Deno.lstat(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
      if (info === null) {
        try {
          await Deno.mkdir(path);
        } catch (err) {
          if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
        }
        info = await Deno.lstat(path);
      }
      if (info.isSymlink || !info.isDirectory) {
        throw new FatalError(
          `Refusing to restore into '${path}': it is ${
            info.isSymlink ? "a symlink" : "not a directory"
          }`,
        );
      }
    }
    const real = await Deno.realPath(path);
    if (real !== realRoot && !real.startsWith(`${realRoot}/`)) {
      throw new FatalError(`Refusing to restore into '${path}': it resolves outside '${realRoot}'`);
    }
    return real;
  }
}

/** Resolves user and group names to ids from /etc/passwd and /etc/group. */
class OwnerResolver {
  #users: Map<string, number> | undefined;
  #groups: Map<string, number> | undefined;

  user(name: string): number | undefined {
    this.#users ??= readIdFile("/etc/passwd");
    return /^\d+$/.test(name) ? Number(name) : this.#users.get(name);
  }

  group(name: string): number | undefined {
    this.#groups ??= readIdFile("/etc/group");
    return /^\d+$/.test(name) ? Number(name) : this.#groups.get(name);
  }
}

function readIdFile(path: string): Map<string, number> {
  const map = new Map<string, number>();
  let text = "";
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return map;
    throw err;
  }
  for (const line of text.split("\n")) {
    const [name, , id] = line.split(":");
    if (name && id !== undefined && /^\d+$/.test(id) && !map.has(name)) map.set(name, Number(id));
  }
  return map;
}

/** Downloads one file into `dir` (already checked), or skips it when present and verified. */
async function restoreFile(
  options: SlurpOptions,
  source: Source,
  dir: string,
  size: number,
  owners: OwnerResolver,
  progress: Progress,
): Promise<"downloaded" | "skipped"> {
  const path = `${dir}/${source.name}`;
  let existing: Deno.FileInfo | null = null;
  try {
    existing = await Deno.lstat(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  if (existing?.isDirectory) throw new FatalError(`'${path}' exists and is a directory`);
  if (existing?.isFile && existing.size === size && !options.force) {
    const head = await options.store.head(source.key);
    const md5 = head && expectedMd5(head);
    if (head && head.size === size && (md5 === null || await md5OfFile(path) === md5)) {
      log.debug("already restored", { path });
      progress.fileDone(size);
      return "skipped";
    }
  }
  const attempts = Math.max(1, options.attempts ?? 5);
  const delayMs = options.retryDelayMs ?? 1000;
  for (let attempt = 1;; attempt++) {
    try {
      await downloadOnce(options, source, dir, path, owners, progress);
      progress.fileDone(0);
      return "downloaded";
    } catch (err) {
      if (err instanceof MissingObjectError || attempt >= attempts) throw err;
      log.warn("download failed, retrying", {
        key: source.key,
        attempt,
        of: attempts,
        reason: errorMessage(err),
      });
      await new Promise((resolve) => setTimeout(resolve, delayMs * attempt));
    }
  }
}

class MissingObjectError extends Error {
  override name = "MissingObjectError";
}

/** One download attempt: temp file, hash while writing, check, fsync, mode, owner, rename. */
async function downloadOnce(
  options: SlurpOptions,
  source: Source,
  dir: string,
  path: string,
  owners: OwnerResolver,
  progress: Progress,
): Promise<void> {
  const temp = `${dir}/.${source.name}${PARTIAL_SUFFIX}`;
  await removeIfPresent(temp);
  const object = await options.store.get(source.key);
  if (object === null) {
    throw new MissingObjectError(`Object '${source.key}' is missing from ${options.store.url}`);
  }
  let written = 0;
  try {
    const hash = createHash("md5");
    {
      using file = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
      for await (const chunk of object.body) {
        hash.update(chunk);
        let offset = 0;
        while (offset < chunk.byteLength) offset += await file.write(chunk.subarray(offset));
        written += chunk.byteLength;
        progress.addBytes(chunk.byteLength);
      }
      await file.sync();
    }
    const { head } = object;
    if (written !== head.size) {
      throw new Error(`Got ${written} bytes of '${source.key}', expected ${head.size}`);
    }
    const md5 = expectedMd5(head);
    const actual = hash.digest("hex");
    if (md5 !== null && actual !== md5) {
      throw new Error(`MD5 of '${source.key}' is ${actual}, expected ${md5}`);
    }
    const stat = parseStatMetadata(head.metadata["stat"]);
    await Deno.chmod(temp, stat?.mode !== undefined ? stat.mode & 0o7777 : 0o644);
    const [uid, gid] = ownerOf(options, stat, owners, source.key);
    if (uid !== null || gid !== null) await Deno.chown(temp, uid, gid);
    await Deno.rename(temp, path);
    log.debug("restored", { path, bytes: written });
  } catch (err) {
    progress.addBytes(-written);
    await removeIfPresent(temp).catch(() => {});
    throw err;
  }
}

function ownerOf(
  options: SlurpOptions,
  stat: ReturnType<typeof parseStatMetadata>,
  owners: OwnerResolver,
  key: string,
): [number | null, number | null] {
  if (options.preserve) {
    if (stat === null) {
      log.warn("no stat metadata, owner not preserved", { key });
      return [null, null];
    }
    const uid = (stat.user !== undefined ? owners.user(stat.user) : undefined) ?? stat.uid ?? null;
    const gid = (stat.group !== undefined ? owners.group(stat.group) : undefined) ?? stat.gid ??
      null;
    return [uid, gid];
  }
  return [options.owner ?? null, options.group ?? null];
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

async function md5OfFile(path: string): Promise<string> {
  const hash = createHash("md5");
  using file = await Deno.open(path, { read: true });
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

/** Progress: a redrawn bar on a terminal, a plain log line every 10 s otherwise. */
class Progress {
  #files: number;
  #bytes: number;
  #tty: boolean;
  #doneFiles = 0;
  #doneBytes = 0;
  #started = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #encoder = new TextEncoder();

  constructor(files: number, bytes: number, tty: boolean) {
    this.#files = files;
    this.#bytes = bytes;
    this.#tty = tty;
  }

  start(): void {
    this.#started = performance.now();
    this.#timer = setInterval(() => this.#report(), this.#tty ? 250 : 10_000);
  }

  addBytes(n: number): void {
    this.#doneBytes += n;
  }

  /** A file finished; `bytes` is counted now if it was not streamed (a skip). */
  fileDone(bytes: number): void {
    this.#doneFiles++;
    this.#doneBytes += bytes;
  }

  stop(): void {
    clearInterval(this.#timer);
    if (this.#tty) {
      this.#report();
      Deno.stderr.writeSync(this.#encoder.encode("\n"));
    }
  }

  #report(): void {
    const seconds = (performance.now() - this.#started) / 1000;
    const rate = seconds > 0 ? this.#doneBytes / seconds : 0;
    const left = this.#bytes - this.#doneBytes;
    const eta = rate > 0 && left > 0 ? formatDuration(left / rate) : "-";
    const text = `${this.#doneFiles}/${this.#files} files, ${formatBytes(this.#doneBytes)}/${
      formatBytes(this.#bytes)
    }, ${formatBytes(rate)}/s, ETA ${eta}`;
    if (!this.#tty) {
      log.info("restore progress", {
        files: `${this.#doneFiles}/${this.#files}`,
        bytes: `${this.#doneBytes}/${this.#bytes}`,
        rate: `${formatBytes(rate)}/s`,
        eta,
      });
      return;
    }
    const width = 24;
    const fraction = this.#bytes > 0 ? Math.min(1, this.#doneBytes / this.#bytes) : 1;
    const filled = Math.round(fraction * width);
    const bar = `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
    Deno.stderr.writeSync(this.#encoder.encode(`\r\x1b[K${bar} ${text}`));
  }
}

/** `1.5 MiB`-style sizes. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(rest).padStart(2, "0")}s`;
}

/** `tablesnap slurp ARGS`: parses the command line, restores, returns the exit code. */
export async function slurpMain(args: string[]): Promise<number> {
  const { values, positionals } = parseCli(args, SLURP_OPTIONS);
  if (values.help) {
    console.log(SLURP_HELP);
    return 0;
  }
  if (positionals.length !== 3) {
    throw new UsageError(`Expected BUCKET ORIGIN TARGET, got ${positionals.length} arguments`);
  }
  const [bucket, origin, target] = positionals as [string, string, string];
  const threads = intOption(values.threads, "--threads", 4, 1);
  const owners = new OwnerResolver();
  let owner: number | undefined;
  let group: number | undefined;
  if (values.owner !== undefined) {
    owner = owners.user(values.owner);
    if (owner === undefined) throw new UsageError(`Unknown user '${values.owner}'`);
  }
  if (values.group !== undefined) {
    group = owners.group(values.group);
    if (group === undefined) throw new UsageError(`Unknown group '${values.group}'`);
  }
  const naming: KeyNaming = await namingFromFlags(values);
  const connection = { ...values };
  if (values.token !== undefined && values["aws-token"] === undefined) {
    connection["aws-token"] = values.token;
  }
  const store = openStore(bucket, connection);
  try {
    await store.check();
    const options: SlurpOptions = {
      store,
      naming,
      origin,
      target,
      threads,
      recursive: values.recursive ?? false,
      preserve: values.preserve ?? false,
      force: values.force ?? false,
      plan: values.plan ?? false,
    };
    if (values.file !== undefined) options.file = values.file;
    if (values.commitlogs !== undefined) options.commitlogs = values.commitlogs;
    if (values["commitlogs-target"] !== undefined) {
      options.commitlogsTarget = values["commitlogs-target"];
    }
    if (owner !== undefined) options.owner = owner;
    if (group !== undefined) options.group = group;
    const result = await slurp(options);
    return result.missing.length > 0 || result.failed.length > 0 ? 1 : 0;
  } finally {
    store.close();
  }
}
