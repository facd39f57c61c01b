/**
 * Step 2, watch latency: a running watcher (`-r`), files closed in place or
 * renamed in; the time from close/rename until the object is visible, at a
 * steady rate and in a burst, beside the bench PUTting each file itself.
 */
import type { Config } from "./_config.ts";
import { childEnv, log, NAME, program, tablesnapArgs } from "./_context.ts";
import { background, sleep } from "./_proc.ts";
import { fmt, type LatencyStats, latencyStats, markdownTable, verdictAtMost } from "./_report.ts";
import { dropS3rverPrefix, type Server } from "./_servers.ts";
import { makeTables, seeded, sstableFiles, type TreeFile, writeRandomFile } from "./_tree.ts";

export interface LatencyResult {
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

/** Sizes of the steady files: 16 KiB to 1 MiB, evenly on a log scale. */
const steadySize = (rand: () => number) => () =>
  Math.round(Math.exp(Math.log(16 * 1024) + rand() * Math.log(64)));

/** Runs the whole step; see the module comment. */
export async function latency(cfg: Config, server: Server, work: string): Promise<LatencyResult> {
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
    { env: childEnv(), cwd: program().repo },
  );
  await watcher.waitFor("tablesnap started");
  await sleep(500);
  const steadyFiles = sstableFiles(steadyTables, cfg.latencyFiles, steadySize(rand), rand, 1);
  const steady = await steadyLoad(
    cfg,
    steadyFiles,
    rand,
    (file, t0) => visibleAfter(objectUrl(server, keyOf(file.path)), t0, 30_000),
  );
  log(`latency steady: ${steadyFiles.length} files`);
  const burst = await burstLoad(cfg, server, burstTables, rand, keyOf);
  await watcher.stop("SIGTERM");
  log(`latency burst: ${burst.visible} of ${burst.files} visible`);

  // Baseline: the same steady load, each file PUT by the bench itself at once
  // (read whole, one unsigned PUT), measured the same way: the server's floor.
  const directTables = await makeTables(`${work}/latency-direct`, 6, rand);
  const directFiles = sstableFiles(directTables, cfg.latencyFiles, steadySize(rand), rand, 1);
  const direct = await steadyLoad(
    cfg,
    directFiles,
    rand,
    (file, t0) => putAndSee(server, file, t0),
  );
  await dropS3rverPrefix(server, "direct/");
  return {
    direct: latencyStats(direct),
    steady: latencyStats(steady),
    burst: latencyStats(burst.latencies),
    burstDrainS: burst.drainS,
    watcherRssMB: watcher.peakRssMB(),
    burstPollMs: BURST_POLL_MS,
  };
}

/**
 * Writes `files` one every 1/rate s, half in place and half renamed in, and
 * asks `visible` for each one's latency (null: never seen).
 */
async function steadyLoad(
  cfg: Config,
  files: TreeFile[],
  rand: () => number,
  visible: (file: TreeFile, t0: number) => Promise<number | null>,
): Promise<(number | null)[]> {
  const latencies: (number | null)[] = [];
  const pollers: Promise<void>[] = [];
  const started = performance.now();
  for (const [i, file] of files.entries()) {
    const due = started + (i * 1000) / cfg.rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const t0 = await placeFile(file, i % 2 === 1, rand);
    pollers.push(
      visible(file, t0).then((ms) => {
        latencies[i] = ms;
      }),
    );
  }
  await Promise.all(pollers);
  return latencies;
}

/** The baseline's upload: one unsigned PUT of the whole file by the bench. */
async function putAndSee(server: Server, file: TreeFile, t0: number): Promise<number | null> {
  const url = objectUrl(server, `direct${file.path}`);
  const put = fetch(url, {
    method: "PUT",
    body: await Deno.readFile(file.path),
    signal: AbortSignal.timeout(30_000),
  }).then((res) => {
    if (!res.ok) throw new Error(`PUT '${url}' got HTTP ${res.status}`);
    return res.body?.cancel();
  });
  const ms = await visibleAfter(url, t0, 30_000);
  await put;
  return ms;
}

/** How often the burst lists its keys (the burst figures are ± this). */
const BURST_POLL_MS = 200;

/** Burst: all at once, then list until every key is there (or 60 s pass). */
async function burstLoad(
  cfg: Config,
  server: Server,
  tables: string[],
  rand: () => number,
  keyOf: (path: string) => string,
) {
  const size = () => Math.round(Math.exp(Math.log(4 * 1024) + rand() * Math.log(16)));
  const files = sstableFiles(tables, cfg.burst, size, rand, 100_000);
  const t0s: number[] = [];
  const burstStart = performance.now();
  for (const [i, file] of files.entries()) t0s.push(await placeFile(file, i % 2 === 1, rand));
  const seen = new Map<string, number>();
  const want = new Set(files.map((f) => keyOf(f.path)));
  const deadline = performance.now() + 60_000;
  while (seen.size < want.size && performance.now() < deadline) {
    for (const table of tables) {
      for (const key of await listKeys(server, keyOf(table + "/"))) {
        if (want.has(key) && !seen.has(key)) seen.set(key, performance.now());
      }
    }
    if (seen.size < want.size) await sleep(BURST_POLL_MS);
  }
  const latencies = files.map((f, i) => {
    const at = seen.get(keyOf(f.path));
    return at === undefined ? null : at - t0s[i]!;
  });
  const drainS = (Math.max(...seen.values()) - burstStart) / 1000;
  return { latencies, drainS, visible: seen.size, files: want.size };
}

/** The summary rows of step 2. */
export function latencySummaryRows(l: LatencyResult, cfg: Config): string[][] {
  const s = l.steady;
  const missed = s.missed + l.burst.missed;
  return [
    [
      `2. Close/rename → visible at ${cfg.rate} files/s, p50`,
      `${fmt(s.p50, 1)} ms`,
      "≤ 15 ms",
      verdictAtMost(s.p50, 15),
    ],
    [
      `2. Close/rename → visible at ${cfg.rate} files/s, p99`,
      `${fmt(s.p99, 1)} ms`,
      "≤ 50 ms",
      verdictAtMost(s.p99, 50),
    ],
    [
      `2. Files missed (steady + burst of ${cfg.burst.toLocaleString("en-US")})`,
      String(missed),
      "0",
      missed === 0 ? "met" : `missed: ${missed} files`,
    ],
  ];
}

/** The detail of step 2. */
export function latencyReport(l: LatencyResult, cfg: Config): string[] {
  const row = (name: string, s: LatencyStats) => [
    name,
    String(s.files),
    fmt(s.p50, 1),
    fmt(s.p95, 1),
    fmt(s.p99, 1),
    fmt(s.max, 1),
    String(s.missed),
  ];
  return [
    `**2. Watch latency**: the watcher (\`-r\`, ${
      cfg.watchArgs.length > 0 ? `\`${cfg.watchArgs.join(" ")}\`` : "defaults"
    }) running; files closed in place or ` +
    `renamed in (alternately); time from close/rename to the first successful HEAD ` +
    `(steady; HEAD every 2 ms) or to the first listing showing the key (burst; listed every ` +
    `${l.burstPollMs} ms, so ±${l.burstPollMs} ms). Watcher peak RSS ${fmt(l.watcherRssMB)} MB.`,
    "",
    markdownTable(["Case", "files", "p50 ms", "p95 ms", "p99 ms", "max ms", "missed"], [
      row(`steady, ${cfg.rate}/s`, l.steady),
      row(`baseline: the bench PUTs each file itself, ${cfg.rate}/s`, l.direct),
      row(`burst (all visible ${fmt(l.burstDrainS, 2)} s after it began)`, l.burst),
    ]),
    "",
  ];
}
