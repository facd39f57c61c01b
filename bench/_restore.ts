/**
 * Step 6, restore: the bulk tree (uploaded once by tablesnap) restored with
 * `slurp -r` and with `aws s3 sync` of the same keys, alternating, each
 * checked byte for byte; the same with `-t 32`; then one large object alone
 * (`slurp` vs `aws s3 cp`).
 */
import { generateIdentity, identityToRecipient } from "age-encryption";
import { DEFAULT_CONNECTIONS } from "../lib/restore/download.ts";
import type { Config } from "./_config.ts";
import { childEnv, failIfBad, jobArgs, log, MB, NAME, program, tablesnapArgs } from "./_context.ts";
import { measure, type RunStats } from "./_proc.ts";
import {
  fmt,
  markdownTable,
  median,
  peakRssRow,
  verdictAtLeast,
  verdictAtMost,
} from "./_report.ts";
import type { Server } from "./_servers.ts";
import { seeded, type Tree, writeRandomFile } from "./_tree.ts";

export interface RestoreRun {
  /** "encrypted": `slurp --identity` of the same files, uploaded with --encrypt-to. */
  tool: "tablesnap" | "aws" | "encrypted";
  run: number;
  stats: RunStats;
  serverCpuS: number;
}

export interface RestoreResult {
  runs: RestoreRun[];
  /** `slurp -r -t 32` of the same tree, `cfg.runs` times in a row: the memory bound at -t 32. */
  wide: RestoreRun[];
  bytes: number;
  files: number;
  large: RestoreRun[];
  largeBytes: number;
}

/** One `tablesnap slurp` of `prefix`'s keys, measured. */
export function measureSlurp(
  cfg: Config,
  server: Server,
  prefix: string,
  extra: string[],
): Promise<RunStats> {
  return measure(Deno.execPath(), jobArgs("slurp", server.endpoint, prefix, extra), {
    env: childEnv(server.env),
    cwd: program().repo,
    forceProc: cfg.forceProc,
  });
}

/**
 * Fails unless `restored` holds exactly the files of `original`, byte for
 * byte (directories without files, which have no index, do not count).
 */
async function assertSameFiles(what: string, original: string, restored: string): Promise<void> {
  const out = await new Deno.Command("diff", {
    args: ["-r", "-q", original, restored],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const problems: string[] = [];
  for (const line of text.split("\n").filter(Boolean)) {
    const only = /^Only in (.*): (.*)$/.exec(line);
    if (only && await hasNoFiles(`${only[1]}/${only[2]}`)) continue;
    problems.push(line);
  }
  if (problems.length > 0) {
    throw new Error(`${what}: restored files differ:\n${problems.join("\n").slice(0, 2000)}`);
  }
}

async function hasNoFiles(path: string): Promise<boolean> {
  const info = await Deno.lstat(path).catch(() => null);
  if (!info?.isDirectory) return false;
  for await (const entry of Deno.readDir(path)) {
    if (!entry.isDirectory || !(await hasNoFiles(`${path}/${entry.name}`))) return false;
  }
  return true;
}

/**
 * Runs both tools `cfg.runs` times, alternating which goes first, into a
 * fresh target each; every restore is compared byte for byte with
 * `original`, then removed.
 */
export async function alternateRestores(
  cfg: Config,
  server: Server,
  aws: string | undefined,
  label: string,
  bytes: number,
  original: string,
  restore: (tool: RestoreRun["tool"], target: string) => Promise<RunStats>,
): Promise<RestoreRun[]> {
  const runs: RestoreRun[] = [];
  for (let i = 0; i < cfg.runs; i++) {
    const order: RestoreRun["tool"][] = i % 2 === 0
      ? ["tablesnap", "aws", "encrypted"]
      : ["encrypted", "aws", "tablesnap"];
    for (const tool of order) {
      if (tool === "aws" && !aws) continue;
      if (tool === "encrypted" && !cfg.encrypt) continue;
      const target = `${original}.restored-${tool}`;
      await Deno.mkdir(target, { recursive: true });
      const cpu0 = await server.cpu();
      const stats = await restore(tool, target);
      const serverCpuS = (await server.cpu()) - cpu0;
      failIfBad(`${label} ${tool} run ${i + 1}`, stats);
      await assertSameFiles(`${label} ${tool} run ${i + 1}`, original, target);
      await Deno.remove(target, { recursive: true });
      log(
        `${label} ${tool} run ${i + 1}: ${fmt(bytes / MB / stats.wallS)} MB/s, ` +
          `${fmt(stats.cpuS)} CPU s, ${fmt(stats.peakRssMB)} MB RSS`,
      );
      runs.push({ tool, run: i + 1, stats, serverCpuS });
    }
  }
  return runs;
}

/** A new age identity kept in `dir` for the run's encrypted restores, and its recipient. */
async function keptIdentity(dir: string): Promise<{ file: string; recipient: string }> {
  const identity = await generateIdentity();
  const file = `${dir}/bench-identity.txt`;
  await Deno.writeTextFile(file, `${identity}\n`, { mode: 0o600 });
  return { file, recipient: await identityToRecipient(identity) };
}

/** The identity of the encrypted restores (with --encrypt), and where they read. */
type Keys = { file: string; recipient: string } | undefined;

/**
 * Uploads `root` under `prefix` with `tablesnap --once -B -r` (what the
 * restores read), encrypted to `recipient` when given.
 */
export async function upload(
  cfg: Config,
  server: Server,
  prefix: string,
  root: string,
  recipient?: string,
) {
  const encrypt = recipient ? ["--encrypt-to", recipient] : [];
  const stats = await measure(
    Deno.execPath(),
    tablesnapArgs(server, prefix, ["--once", "-B", "-r", ...encrypt, server.bucket, root]),
    { env: childEnv(server.env), cwd: program().repo, forceProc: cfg.forceProc },
  );
  failIfBad(`${prefix} upload`, stats);
}

/** `aws s3 sync` of the files under `keyPrefix` (indexes excluded) into `target`, measured. */
export function awsSyncDown(
  cfg: Config,
  server: Server,
  aws: string,
  keyPrefix: string,
  target: string,
): Promise<RunStats> {
  return measure(aws, [
    "--endpoint-url",
    server.endpoint,
    "s3",
    "sync",
    "--only-show-errors",
    "--exclude",
    "*-listdir.json",
    `s3://${server.bucket}/${keyPrefix}`,
    target,
  ], { env: childEnv(server.env), forceProc: cfg.forceProc });
}

/** Runs the whole step; see the module comment. */
export async function restoreStep(
  cfg: Config,
  server: Server,
  tree: Tree,
  aws: string | undefined,
  work: string,
): Promise<RestoreResult> {
  const prefix = "restore/";
  // With --encrypt, the same files also uploaded encrypted, restored with the identity.
  const keys: Keys = cfg.encrypt ? await keptIdentity(work) : undefined;
  const encPrefix = "restore-enc/";
  await upload(cfg, server, prefix, tree.root);
  if (keys) await upload(cfg, server, encPrefix, tree.root, keys.recipient);
  const data = `${tree.root}/data`;
  const keyPrefix = `${prefix}${NAME}:${data}/`;
  const runs = await alternateRestores(
    cfg,
    server,
    aws,
    "restore",
    tree.bytes,
    data,
    (tool, target) =>
      tool === "tablesnap"
        ? measureSlurp(cfg, server, prefix, ["-r", server.bucket, data, target])
        : tool === "encrypted"
        ? measureSlurp(cfg, server, encPrefix, [
          ...["--identity", keys!.file, "-r", server.bucket, data, target],
        ])
        : awsSyncDown(cfg, server, aws!, keyPrefix, target),
  );
  const wide = await wideRestores(cfg, server, prefix, data, tree.bytes);
  await server.drop(prefix);
  await server.drop(encPrefix);
  return {
    runs,
    wide,
    bytes: tree.bytes,
    files: tree.files.length,
    large: await largeRestores(cfg, server, aws, work, keys),
    largeBytes: cfg.large,
  };
}

/** The memory bound at -t 32, several runs in a row (each checked too). */
async function wideRestores(
  cfg: Config,
  server: Server,
  prefix: string,
  data: string,
  bytes: number,
): Promise<RestoreRun[]> {
  const wide: RestoreRun[] = [];
  for (let i = 0; i < cfg.runs; i++) {
    const target = `${data}.restored-t32`;
    await Deno.mkdir(target, { recursive: true });
    const cpu0 = await server.cpu();
    const stats = await measureSlurp(cfg, server, prefix, [
      "-r",
      "-t",
      "32",
      server.bucket,
      data,
      target,
    ]);
    const serverCpuS = (await server.cpu()) - cpu0;
    failIfBad(`restore -t 32 run ${i + 1}`, stats);
    await assertSameFiles(`restore -t 32 run ${i + 1}`, data, target);
    await Deno.remove(target, { recursive: true });
    log(
      `restore -t 32 run ${i + 1}: ${fmt(bytes / MB / stats.wallS)} MB/s, ` +
        `${fmt(stats.cpuS)} CPU s, ${fmt(stats.peakRssMB)} MB RSS`,
    );
    wide.push({ tool: "tablesnap", run: i + 1, stats, serverCpuS });
  }
  return wide;
}

/** One large object alone: the ranged GETs. */
async function largeRestores(
  cfg: Config,
  server: Server,
  aws: string | undefined,
  work: string,
  keys: Keys,
): Promise<RestoreRun[]> {
  const dir = `${work}/large/data/ks/big-1`;
  await Deno.mkdir(dir, { recursive: true });
  await writeRandomFile(`${dir}/nb-1-big-Data.db`, cfg.large, seeded(11));
  const largePrefix = "large/";
  const encLargePrefix = "large-enc/";
  await upload(cfg, server, largePrefix, `${work}/large`);
  if (keys) await upload(cfg, server, encLargePrefix, `${work}/large`, keys.recipient);
  const large = await alternateRestores(
    cfg,
    server,
    aws,
    "large",
    cfg.large,
    dir,
    (tool, target) =>
      tool === "tablesnap"
        ? measureSlurp(cfg, server, largePrefix, [server.bucket, dir, target])
        : tool === "encrypted"
        ? measureSlurp(cfg, server, encLargePrefix, [
          ...["--identity", keys!.file, server.bucket, dir, target],
        ])
        : measure(aws!, [
          "--endpoint-url",
          server.endpoint,
          "s3",
          "cp",
          "--only-show-errors",
          `s3://${server.bucket}/${largePrefix}${NAME}:${dir}/nb-1-big-Data.db`,
          `${target}/nb-1-big-Data.db`,
        ], { env: childEnv(server.env), forceProc: cfg.forceProc }),
  );
  await server.drop(largePrefix);
  await server.drop(encLargePrefix);
  await Deno.remove(`${work}/large`, { recursive: true });
  return large;
}

/** Restore throughput ÷ `aws s3 sync`'s at the defaults: issue #21's target (was #12's 1.5×). */
const RESTORE_TARGET = 1.25;

/** The summary rows of step 6. */
export function restoreSummaryRows(x: RestoreResult): string[][] {
  const rss = Math.max(
    ...[...x.runs, ...x.wide, ...x.large].filter((run) => run.tool === "tablesnap").map((run) =>
      run.stats.peakRssMB
    ),
  );
  return [
    ...versusAwsRows("6. Restore `slurp -r`", x.runs, x.bytes, RESTORE_TARGET),
    peakRssRow("6. Restore: peak RSS of slurp (defaults, -t 32, large object)", rss),
  ];
}

/**
 * The rows of a job measured against `aws s3 sync` over the same `bytes`
 * (steps 6 and 8): throughput as the median of each run's ratio to the aws
 * run it alternated with, and client CPU per GB.
 */
export function versusAwsRows(
  job: string,
  runs: RestoreRun[],
  bytes: number,
  target: number,
): string[][] {
  const rate = (run: RestoreRun) => bytes / MB / run.stats.wallS;
  const perGB = (of: RestoreRun[]) => median(of.map((run) => run.stats.cpuS)) / (bytes / 1e9);
  const ts = runs.filter((run) => run.tool === "tablesnap");
  const aw = runs.filter((run) => run.tool === "aws");
  if (aw.length === 0) return [[`${job}: ÷ \`aws s3 sync\``, "aws CLI not found", "", "not run"]];
  const ratio = median(ts.map((t) => rate(t) / rate(aw.find((a) => a.run === t.run)!)));
  return [
    [
      `${job}: throughput ÷ \`aws s3 sync\` (median of pairs)`,
      `${fmt(ratio, 2)}×`,
      `≥ ${target}×`,
      verdictAtLeast(ratio, target),
    ],
    [
      `${job}: client CPU s per GB, tablesnap vs aws`,
      `${fmt(perGB(ts), 2)} vs ${fmt(perGB(aw), 2)}`,
      "≤ aws",
      verdictAtMost(perGB(ts), perGB(aw)),
    ],
  ];
}

const RESTORE_HEAD = [
  "Tool",
  "MB/s per run",
  "MB/s",
  "wall s",
  "CPU s",
  "CPU s/GB",
  "peak RSS MB",
  "server CPU s/GB",
];

/** One row per tool of `runs` that restored (or backed up) `bytes`. */
export function restoreTable(
  runs: Pick<RestoreRun, "tool" | "stats" | "serverCpuS">[],
  bytes: number,
  names: Record<RestoreRun["tool"], string> = {
    tablesnap: "tablesnap slurp",
    aws: "aws s3",
    encrypted: "tablesnap slurp, encrypted",
  },
): string {
  const rows = (["tablesnap", "aws", "encrypted"] as const).map((tool) =>
    [tool, runs.filter((run) => run.tool === tool)] as const
  )
    .filter(([, of]) => of.length > 0)
    .map(([tool, of]) => [
      names[tool],
      of.map((run) => fmt(bytes / MB / run.stats.wallS)).join(", "),
      fmt(median(of.map((run) => bytes / MB / run.stats.wallS))),
      fmt(median(of.map((run) => run.stats.wallS)), 2),
      fmt(median(of.map((run) => run.stats.cpuS)), 2),
      fmt(median(of.map((run) => run.stats.cpuS)) / (bytes / 1e9), 2),
      fmt(median(of.map((run) => run.stats.peakRssMB))),
      fmt(median(of.map((run) => run.serverCpuS)) / (bytes / 1e9), 2),
    ]);
  return markdownTable(RESTORE_HEAD, rows);
}

/** The detail of step 6. */
export function restoreReport(x: RestoreResult, cfg: Config): string[] {
  return [
    `**6. Restore** of the bulk tree (${x.files} files, ${
      fmt(x.bytes / MB, 0)
    } MB, uploaded once ` +
    `by tablesnap): \`tablesnap slurp -r\` (defaults: ${DEFAULT_CONNECTIONS} connections, ${
      2 * DEFAULT_CONNECTIONS
    } files in flight, largest first; objects of 64 MiB or more in ` +
    "16 MiB ranges, 4 at once) vs `aws s3 sync` of the same keys (indexes excluded), " +
    `${cfg.runs} alternating run(s) each; every restored file compared byte for byte with the ` +
    "original. Medians:",
    "",
    restoreTable(x.runs, x.bytes),
    "",
    `The same tree with \`slurp -r -t 32\`, ${x.wide.length} run(s) in a row (peak RSS per run: ${
      x.wide.map((run) => fmt(run.stats.peakRssMB)).join(", ")
    } MB):`,
    "",
    restoreTable(x.wide, x.bytes),
    "",
    `One ${fmt(x.largeBytes / MB, 0)} MB object alone (\`slurp\` vs \`aws s3 cp\`):`,
    "",
    restoreTable(x.large, x.largeBytes),
    "",
  ];
}
