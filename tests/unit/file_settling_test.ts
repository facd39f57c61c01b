/**
 * File settling (lib/watch/detect/file_watcher.ts) on a fake clock: a file
 * found by a scan is complete once it has not changed for --settle-seconds;
 * one that changes meanwhile waits again; a hard link is complete at once;
 * the start-up sweep tells when it is done with each directory.
 * Real files whose mtimes the test sets on the fake clock's time line.
 */
import { assert, assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { FileWatcher } from "../../lib/watch/detect/file_watcher.ts";
import { makePathFilter } from "../../lib/watch/detect/path_filter.ts";
import { LISTEN_EVENTS } from "../../lib/watch/detect/watch_rules.ts";
import { FakeClock } from "./_fake_clock.ts";

const SETTLE_MS = 10_000;

async function setup() {
  const root = await tempDir();
  const clock = new FakeClock();
  const complete: string[] = [];
  const watcher = new FileWatcher({
    roots: [root.path],
    recursive: true,
    autoAdd: true,
    listen: new Set(LISTEN_EVENTS),
    filter: makePathFilter({}),
    onComplete: (path, how) => complete.push(`${how} ${path.slice(root.path.length + 1)}`),
    onSwept: (dir) => complete.push(`swept ${dir.slice(root.path.length + 1) || "."}`),
    isHandled: () => false,
    includeExisting: true,
    settleMs: SETTLE_MS,
    sweepIntervalMs: 0,
    clock,
  });
  await watcher.prepare();
  /** Writes `name`, modified now on the fake clock. */
  const write = async (name: string, text: string) => {
    const path = `${root.path}/${name}`;
    await Deno.writeTextFile(path, text);
    await Deno.utime(path, new Date(clock.now()), new Date(clock.now()));
  };
  return {
    root,
    clock,
    watcher,
    complete,
    write,
    async [Symbol.asyncDispose]() {
      await watcher.close();
      await root[Symbol.asyncDispose]();
    },
  };
}

Deno.test("a scanned file is complete once unchanged for the settle time, not before", async () => {
  await using t = await setup();
  await t.write("nb-1-big-Data.db", "data");
  await t.watcher.sweep("test");
  assertEquals(t.complete, [], "just written: not complete");
  assertEquals(t.watcher.candidates(), 1);
  await t.clock.advance(SETTLE_MS - 1);
  assertEquals(t.complete, [], "one millisecond short");
  await t.clock.advance(5_000);
  assertEquals(t.complete, ["settled nb-1-big-Data.db"]);
  assertEquals(t.watcher.candidates(), 0);
  assertEquals(t.clock.pending, 0, "no settle timer left");
});

Deno.test("a file that changes while settling waits the settle time again from its change", async () => {
  await using t = await setup();
  await t.write("nb-1-big-Data.db", "data");
  await t.watcher.sweep("test");
  await t.clock.advance(8_000);
  await t.write("nb-1-big-Data.db", "data, appended"); // still being written
  await t.clock.advance(4_000); // 12 s after the first write, 4 s after the last
  assertEquals(t.complete, [], "changed 4 s ago: not settled");
  await t.clock.advance(SETTLE_MS);
  assertEquals(t.complete, ["settled nb-1-big-Data.db"]);
});

Deno.test("a hard link found by a scan is complete at once; an immediate sweep takes all", async () => {
  await using t = await setup();
  await t.write("a", "a");
  await Deno.link(`${t.root.path}/a`, `${t.root.path}/b`);
  await t.watcher.sweep("test");
  assertEquals(t.complete.sort(), ["hard-link a", "hard-link b"]);
  await t.write("c", "c");
  await t.watcher.sweep("startup", true);
  assertEquals(t.complete.filter((c) => c.endsWith(" c")), ["existing c"]);
});

Deno.test("the start-up sweep tells it is done with a directory after handing on its files", async () => {
  await using t = await setup();
  await Deno.mkdir(`${t.root.path}/t1`);
  await t.write("t1/a", "a");
  await t.write("t1/b", "b");
  await t.write("c", "c");
  await t.watcher.sweep("periodic");
  assertEquals(t.complete, [], "a periodic sweep neither takes new files nor tells");
  await t.watcher.sweep("startup", true);
  const at = (entry: string) => t.complete.indexOf(entry);
  assertEquals(t.complete.length, 5);
  assert(at("swept t1") > Math.max(at("existing t1/a"), at("existing t1/b")), t.complete.join());
  assertEquals(t.complete.at(-1), "swept .", "the root last, after its subdirectory");
});
