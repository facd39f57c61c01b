/**
 * `--profile DIR` of step 8: one more run of each tablesnap job against RGW
 * with V8's sampling profiler on (`deno run --cpu-prof`, with the compile
 * task's flags as always), and the functions that took most of its main
 * thread, beside the client's and the server's CPU of that run. The
 * `.cpuprofile` files stay in DIR (Chrome DevTools opens them).
 */
import type { Config } from "./_config.ts";
import { childEnv, failIfBad, jobArgs, log, MB, program } from "./_context.ts";
import { measure, type RunStats } from "./_proc.ts";
import { fmt, markdownTable } from "./_report.ts";
import type { Server } from "./_servers.ts";
import type { Tree } from "./_tree.ts";

export interface CpuProfileSummary {
  job: string;
  stats: RunStats;
  serverCpuS: number;
  /** Milliseconds sampled on the main thread, idle excluded (wall time, not CPU). */
  busyMs: number;
  /** The functions with the most self time, most first: [name, ms]. */
  top: [string, number][];
  file: string;
}

interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function of a `.cpuprofile`, the `count` largest first. */
export function summarizeProfile(profile: CpuProfile, count = 10) {
  const nameOf = new Map<number, string>();
  for (const { id, callFrame: f } of profile.nodes) {
    const where = f.url ? ` ${f.url.replace(/^.*\//, "")}:${f.lineNumber + 1}` : "";
    nameOf.set(id, `${f.functionName || "(anonymous)"}${where}`);
  }
  const self = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const name = nameOf.get(id) ?? "?";
    self.set(name, (self.get(name) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  });
  self.delete("(idle)");
  const busyMs = [...self.values()].reduce((a, b) => a + b, 0);
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, count);
  return { busyMs, top };
}

/** One tablesnap job under the profiler, into `dir`; its summary. */
async function profiled(
  cfg: Config,
  server: Server,
  job: string,
  args: string[],
  dir: string,
): Promise<CpuProfileSummary> {
  const before = new Set<string>();
  for await (const e of Deno.readDir(dir)) before.add(e.name);
  const cpu0 = await server.cpu();
  const stats = await measure(
    Deno.execPath(),
    ["run", "--cpu-prof", `--cpu-prof-dir=${dir}`, ...args.slice(1)],
    { env: childEnv(server.env), cwd: program().repo, forceProc: cfg.forceProc },
  );
  const serverCpuS = (await server.cpu()) - cpu0;
  failIfBad(`profiled ${job}`, stats);
  // The main thread's: a worker's (the hashing thread's) is named `...worker-N.cpuprofile`.
  let file = "";
  for await (const e of Deno.readDir(dir)) {
    const isMain = e.name.endsWith(".cpuprofile") && !/\.worker-\d+\.cpuprofile$/.test(e.name);
    if (!before.has(e.name) && isMain) file = `${dir}/${e.name}`;
  }
  if (!file) throw new Error(`profiled ${job} wrote no .cpuprofile in ${dir}`);
  const summary = summarizeProfile(JSON.parse(await Deno.readTextFile(file)));
  log(`rgw profile of ${job}: ${file}`);
  return { job, stats, serverCpuS, file, ...summary };
}

/** A profiled backup of the tree, then a profiled restore of it. */
export async function profileRuns(
  cfg: Config,
  server: Server,
  tree: Tree,
  dir: string,
): Promise<CpuProfileSummary[]> {
  await Deno.mkdir(dir, { recursive: true });
  const prefix = "profile/";
  const backup = await profiled(
    cfg,
    server,
    "backup `--once -B -r`",
    jobArgs("", server.endpoint, prefix, ["--once", "-B", "-r", server.bucket, tree.root]),
    dir,
  );
  const data = `${tree.root}/data`;
  const target = `${data}.restored-profile`;
  await Deno.mkdir(target);
  const restore = await profiled(
    cfg,
    server,
    "restore `slurp -r`",
    jobArgs("slurp", server.endpoint, prefix, ["-r", server.bucket, data, target]),
    dir,
  );
  await Deno.remove(target, { recursive: true });
  await server.drop(prefix);
  return [backup, restore];
}

/** The profiles' part of the report. */
export function profileTable(profiles: CpuProfileSummary[], bytes: number): string[] {
  const lines: string[] = [];
  for (const p of profiles) {
    lines.push(
      `Profiled ${p.job} (one more run, \`--cpu-prof\`): ${
        fmt(bytes / MB / p.stats.wallS)
      } MB/s; client CPU ${fmt(p.stats.cpuS, 2)} s; main thread not idle for ${
        fmt(p.busyMs / 1000, 2)
      } s (sampled wall time: also while it waits for a core); server CPU ${
        fmt(p.serverCpuS, 2)
      } s, ` +
        `wall ${fmt(p.stats.wallS, 2)} s (\`${
          p.file.replace(/^.*\//, "")
        }\`). Main-thread self time:`,
      "",
      markdownTable(
        ["Function", "ms", "% of not idle"],
        p.top.map(([name, ms]) => [`\`${name}\``, fmt(ms, 0), fmt((ms / p.busyMs) * 100, 1)]),
      ),
      "",
    );
  }
  return lines;
}
