import { assertEquals, assertRejects } from "../_assert.ts";
import { REPO, tempDir } from "../_helpers.ts";
import { compileTask, runFlags } from "../_compile_task.ts";

Deno.test("runFlags() keeps the compile task's permissions and V8 flags, not its compile options", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir.path}/deno.json`,
    JSON.stringify({
      tasks: {
        compile: "deno compile --v8-flags=--x=1 --exclude-unused-npm --allow-read " +
          "--include extra.ts --target=x86_64-unknown-linux-gnu --allow-run=logger " +
          "--output dist/tool main.ts",
      },
    }),
  );
  const task = await compileTask(`${dir.path}/`);
  assertEquals(task.entry, "main.ts");
  assertEquals(task.output, "dist/tool");
  assertEquals(runFlags(task), ["--v8-flags=--x=1", "--allow-read", "--allow-run=logger"]);
});

Deno.test("compileTask() refuses a deno.json without a deno compile task", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/deno.json`, JSON.stringify({ tasks: { compile: "make" } }));
  await assertRejects(() => compileTask(`${dir.path}/`), Error, "deno compile");
  await Deno.writeTextFile(`${dir.path}/deno.json`, "{}");
  await assertRejects(() => compileTask(`${dir.path}/`), Error, "no compile task");
});

Deno.test("the repository's compile task gives run flags without -A or compile options", async () => {
  const flags = runFlags(await compileTask(REPO));
  assertEquals(flags.includes("-A") || flags.includes("--allow-all"), false);
  assertEquals(flags.some((f) => f.startsWith("--output") || f === "--exclude-unused-npm"), false);
  assertEquals(flags.some((f) => f.startsWith("--v8-flags=")), true);
  assertEquals(flags.some((f) => f.startsWith("--allow-")), true);
});
