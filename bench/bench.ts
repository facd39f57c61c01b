/**
 * `deno task bench`: tablesnap against `aws s3 sync` and against the
 * server's own ingest limit, on a local S3 server, in one run. Prints one
 * markdown report (a summary table against the targets of issue #4, then
 * the detail of each measurement) and writes it to `bench/results/latest.md`
 * or `--out`.
 *
 *   deno task bench                 full size (about 10 minutes on 2 cores)
 *   deno task bench --quick         tiny sizes, what CI's smoke test runs
 *   deno task bench --size 4G --runs 5 --files-at-start 50000
 *
 * Requires `--allow-read --allow-write --allow-net --allow-env --allow-sys
 * --allow-run` (the task sets them); Linux (`/proc`); `aws` and
 * `moto_server` on PATH for the comparison and the reconciliation steps
 * (each is reported as skipped without them).
 *
 * Each step is a module beside this one (`_bulk.ts`, `_latency.ts`,
 * `_memory.ts`, `_reconcile.ts`, `_limit.ts`, `_restore.ts`, `_crash.ts`,
 * `_scale.ts`, `_rgw.ts`) that runs it and writes its summary rows and its detail;
 * `_context.ts` starts tablesnap with the compile task's flags.
 */
import { VERSION } from "../lib/common/version.ts";
import { bulk, bulkReport, bulkSummaryRows, type ToolRun } from "./_bulk.ts";
import { type Config, parseConfig, type Section } from "./_config.ts";
import {
  BUCKET,
  childEnv,
  commandOutput,
  findAws,
  fmtBytes,
  jobArgs,
  loadProgram,
  log,
  MB,
  NAME,
  program,
} from "./_context.ts";
import { crashFailed, crashReport, crashStep } from "./_crash.ts";
import { type CrashMatrixFigures, describeFigures } from "../tests/_crash_matrix.ts";
import { latency, latencyReport, type LatencyResult, latencySummaryRows } from "./_latency.ts";
import { limitMbps, limitReport, type LimitResult, serverLimit } from "./_limit.ts";
import { memory, memoryReport, type MemoryRun, memorySummaryRows } from "./_memory.ts";
import { hasGnuTime, readProc } from "./_proc.ts";
import {
  reconcile,
  reconcileReport,
  type ReconcileResult,
  reconcileSummaryRows,
} from "./_reconcile.ts";
import { fmt, markdownTable } from "./_report.ts";
import { restoreReport, type RestoreResult, restoreStep, restoreSummaryRows } from "./_restore.ts";
import {
  SCALE_FULL,
  SCALE_QUICK,
  scaleConfigFor,
  scaleReport,
  type ScaleResult,
  scaleStep,
  scaleSummaryRows,
} from "./_scale.ts";
import { rgwReport, type RgwResult, rgwStep, rgwSummaryRows } from "./_rgw.ts";
import { type Server, startServer } from "./_servers.ts";
import { generateTree, planTree, seeded, type Tree } from "./_tree.ts";

interface Results {
  cfg: Config;
  tree?: Tree;
  bulk?: ToolRun[];
  limit?: LimitResult[];
  latency?: LatencyResult;
  memory?: MemoryRun[];
  reconcile?: ReconcileResult;
  restore?: RestoreResult;
  crash?: CrashMatrixFigures;
  scale?: ScaleResult;
  rgw?: RgwResult;
  machine: Record<string, string>;
  errors: string[];
}

function report(r: Results): string {
  const lines = [...reportHeader(r), ...summaryTable(r), ...details(r)];
  for (const e of r.errors) lines.push(`**Error**: ${e}`, "");
  lines.push(
    `Reproduce: \`deno task bench\` (sizes: tree ${fmtBytes(r.cfg.size)}, ${r.cfg.runs} runs, ` +
      `large object ${fmtBytes(r.cfg.large)}, ` +
      `${r.cfg.latencyFiles} steady files, burst ${r.cfg.burst}, memory ${
        fmtBytes(r.cfg.memBig)
      } / ` +
      `${r.cfg.memSmall} files at -t ${
        r.cfg.threads.join(", ")
      }, ${r.cfg.filesAtStart} files at start).`,
  );
  return lines.join("\n") + "\n";
}

/** The title and the machine, servers and flags the figures were measured with. */
function reportHeader(r: Results): string[] {
  const m = r.machine;
  return [
    `### tablesnap ${VERSION} benchmark, ${m["date"]}`,
    "",
    `Machine: ${m["cores"]} cores (${m["cpu"]}), ${m["memory"]} RAM, Linux ${m["kernel"]}. ` +
    `Deno ${Deno.version.deno}; ${m["aws"] || "aws CLI not found"}. ` +
    `Server: s3rver 3.7.1 on 127.0.0.1 (steps 1, 2, 3, 5); ` +
    (r.reconcile
      ? `${r.reconcile.server === "moto" ? `moto_server ${m["moto"]}` : "s3rver"} for step 4. `
      : "") +
    (r.rgw ? "Ceph RGW (one node, memstore) for step 8. " : "") +
    `tablesnap runs as \`deno run ${
      program().flags.join(" ")
    }\` (the binary's runtime flags, from deno.json's compile task). ` +
    `Peak RSS and CPU: ${m["measure"]}. MB = 10^6 bytes.`,
    "",
  ];
}

/** Every step's summary rows against its targets, in one table. */
function summaryTable(r: Results): string[] {
  const summary: string[][] = [];
  const limit = r.limit ? limitMbps(r.limit) : undefined;
  if (r.bulk) summary.push(...bulkSummaryRows(r.bulk, r.tree, limit));
  if (r.restore) summary.push(...restoreSummaryRows(r.restore));
  if (r.latency) summary.push(...latencySummaryRows(r.latency, r.cfg));
  if (r.memory) summary.push(...memorySummaryRows(r.memory, r.cfg));
  if (r.reconcile) summary.push(...reconcileSummaryRows(r.reconcile));
  if (r.scale) summary.push(...scaleSummaryRows(r.scale));
  if (r.rgw) summary.push(...rgwSummaryRows(r.rgw));
  return [markdownTable(["Measure", "Result", "Target", "Verdict"], summary), ""];
}

/** Every step's detail, in the report's order. */
function details(r: Results): string[] {
  return [
    ...(r.tree && r.bulk ? bulkReport(r.bulk, r.tree, r.cfg) : []),
    ...(r.restore ? restoreReport(r.restore, r.cfg) : []),
    ...(r.limit ? limitReport(r.limit, r.tree?.bytes ?? 0) : []),
    ...(r.latency ? latencyReport(r.latency, r.cfg) : []),
    ...(r.memory ? memoryReport(r.memory, r.cfg) : []),
    ...(r.reconcile ? reconcileReport(r.reconcile) : []),
    ...(r.crash ? crashReport(r.crash) : []),
    ...(r.scale ? scaleReport(r.scale) : []),
    ...(r.rgw ? rgwReport(r.rgw, r.cfg) : []),
  ];
}

async function machine(cfg: Config): Promise<Record<string, string>> {
  const cpuinfo = await readProc("/proc/cpuinfo").catch(() => "");
  const meminfo = await readProc("/proc/meminfo").catch(() => "");
  const memKB = Number(/MemTotal:\s+(\d+)/.exec(meminfo)?.[1] ?? 0);
  const moto = await commandOutput("sh", [
    "-c",
    "python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || pip show moto 2>/dev/null | sed -n 's/^Version: //p'",
  ]);
  return {
    date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    cores: String(navigator.hardwareConcurrency),
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? "unknown CPU",
    memory: `${fmt(memKB / 1024 / 1024, 1)} GiB`,
    kernel: Deno.osRelease(),
    aws: (await commandOutput((await findAws()) ?? "aws", ["--version"])).split(" ")[0] ?? "",
    moto,
    measure: (!cfg.forceProc && await hasGnuTime())
      ? "GNU time (rusage of the child)"
      : "/proc (VmHWM polled every 100 ms, cutime+cstime)",
  };
}

/** Runs one section when asked for; a failure is recorded in the report, not thrown. */
type Step = (name: Section, fn: () => Promise<void>) => Promise<void>;

function stepRunner(cfg: Config, results: Results): Step {
  return async (name, fn) => {
    if (!cfg.sections.has(name)) return;
    try {
      await fn();
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log(`${name} failed: ${message}`);
      results.errors.push(`${name}: ${message.split("\n").slice(0, 8).join(" / ")}`);
    }
  };
}

/** The sections that share one s3rver (and the bulk tree, for the first three). */
async function s3rverSteps(cfg: Config, results: Results, work: string, step: Step) {
  const aws = await findAws();
  await using server: Server = await startServer("s3rver", BUCKET);
  log(`s3rver at ${server.endpoint}`);
  if (["bulk", "limit", "restore"].some((s) => cfg.sections.has(s as Section))) {
    const rand = seeded(1);
    results.tree = await generateTree(`${work}/tree`, planTree(cfg.size, rand));
    log(`tree: ${results.tree.files.length} files, ${fmt(results.tree.bytes / MB)} MB`);
  }
  await step("bulk", async () => {
    results.bulk = await bulk(cfg, server, results.tree!, aws);
  });
  await step("limit", async () => {
    results.limit = await serverLimit(cfg, server, results.tree!, work);
  });
  await step("restore", async () => {
    results.restore = await restoreStep(cfg, server, results.tree!, aws, work);
  });
  if (results.tree) await Deno.remove(results.tree.root, { recursive: true });
  await step("latency", async () => {
    results.latency = await latency(cfg, server, work);
  });
  await step("memory", async () => {
    results.memory = await memory(cfg, server, work);
  });
}

/** The sections that start their own servers. */
async function ownServerSteps(cfg: Config, results: Results, work: string, step: Step) {
  await step("reconcile", async () => {
    results.reconcile = await reconcile(cfg, work);
  });
  await step("crash", async () => {
    const figures = await crashStep(cfg);
    results.crash = figures;
    if (crashFailed(figures)) throw new Error(`crash matrix failed: ${describeFigures(figures)}`);
  });
  await step("scale", async () => {
    results.scale = await scaleStep(
      {
        args: jobArgs,
        env: childEnv(),
        cwd: program().repo,
        forceProc: cfg.forceProc,
        name: NAME,
        bucket: BUCKET,
        work,
        log,
      },
      cfg.scaleFiles ? scaleConfigFor(cfg.scaleFiles) : cfg.quick ? SCALE_QUICK : SCALE_FULL,
      cfg.scaleRuns,
    );
  });
  await step("rgw", async () => {
    results.rgw = await rgwStep(cfg, await findAws(), work);
  });
}

async function main(args: string[]): Promise<number> {
  const cfg = parseConfig(args);
  await loadProgram(cfg.main);
  const work = cfg.tmp ?? await Deno.makeTempDir({ prefix: "tablesnap-bench-" });
  await Deno.mkdir(work, { recursive: true });
  const results: Results = { cfg, machine: await machine(cfg), errors: [] };
  log(`data in ${work}; warming the module cache`);
  const cache = await new Deno.Command(Deno.execPath(), {
    args: ["cache", program().main],
    cwd: program().repo,
    stdout: "null",
    stderr: "inherit",
  }).output();
  if (!cache.success) throw new Error("deno cache main.ts failed");
  const step = stepRunner(cfg, results);
  try {
    const shared: Section[] = ["bulk", "limit", "restore", "latency", "memory"];
    if (shared.some((s) => cfg.sections.has(s))) await s3rverSteps(cfg, results, work, step);
    await ownServerSteps(cfg, results, work, step);
  } finally {
    if (!cfg.keep) await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  const text = report(results);
  console.log(text);
  await Deno.mkdir(cfg.out.replace(/\/[^/]*$/, "") || ".", { recursive: true });
  await Deno.writeTextFile(cfg.out, text);
  log(`report written to ${cfg.out}`);
  return results.errors.length > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
