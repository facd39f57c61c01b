/**
 * Step 3, memory: `--once -B -r` with default settings but `-t`, of one
 * large Data.db and of many small files, several runs of each in a row.
 */
import type { Config } from "./_config.ts";
import { childEnv, failIfBad, fmtBytes, log, MB, program, tablesnapArgs } from "./_context.ts";
import { measure, type RunStats } from "./_proc.ts";
import { fmt, markdownTable, peakRssRow } from "./_report.ts";
import { dropS3rverPrefix, type Server } from "./_servers.ts";
import { components, makeTables, seeded, sstableFiles, writeRandomFile } from "./_tree.ts";

export interface MemoryRun {
  label: string;
  threads: number;
  files: number;
  bytes: number;
  /** The worst of the runs in a row (highest peak RSS). */
  stats: RunStats;
  /** Peak RSS of each run, MB. */
  peaks: number[];
}

/** One case of the step: a tree to back up. */
interface MemoryCase {
  label: string;
  root: string;
  files: number;
  bytes: number;
}

/** Runs the whole step; see the module comment. */
export async function memory(cfg: Config, server: Server, work: string): Promise<MemoryRun[]> {
  const cases = await memoryCases(cfg, work);
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
          { env: childEnv(), cwd: program().repo, forceProc: cfg.forceProc },
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
  for (const c of cases) await Deno.remove(c.root, { recursive: true });
  return runs;
}

/** Writes the two trees of the step. */
async function memoryCases(cfg: Config, work: string): Promise<MemoryCase[]> {
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
  return [
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
}

/** The summary row of step 3: the worst case. */
export function memorySummaryRows(memory: MemoryRun[], cfg: Config): string[][] {
  const worst = memory.reduce((a, b) => (b.stats.peakRssMB > a.stats.peakRssMB ? b : a));
  return [peakRssRow(
    `3. Peak RSS, worst memory case (${cfg.memRuns} runs each)`,
    worst.stats.peakRssMB,
    ` (${worst.label}, -t ${worst.threads})`,
  )];
}

/** The detail of step 3. */
export function memoryReport(memory: MemoryRun[], cfg: Config): string[] {
  return [
    `**3. Memory**: \`--once -B -r\` with default settings but \`-t\`, ${cfg.memRuns} ` +
    "run(s) of each case in a row; the figures are of the run with the highest peak:",
    "",
    markdownTable(
      ["Case", "-t", "files", "MB", "wall s", "MB/s", "CPU s", "peak RSS MB", "per run"],
      memory.map((x) => [
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
  ];
}
