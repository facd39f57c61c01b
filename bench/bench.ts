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
 */
import { generateIdentity, identityToRecipient } from "age-encryption";
import { parseArgs } from "node:util";
import { VERSION } from "../lib/common/version.ts";
import { background, hasGnuTime, measure, readProc, type RunStats, sleep } from "./_proc.ts";
import {
  components,
  generateTree,
  makeTables,
  parseSize,
  planTree,
  seeded,
  type Tree,
  type TreeFile,
  writeRandomFile,
} from "./_tree.ts";
import { dropS3rverPrefix, type Server, startCountingProxy, startServer } from "./_servers.ts";
import {
  type CrashMatrixFigures,
  describeFigures,
  runCrashMatrix,
} from "../tests/_crash_matrix.ts";
import { runFlagsOf } from "../tests/_run_flags.ts";
import {
  fmt,
  type LatencyStats,
  latencyStats,
  markdownTable,
  median,
  verdictAtLeast,
  verdictAtMost,
} from "./_report.ts";
import {
  SCALE_FULL,
  SCALE_QUICK,
  scaleReport,
  type ScaleResult,
  scaleStep,
  scaleSummaryRows,
} from "./_scale.ts";

let MAIN = new URL("../main.ts", import.meta.url).pathname;
let REPO = new URL("..", import.meta.url).pathname;
const BUCKET = "bench";
const NAME = "bench";
const MB = 1e6;
const SECTIONS = [
  "bulk",
  "limit",
  "restore",
  "latency",
  "memory",
  "reconcile",
  "crash",
  "scale",
] as const;
type Section = typeof SECTIONS[number];
/**
 * Run without --only: neither the SIGKILL matrix (a minute of kills) nor the
 * scale step (most of an hour); `--scale` adds the latter.
 */
const DEFAULT_SECTIONS = SECTIONS.filter((s) => s !== "crash" && s !== "scale");

export interface Config {
  size: number;
  runs: number;
  filesAtStart: number;
  latencyFiles: number;
  rate: number;
  burst: number;
  memBig: number;
  large: number;
  memSmall: number;
  /** Runs of each memory case in a row: the bound must hold every time. */
  memRuns: number;
  threads: number[];
  quick: boolean;
  out: string;
  sections: Set<Section>;
  tmp: string | undefined;
  keep: boolean;
  forceProc: boolean;
  main: string | undefined;
  /** --watch-args: extra options of the latency section's watcher. */
  watchArgs: string[];
  /** --crash-kills and --crash-seed: the SIGKILL matrix. */
  crashKills: number;
  crashSeed: number;
  /** --crash-pin: the matrix's watchers run with --pin. */
  crashPin: boolean;
  /** Also run the bulk backup with --encrypt-to (a throwaway age key). */
  encrypt: boolean;
}

const USAGE = `Usage: deno task bench [options]

  --quick                tiny sizes (20M tree, 1 run, 200 objects, 50 files...)
  --size SIZE            data tree size (default 1G)
  --runs N               alternating runs of each bulk tool (default 3)
  --encrypt              bulk backup and restores also encrypted (--encrypt-to, --identity)
  --files-at-start N     objects already in the bucket for reconciliation (default 20000)
  --latency-files N      files written at the steady rate (default 600)
  --rate N               steady rate, files per second (default 20)
  --burst N              files written at once (default 1000)
  --large SIZE           the single large object the restore step fetches alone (default 1G)
  --mem-big SIZE         the single large file of the memory case (default 2G)
  --mem-small N          small files of the memory case (default 10000)
  --threads LIST         -t values of the memory case (default 4,32)
  --mem-runs N           runs of each memory case in a row (default 3)
  --scale                also run the scale step (100,000 files, chop over 1,000,000 keys)
  --only LIST            sections to run: ${SECTIONS.join(",")}
                         (default all but crash and scale)
  --watch-args=ARGS      extra watcher options for the latency section, e.g.
                         --watch-args="--state-dir STATE-DIR" (STATE-DIR: a new directory)
  --crash-kills N        SIGKILLs in the crash section (default 20; --quick 3)
  --crash-seed N         its seed (default: random, printed)
  --crash-pin            run the crash section's watchers with --pin
  --out FILE             where to write the report (default bench/results/latest.md)
  --tmp DIR              where to generate data (default: a new temp dir)
  --keep                 keep the generated data
  --proc                 measure through /proc even when /usr/bin/time exists
  --main FILE            the tablesnap main.ts to measure (default: this checkout's),
                         to compare a change against the same run's aws figures
`;

/** Parses the command line into a configuration. */
export function parseConfig(args: string[]): Config {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean" },
      size: { type: "string" },
      runs: { type: "string" },
      "files-at-start": { type: "string" },
      "latency-files": { type: "string" },
      rate: { type: "string" },
      burst: { type: "string" },
      "mem-big": { type: "string" },
      large: { type: "string" },
      "mem-small": { type: "string" },
      threads: { type: "string" },
      "mem-runs": { type: "string" },
      only: { type: "string" },
      scale: { type: "boolean" },
      out: { type: "string" },
      tmp: { type: "string" },
      keep: { type: "boolean" },
      proc: { type: "boolean" },
      main: { type: "string" },
      "watch-args": { type: "string" },
      "crash-kills": { type: "string" },
      "crash-seed": { type: "string" },
      "crash-pin": { type: "boolean" },
      encrypt: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const quick = values.quick ?? false;
  const int = (text: string | undefined, fallback: number, what: string) => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new Error(`Invalid ${what} '${text}'`);
    return n;
  };
  const sections = new Set<Section>(
    (values.only?.split(",") ?? [...DEFAULT_SECTIONS, ...(values.scale ? ["scale"] : [])]).map(
      (s) => {
        if (!(SECTIONS as readonly string[]).includes(s)) throw new Error(`Unknown section '${s}'`);
        return s as Section;
      },
    ),
  );
  return {
    quick,
    size: parseSize(values.size ?? (quick ? "20M" : "1G")),
    runs: int(values.runs, quick ? 1 : 3, "--runs"),
    filesAtStart: int(values["files-at-start"], quick ? 200 : 20_000, "--files-at-start"),
    latencyFiles: int(values["latency-files"], quick ? 50 : 600, "--latency-files"),
    rate: int(values.rate, 20, "--rate"),
    burst: int(values.burst, quick ? 100 : 1000, "--burst"),
    memBig: parseSize(values["mem-big"] ?? (quick ? "64M" : "2G")),
    large: parseSize(values.large ?? (quick ? "80M" : "1G")),
    memSmall: int(values["mem-small"], quick ? 300 : 10_000, "--mem-small"),
    memRuns: int(values["mem-runs"], quick ? 1 : 3, "--mem-runs"),
    threads: (values.threads ?? "4,32").split(",").map((t) => int(t, 4, "--threads")),
    out: values.out ?? new URL("./results/latest.md", import.meta.url).pathname,
    sections,
    tmp: values.tmp,
    keep: values.keep ?? false,
    forceProc: values.proc ?? false,
    watchArgs: values["watch-args"]?.split(/\s+/).filter((a) => a !== "") ?? [],
    crashKills: int(values["crash-kills"], quick ? 3 : 20, "--crash-kills"),
    crashSeed: int(values["crash-seed"], Math.floor(Math.random() * 1e9) + 1, "--crash-seed"),
    crashPin: values["crash-pin"] ?? false,
    main: values.main,
    encrypt: values.encrypt ?? false,
  };
}

/** Environment of every child: credentials for the local server, no user config. */
function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Deno.env.toObject();
  for (const name of Object.keys(env)) {
    if (name.startsWith("AWS_")) delete env[name];
  }
  return {
    ...env,
    AWS_ACCESS_KEY_ID: "S3RVER",
    AWS_SECRET_ACCESS_KEY: "S3RVER",
    AWS_REGION: "us-east-1",
    AWS_DEFAULT_REGION: "us-east-1",
    AWS_CONFIG_FILE: "/nonexistent/aws-config",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/aws-credentials",
    NO_COLOR: "1",
    ...extra,
  };
}

function tablesnapArgs(server: { endpoint: string }, prefix: string, extra: string[] = []) {
  return [
    "run",
    ...RUN_FLAGS,
    MAIN,
    "-n",
    NAME,
    "-p",
    prefix,
    "--endpoint-url",
    server.endpoint,
  ]
    .concat(extra);
}

/**
 * The runtime flags the released binary is compiled with (the measured
 * checkout's deno.json `compile` task: V8 flags and permissions):
 * tablesnap is measured as it ships.
 */
let RUN_FLAGS: string[] = [];
let V8_FLAGS: string[] = [];
async function loadRunFlags(): Promise<void> {
  const config = JSON.parse(await Deno.readTextFile(`${REPO}deno.json`));
  RUN_FLAGS = runFlagsOf(config.tasks.compile);
  V8_FLAGS = RUN_FLAGS.filter((w) => w.startsWith("--v8-flags="));
}

/** The `aws` program itself (not a pyenv shim, whose start-up would be measured). */
async function findAws(): Promise<string | undefined> {
  const run = async (cmd: string, args: string[]) => {
    try {
      const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
      return out.success ? new TextDecoder().decode(out.stdout).trim() : "";
    } catch {
      return "";
    }
  };
  const found = await run("sh", ["-c", "command -v aws"]);
  if (!found) return undefined;
  if (found.includes("/shims/")) return (await run("pyenv", ["which", "aws"])) || found;
  return found;
}

async function commandOutput(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return text.trim().split("\n")[0] ?? "";
  } catch {
    return "";
  }
}

function log(message: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
}

/** Counts the objects s3rver holds under a top-level prefix (walks its directory). */
async function s3rverObjects(server: Server, prefix: string): Promise<number> {
  const top = `${server.dir}/${server.bucket}/${prefix.replace(/\/.*$/, "")}`;
  let count = 0;
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) await walk(`${dir}/${entry.name}`);
      else if (entry.name.endsWith("._S3rver_object")) count++;
    }
  };
  await walk(top).catch(() => {});
  return count;
}

function failIfBad(what: string, stats: RunStats): void {
  if (stats.code !== 0) {
    throw new Error(`${what} exited with ${stats.code}:\n${stats.tail.slice(-3000)}`);
  }
}

// ---------------------------------------------------------------- step 1

interface ToolRun {
  /** "encrypted": tablesnap with --encrypt-to. */
  tool: "tablesnap" | "aws" | "encrypted";
  run: number;
  stats: RunStats;
  serverCpuS: number;
  objects: number;
}

async function bulk(cfg: Config, server: Server, tree: Tree, aws: string | undefined) {
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
          { env: childEnv(), cwd: REPO, forceProc: cfg.forceProc },
        )
        : await measure(aws!, [
          "--endpoint-url",
          server.endpoint,
          "s3",
          "sync",
          "--only-show-errors",
          tree.root,
          `s3://${server.bucket}/${prefix}`,
        ], { env: childEnv(), forceProc: cfg.forceProc });
      const serverCpuS = (await server.cpu()) - cpu0;
      failIfBad(`${tool} run ${i + 1}`, stats);
      const objects = await s3rverObjects(server, prefix);
      if (objects < tree.files.length) {
        throw new Error(`${tool} run ${i + 1} stored ${objects} of ${tree.files.length} files`);
      }
      await dropS3rverPrefix(server, prefix);
      log(
        `bulk ${tool} run ${i + 1}: ${fmt(tree.bytes / MB / stats.wallS)} MB/s, ` +
          `${fmt(stats.cpuS)} CPU s, ${fmt(stats.peakRssMB)} MB RSS`,
      );
      runs.push({ tool, run: i + 1, stats, serverCpuS, objects });
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

/** The recipient of a new age identity that is dropped at once. */
async function throwawayRecipient(): Promise<string> {
  return await identityToRecipient(await generateIdentity());
}

// ---------------------------------------------------------------- step 6

interface RestoreRun {
  /** "encrypted": `slurp --identity` of the same files, uploaded with --encrypt-to. */
  tool: "tablesnap" | "aws" | "encrypted";
  run: number;
  stats: RunStats;
  serverCpuS: number;
}

interface RestoreResult {
  runs: RestoreRun[];
  /** `slurp -r -t 32` of the same tree, `cfg.runs` times in a row: the memory bound at -t 32. */
  wide: RestoreRun[];
  bytes: number;
  files: number;
  large: RestoreRun[];
  largeBytes: number;
}

/** `tablesnap JOB` ("" for the watcher) with the bench's naming, prefix and endpoint. */
function jobArgs(job: string, endpoint: string, prefix: string, extra: string[]): string[] {
  return ["run", ...RUN_FLAGS, MAIN, ...(job ? [job] : [])]
    .concat(["-n", NAME, "--prefix", prefix, "--endpoint-url", endpoint], extra);
}

/** `tablesnap slurp` with the bench's naming, prefix and endpoint. */
/** One `tablesnap slurp` of `prefix`'s keys, measured. */
function measureSlurp(
  cfg: Config,
  server: Server,
  prefix: string,
  extra: string[],
): Promise<RunStats> {
  return measure(Deno.execPath(), slurpArgs(server, prefix, extra), {
    env: childEnv(),
    cwd: REPO,
    forceProc: cfg.forceProc,
  });
}

function slurpArgs(server: Server, prefix: string, extra: string[]): string[] {
  return [
    "run",
    ...RUN_FLAGS,
    MAIN,
    "slurp",
    "-n",
    NAME,
    "--prefix",
    prefix,
    "--endpoint-url",
    server.endpoint,
    ...extra,
  ];
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
async function alternateRestores(
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

/**
 * Restores the bulk tree (uploaded once by tablesnap) with `slurp -r` and
 * with `aws s3 sync` of the same keys, alternating, each checked byte for
 * byte; then one large object alone (`slurp` vs `aws s3 cp`).
 */
async function restoreStep(
  cfg: Config,
  server: Server,
  tree: Tree,
  aws: string | undefined,
  work: string,
): Promise<RestoreResult> {
  const prefix = "restore/";
  const upload = async (to: string, root: string, encrypted: boolean) => {
    const encrypt = encrypted ? ["--encrypt-to", keys!.recipient] : [];
    const up = await measure(
      Deno.execPath(),
      tablesnapArgs(server, to, ["--once", "-B", "-r", ...encrypt, server.bucket, root]),
      { env: childEnv(), cwd: REPO, forceProc: cfg.forceProc },
    );
    failIfBad(`${to} upload`, up);
  };
  // With --encrypt, the same files also uploaded encrypted, restored with the identity.
  const keys = cfg.encrypt ? await keptIdentity(work) : undefined;
  const encPrefix = "restore-enc/";
  await upload(prefix, tree.root, false);
  if (keys) await upload(encPrefix, tree.root, true);
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
        : measure(aws!, [
          "--endpoint-url",
          server.endpoint,
          "s3",
          "sync",
          "--only-show-errors",
          "--exclude",
          "*-listdir.json",
          `s3://${server.bucket}/${keyPrefix}`,
          target,
        ], { env: childEnv(), forceProc: cfg.forceProc }),
  );
  // The memory bound at -t 32, several runs in a row (each checked too).
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
      `restore -t 32 run ${i + 1}: ${fmt(tree.bytes / MB / stats.wallS)} MB/s, ` +
        `${fmt(stats.cpuS)} CPU s, ${fmt(stats.peakRssMB)} MB RSS`,
    );
    wide.push({ tool: "tablesnap", run: i + 1, stats, serverCpuS });
  }
  await dropS3rverPrefix(server, prefix);
  await dropS3rverPrefix(server, encPrefix);

  // One large object alone: the ranged GETs.
  const dir = `${work}/large/data/ks/big-1`;
  await Deno.mkdir(dir, { recursive: true });
  await writeRandomFile(`${dir}/nb-1-big-Data.db`, cfg.large, seeded(11));
  const largePrefix = "large/";
  const encLargePrefix = "large-enc/";
  await upload(largePrefix, `${work}/large`, false);
  if (keys) await upload(encLargePrefix, `${work}/large`, true);
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
        ], { env: childEnv(), forceProc: cfg.forceProc }),
  );
  await dropS3rverPrefix(server, largePrefix);
  await dropS3rverPrefix(server, encLargePrefix);
  await Deno.remove(`${work}/large`, { recursive: true });
  return {
    runs,
    wide,
    bytes: tree.bytes,
    files: tree.files.length,
    large,
    largeBytes: cfg.large,
  };
}

// ---------------------------------------------------------------- step 5

interface LimitResult {
  label: string;
  wallS: number;
  mbps: number;
  serverCpuS: number;
}

async function curlPut(file: string, url: string): Promise<void> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", file, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const code = new TextDecoder().decode(out.stdout);
  if (!out.success || code !== "200") {
    throw new Error(`curl -T '${file}' got ${code}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Unsigned PUTs straight to the server: a single large one, then many at once. */
async function serverLimit(cfg: Config, server: Server, tree: Tree, work: string) {
  const results: LimitResult[] = [];
  const base = `${server.endpoint}/${server.bucket}`;
  const one = `${work}/limit-one.bin`;
  await writeRandomFile(one, tree.bytes, seeded(7));
  for (let i = 0; i < cfg.runs; i++) {
    const cpu0 = await server.cpu();
    const started = performance.now();
    await curlPut(one, `${base}/limit-one-${i}/one.bin`);
    const wallS = (performance.now() - started) / 1000;
    results.push({
      label: "1 × `curl -T`, one file of the tree's size",
      wallS,
      mbps: tree.bytes / MB / wallS,
      serverCpuS: (await server.cpu()) - cpu0,
    });
    await dropS3rverPrefix(server, `limit-one-${i}/`);
  }
  await Deno.remove(one);
  for (const parallel of [4, 16]) {
    const cpu0 = await server.cpu();
    const started = performance.now();
    const queue = [...tree.files];
    const worker = async () => {
      for (let f = queue.shift(); f; f = queue.shift()) {
        await curlPut(f.path, `${base}/limit-par${parallel}${f.path}`);
      }
    };
    await Promise.all(Array.from({ length: parallel }, worker));
    const wallS = (performance.now() - started) / 1000;
    results.push({
      label: `${parallel} × \`curl -T\` at once, the tree's files`,
      wallS,
      mbps: tree.bytes / MB / wallS,
      serverCpuS: (await server.cpu()) - cpu0,
    });
    await dropS3rverPrefix(server, `limit-par${parallel}/`);
  }
  for (const r of results) log(`limit ${r.label}: ${fmt(r.mbps)} MB/s`);
  return results;
}

// ---------------------------------------------------------------- step 2

interface LatencyResult {
  direct: LatencyStats;
  steady: LatencyStats;
  burst: LatencyStats;
  burstDrainS: number;
  watcherRssMB: number;
  burstPollMs: number;
}

function objectUrl(server: Server, key: string): string {
  return `${server.endpoint}/${server.bucket}/${key.split("/").map(encodeURIComponent).join("/")}`;
}

/** Milliseconds from `t0` until HEAD succeeds (the response time), or null on timeout. */
async function visibleAfter(url: string, t0: number, timeoutMs: number): Promise<number | null> {
  for (;;) {
    const res = await fetch(url, { method: "HEAD", signal: AbortSignal.timeout(10_000) });
    await res.body?.cancel();
    const elapsed = performance.now() - t0;
    if (res.ok) return elapsed;
    if (elapsed > timeoutMs) return null;
    await sleep(elapsed < 200 ? 2 : elapsed < 2000 ? 10 : 100);
  }
}

/**
 * Keys listed under `prefix` (at most 1,000: s3rver cannot paginate here).
 * s3rver answers 500 now and then when an object is written while it
 * lists: such a listing is retried.
 */
async function listKeys(server: Server, prefix: string): Promise<string[]> {
  const url = `${server.endpoint}/${server.bucket}?list-type=2&max-keys=1000&prefix=${
    encodeURIComponent(prefix)
  }`;
  for (let attempt = 1;; attempt++) {
    const res = await fetch(url);
    const xml = await res.text();
    if (res.ok) {
      return [...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) =>
        m[1]!.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"')
          .replaceAll("&apos;", "'").replaceAll("&amp;", "&")
      );
    }
    if (res.status < 500 || attempt === 20) {
      throw new Error(`Listing '${prefix}' failed: HTTP ${res.status} ${xml.slice(0, 300)}`);
    }
    await sleep(20);
  }
}

/** Plans files of SSTable generations for the watcher: [dir, name, size][]. */
function sstableFiles(
  tables: string[],
  count: number,
  dataBytes: () => number,
  rand: () => number,
  firstGeneration: number,
): TreeFile[] {
  const files: TreeFile[] = [];
  for (let g = firstGeneration; files.length < count; g++) {
    const dir = tables[g % tables.length]!;
    for (const [component, size] of components(dataBytes(), rand)) {
      if (files.length < count) files.push({ path: `${dir}/nb-${g}-big-${component}`, size });
    }
  }
  return files;
}

/** Writes a file in place, or as a "-tmp" file renamed into place; returns when done. */
async function placeFile(file: TreeFile, rename: boolean, rand: () => number): Promise<number> {
  if (!rename) {
    await writeRandomFile(file.path, file.size, rand);
    return performance.now();
  }
  const slash = file.path.lastIndexOf("/");
  const tmp = `${file.path.slice(0, slash)}/tmp-${
    file.path.slice(slash + 1).replace("nb-", "nb-tmp-")
  }`;
  await writeRandomFile(tmp, file.size, rand);
  await Deno.rename(tmp, file.path);
  return performance.now();
}

async function latency(cfg: Config, server: Server, work: string): Promise<LatencyResult> {
  const root = `${work}/latency`;
  const rand = seeded(3);
  const steadyTables = await makeTables(`${root}/steady`, 6, rand);
  const burstTables = await makeTables(`${root}/burst`, 10, rand);
  const prefix = "lat/";
  const keyOf = (path: string) => `${prefix}${NAME}:${path}`;
  const extra = cfg.watchArgs.map((a) => a === "STATE-DIR" ? `${work}/latency-state` : a);
  await using watcher = background(
    Deno.execPath(),
    tablesnapArgs(server, prefix, [...extra, "-r", server.bucket, root]),
    { env: childEnv(), cwd: REPO },
  );
  await watcher.waitFor("tablesnap started");
  await sleep(500);

  // Steady: one file every 1/rate s, half written in place, half renamed in.
  const steadyFiles = sstableFiles(
    steadyTables,
    cfg.latencyFiles,
    () => Math.round(Math.exp(Math.log(16 * 1024) + rand() * Math.log(64))),
    rand,
    1,
  );
  const steady: (number | null)[] = [];
  const pollers: Promise<void>[] = [];
  const started = performance.now();
  for (const [i, file] of steadyFiles.entries()) {
    const due = started + (i * 1000) / cfg.rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const t0 = await placeFile(file, i % 2 === 1, rand);
    pollers.push(
      visibleAfter(objectUrl(server, keyOf(file.path)), t0, 30_000).then((ms) => {
        steady[i] = ms;
      }),
    );
  }
  await Promise.all(pollers);
  log(`latency steady: ${steadyFiles.length} files`);

  // Burst: all at once, then list until every key is there (or 60 s pass).
  const burstFiles = sstableFiles(
    burstTables,
    cfg.burst,
    () => Math.round(Math.exp(Math.log(4 * 1024) + rand() * Math.log(16))),
    rand,
    100_000,
  );
  const t0s: number[] = [];
  const burstStart = performance.now();
  for (const [i, file] of burstFiles.entries()) t0s.push(await placeFile(file, i % 2 === 1, rand));
  const seen = new Map<string, number>();
  const want = new Set(burstFiles.map((f) => keyOf(f.path)));
  const pollMs = 200;
  const deadline = performance.now() + 60_000;
  while (seen.size < want.size && performance.now() < deadline) {
    for (const table of burstTables) {
      for (const key of await listKeys(server, keyOf(table + "/"))) {
        if (want.has(key) && !seen.has(key)) seen.set(key, performance.now());
      }
    }
    if (seen.size < want.size) await sleep(pollMs);
  }
  const burst = burstFiles.map((f, i) => {
    const at = seen.get(keyOf(f.path));
    return at === undefined ? null : at - t0s[i]!;
  });
  const lastSeen = Math.max(...seen.values());
  await watcher.stop("SIGTERM");
  log(`latency burst: ${seen.size} of ${want.size} visible`);

  // Baseline: the same steady load, each file PUT by the bench itself at once
  // (read whole, one unsigned PUT), measured the same way: the server's floor.
  const directTables = await makeTables(`${work}/latency-direct`, 6, rand);
  const directFiles = sstableFiles(
    directTables,
    cfg.latencyFiles,
    () => Math.round(Math.exp(Math.log(16 * 1024) + rand() * Math.log(64))),
    rand,
    1,
  );
  const direct: (number | null)[] = [];
  const directPollers: Promise<void>[] = [];
  const directStart = performance.now();
  for (const [i, file] of directFiles.entries()) {
    const due = directStart + (i * 1000) / cfg.rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const t0 = await placeFile(file, i % 2 === 1, rand);
    const url = objectUrl(server, `direct${file.path}`);
    directPollers.push((async () => {
      const put = fetch(url, {
        method: "PUT",
        body: await Deno.readFile(file.path),
        signal: AbortSignal.timeout(30_000),
      }).then((res) => {
        if (!res.ok) throw new Error(`PUT '${url}' got HTTP ${res.status}`);
        return res.body?.cancel();
      });
      direct[i] = await visibleAfter(url, t0, 30_000);
      await put;
    })());
  }
  await Promise.all(directPollers);
  await dropS3rverPrefix(server, "direct/");
  return {
    direct: latencyStats(direct),
    steady: latencyStats(steady),
    burst: latencyStats(burst),
    burstDrainS: (lastSeen - burstStart) / 1000,
    watcherRssMB: watcher.peakRssMB(),
    burstPollMs: pollMs,
  };
}

// ---------------------------------------------------------------- step 3

interface MemoryRun {
  label: string;
  threads: number;
  files: number;
  bytes: number;
  /** The worst of the runs in a row (highest peak RSS). */
  stats: RunStats;
  /** Peak RSS of each run, MB. */
  peaks: number[];
}

async function memory(cfg: Config, server: Server, work: string): Promise<MemoryRun[]> {
  const rand = seeded(5);
  // The large Data.db comes with its seven small companions (a Data.db
  // without its TOC.txt makes the index wait for them).
  const bigRoot = `${work}/mem-big`;
  const [bigTable] = await makeTables(bigRoot, 1, rand);
  const bigFiles = components(cfg.memBig, rand).map(([component, size]) => ({
    path: `${bigTable}/nb-1-big-${component}`,
    size: component === "Data.db" ? size : Math.min(size, 8192),
  }));
  for (const f of bigFiles) await writeRandomFile(f.path, f.size, rand);
  const smallRoot = `${work}/mem-small`;
  const smallTables = await makeTables(smallRoot, Math.max(1, Math.ceil(cfg.memSmall / 100)), rand);
  const smallFiles = sstableFiles(
    smallTables,
    cfg.memSmall,
    () => 4096 + Math.floor(rand() * 28 * 1024),
    rand,
    1,
  );
  for (const f of smallFiles) await writeRandomFile(f.path, f.size, rand);
  const cases = [
    {
      label: `one ${fmtBytes(cfg.memBig)} Data.db (+ 7 small components)`,
      root: bigRoot,
      files: bigFiles.length,
      bytes: bigFiles.reduce((a, f) => a + f.size, 0),
    },
    {
      label: `${cfg.memSmall.toLocaleString("en-US")} small files`,
      root: smallRoot,
      files: smallFiles.length,
      bytes: smallFiles.reduce((a, f) => a + f.size, 0),
    },
  ];
  const runs: MemoryRun[] = [];
  for (const c of cases) {
    for (const threads of cfg.threads) {
      const all: RunStats[] = [];
      for (let run = 1; run <= cfg.memRuns; run++) {
        const prefix = `mem-${threads}-${run}/`;
        const stats = await measure(
          Deno.execPath(),
          tablesnapArgs(server, prefix, ["--once", "-B", "-r", "-t", String(threads)])
            .concat([server.bucket, c.root]),
          { env: childEnv(), cwd: REPO, forceProc: cfg.forceProc },
        );
        failIfBad(`memory case '${c.label}' -t ${threads}`, stats);
        await dropS3rverPrefix(server, prefix);
        log(`memory ${c.label} -t ${threads} run ${run}: ${fmt(stats.peakRssMB)} MB`);
        all.push(stats);
      }
      const worst = all.reduce((a, b) => (b.peakRssMB > a.peakRssMB ? b : a));
      const peaks = all.map((x) => x.peakRssMB);
      runs.push({ label: c.label, threads, files: c.files, bytes: c.bytes, stats: worst, peaks });
    }
  }
  await Deno.remove(bigRoot, { recursive: true });
  await Deno.remove(smallRoot, { recursive: true });
  return runs;
}

// ---------------------------------------------------------------- step 4

interface ReconcileResult {
  server: string;
  localFiles: number;
  objectsPresent: number;
  newFiles: number;
  populate: RunStats;
  run: RunStats;
  counts: Record<string, number>;
  uploads: number;
  other: number;
  allowed: number;
}

const UPLOAD_OPS = [
  "PutObject",
  "UploadPart",
  "CreateMultipartUpload",
  "CompleteMultipartUpload",
];

async function reconcile(cfg: Config, work: string): Promise<ReconcileResult> {
  const hasMoto = (await commandOutput("sh", ["-c", "command -v moto_server"])) !== "";
  if (!hasMoto && cfg.filesAtStart > 800) {
    throw new Error("moto_server is needed for more than 800 objects (s3rver cannot list >1,000)");
  }
  await using server = await startServer(hasMoto ? "moto" : "s3rver", BUCKET);
  const rand = seeded(9);
  const root = `${work}/reconcile`;
  const tables = await makeTables(root, Math.max(1, Math.ceil(cfg.filesAtStart / 200)), rand);
  const files = sstableFiles(tables, cfg.filesAtStart, () => 256, rand, 1);
  for (const f of files) await writeRandomFile(f.path, f.size, rand);
  const prefix = "rec/";
  const args = (extra: string[]) =>
    tablesnapArgs(server, prefix, ["--once", "-B", "-r", ...extra, server.bucket, root]);
  log(`reconcile: uploading ${files.length} files to ${server.kind}`);
  const populate = await measure(Deno.execPath(), args(["-t", "32"]), {
    env: childEnv(),
    cwd: REPO,
    forceProc: cfg.forceProc,
  });
  failIfBad("reconcile populate", populate);
  let objectsPresent = 0;
  for (let token = "";;) {
    const res = await fetch(
      `${server.endpoint}/${server.bucket}?list-type=2&prefix=${prefix}${
        token ? `&continuation-token=${encodeURIComponent(token)}` : ""
      }`,
    );
    const xml = await res.text();
    objectsPresent += [...xml.matchAll(/<Key>/g)].length;
    token = /<NextContinuationToken>([^<]*)</.exec(xml)?.[1] ?? "";
    if (!token) break;
  }
  // One new SSTable generation: 8 uploads and its index.
  const fresh = sstableFiles([tables[0]!], 8, () => 256, rand, 1_000_000);
  for (const f of fresh) await writeRandomFile(f.path, f.size, rand);
  await using proxy = startCountingProxy(server.endpoint);
  const run = await measure(
    Deno.execPath(),
    tablesnapArgs(proxy, prefix, ["--once", "-B", "-r", server.bucket, root]),
    { env: childEnv(), cwd: REPO, forceProc: cfg.forceProc },
  );
  failIfBad("reconcile run", run);
  const counts = { ...proxy.counts };
  const uploads = UPLOAD_OPS.reduce((a, op) => a + (counts[op] ?? 0), 0);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const result: ReconcileResult = {
    server: server.kind,
    localFiles: files.length,
    objectsPresent,
    newFiles: fresh.length,
    populate,
    run,
    counts,
    uploads,
    other: total - uploads,
    allowed: Math.ceil(objectsPresent / 1000),
  };
  log(`reconcile: ${JSON.stringify(counts)} in ${fmt(run.wallS)} s`);
  return result;
}

// ---------------------------------------------------------------- report

function fmtBytes(n: number): string {
  if (n >= 1024 ** 3) return `${fmt(n / 1024 ** 3)} GiB`;
  if (n >= 1024 ** 2) return `${fmt(n / 1024 ** 2)} MiB`;
  return `${fmt(n / 1024)} KiB`;
}

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
  machine: Record<string, string>;
  errors: string[];
}

function report(r: Results): string {
  const lines: string[] = [];
  const m = r.machine;
  lines.push(`### tablesnap ${VERSION} benchmark, ${m["date"]}`, "");
  lines.push(
    `Machine: ${m["cores"]} cores (${m["cpu"]}), ${m["memory"]} RAM, Linux ${m["kernel"]}. ` +
      `Deno ${Deno.version.deno}; ${m["aws"] || "aws CLI not found"}. ` +
      `Server: s3rver 3.7.1 on 127.0.0.1 (steps 1, 2, 3, 5); ` +
      (r.reconcile
        ? `${r.reconcile.server === "moto" ? `moto_server ${m["moto"]}` : "s3rver"} for step 4. `
        : "") +
      `tablesnap runs as \`deno run ${
        V8_FLAGS.join(" ")
      }\` (the binary's runtime flags, from deno.json's compile task). ` +
      `Peak RSS and CPU: ${m["measure"]}. MB = 10^6 bytes.`,
    "",
  );
  const summary: string[][] = [];
  const tsRuns = r.bulk?.filter((x) => x.tool === "tablesnap") ?? [];
  const awsRuns = r.bulk?.filter((x) => x.tool === "aws") ?? [];
  const encryptedRuns = r.bulk?.filter((x) => x.tool === "encrypted") ?? [];
  const bytes = r.tree?.bytes ?? 0;
  const files = r.tree?.files.length ?? 0;
  const rate = (x: ToolRun) => bytes / MB / x.stats.wallS;
  const limitMbps = r.limit ? Math.max(...r.limit.map((l) => l.mbps)) : undefined;
  if (r.bulk) {
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
  }
  if (r.restore) {
    const x = r.restore;
    const rate = (run: RestoreRun) => x.bytes / MB / run.stats.wallS;
    const ts = x.runs.filter((run) => run.tool === "tablesnap");
    const aw = x.runs.filter((run) => run.tool === "aws");
    const perGB = (runs: RestoreRun[]) =>
      median(runs.map((run) => run.stats.cpuS)) / (x.bytes / 1e9);
    if (aw.length > 0) {
      const ratio = median(ts.map((t) => rate(t) / rate(aw.find((a) => a.run === t.run)!)));
      summary.push([
        "6. Restore `slurp -r`: throughput ÷ `aws s3 sync` (median of pairs)",
        `${fmt(ratio, 2)}×`,
        "≥ 1.5×",
        verdictAtLeast(ratio, 1.5),
      ]);
      summary.push([
        "6. Restore: client CPU s per GB, tablesnap vs aws",
        `${fmt(perGB(ts), 2)} vs ${fmt(perGB(aw), 2)}`,
        "≤ aws",
        verdictAtMost(perGB(ts), perGB(aw)),
      ]);
    }
    const rss = Math.max(
      ...[...ts, ...x.wide, ...x.large.filter((l) => l.tool === "tablesnap")].map((run) =>
        run.stats.peakRssMB
      ),
    );
    summary.push([
      "6. Restore: peak RSS of slurp (defaults, -t 32, large object)",
      `${fmt(rss)} MB`,
      "≤ 150 MB",
      verdictAtMost(rss, 150),
    ]);
  }
  if (r.latency) {
    const s = r.latency.steady;
    summary.push([
      `2. Close/rename → visible at ${r.cfg.rate} files/s, p50`,
      `${fmt(s.p50, 1)} ms`,
      "≤ 15 ms",
      verdictAtMost(s.p50, 15),
    ]);
    summary.push([
      `2. Close/rename → visible at ${r.cfg.rate} files/s, p99`,
      `${fmt(s.p99, 1)} ms`,
      "≤ 50 ms",
      verdictAtMost(s.p99, 50),
    ]);
    const missed = s.missed + r.latency.burst.missed;
    summary.push([
      `2. Files missed (steady + burst of ${r.cfg.burst.toLocaleString("en-US")})`,
      String(missed),
      "0",
      missed === 0 ? "met" : `missed: ${missed} files`,
    ]);
  }
  if (r.memory) {
    const worst = r.memory.reduce((a, b) => (b.stats.peakRssMB > a.stats.peakRssMB ? b : a));
    summary.push([
      `3. Peak RSS, worst memory case (${r.cfg.memRuns} runs each)`,
      `${fmt(worst.stats.peakRssMB)} MB (${worst.label}, -t ${worst.threads})`,
      "≤ 150 MB",
      verdictAtMost(worst.stats.peakRssMB, 150),
    ]);
  }
  if (r.reconcile) {
    const c = r.reconcile;
    summary.push([
      `4. Startup requests besides uploads, ${
        c.objectsPresent.toLocaleString("en-US")
      } objects present`,
      `${c.other} (+ ${c.uploads} uploads)`,
      `≤ ${c.allowed} (1 per 1,000)`,
      verdictAtMost(c.other, c.allowed),
    ]);
  }
  if (r.scale) summary.push(...scaleSummaryRows(r.scale));
  lines.push(markdownTable(["Measure", "Result", "Target", "Verdict"], summary), "");

  if (r.tree && r.bulk) {
    lines.push(
      `**1. Bulk backup** of a ${files}-file, ${fmt(bytes / MB, 0)} MB Cassandra-shaped tree ` +
        `(largest file ${fmt(Math.max(...r.tree.files.map((f) => f.size)) / MB, 0)} MB), ` +
        `${r.cfg.runs} alternating run(s) each, default settings ` +
        `(tablesnap \`--once -B -r\`, 4 threads; \`aws s3 sync --only-show-errors\`). Medians:`,
      "",
    );
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
    lines.push(
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
    );
  }
  if (r.restore) {
    const x = r.restore;
    const table = (runs: RestoreRun[], bytes: number) =>
      (["tablesnap", "aws", "encrypted"] as const).map((tool) =>
        [tool, runs.filter((run) => run.tool === tool)] as const
      )
        .filter(([, of]) => of.length > 0)
        .map(([tool, of]) => [
          { tablesnap: "tablesnap slurp", aws: "aws s3", encrypted: "tablesnap slurp, encrypted" }[
            tool
          ],
          of.map((run) => fmt(bytes / MB / run.stats.wallS)).join(", "),
          fmt(median(of.map((run) => bytes / MB / run.stats.wallS))),
          fmt(median(of.map((run) => run.stats.wallS)), 2),
          fmt(median(of.map((run) => run.stats.cpuS)), 2),
          fmt(median(of.map((run) => run.stats.cpuS)) / (bytes / 1e9), 2),
          fmt(median(of.map((run) => run.stats.peakRssMB))),
          fmt(median(of.map((run) => run.serverCpuS)) / (bytes / 1e9), 2),
        ]);
    const head = [
      "Tool",
      "MB/s per run",
      "MB/s",
      "wall s",
      "CPU s",
      "CPU s/GB",
      "peak RSS MB",
      "server CPU s/GB",
    ];
    lines.push(
      `**6. Restore** of the bulk tree (${x.files} files, ${
        fmt(x.bytes / MB, 0)
      } MB, uploaded once ` +
        "by tablesnap): `tablesnap slurp -r` (defaults: 4 connections, 8 files in flight; objects of 64 MiB or more in " +
        "16 MiB ranges, 4 at once) vs `aws s3 sync` of the same keys (indexes excluded), " +
        `${r.cfg.runs} alternating run(s) each; every restored file compared byte for byte with the ` +
        "original. Medians:",
      "",
      markdownTable(head, table(x.runs, x.bytes)),
      "",
      `The same tree with \`slurp -r -t 32\`, ${x.wide.length} run(s) in a row (peak RSS per run: ${
        x.wide.map((run) => fmt(run.stats.peakRssMB)).join(", ")
      } MB):`,
      "",
      markdownTable(head, table(x.wide, x.bytes)),
      "",
      `One ${fmt(x.largeBytes / MB, 0)} MB object alone (\`slurp\` vs \`aws s3 cp\`):`,
      "",
      markdownTable(head, table(x.large, x.largeBytes)),
      "",
    );
  }
  if (r.limit) {
    lines.push(
      `**5. Server limit**: unsigned PUTs of the same ${fmt(bytes / MB, 0)} MB with curl ` +
        `(limit = best: ${fmt(limitMbps!)} MB/s):`,
      "",
    );
    const byLabel = new Map<string, LimitResult[]>();
    for (const l of r.limit) byLabel.set(l.label, [...(byLabel.get(l.label) ?? []), l]);
    lines.push(
      markdownTable(
        ["Client", "MB/s per run", "server CPU s per GB"],
        [...byLabel].map(([label, ls]) => [
          label,
          ls.map((l) => fmt(l.mbps)).join(", "),
          fmt(median(ls.map((l) => l.serverCpuS)) / (bytes / 1e9), 2),
        ]),
      ),
      "",
    );
  }
  if (r.latency) {
    const l = r.latency;
    lines.push(
      `**2. Watch latency**: the watcher (\`-r\`, ${
        r.cfg.watchArgs.length > 0 ? `\`${r.cfg.watchArgs.join(" ")}\`` : "defaults"
      }) running; files closed in place or ` +
        `renamed in (alternately); time from close/rename to the first successful HEAD ` +
        `(steady; HEAD every 2 ms) or to the first listing showing the key (burst; listed every ` +
        `${l.burstPollMs} ms, so ±${l.burstPollMs} ms). Watcher peak RSS ${
          fmt(l.watcherRssMB)
        } MB.`,
      "",
    );
    const row = (name: string, s: LatencyStats) => [
      name,
      String(s.files),
      fmt(s.p50, 1),
      fmt(s.p95, 1),
      fmt(s.p99, 1),
      fmt(s.max, 1),
      String(s.missed),
    ];
    lines.push(
      markdownTable(["Case", "files", "p50 ms", "p95 ms", "p99 ms", "max ms", "missed"], [
        row(`steady, ${r.cfg.rate}/s`, l.steady),
        row(`baseline: the bench PUTs each file itself, ${r.cfg.rate}/s`, l.direct),
        row(`burst (all visible ${fmt(l.burstDrainS, 2)} s after it began)`, l.burst),
      ]),
      "",
    );
  }
  if (r.memory) {
    lines.push(
      `**3. Memory**: \`--once -B -r\` with default settings but \`-t\`, ${r.cfg.memRuns} ` +
        "run(s) of each case in a row; the figures are of the run with the highest peak:",
      "",
    );
    lines.push(
      markdownTable(
        ["Case", "-t", "files", "MB", "wall s", "MB/s", "CPU s", "peak RSS MB", "per run"],
        r.memory.map((x) => [
          x.label,
          String(x.threads),
          String(x.files),
          fmt(x.bytes / MB, 0),
          fmt(x.stats.wallS, 2),
          fmt(x.bytes / MB / x.stats.wallS),
          fmt(x.stats.cpuS, 2),
          fmt(x.stats.peakRssMB),
          x.peaks.map((p) => fmt(p)).join(", "),
        ]),
      ),
      "",
    );
  }
  if (r.reconcile) {
    const c = r.reconcile;
    lines.push(
      `**4. Startup reconciliation** (${c.server}, requests counted by a proxy): ` +
        `${c.localFiles.toLocaleString("en-US")} local files already uploaded ` +
        `(${c.objectsPresent.toLocaleString("en-US")} objects with indexes; first upload took ` +
        `${fmt(c.populate.wallS, 1)} s at \`-t 32\`), plus ${c.newFiles} new files; ` +
        `\`--once -B -r\` until idle:`,
      "",
    );
    lines.push(
      markdownTable(
        ["wall s", "CPU s", "peak RSS MB", "requests by operation", "uploads", "others", "allowed"],
        [[
          fmt(c.run.wallS, 2),
          fmt(c.run.cpuS, 2),
          fmt(c.run.peakRssMB),
          Object.entries(c.counts).sort().map(([op, n]) => `${op} ${n}`).join(", "),
          String(c.uploads),
          String(c.other),
          String(c.allowed),
        ]],
      ),
      "",
    );
  }
  if (r.crash) {
    const c = r.crash;
    lines.push(
      `**8. SIGKILL matrix** (\`--only crash\`; tests/_crash_matrix.ts): a workload written ` +
        `while a watcher with \`--state-dir\` is killed at ${c.kills} random points and ` +
        `restarted without -B each time (moto, \`--max-bandwidth 8M\` until the last start).`,
      "",
      "| Seed | Kills | Files | File MiB | Body MiB sent | Re-sent MiB | Resumed | Stale aborted | Incomplete left | Mismatches | s |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      `| ${c.seed} | ${c.kills} | ${c.files} | ${fmt(c.fileBytes / 2 ** 20, 1)} | ${
        fmt(c.sentFileBytes / 2 ** 20, 1)
      } | ${
        fmt((c.sentFileBytes - c.fileBytes) / 2 ** 20, 1)
      } | ${c.resumed} | ${c.staleAborted} | ${c.incompleteUploads} | ${c.mismatches.length} | ${
        fmt(c.seconds, 0)
      } |`,
      "",
    );
    for (const m of c.mismatches.slice(0, 10)) lines.push(`- mismatch: ${m}`);
    if (c.mismatches.length > 0) lines.push("");
  }
  if (r.scale) lines.push(...scaleReport(r.scale));
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

async function main(args: string[]): Promise<number> {
  const cfg = parseConfig(args);
  if (cfg.main) {
    MAIN = await Deno.realPath(cfg.main);
    REPO = MAIN.replace(/\/[^/]*$/, "/");
  }
  await loadRunFlags();
  const work = cfg.tmp ?? await Deno.makeTempDir({ prefix: "tablesnap-bench-" });
  await Deno.mkdir(work, { recursive: true });
  const results: Results = { cfg, machine: await machine(cfg), errors: [] };
  log(`data in ${work}; warming the module cache`);
  const cache = await new Deno.Command(Deno.execPath(), {
    args: ["cache", MAIN],
    cwd: REPO,
    stdout: "null",
    stderr: "inherit",
  }).output();
  if (!cache.success) throw new Error("deno cache main.ts failed");
  const aws = await findAws();
  const step = async (name: Section, fn: () => Promise<void>) => {
    if (!cfg.sections.has(name)) return;
    try {
      await fn();
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log(`${name} failed: ${message}`);
      results.errors.push(`${name}: ${message.split("\n").slice(0, 8).join(" / ")}`);
    }
  };
  try {
    if (
      ["bulk", "limit", "restore", "latency", "memory"].some((s) => cfg.sections.has(s as Section))
    ) {
      await using server = await startServer("s3rver", BUCKET);
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
    await step("reconcile", async () => {
      results.reconcile = await reconcile(cfg, work);
    });
    await step("crash", async () => {
      log(`crash matrix: seed ${cfg.crashSeed} (--crash-seed ${cfg.crashSeed} replays it)`);
      const figures = await runCrashMatrix({
        seed: cfg.crashSeed,
        kills: cfg.crashKills,
        steps: cfg.crashKills * 3,
        bigFiles: Math.max(1, Math.round(cfg.crashKills / 5)),
        pin: cfg.crashPin,
        log,
      });
      log(describeFigures(figures));
      results.crash = figures;
      if (figures.mismatches.length > 0 || figures.incompleteUploads > 0 || figures.pinsLeft > 0) {
        throw new Error(`crash matrix failed: ${describeFigures(figures)}`);
      }
    });
    await step("scale", async () => {
      results.scale = await scaleStep({
        args: jobArgs,
        env: childEnv(),
        cwd: REPO,
        forceProc: cfg.forceProc,
        name: NAME,
        bucket: BUCKET,
        work,
        log,
      }, cfg.quick ? SCALE_QUICK : SCALE_FULL);
    });
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
