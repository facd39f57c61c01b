/**
 * The bench's scale step (`deno task bench --scale`): every job at a
 * production node's size, against moto (which paginates past 1,000 keys),
 * seeded in-process by bench/_moto_seeded.py rather than through HTTP:
 *
 *   a. `-B --once -r` start-up on a node of 100,000 files in 1,000 table
 *      directories, all already uploaded (with their indexes);
 *   b. `chop` over a prefix of 1,000,000 keys and 10,000 indexes;
 *   c. `verify` and `list` over the 100,000 files of (a).
 *
 * Each is measured for wall time, CPU, peak RSS and the requests it sends
 * (by operation, through the counting proxy). The seeded objects carry the
 * keys, metadata and index bodies the watcher writes, made by its own code
 * (lib/bucket/), with tiny bodies to keep moto's memory sane.
 */
import { indexBody } from "../lib/bucket/index_body.ts";
import { indexKey, type KeyNaming, objectKey } from "../lib/bucket/keys.ts";
import { mtimeMetadata, statMetadata } from "../lib/bucket/object_meta.ts";
import { CUT_TIME_METADATA } from "../lib/bucket/index_reader.ts";
import { Accounts } from "../lib/common/accounts.ts";
import { md5Hex } from "../lib/common/digest.ts";
import { measure, processCpu, type RunStats } from "./_proc.ts";
import { freePort, startCountingProxy } from "./_servers.ts";
import { fmt, markdownTable, verdictAtMost } from "./_report.ts";
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

/** What the step needs from the bench: how to run tablesnap, and where. */
export interface ScaleContext {
  /** `deno` arguments running `tablesnap JOB` ("" for the watcher) with the bench's naming. */
  args(job: string, endpoint: string, prefix: string, extra: string[]): string[];
  env: Record<string, string>;
  cwd: string;
  forceProc: boolean;
  /** The `-n` name the bench uses. */
  name: string;
  bucket: string;
  work: string;
  log(message: string): void;
}

/** One measured job of the step. */
export interface ScaleRun {
  label: string;
  /** What it ran over, for the report ("100,000 files, 12,500 indexes"). */
  over: string;
  stats: RunStats;
  counts: Record<string, number>;
  /** The job's own summary line, when it prints one. */
  summary: string;
  /** The peak RSS the issue allows this job. */
  rssLimitMB: number;
}

export interface ScaleResult {
  cfg: ScaleConfig;
  runs: ScaleRun[];
  /** Seconds spent seeding each moto (not part of any figure). */
  seedS: number[];
  /** moto's CPU seconds over each measured job, for context. */
  serverCpuS: number[];
}

/** A moto_server holding seeded objects, serving on 127.0.0.1. */
interface SeededMoto extends AsyncDisposable {
  endpoint: string;
  cpu(): Promise<number>;
}

const LAUNCHER = new URL("./_moto_seeded.py", import.meta.url).pathname;

/**
 * Starts bench/_moto_seeded.py and feeds it `objects` (NDJSON lines, see the
 * launcher); resolves once it serves them.
 */
async function startSeededMoto(
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
async function writeNode(root: string, cfg: ScaleConfig): Promise<Map<string, string[]>> {
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
async function* nodeObjects(
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
const HISTORY_DAYS = 30;
const CHOP_AGE_DAYS = 7;
/** Generations an index names: the live set of a table that compacts as it goes. */
const LIVE_GENERATIONS = 12;

/** How the chop set is laid out: per directory, its generations and its indexed ones. */
function chopShape(cfg: ScaleConfig) {
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
function* chopObjects(naming: KeyNaming, root: string, cfg: ScaleConfig): Iterable<string> {
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

/** Runs one job through a fresh counting proxy in front of `moto`. */
async function measured(
  ctx: ScaleContext,
  moto: SeededMoto,
  job: string,
  prefix: string,
  extra: string[],
): Promise<{ stats: RunStats; counts: Record<string, number>; serverCpuS: number }> {
  await using proxy = startCountingProxy(moto.endpoint);
  const cpu0 = await moto.cpu();
  const stats = await measure(Deno.execPath(), ctx.args(job, proxy.endpoint, prefix, extra), {
    env: ctx.env,
    cwd: ctx.cwd,
    forceProc: ctx.forceProc,
  });
  return { stats, counts: { ...proxy.counts }, serverCpuS: (await moto.cpu()) - cpu0 };
}

/** The last line of a job's output that starts with `start` ("" if none). */
function summaryLine(stats: RunStats, start: RegExp): string {
  return stats.tail.split("\n").filter((l) => start.test(l)).pop()?.trim() ?? "";
}

/** Runs the scale step; throws if a job fails (its exit code and output tail). */
export async function scaleStep(ctx: ScaleContext, cfg: ScaleConfig): Promise<ScaleResult> {
  const result: ScaleResult = { cfg, runs: [], seedS: [], serverCpuS: [] };
  const prefix = "scale/";
  const naming: KeyNaming = { prefix, name: ctx.name, separator: ":" };
  const ok = (what: string, stats: RunStats, allowed: number[] = [0]) => {
    if (!allowed.includes(stats.code)) {
      throw new Error(`${what} exited with ${stats.code}:\n${stats.tail.slice(-3000)}`);
    }
  };

  // (a) and (c): one node, already backed up.
  const root = `${ctx.work}/scale-node`;
  ctx.log(`scale: writing ${cfg.files} files in ${cfg.tables} table directories`);
  const byDir = await writeNode(root, cfg);
  const indexes = [...byDir.values()].flat().filter((n) => n.endsWith("-Data.db")).length;
  const over = `${cfg.files.toLocaleString("en-US")} files, ${
    indexes.toLocaleString("en-US")
  } indexes, ${cfg.tables.toLocaleString("en-US")} directories`;
  try {
    const t0 = performance.now();
    {
      await using moto = await startSeededMoto(ctx.bucket, nodeObjects(naming, byDir));
      result.seedS.push((performance.now() - t0) / 1000);
      ctx.log(`scale: moto seeded with the node in ${fmt(result.seedS[0]!)} s`);
      const jobs: [string, string, string[], number[], RegExp][] = [
        [
          "`-B --once -r` start-up, all uploaded",
          "",
          [
            "--once",
            "-B",
            "-r",
            ctx.bucket,
            root,
          ],
          [0],
          /^$/,
        ],
        ["`verify`", "verify", [ctx.bucket, `${root}/data`], [0], /^Verified /],
        ["`list`", "list", [ctx.bucket, `${root}/data`], [0], /^\S/],
      ];
      for (const [label, job, extra, allowed, summary] of jobs) {
        const run = await measured(ctx, moto, job, prefix, extra);
        ok(label, run.stats, allowed);
        result.runs.push({
          label,
          over,
          stats: run.stats,
          counts: run.counts,
          summary: job === "list" ? "" : summaryLine(run.stats, summary),
          rssLimitMB: 150,
        });
        result.serverCpuS.push(run.serverCpuS);
        ctx.log(
          `scale: ${label} ${fmt(run.stats.wallS)} s, ${fmt(run.stats.peakRssMB)} MB, ${
            JSON.stringify(run.counts)
          }`,
        );
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }

  // (b): chop over a long history.
  const chopRoot = "/var/lib/cassandra/data";
  const shape = chopShape(cfg);
  const keys = cfg.chopTables * (shape.filesPerDir + shape.indexesPerDir);
  ctx.log(`scale: seeding moto with ${keys} keys for chop`);
  const t0 = performance.now();
  await using moto = await startSeededMoto(ctx.bucket, chopObjects(naming, chopRoot, cfg));
  result.seedS.push((performance.now() - t0) / 1000);
  ctx.log(`scale: moto seeded for chop in ${fmt(result.seedS[1]!)} s`);
  const label = `\`chop\` (${CHOP_AGE_DAYS} days of ${HISTORY_DAYS})`;
  const run = await measured(ctx, moto, "chop", prefix, [
    ctx.bucket,
    `${chopRoot}/`,
    String(CHOP_AGE_DAYS),
  ]);
  ok(label, run.stats);
  result.runs.push({
    label,
    over: `${keys.toLocaleString("en-US")} keys, ${
      (cfg.chopTables * shape.indexesPerDir).toLocaleString("en-US")
    } indexes, ${cfg.chopTables.toLocaleString("en-US")} directories`,
    stats: run.stats,
    counts: run.counts,
    summary: summaryLine(run.stats, /under '/),
    rssLimitMB: 300,
  });
  result.serverCpuS.push(run.serverCpuS);
  ctx.log(
    `scale: chop ${fmt(run.stats.wallS)} s, ${fmt(run.stats.peakRssMB)} MB, ${
      JSON.stringify(run.counts)
    }`,
  );
  return result;
}

/** Requests by operation, most first: "ListObjects 101, GetObject 12". */
function countsText(counts: Record<string, number>): string {
  return Object.entries(counts).sort((a, b) => b[1] - a[1])
    .map(([op, n]) => `${op} ${n.toLocaleString("en-US")}`).join(", ") || "none";
}

/** Rows for the report's summary table. */
export function scaleSummaryRows(r: ScaleResult): string[][] {
  return r.runs.map((run) => [
    `7. Scale: peak RSS, ${run.label}`,
    `${fmt(run.stats.peakRssMB)} MB (${fmt(run.stats.wallS)} s)`,
    `≤ ${run.rssLimitMB} MB`,
    verdictAtMost(run.stats.peakRssMB, run.rssLimitMB),
  ]);
}

/** The step's detail section of the report. */
export function scaleReport(r: ScaleResult): string[] {
  const total = (counts: Record<string, number>) =>
    Object.values(counts).reduce((a, b) => a + b, 0);
  return [
    `**7. Scale** (moto_server seeded in-process by \`bench/_moto_seeded.py\`, ${
      r.seedS.map((s) => `${fmt(s)} s`).join(" and ")
    } to seed; requests counted by a proxy; tiny bodies): each job once, default settings.`,
    "",
    markdownTable(
      ["Job", "over", "wall s", "CPU s", "peak RSS MB", "requests", "by operation", "moto CPU s"],
      r.runs.map((run, i) => [
        run.label,
        run.over,
        fmt(run.stats.wallS, 2),
        fmt(run.stats.cpuS, 2),
        fmt(run.stats.peakRssMB),
        total(run.counts).toLocaleString("en-US"),
        countsText(run.counts),
        fmt(r.serverCpuS[i] ?? 0),
      ]),
    ),
    "",
    ...r.runs.filter((run) => run.summary).map((run) => `- ${run.label}: ${run.summary}`),
    "",
  ];
}
