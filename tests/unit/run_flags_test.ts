/**
 * One source of truth for the program's runtime flags: the `compile` task.
 * `deno task start`, the test helpers and the bench use exactly its flags,
 * and nothing under tests/, bench/ or scripts/ starts a Deno program with
 * all permissions (`-A`, `--allow-all`) or all of `sys` except the test S3
 * server s3rver (a test fixture, not the program).
 */
import { assertEquals } from "../_assert.ts";
import { MAIN, programArgs, REPO } from "../_helpers.ts";
import { COMPILE_TASK, parseCompileTask, RUN_FLAGS, runFlagsOf } from "../_run_flags.ts";
import config from "../../deno.json" with { type: "json" };

Deno.test("the run flags are the compile task's V8 flags and permissions", () => {
  assertEquals(RUN_FLAGS, [
    "--v8-flags=--max-semi-space-size=1,--heap-growing-percent=50",
    "--allow-read",
    "--allow-write",
    "--allow-net",
    "--allow-env",
    "--allow-sys=hostname,osRelease,uid,homedir",
    "--allow-run=logger",
  ]);
  assertEquals(COMPILE_TASK.entry, "main.ts");
  // What the parser keeps and drops, on a task of another shape.
  assertEquals(
    runFlagsOf("deno compile --allow-net --no-check --output x/y --v8-flags=--a main.ts"),
    ["--allow-net", "--v8-flags=--a"],
  );
  assertEquals(parseCompileTask("deno compile --allow-net --output x/y a.ts").output, "x/y");
});

Deno.test("deno task start runs main.ts with exactly the compile task's run flags", () => {
  const words = config.tasks.start.trim().split(/\s+/);
  assertEquals(words, ["deno", "run", ...RUN_FLAGS, COMPILE_TASK.entry]);
});

Deno.test("the test helpers spawn main.ts with exactly the compile task's run flags", () => {
  assertEquals(programArgs(["list", "b"]), ["run", ...RUN_FLAGS, MAIN, "list", "b"]);
});

/** Every file under `dir` ending with one of `suffixes`, relative to the repo. */
async function files(dir: string, suffixes: string[]): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(`${REPO}${dir}`)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) found.push(...await files(path, suffixes));
    else if (suffixes.some((s) => entry.name.endsWith(s))) found.push(path);
  }
  return found;
}

/** `-A`, `--allow-all` or a bare `--allow-sys` as a word of a command line. */
const BROAD = /(^|["'`\s])(-A|--allow-all|--allow-sys)(?=["'`\s]|$)/;

Deno.test("no test, bench step or script spawns a program with broad permissions", async () => {
  const wrong: string[] = [];
  const sources = [
    ...await files("tests", [".ts"]),
    ...await files("bench", [".ts"]),
    ...await files("scripts", [".sh", ".ts"]),
  ];
  for (const path of sources) {
    const lines = (await Deno.readTextFile(`${REPO}${path}`)).split("\n");
    lines.forEach((line, i) => {
      const code = line.replace(/^\s*(\/\/|\/\*|\*|#).*$/, ""); // comments say what they like
      if (BROAD.test(code) && !/s3rver|S3RVER/.test(code)) {
        wrong.push(`${path}:${i + 1}: ${line.trim()}`);
      }
    });
  }
  assertEquals(wrong, []);
  // The scan looks at the files it should (a moved folder would pass it silently).
  assertEquals(sources.includes("tests/_helpers.ts") && sources.includes("bench/bench.ts"), true);
});
