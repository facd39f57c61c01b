/**
 * What a restore will fetch: the restore points chosen (the newest index of
 * ORIGIN, or of each table below it with -r, at or before --at; or the one
 * of --file), the files they name, checked as safe names before any path is
 * formed, whole SSTables checked against their TOC.txt, the commit logs
 * needed to replay up to --at, and each object's size from one listing per
 * key directory.
 */
import { checkFileName, unsafeNameReason } from "../bucket/index_body.ts";
import {
  chooseRestorePoint,
  cutTimeOf,
  indexesIn,
  indexesPerDirectory,
  readIndex,
  type RestorePoint,
  type TocGap,
  tocGaps,
} from "../bucket/index_reader.ts";
import { directoryPrefix, indexKey, keyDirectory, trimSlashes } from "../bucket/keys.ts";
import { FatalError, UsageError } from "../common/errors.ts";
import { formatBytes } from "../common/format.ts";
import { forEachLimited } from "../common/pool.ts";
import { namesEncryptedFiles } from "../store/encryption_metadata.ts";
import type { ObjectHead, ObjectInfo, Store } from "../store/store.ts";
import type { PlannedFile, SlurpOptions, SlurpResult } from "./slurp.ts";

const COMMIT_LOG = /^CommitLog-\d+-(\d+)\.log$/;
/** Restore points whose TOC.txt files are read at once. */
const TOC_READS = 8;

/** The name of the commit log replay settings written beside restored commit logs. */
export const ARCHIVING_PROPERTIES = "commitlog_archiving.properties.tablesnap";

/** The key to restore and the directory it goes into, before sizes are known. */
export interface Source {
  key: string;
  /** Root the destination must stay in, and the path segments below it. */
  root: string;
  segments: string[];
  name: string;
  /**
   * The object as the plan already read it (each TOC.txt, for the whole-SSTable
   * check): its first download attempt uses these bytes instead of a GET.
   */
  fetched?: { head: ObjectHead; bytes: Uint8Array<ArrayBuffer> };
}

/** An SSTable generation whose TOC.txt names components the restore would not have. */
export interface IncompleteGeneration {
  /** The index that names the generation. */
  index: string;
  /** The directory (as the watcher saw it) and the generation's name prefix (`nb-7-big-`). */
  directory: string;
  generation: string;
  /** Components the TOC lists that the index does not name or the bucket lacks. */
  missing: string[];
}

/** Everything a restore resolved before it downloads anything. */
export interface RestorePlan {
  sources: Source[];
  /** Each source with its size from one listing per key directory (none: missing). */
  files: { source: Source; planned: PlannedFile }[];
  /** The chosen restore points, with their exact times where recorded. */
  points: RestorePoint[];
  /** With -r and --at: tables with no restore point by then (their directories). */
  skipped: string[];
  incomplete: IncompleteGeneration[];
  /** With --commitlogs and --at: Cassandra's `restore_point_in_time` value. */
  restorePointInTime: string | null;
  /** Chosen indexes written by an encrypting watcher: their files need --identity. */
  encrypted: string[];
}

/** Finds the restore points, reads and checks their indexes, and lists what to restore where. */
export async function resolvePlan(options: SlurpOptions): Promise<RestorePlan> {
  const { store, naming } = options;
  const origin = trimSlashes(options.origin);
  const originPrefix = directoryPrefix(naming, origin);
  const target = options.target;
  const plan: RestorePlan = {
    sources: [],
    files: [],
    points: [],
    skipped: [],
    incomplete: [],
    restorePointInTime: null,
    encrypted: [],
  };
  /** By index key: the names it gives, and the directory it describes. */
  const names = new Map<string, string[]>();
  const directories = new Map<string, string>();

  const addPoint = async (point: RestorePoint, directory: string, segments: string[]) => {
    const { info } = point;
    const listing = await readIndex(store, info.key);
    if (trimSlashes(listing.directory) !== directory) {
      throw new FatalError(
        `Index '${info.key}' describes directory '${listing.directory}', expected '${directory}'`,
      );
    }
    for (const name of listing.names) checkFileName(name, info.key);
    // The GET brought the metadata: the exact cut time costs nothing more here.
    const cut = cutTimeOf(listing.head);
    plan.points.push(cut ? { info, time: cut, exact: true } : point);
    if (namesEncryptedFiles(listing.head.metadata)) plan.encrypted.push(info.key);
    names.set(info.key, listing.names);
    directories.set(info.key, directory);
    const prefix = `${keyDirectory(info.key)}/`;
    for (const name of listing.names) {
      plan.sources.push({ key: prefix + name, root: target, segments, name });
    }
  };

  if (options.recursive) {
    if (options.file !== undefined) {
      throw new UsageError("Options '--file' and '--recursive' cannot be used together");
    }
    const tables = [...await indexesPerDirectory(store, originPrefix)]
      .map(([dir, indexes]) => ({ rel: dir.slice(originPrefix.length).split("/"), indexes }))
      .filter(({ rel }) => rel.length === 2)
      .sort((a, b) => (a.rel.join("/") < b.rel.join("/") ? -1 : 1));
    if (tables.length === 0) {
      throw new FatalError(`No keyspace/table index under '${originPrefix}' in ${store.url}`);
    }
    for (const { rel, indexes } of tables) {
      for (const segment of rel) {
        const reason = unsafeNameReason(segment);
        if (reason !== null) {
          throw new FatalError(
            `Index '${indexes[0]!.key}' has an unsafe directory name ${
              JSON.stringify(segment)
            }: ${reason}`,
          );
        }
      }
      const point = await chooseRestorePoint(store, indexes, options.at);
      const directory = `${origin}/${rel.join("/")}`;
      if (point === null) plan.skipped.push(directory); // it did not exist yet
      else await addPoint(point, directory, rel);
    }
    if (plan.points.length === 0) {
      throw new FatalError(
        `No restore point at or before ${options.at?.toISOString()} under '${originPrefix}' in ${store.url}`,
      );
    }
  } else if (options.file !== undefined) {
    if (unsafeNameReason(options.file) !== null) {
      throw new UsageError(
        `Option '--file' needs a bare file name such as nb-1-big-Data.db, got '${options.file}'`,
      );
    }
    const key = indexKey(naming, `${origin}/${options.file}`);
    const info = await store.head(key);
    if (info === null) throw new FatalError(`No index '${key}' in ${store.url}`);
    await addPoint({ info, time: info.lastModified, exact: false }, origin, []);
  } else {
    const indexes = await indexesIn(store, originPrefix);
    if (indexes.length === 0) {
      throw new FatalError(`No index under '${originPrefix}' in ${store.url}: nothing to restore`);
    }
    const point = await chooseRestorePoint(store, indexes, options.at);
    if (point === null) {
      const oldest = await oldestTime(store, indexes);
      throw new FatalError(
        `No restore point of '${origin}' at or before ${options.at?.toISOString()}: ` +
          `its oldest is ${oldest.toISOString()}`,
      );
    }
    await addPoint(point, origin, []);
  }

  if (options.commitlogs !== undefined) await addCommitLogs(options, plan);
  plan.sources = uniqueDestinations(plan.sources);
  plan.files = await sizeSources(store, plan.sources);
  plan.incomplete = await incompleteGenerations(store, plan, names, directories);
  return plan;
}

/** The oldest restore point's time among `indexes` (for the "nothing by then" error). */
async function oldestTime(store: Store, indexes: ObjectInfo[]): Promise<Date> {
  const oldest = indexes.reduce((a, b) => a.lastModified <= b.lastModified ? a : b);
  const head = await store.head(oldest.key);
  return (head && cutTimeOf(head)) ?? oldest.lastModified;
}

/**
 * The commit log segments that may hold mutations between the oldest chosen
 * restore point and --at (or now): those created by then (a segment's name
 * carries its creation time in milliseconds) and either created since the
 * oldest point or uploaded since (a segment is uploaded when Cassandra
 * closes it, so one uploaded before the point holds nothing after it).
 * Inclusive on purpose: replaying a segment twice is harmless, missing one
 * loses writes; past --at, `restore_point_in_time` stops the replay.
 */
async function addCommitLogs(options: SlurpOptions, plan: RestorePlan): Promise<void> {
  const since = Math.min(...plan.points.map((p) => p.time.getTime()));
  const until = options.at?.getTime() ?? Infinity;
  const prefix = directoryPrefix(options.naming, options.commitlogs!);
  const root = options.commitlogsTarget ?? `${options.target}/commitlogs`;
  for await (const info of options.store.list(prefix, { delimiter: "/" })) {
    const name = info.key.slice(prefix.length);
    const match = name.match(COMMIT_LOG);
    if (!match) continue;
    const created = Number(match[1]);
    if (created > until) continue;
    if (created >= since || info.lastModified.getTime() >= since) {
      plan.sources.push({ key: info.key, root, segments: [], name });
    }
  }
  if (options.at) plan.restorePointInTime = restorePointInTime(options.at);
}

/**
 * Cassandra's `restore_point_in_time` (GMT, `yyyy:MM:dd HH:mm:ss`): it
 * applies mutations up to and including that second, so the time is
 * rounded down, never past --at.
 */
export function restorePointInTime(at: Date): string {
  const iso = new Date(Math.floor(at.getTime() / 1000) * 1000).toISOString();
  return `${iso.slice(0, 10).replaceAll("-", ":")} ${iso.slice(11, 19)}`;
}

/** The commit log replay settings Cassandra reads, for `commitlogs`. */
export function archivingProperties(directory: string, pointInTime: string, at: Date): string {
  return [
    `# Written by tablesnap slurp --at ${at.toISOString()}. To replay these commit logs up to`,
    "# that time, copy these lines into Cassandra's conf/commitlog_archiving.properties",
    "# before starting the restored node.",
    "restore_command=/bin/cp -f %from %to",
    `restore_directories=${directory}`,
    `restore_point_in_time=${pointInTime}`,
    "",
  ].join("\n");
}

/** One destination, one download: an index may repeat a name across tables only by path. */
function uniqueDestinations(sources: Source[]): Source[] {
  const seen = new Set<string>();
  return sources.filter((s) => {
    const path = destination(s);
    if (seen.has(path)) return false;
    seen.add(path);
    return true;
  });
}

/**
 * Every generation of the chosen sets that has a TOC.txt must be whole: each
 * component the TOC lists named by the index and in the bucket (the sizing
 * listing already tells which named objects are there).
 */
async function incompleteGenerations(
  store: Store,
  plan: RestorePlan,
  names: Map<string, string[]>,
  directories: Map<string, string>,
): Promise<IncompleteGeneration[]> {
  const present = new Set(
    plan.files.filter((f) => f.planned.size !== undefined).map((f) => f.source.key),
  );
  const sources = new Map(plan.files.map((f) => [f.source.key, f.source]));
  const onToc = (key: string, head: ObjectHead, bytes: Uint8Array<ArrayBuffer>) => {
    const source = sources.get(key);
    if (source) source.fetched = { head, bytes };
  };
  const gapsOf = new Map<string, TocGap[]>();
  // Several tables at once: one GET per TOC.txt, each a round trip.
  await forEachLimited(plan.points, TOC_READS, async ({ info }) => {
    const named = names.get(info.key) ?? [];
    const isPresent = (key: string) => present.has(key);
    gapsOf.set(
      info.key,
      await tocGaps(store, keyDirectory(info.key), named, isPresent, { onToc }),
    );
  });
  const incomplete: IncompleteGeneration[] = [];
  for (const { info } of plan.points) {
    for (const gap of gapsOf.get(info.key) ?? []) {
      incomplete.push({ index: info.key, directory: directories.get(info.key)!, ...gap });
    }
  }
  return incomplete;
}

/** One line per incomplete generation, for errors and the plan. */
export function describeIncomplete(g: IncompleteGeneration): string {
  return `generation '${g.generation}' in '${g.directory}' lacks ${g.missing.join(", ")} ` +
    `(listed by its TOC.txt; index '${g.index}')`;
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

export function printPlan(print: (line: string) => void, store: Store, result: SlurpResult): void {
  const times = result.points.map((p) => p.time.getTime());
  for (const point of result.points) {
    print(`index ${point.time.toISOString()} ${point.info.key}`);
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
  printFindings(print, result);
}

/** What the plan and the summary both say: skipped tables, gaps, the replay point. */
export function printFindings(print: (line: string) => void, result: SlurpResult): void {
  if (result.tablesSkipped.length > 0) {
    print(`No restore point by then, not restored (${result.tablesSkipped.length}):`);
    for (const directory of result.tablesSkipped) print(`  ${directory}`);
  }
  if (result.incomplete.length > 0) {
    print(`Incomplete SSTables (${result.incomplete.length}):`);
    for (const g of result.incomplete) print(`  ${describeIncomplete(g)}`);
  }
  if (result.missing.length > 0) {
    print(`Missing from the bucket (${result.missing.length}):`);
    for (const key of result.missing) print(`  ${key}`);
  }
  if (result.restorePointInTime !== null) {
    print(`Commit log replay: restore_point_in_time=${result.restorePointInTime}`);
  }
}
