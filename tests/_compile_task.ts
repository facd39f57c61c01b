/**
 * deno.json's `compile` task is the one place the binary's flags are
 * written. Tests and the benchmark that run `main.ts` "as the binary" take
 * its flags from here: permissions and V8 flags as compiled in, without the
 * options only `deno compile` knows.
 */

/** The `compile` task's words: its flags, output path and entry point apart. */
export interface CompileTask {
  flags: string[];
  output: string;
  entry: string;
}

/** `deno compile` options that take a value (as the next word or after "="). */
const COMPILE_ONLY_WITH_VALUE = ["--output", "-o", "--target", "--include", "--exclude", "--icon"];
/** `deno compile` flags that `deno run` does not take. */
const COMPILE_ONLY = ["--exclude-unused-npm", "--no-terminal", "--self-extracting"];

/** Reads the `compile` task of `repo`'s deno.json (`repo` ends with "/"). */
export async function compileTask(repo: string): Promise<CompileTask> {
  const config = JSON.parse(await Deno.readTextFile(`${repo}deno.json`));
  const task: unknown = config?.tasks?.compile;
  if (typeof task !== "string") throw new Error(`${repo}deno.json has no compile task`);
  const words = task.trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "compile") {
    throw new Error(`the compile task must run 'deno compile', not '${task}'`);
  }
  const entry = words.at(-1)!;
  const flags = words.slice(2, -1);
  const at = flags.findIndex((word) => word === "--output" || word === "-o");
  const output = at >= 0
    ? flags[at + 1] ?? ""
    : flags.find((word) => word.startsWith("--output="))?.slice("--output=".length) ?? "";
  return { flags, output, entry };
}

/** The flags `deno run` needs to run the entry point as the compiled binary runs. */
export function runFlags(task: CompileTask): string[] {
  const out: string[] = [];
  for (let i = 0; i < task.flags.length; i++) {
    const word = task.flags[i]!;
    if (COMPILE_ONLY.includes(word)) continue;
    if (COMPILE_ONLY_WITH_VALUE.includes(word)) {
      i++; // and its value
      continue;
    }
    if (COMPILE_ONLY_WITH_VALUE.some((option) => word.startsWith(`${option}=`))) continue;
    out.push(word);
  }
  return out;
}
