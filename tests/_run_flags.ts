/**
 * The program's runtime flags, read from the one place they are written:
 * the `compile` task in deno.json (what the release binary is built with).
 * Every test and the bench spawn `main.ts` with exactly these flags, so what
 * is tested is what ships; `deno task start` is checked against them by
 * tests/compile_test.ts.
 */
import config from "../deno.json" with { type: "json" };

/** A `deno compile` command line taken apart. */
export interface CompileTask {
  /** Every flag between `deno compile` and the entry point, `--output` excluded. */
  flags: string[];
  output: string;
  entry: string;
}

/** Splits a `compile` task's text (deno.json's, or another checkout's). */
export function parseCompileTask(task: string): CompileTask {
  const words = task.trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "compile") {
    throw new Error(`the compile task must run 'deno compile': ${task}`);
  }
  const entry = words.at(-1)!;
  const outputAt = words.indexOf("--output");
  if (outputAt < 2) throw new Error(`the compile task must name --output: ${task}`);
  const output = words[outputAt + 1]!;
  const flags = words.slice(2, -1).filter((_, i) => i + 2 !== outputAt && i + 2 !== outputAt + 1);
  return { flags, output, entry };
}

/** The flags that matter at run time: V8 flags, then permissions, in the task's order. */
export function runFlagsOf(task: string): string[] {
  return parseCompileTask(task).flags.filter((f) =>
    f.startsWith("--v8-flags=") || f.startsWith("--allow-") || f.startsWith("--deny-")
  );
}

export const COMPILE_TASK: CompileTask = parseCompileTask(config.tasks.compile);

/** `deno run` flags giving the program exactly what the compiled binary has. */
export const RUN_FLAGS: readonly string[] = runFlagsOf(config.tasks.compile);

/** The `bench` task's own flags (the bench harness, not the program it measures). */
export const BENCH_FLAGS: readonly string[] = config.tasks.bench.trim().split(/\s+/)
  .filter((w) => w.startsWith("--"));

/**
 * The `test` task's permission flags (the test harness's own, not the
 * program's), for scripts a test runs with `deno run`; the runner's own
 * options (`--parallel`) are left out.
 */
export const TEST_FLAGS: readonly string[] = config.tasks.test.trim().split(/\s+/)
  .filter((w) => w.startsWith("--allow-") || w.startsWith("--deny-"));
