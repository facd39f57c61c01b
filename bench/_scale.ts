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
import type { KeyNaming } from "../lib/bucket/keys.ts";
import { measure, type RunStats } from "./_proc.ts";
import { fmt, markdownTable, verdictAtMost } from "./_report.ts";
import {
  CHOP_AGE_DAYS,
  chopObjects,
  chopShape,
  HISTORY_DAYS,
  nodeObjects,
  type ScaleConfig,
  type SeededMoto,
  startSeededMoto,
  writeNode,
} from "./_scale_data.ts";
import { startCountingProxy } from "./_servers.ts";

export { SCALE_FULL, SCALE_QUICK, type ScaleConfig, scaleConfigFor } from "./_scale_data.ts";

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
  /** Which of the step's runs in a row (1-based). */
  round: number;
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
  /** Times each job ran in a row. */
  rounds: number;
  runs: ScaleRun[];
  /** Seconds spent seeding each moto (not part of any figure). */
  seedS: number[];
  /** moto's CPU seconds over each measured job, for context. */
  serverCpuS: number[];
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

/** Fails unless the job exited with one of `allowed` (its exit code and output tail). */
function ok(what: string, stats: RunStats, allowed: number[] = [0]): void {
  if (!allowed.includes(stats.code)) {
    throw new Error(`${what} exited with ${stats.code}:\n${stats.tail.slice(-3000)}`);
  }
}

/**
 * Runs the scale step `rounds` times in a row (the node's jobs against one
 * seeded moto, as they leave the bucket as it was; chop against a fresh one
 * each time); throws if a job fails (its exit code and output tail).
 */
export async function scaleStep(
  ctx: ScaleContext,
  cfg: ScaleConfig,
  rounds = 1,
): Promise<ScaleResult> {
  const result: ScaleResult = { cfg, rounds, runs: [], seedS: [], serverCpuS: [] };
  const naming: KeyNaming = { prefix: PREFIX, name: ctx.name, separator: ":" };
  await nodeJobs(ctx, cfg, naming, result);
  for (let round = 1; round <= rounds; round++) await chopJob(ctx, cfg, naming, result, round);
  return result;
}

const PREFIX = "scale/";

/** (a) and (c): one node, already backed up. */
async function nodeJobs(
  ctx: ScaleContext,
  cfg: ScaleConfig,
  naming: KeyNaming,
  result: ScaleResult,
): Promise<void> {
  const root = `${ctx.work}/scale-node`;
  ctx.log(`scale: writing ${cfg.files} files in ${cfg.tables} table directories`);
  const byDir = await writeNode(root, cfg);
  const indexes = [...byDir.values()].flat().filter((n) => n.endsWith("-Data.db")).length;
  const over = `${cfg.files.toLocaleString("en-US")} files, ${
    indexes.toLocaleString("en-US")
  } indexes, ${cfg.tables.toLocaleString("en-US")} directories`;
  try {
    const t0 = performance.now();
    await using moto = await startSeededMoto(ctx.bucket, nodeObjects(naming, byDir));
    result.seedS.push((performance.now() - t0) / 1000);
    ctx.log(`scale: moto seeded with the node in ${fmt(result.seedS[0]!)} s`);
    const jobs: [string, string, string[], number[], RegExp][] = [
      [
        "`-B --once -r` start-up, all uploaded",
        "",
        ["--once", "-B", "-r", ctx.bucket, root],
        [0],
        /^$/,
      ],
      ["`verify`", "verify", [ctx.bucket, `${root}/data`], [0], /^Verified /],
      ["`list`", "list", [ctx.bucket, `${root}/data`], [0], /^\S/],
    ];
    for (let round = 1; round <= result.rounds; round++) {
      for (const [label, job, extra, allowed, summary] of jobs) {
        const run = await measured(ctx, moto, job, PREFIX, extra);
        ok(label, run.stats, allowed);
        result.runs.push({
          label,
          round,
          over,
          stats: run.stats,
          counts: run.counts,
          summary: job === "list" ? "" : summaryLine(run.stats, summary),
          rssLimitMB: 150,
        });
        result.serverCpuS.push(run.serverCpuS);
        ctx.log(
          `scale: ${label} (run ${round}) ${fmt(run.stats.wallS)} s, ${
            fmt(run.stats.peakRssMB)
          } MB, ${JSON.stringify(run.counts)}`,
        );
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}

/** (b): chop over a long history. */
async function chopJob(
  ctx: ScaleContext,
  cfg: ScaleConfig,
  naming: KeyNaming,
  result: ScaleResult,
  round: number,
): Promise<void> {
  const chopRoot = "/var/lib/cassandra/data";
  const shape = chopShape(cfg);
  const keys = cfg.chopTables * (shape.filesPerDir + shape.indexesPerDir);
  ctx.log(`scale: seeding moto with ${keys} keys for chop`);
  const t0 = performance.now();
  await using moto = await startSeededMoto(ctx.bucket, chopObjects(naming, chopRoot, cfg));
  result.seedS.push((performance.now() - t0) / 1000);
  ctx.log(`scale: moto seeded for chop in ${fmt(result.seedS.at(-1)!)} s`);
  const label = `\`chop\` (${CHOP_AGE_DAYS} days of ${HISTORY_DAYS})`;
  const run = await measured(ctx, moto, "chop", PREFIX, [
    ctx.bucket,
    `${chopRoot}/`,
    String(CHOP_AGE_DAYS),
  ]);
  ok(label, run.stats);
  result.runs.push({
    label,
    round,
    over: `${keys.toLocaleString("en-US")} keys, ${
      (cfg.chopTables * shape.indexesPerDir).toLocaleString("en-US")
    } indexes, ${cfg.chopTables.toLocaleString("en-US")} directories`,
    stats: run.stats,
    counts: run.counts,
    summary: summaryLine(run.stats, /under '/),
    rssLimitMB: 150,
  });
  result.serverCpuS.push(run.serverCpuS);
  ctx.log(
    `scale: chop (run ${round}) ${fmt(run.stats.wallS)} s, ${fmt(run.stats.peakRssMB)} MB, ${
      JSON.stringify(run.counts)
    }`,
  );
}

/** Requests by operation, most first: "ListObjects 101, GetObject 12". */
function countsText(counts: Record<string, number>): string {
  return Object.entries(counts).sort((a, b) => b[1] - a[1])
    .map(([op, n]) => `${op} ${n.toLocaleString("en-US")}`).join(", ") || "none";
}

/** Rows for the report's summary table: per job, the worst peak and every run's. */
export function scaleSummaryRows(r: ScaleResult): string[][] {
  const labels = [...new Set(r.runs.map((run) => run.label))];
  return labels.map((label) => {
    const runs = r.runs.filter((run) => run.label === label);
    const worst = Math.max(...runs.map((run) => run.stats.peakRssMB));
    const limit = runs[0]!.rssLimitMB;
    return [
      `7. Scale: peak RSS, ${label}${runs.length > 1 ? ` (worst of ${runs.length} runs)` : ""}`,
      `${fmt(worst)} MB (runs: ${runs.map((run) => fmt(run.stats.peakRssMB)).join(", ")})`,
      `≤ ${limit} MB`,
      verdictAtMost(worst, limit),
    ];
  });
}

/** The step's detail section of the report. */
export function scaleReport(r: ScaleResult): string[] {
  const total = (counts: Record<string, number>) =>
    Object.values(counts).reduce((a, b) => a + b, 0);
  return [
    `**7. Scale** (moto_server seeded in-process by \`bench/_moto_seeded.py\`, ${
      r.seedS.map((s) => `${fmt(s)} s`).join(" and ")
    } to seed; requests counted by a proxy; tiny bodies): each job ${
      r.rounds === 1 ? "once" : `${r.rounds} times in a row`
    }, default settings.`,
    "",
    markdownTable(
      [
        "Job",
        "run",
        "over",
        "wall s",
        "CPU s",
        "peak RSS MB",
        "requests",
        "by operation",
        "moto CPU s",
      ],
      r.runs.map((run, i) => [
        run.label,
        String(run.round),
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
    ...r.runs.filter((run) => run.summary && run.round === 1)
      .map((run) => `- ${run.label}: ${run.summary}`),
    "",
  ];
}
