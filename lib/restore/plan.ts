/**
 * What a restore will fetch: the indexes chosen (the newest of ORIGIN, of each
 * table below it with -r, or the one of --file), the files they name, checked
 * as safe names before any path is formed, the commit logs asked for, and
 * each object's size from one listing per key directory.
 */
import { checkFileName, unsafeNameReason } from "../bucket/index_body.ts";
import { newestIndexIn, newestIndexPerDirectory, readIndex } from "../bucket/index_reader.ts";
import { directoryPrefix, indexKey, keyDirectory, trimSlashes } from "../bucket/keys.ts";
import { FatalError, UsageError } from "../common/errors.ts";
import { formatBytes } from "../common/format.ts";
import type { ObjectInfo, Store } from "../store/store.ts";
import type { PlannedFile, SlurpOptions, SlurpResult } from "./slurp.ts";

const COMMIT_LOG = /^CommitLog-\d+-(\d+)\.log$/;

/** The key to restore and the directory it goes into, before sizes are known. */
export interface Source {
  key: string;
  /** Root the destination must stay in, and the path segments below it. */
  root: string;
  segments: string[];
  name: string;
}

/** Finds the indexes, reads and checks them, and lists what to restore where. */
export async function resolveSources(
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

export function destination(source: Source): string {
  return [source.root, ...source.segments, source.name].join("/");
}

/** Lists each source directory once to learn sizes (missing objects get none). */
export async function sizeSources(
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
