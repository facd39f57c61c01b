/**
 * Step 1, the bulk backup: `tablesnap --once -B -r` against `aws s3 sync`
 * of the same tree (and, with --encrypt, tablesnap with --encrypt-to),
 * alternating which goes first.
 */
import { generateIdentity, identityToRecipient } from "age-encryption";
import type { Config } from "./_config.ts";
import { childEnv, failIfBad, log, MB, program, tablesnapArgs } from "./_context.ts";
import { measure, type RunStats } from "./_proc.ts";
import { fmt, markdownTable, median, verdictAtLeast, verdictAtMost } from "./_report.ts";
import type { Server } from "./_servers.ts";
import type { Tree } from "./_tree.ts";

export interface ToolRun {
  /** "encrypted": tablesnap with --encrypt-to. */
  tool: "tablesnap" | "aws" | "encrypted";
  run: number;
  stats: RunStats;
  serverCpuS: number;
  objects: number;
}

export async function bulk(cfg: Config, server: Server, tree: Tree, aws: string | undefined) {
  const runs: ToolRun[] = [];
  // A key nobody keeps: the figures are the cost of encrypting, nothing is restored.
  const encryptTo = cfg.encrypt ? ["--encrypt-to", await throwawayRecipient()] : [];
  for (let i = 0; i < cfg.runs; i++) {
    const order: ToolRun["tool"][] = i % 2 === 0
      ? ["tablesnap", "aws", "encrypted"]
      : ["encrypted", "aws", "tablesnap"];
    for (const tool of order) {
      if (tool === "aws" && !aws) continue;
      if (tool === "encrypted" && !cfg.encrypt) continue;
      const prefix = `${tool}-${i + 1}/`;
      const cpu0 = await server.cpu();
      const extra = tool === "encrypted" ? encryptTo : [];
      const stats = tool !== "aws"
        ? await measure(
          Deno.execPath(),
          tablesnapArgs(server, prefix, ["--once", "-B", "-r", ...extra, server.bucket, tree.root]),
          { env: childEnv(server.env), cwd: program().repo, forceProc: cfg.forceProc },
        )
        : await measure(aws!, [
          "--endpoint-url",
          server.endpoint,
          "s3",
          "sync",
          "--only-show-errors",
          tree.root,
          `s3://${server.bucket}/${prefix}`,
        ], { env: childEnv(server.env), forceProc: cfg.forceProc });
      const serverCpuS = (await server.cpu()) - cpu0;
      failIfBad(`${tool} run ${i + 1}`, stats);
      const objects = await server.objects(prefix);
      if (objects < tree.files.length) {
        throw new Error(`${tool} run ${i + 1} stored ${objects} of ${tree.files.length} files`);
      }
      await server.drop(prefix);
      log(
        `bulk ${tool} run ${i + 1}: ${fmt(tree.bytes / MB / stats.wallS)} MB/s, ` +
          `${fmt(stats.cpuS)} CPU s, ${fmt(stats.peakRssMB)} MB RSS`,
      );
      runs.push({ tool, run: i + 1, stats, serverCpuS, objects });
    }
  }
  return runs;
}

/** The recipient of a new age identity that is dropped at once. */
async function throwawayRecipient(): Promise<string> {
  return await identityToRecipient(await generateIdentity());
}

/** Each tool's runs, in the order of the report. */
function byTool(runs: ToolRun[]) {
  return {
    tablesnap: runs.filter((x) => x.tool === "tablesnap"),
    aws: runs.filter((x) => x.tool === "aws"),
    encrypted: runs.filter((x) => x.tool === "encrypted"),
  };
}

/** The summary rows of step 1 (`limitMbps`: the best of step 5, when it ran). */
export function bulkSummaryRows(
  runs: ToolRun[],
  tree: Tree | undefined,
  limitMbps: number | undefined,
): string[][] {
  const summary: string[][] = [];
  const { tablesnap: tsRuns, aws: awsRuns } = byTool(runs);
  const bytes = tree?.bytes ?? 0;
  const rate = (x: ToolRun) => bytes / MB / x.stats.wallS;
  if (awsRuns.length > 0) {
    const ratios = tsRuns.map((t) => {
      const pair = awsRuns.find((a) => a.run === t.run)!;
      return rate(t) / rate(pair);
    });
    const ratio = median(ratios);
    summary.push([
      "1. Bulk `--once -B -r`: throughput ÷ `aws s3 sync` (median of pairs)",
      `${fmt(ratio, 2)}×`,
      "≥ 2×",
      verdictAtLeast(ratio, 2),
    ]);
  } else {
    summary.push(["1. Bulk: throughput ÷ `aws s3 sync`", "aws CLI not found", "≥ 2×", "not run"]);
  }
  if (limitMbps !== undefined) {
    const share = median(tsRuns.map(rate)) / limitMbps;
    summary.push([
      "1. Bulk: throughput ÷ server limit (step 5)",
      `${fmt(share * 100, 0)}%`,
      "≥ 80%",
      verdictAtLeast(share, 0.8),
    ]);
  }
  const perGB = (runs: ToolRun[]) => median(runs.map((x) => x.stats.cpuS)) / (bytes / 1e9);
  if (awsRuns.length > 0) {
    summary.push([
      "1. Bulk: client CPU s per GB, tablesnap vs aws",
      `${fmt(perGB(tsRuns), 2)} vs ${fmt(perGB(awsRuns), 2)}`,
      "≤ aws",
      verdictAtMost(perGB(tsRuns), perGB(awsRuns)),
    ]);
  }
  return summary;
}

/** The detail of step 1. */
export function bulkReport(runs: ToolRun[], tree: Tree, cfg: Config): string[] {
  const { tablesnap: tsRuns, aws: awsRuns, encrypted: encryptedRuns } = byTool(runs);
  const bytes = tree.bytes;
  const files = tree.files.length;
  const rate = (x: ToolRun) => bytes / MB / x.stats.wallS;
  const rows = [
    ["tablesnap", tsRuns] as const,
    ["aws s3 sync", awsRuns] as const,
    ["tablesnap, encrypted (age)", encryptedRuns] as const,
  ].filter(([, runs]) => runs.length > 0).map(([name, runs]) => [
    name,
    runs.map((x) => fmt(rate(x))).join(", "),
    fmt(median(runs.map(rate))),
    fmt(median(runs.map((x) => files / x.stats.wallS))),
    fmt(median(runs.map((x) => x.stats.wallS)), 2),
    fmt(median(runs.map((x) => x.stats.cpuS)), 2),
    fmt(median(runs.map((x) => x.stats.cpuS)) / (bytes / 1e9), 2),
    fmt(median(runs.map((x) => x.stats.peakRssMB))),
    fmt(median(runs.map((x) => x.serverCpuS)) / (bytes / 1e9), 2),
  ]);
  return [
    `**1. Bulk backup** of a ${files}-file, ${fmt(bytes / MB, 0)} MB Cassandra-shaped tree ` +
    `(largest file ${fmt(Math.max(...tree.files.map((f) => f.size)) / MB, 0)} MB), ` +
    `${cfg.runs} alternating run(s) each, default settings ` +
    `(tablesnap \`--once -B -r\`, 4 threads; \`aws s3 sync --only-show-errors\`). Medians:`,
    "",
    markdownTable(
      [
        "Tool",
        "MB/s per run",
        "MB/s",
        "files/s",
        "wall s",
        "CPU s",
        "CPU s/GB",
        "peak RSS MB",
        "server CPU s/GB",
      ],
      rows,
    ),
    "",
  ];
}
