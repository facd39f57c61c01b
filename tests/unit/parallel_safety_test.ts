/**
 * `deno task test` runs test files at once (`--parallel`), each in a worker
 * of one process: what one file changes of the process (environment,
 * working directory, umask) another would see mid-test. No test changes
 * them; children get their own `env` and `cwd` instead.
 */
import { assertEquals } from "../_assert.ts";
import { REPO } from "../_helpers.ts";
import config from "../../deno.json" with { type: "json" };

/** Every `.ts` file under `dir`, relative to the repo. */
async function sources(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(`${REPO}${dir}`)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) found.push(...await sources(path));
    else if (entry.name.endsWith(".ts")) found.push(path);
  }
  return found;
}

const PROCESS_WIDE = /\bDeno\.(env\.(set|delete)|chdir|umask)\(/;

Deno.test("no test changes the process's environment, working directory or umask", async () => {
  const wrong: string[] = [];
  const files = await sources("tests");
  for (const path of files) {
    const lines = (await Deno.readTextFile(`${REPO}${path}`)).split("\n");
    lines.forEach((line, i) => {
      const code = line.replace(/^\s*(\/\/|\/\*|\*).*$/, "");
      if (PROCESS_WIDE.test(code)) wrong.push(`${path}:${i + 1}: ${line.trim()}`);
    });
  }
  assertEquals(wrong, []);
  assertEquals(files.includes("tests/watch_test.ts"), true, "the scan reads the tests");
  // The reason for the rule: the suite's files run at once.
  assertEquals(config.tasks.test.split(/\s+/).includes("--parallel"), true);
});
