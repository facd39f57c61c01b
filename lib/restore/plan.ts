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
import {
  dataKeyOfIndex,
  directoryPrefix,
  INDEX_SUFFIX,
  keyDirectory,
  objectKey,
  trimSlashes,
} from "../bucket/keys.ts";
import { SupersededCopies } from "../bucket/superseded.ts";
import { FatalError, UsageError } from "../common/errors.ts";
import { forEachLimited } from "../common/pool.ts";
import { namesEncryptedFiles } from "../store/encryption_metadata.ts";
import type { ObjectHead, ObjectInfo, Store } from "../store/store.ts";
import { addCommitLogs } from "./commit_logs.ts";
import type {
  IncompleteGeneration,
  PlannedFile,
  RestorePlan,
  SlurpOptions,
  Source,
} from "./types.ts";

/**
 * Requests the plan sends at once: tables whose restore point is chosen and
 * read, key directories listed, TOC.txt files read. Each is a round trip
 * (20-30 ms to a loaded RGW, more to S3); one after another they took 2.4
 * s of an 8 s restore of the bench tree (12 tables, 60 indexes).
 */
const PLAN_REQUESTS = 16;

/** Finds the restore points, reads and checks their indexes, and lists what to restore where. */
export async function resolvePlan(options: SlurpOptions): Promise<RestorePlan> {
  const plan: RestorePlan = {
    sources: [],
    files: [],
    points: [],
    skipped: [],
    incomplete: [],
    restorePointInTime: null,
    encrypted: [],
  };
  const points = new ChosenPoints(options, plan);
  if (options.recursive) await addTables(options, points);
  else if (options.file !== undefined) await addFilePoint(options, options.file, points);
  else await addNewestPoint(options, points);
  if (options.commitlogs !== undefined) await addCommitLogs(options, plan);
  plan.sources = uniqueDestinations(plan.sources);
  plan.files = await sizeSources(options.store, plan.sources);
  plan.incomplete = await incompleteGenerations(options.store, plan, points);
  return plan;
}

/** An index as `readIndex` gives it: its names and directory, and its GET's head. */
type ReadIndex = Awaited<ReturnType<typeof readIndex>>;

/** The restore points chosen so far, each index read and checked once. */
class ChosenPoints {
  /** By index key: the names it gives, and the directory it describes. */
  readonly names = new Map<string, string[]>();
  readonly directories = new Map<string, string>();
  readonly #options: SlurpOptions;
  readonly #plan: RestorePlan;

  constructor(options: SlurpOptions, plan: RestorePlan) {
    this.#options = options;
    this.#plan = plan;
  }

  get count(): number {
    return this.#plan.points.length;
  }

  /** Reads the point's index, checks its names, and adds its files (restored below `segments`). */
  async add(point: RestorePoint, directory: string, segments: string[]): Promise<void> {
    this.accept(point, await readIndex(this.#options.store, point.info.key), directory, segments);
  }

  /** Checks the names of the point's index, read as `listing`, and adds its files. */
  accept(point: RestorePoint, listing: ReadIndex, directory: string, segments: string[]): void {
    const { info } = point;
    const plan = this.#plan;
    if (trimSlashes(listing.directory) !== directory) {
      throw new FatalError(
        `Index '${info.key}' describes directory '${listing.directory}', expected '${directory}'`,
      );
    }
    for (const name of listing.names) checkFileName(name, info.key);
    // The GET brought the metadata: the exact cut time costs nothing more here.
    const cut = cutTimeOf(listing.head);
    const at = (cut ?? point.time).getTime();
    plan.points.push(cut ? { info, time: cut, exact: true } : point);
    if (namesEncryptedFiles(listing.head.metadata)) plan.encrypted.push(info.key);
    this.names.set(info.key, listing.names);
    this.directories.set(info.key, directory);
    const prefix = `${keyDirectory(info.key)}/`;
    const root = this.#options.target;
    for (const name of listing.names) {
      plan.sources.push({ key: prefix + name, root, segments, name, at });
    }
  }

  /** A table with no point by --at (it did not exist yet). */
  skip(directory: string): void {
    this.#plan.skipped.push(directory);
  }
}

/** -r: the newest point (at or before --at) of every keyspace/table below ORIGIN. */
async function addTables(options: SlurpOptions, points: ChosenPoints): Promise<void> {
  const { store } = options;
  const origin = trimSlashes(options.origin);
  const originPrefix = directoryPrefix(options.naming, origin);
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
  }
  // Chosen and read several tables at once, added in the tables' order.
  const chosen: ({ point: RestorePoint; listing: ReadIndex } | null)[] = [];
  await forEachLimited([...tables.keys()], PLAN_REQUESTS, async (i) => {
    const point = await chooseRestorePoint(store, tables[i]!.indexes, options.at);
    chosen[i] = point && { point, listing: await readIndex(store, point.info.key) };
  });
  for (const [i, { rel }] of tables.entries()) {
    const directory = `${origin}/${rel.join("/")}`;
    const found = chosen[i];
    if (!found) points.skip(directory);
    else points.accept(found.point, found.listing, directory, rel);
  }
  if (points.count === 0) {
    throw new FatalError(
      `No restore point at or before ${options.at?.toISOString()} under '${originPrefix}' in ${store.url}`,
    );
  }
}

/** -f: the newest cut (at or before --at) of one Data.db's generation. */
async function addFilePoint(
  options: SlurpOptions,
  file: string,
  points: ChosenPoints,
): Promise<void> {
  const { store } = options;
  const origin = trimSlashes(options.origin);
  if (unsafeNameReason(file) !== null) {
    throw new UsageError(
      `Option '--file' needs a bare file name such as nb-1-big-Data.db, got '${file}'`,
    );
  }
  // The file's first index and its later cuts (a rewritten component).
  const dataKey = objectKey(options.naming, `${origin}/${file}`);
  const cuts = (await indexesIn(store, directoryPrefix(options.naming, origin)))
    .filter((i) => dataKeyOfIndex(i.key) === dataKey);
  const point = await chooseRestorePoint(store, cuts, options.at);
  if (point === null) {
    const when = cuts.length > 0 ? ` at or before ${options.at?.toISOString()}` : "";
    throw new FatalError(`No index '${dataKey}${INDEX_SUFFIX}'${when} in ${store.url}`);
  }
  await points.add(point, origin, []);
}

/** The newest point (at or before --at) of ORIGIN itself. */
async function addNewestPoint(options: SlurpOptions, points: ChosenPoints): Promise<void> {
  const { store } = options;
  const origin = trimSlashes(options.origin);
  const originPrefix = directoryPrefix(options.naming, origin);
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
  await points.add(point, origin, []);
}

/** The oldest restore point's time among `indexes` (for the "nothing by then" error). */
async function oldestTime(store: Store, indexes: ObjectInfo[]): Promise<Date> {
  const oldest = indexes.reduce((a, b) => a.lastModified <= b.lastModified ? a : b);
  const head = await store.head(oldest.key);
  return (head && cutTimeOf(head)) ?? oldest.lastModified;
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
  { names, directories }: ChosenPoints,
): Promise<IncompleteGeneration[]> {
  const present = new Set(
    plan.files.filter((f) => f.planned.size !== undefined).map((f) => f.source.key),
  );
  const sources = new Map(plan.files.map((f) => [f.source.key, f.source]));
  // A point's name to the object restoring it (a rewritten component's copy of its time).
  const chosen = new Map(plan.files.map((f) => [f.source.named ?? f.source.key, f.source.key]));
  const onToc = (key: string, head: ObjectHead, bytes: Uint8Array<ArrayBuffer>) => {
    const source = sources.get(key);
    if (source) source.fetched = { head, bytes };
  };
  const gapsOf = new Map<string, TocGap[]>();
  // Several tables at once: one GET per TOC.txt, each a round trip.
  await forEachLimited(plan.points, PLAN_REQUESTS, async ({ info }) => {
    const named = names.get(info.key) ?? [];
    const isPresent = (key: string) => present.has(key);
    gapsOf.set(
      info.key,
      await tocGaps(store, keyDirectory(info.key), named, isPresent, {
        onToc,
        keyOf: (key) => chosen.get(key) ?? key,
      }),
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

function destination(source: Source): string {
  return [source.root, ...source.segments, source.name].join("/");
}

/** Lists each source directory once, several at once, to learn sizes (missing objects get none). */
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
  const copies = new SupersededCopies();
  await forEachLimited([...dirs], PLAN_REQUESTS, async (dir) => {
    for await (const info of store.list(dir, { delimiter: "/" })) {
      if (copies.add(info)) continue;
      const planned = byKey.get(info.key);
      if (planned) planned.size = info.size;
    }
  });
  if (copies.size === 0) return out;
  for (const { source, planned } of out) {
    const copy = source.at === undefined ? null : copies.at(source.key, source.at);
    if (copy === null) continue;
    source.named = source.key;
    source.key = planned.key = copy.key;
    planned.size = copy.size;
  }
  return out;
}
