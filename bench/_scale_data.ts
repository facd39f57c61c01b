/**
 * What the scale step seeds moto with (see _scale.ts): a node's files and
 * their indexes, and a long history for `chop`, made by the watcher's own
 * code (lib/bucket/) with tiny bodies; and the step's sizes.
 */
import { indexBody } from "../lib/bucket/index_body.ts";
import { indexKey, type KeyNaming, objectKey } from "../lib/bucket/keys.ts";
import { mtimeMetadata, statMetadata } from "../lib/bucket/object_meta.ts";
import { CUT_TIME_METADATA } from "../lib/bucket/index_reader.ts";
import { Accounts } from "../lib/common/accounts.ts";
import { md5Hex } from "../lib/common/digest.ts";
import { processCpu } from "./_proc.ts";
import { freePort } from "./_servers.ts";
import { components, makeTables, seeded, writeRandomFile } from "./_tree.ts";

/** Sizes of the scale step. */
export interface ScaleConfig {
  /** Local files of the node in (a) and (c). */
  files: number;
  /** Table directories they are spread over. */
  tables: number;
  /** Keys under chop's prefix in (b). */
  keys: number;
  /** Indexes among them. */
  indexes: number;
  /** Directories they are spread over. */
  chopTables: number;
}

/** The step's sizes at full scale, and for `--quick` (the smoke test). */
export const SCALE_FULL: ScaleConfig = {
  files: 100_000,
  tables: 1_000,
  keys: 1_000_000,
  indexes: 10_000,
  chopTables: 1_000,
};
export const SCALE_QUICK: ScaleConfig = {
  files: 2_000,
  tables: 20,
  keys: 20_000,
  indexes: 200,
  chopTables: 20,
};

/** The step's sizes for `files` local files, every other size in proportion to the full step's. */
export function scaleConfigFor(files: number): ScaleConfig {
  const of = (n: number) => Math.max(1, Math.round((n * files) / SCALE_FULL.files));
  return {
    files,
    tables: of(SCALE_FULL.tables),
    keys: of(SCALE_FULL.keys),
    indexes: of(SCALE_FULL.indexes),
    chopTables: of(SCALE_FULL.chopTables),
  };
}

/** A moto_server holding seeded objects, serving on 127.0.0.1. */
export interface SeededMoto extends AsyncDisposable {
  endpoint: string;
  cpu(): Promise<number>;
}

const LAUNCHER = new URL("./_moto_seeded.py", import.meta.url).pathname;

/**
 * Starts bench/_moto_seeded.py and feeds it `objects` (NDJSON lines, see the
 * launcher); resolves once it serves them.
 */
export async function startSeededMoto(
  bucket: string,
  objects: Iterable<string> | AsyncIterable<string>,
): Promise<SeededMoto> {
  const port = freePort();
  const child = new Deno.Command("python3", {
    args: [LAUNCHER, String(port), bucket],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const kill = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
  };
  const stderr = new Response(child.stderr).text();
  try {
    const writer = child.stdin.getWriter();
    const encoder = new TextEncoder();
    let batch = "";
    for await (const line of objects) {
      batch += line + "\n";
      if (batch.length > 1 << 20) {
        await writer.write(encoder.encode(batch));
        batch = "";
      }
    }
    await writer.write(encoder.encode(batch));
    await writer.close();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("ready")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`moto launcher exited before serving:\n${await stderr}`);
      out += value;
    }
    reader.releaseLock();
    // Nobody reads moto's output past "ready": drain it so it never blocks.
    child.stdout.pipeTo(new WritableStream()).catch(() => {});
  } catch (err) {
    await kill();
    throw err;
  }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cpu: () => processCpu(child.pid),
    [Symbol.asyncDispose]: kill,
  };
}

/** The TOC.txt body of the chop set's generations (the tree's own is written by _tree.ts). */
const TOC_BODY = components(0, () => 0).map(([c]) => c).join("\n") + "\n";
const TINY_BODY = "0123456789abcdef";
const TINY_MD5 = md5Hex(new TextEncoder().encode(TINY_BODY));

/**
 * The node of (a) and (c): `files` tiny files in `tables` table
 * directories, whole SSTable generations of eight components.
 */
export async function writeNode(root: string, cfg: ScaleConfig): Promise<Map<string, string[]>> {
  const rand = seeded(12);
  const tables = await makeTables(root, cfg.tables, rand);
  const byDir = new Map<string, string[]>(tables.map((t) => [t, []]));
  let written = 0;
  for (let g = 1; written < cfg.files; g++) {
    const dir = tables[g % tables.length]!;
    for (const [component] of components(0, rand)) {
      if (written === cfg.files) break;
      const name = `nb-${g}-big-${component}`;
      await writeRandomFile(`${dir}/${name}`, 32 + Math.floor(rand() * 224), rand);
      byDir.get(dir)!.push(name);
      written++;
    }
  }
  return byDir;
}

/**
 * What the watcher leaves in the bucket after backing up the node: each file
 * with `stat`, `md5sum` and `mtime`, and one index per Data.db naming the
 * whole directory (as a `-B` backlog's indexes do).
 */
export async function* nodeObjects(
  naming: KeyNaming,
  byDir: Map<string, string[]>,
): AsyncIterable<string> {
  const accounts = new Accounts();
  const cut = new Date().toISOString();
  for (const [dir, names] of byDir) {
    for (const name of names) {
      const path = `${dir}/${name}`;
      const info = await Deno.stat(path);
      const md5 = md5Hex(await Deno.readFile(path));
      yield JSON.stringify({
        key: objectKey(naming, path),
        path,
        md5,
        meta: {
          stat: statMetadata(info, accounts),
          md5sum: md5,
          mtime: mtimeMetadata(info.mtime!.getTime()),
        },
      });
    }
    const body = indexBody(dir, [...names].sort());
    for (const name of names.filter((n) => n.endsWith("-Data.db"))) {
      yield JSON.stringify({
        key: indexKey(naming, `${dir}/${name}`),
        body,
        md5: md5Hex(new TextEncoder().encode(body)),
        type: "application/json",
        meta: { [CUT_TIME_METADATA]: cut },
      });
    }
  }
}

const DAY_MS = 86_400_000;
/** The chop set's history spans this many days; chop keeps `CHOP_AGE_DAYS`. */
export const HISTORY_DAYS = 30;
export const CHOP_AGE_DAYS = 7;
/** Generations an index names: the live set of a table that compacts as it goes. */
const LIVE_GENERATIONS = 12;

/** How the chop set is laid out: per directory, its generations and its indexed ones. */
export function chopShape(cfg: ScaleConfig) {
  const perDir = Math.floor(cfg.keys / cfg.chopTables);
  const indexesPerDir = Math.max(1, Math.floor(cfg.indexes / cfg.chopTables));
  const filesPerDir = perDir - indexesPerDir;
  const generations = Math.ceil(filesPerDir / 8);
  return { filesPerDir, indexesPerDir, generations };
}

/**
 * The chop set: `chopTables` directories of 30 days of history each, one
 * SSTable generation after another (the last perhaps still partial), and
 * indexes at evenly spaced generations, each naming the generations live
 * then (the last 12). Times run from 30 days ago to now.
 */
export function* chopObjects(naming: KeyNaming, root: string, cfg: ScaleConfig): Iterable<string> {
  const { filesPerDir, indexesPerDir, generations } = chopShape(cfg);
  const names = components(0, () => 0).map(([c]) => c);
  const now = Date.now();
  const stepMs = (HISTORY_DAYS * DAY_MS) / generations;
  const timeOf = (g: number) => now - (generations - g) * stepMs - 60_000;
  const indexed = new Set(
    Array.from(
      { length: indexesPerDir },
      (_, j) => Math.round(((j + 1) * generations) / indexesPerDir),
    ),
  );
  for (let t = 0; t < cfg.chopTables; t++) {
    const dir = `${root}/ks${(t % 3) + 1}/table${t + 1}-${t.toString(16).padStart(32, "0")}`;
    let files = 0;
    for (let g = 1; g <= generations; g++) {
      for (const component of names) {
        if (files === filesPerDir) break;
        files++;
        const body = component === "TOC.txt" ? TOC_BODY : TINY_BODY;
        yield JSON.stringify({
          key: objectKey(naming, `${dir}/nb-${g}-big-${component}`),
          body,
          md5: body === TINY_BODY ? TINY_MD5 : md5Hex(new TextEncoder().encode(body)),
          meta: { md5sum: body === TINY_BODY ? TINY_MD5 : md5Hex(new TextEncoder().encode(body)) },
          mtime: timeOf(g),
        });
      }
      if (!indexed.has(g)) continue;
      const live: string[] = [];
      for (let l = Math.max(1, g - LIVE_GENERATIONS + 1); l <= g; l++) {
        for (const component of names) live.push(`nb-${l}-big-${component}`);
      }
      const body = indexBody(dir, live);
      yield JSON.stringify({
        key: indexKey(naming, `${dir}/nb-${g}-big-Data.db`),
        body,
        md5: md5Hex(new TextEncoder().encode(body)),
        type: "application/json",
        meta: { [CUT_TIME_METADATA]: new Date(timeOf(g)).toISOString() },
        mtime: timeOf(g) + 1000,
      });
    }
  }
}
