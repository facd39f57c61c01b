/** The benchmark's command line: sizes, runs and which sections to run. */
import { parseArgs } from "node:util";
import { parseSize } from "./_tree.ts";

export const SECTIONS = [
  "bulk",
  "limit",
  "restore",
  "latency",
  "memory",
  "reconcile",
  "crash",
  "scale",
  "rgw",
] as const;
export type Section = typeof SECTIONS[number];
/**
 * Run without --only: neither the SIGKILL matrix (a minute of kills) nor the
 * scale step (most of an hour); `--scale` adds the latter. `--quick` (CI's
 * smoke test) leaves out the RGW step too: starting Ceph alone takes 5-10 s.
 */
const DEFAULT_SECTIONS = SECTIONS.filter((s) => s !== "crash" && s !== "scale");
const QUICK_SECTIONS = DEFAULT_SECTIONS.filter((s) => s !== "rgw");

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
  /** --scale-files: the scale step's local files (the other sizes follow); undefined: its default. */
  scaleFiles: number | undefined;
  /** --scale-runs: times the scale step runs in a row (the bound must hold every time). */
  scaleRuns: number;
  /** --profile DIR: the RGW step also profiles each tablesnap job once, into DIR. */
  profile: string | undefined;
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
  --scale-files N        the scale step's files (default 100000; --quick 2000); its
                         directories, chop's keys and indexes follow in proportion
  --scale-runs N         times the scale step runs in a row (default 3; --quick 1)
  --only LIST            sections to run: ${SECTIONS.join(",")}
                         (default all but crash and scale; --quick: and rgw)
  --profile DIR          the rgw section also runs each tablesnap job once with
                         --cpu-prof into DIR and reports where its CPU went
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
      "scale-files": { type: "string" },
      "scale-runs": { type: "string" },
      profile: { type: "string" },
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
    (values.only?.split(",") ??
      [...(quick ? QUICK_SECTIONS : DEFAULT_SECTIONS), ...(values.scale ? ["scale"] : [])]).map(
        (s) => {
          if (!(SECTIONS as readonly string[]).includes(s)) {
            throw new Error(`Unknown section '${s}'`);
          }
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
    scaleFiles: values["scale-files"] === undefined
      ? undefined
      : int(values["scale-files"], 0, "--scale-files"),
    scaleRuns: int(values["scale-runs"], quick ? 1 : 3, "--scale-runs"),
    profile: values.profile,
  };
}
