/**
 * Pins (lib/watch/keepers/pins.ts) following the ledger, in-process on a
 * real tree: a pin follows its file's newest complete version, stays past
 * compaction, is refused past the bound (counted), and goes at release.
 */
import { assert, assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { Pins } from "../../lib/watch/keepers/pins.ts";
import { Ledger } from "../../lib/watch/ledger.ts";

async function setup(maxBytes: number) {
  const root = await tempDir();
  const ledger = new Ledger();
  const refused: string[] = [];
  const pins = Pins.open({
    roots: [root.path],
    maxBytes,
    observer: { pinRefused: (reason) => refused.push(reason) },
  });
  pins.follow(ledger);
  /** Writes `name` and tells the ledger it is complete (as the pipeline does). */
  const complete = async (name: string, text: string) => {
    const path = `${root.path}/${name}`;
    await Deno.writeTextFile(`${path}.tmp`, text);
    await Deno.rename(`${path}.tmp`, path); // a new inode, as Cassandra renames over
    const record = ledger.getOrCreate(path);
    if (record.state === "resting") ledger.move(record, "queued");
    ledger.complete(path);
    return path;
  };
  const rest = (path: string) => {
    const record = ledger.get(path)!;
    ledger.move(record, "uploading");
    ledger.remember(record, { size: 1, mtimeMs: 1 });
    ledger.move(record, "resting");
  };
  return { root, ledger, pins, refused, complete, rest };
}

Deno.test("a pin follows the newest complete version and outlives compaction until release", async () => {
  const t = await setup(1 << 20);
  await using _root = t.root;
  const stats = await t.complete("nb-1-big-Statistics.db", "v1");
  const pinPath = t.pins.sourceOf(stats)!;
  assertEquals(await Deno.readTextFile(pinPath), "v1");
  await t.complete("nb-1-big-Statistics.db", "version 2"); // renamed over while pending
  assertEquals(await Deno.readTextFile(t.pins.sourceOf(stats)!), "version 2");
  assertEquals(t.pins.usage(), { files: 1, bytes: "version 2".length });
  await Deno.remove(stats); // compaction
  assertEquals(
    await Deno.readTextFile(t.pins.sourceOf(stats)!),
    "version 2",
    "the upload reads it",
  );
  t.rest(stats);
  assert(!t.pins.isPinned(stats), "released at rest");
  assertEquals(t.pins.usage(), { files: 0, bytes: 0 });
  assert(!(await Deno.stat(pinPath).then(() => true, () => false)), "the link is gone");
});

Deno.test("past the bound no pin is made and the refusal is counted; released pins make room", async () => {
  const t = await setup(10);
  await using _root = t.root;
  const a = await t.complete("a", "12345678");
  const b = await t.complete("b", "12345");
  assert(t.pins.isPinned(a));
  assert(!t.pins.isPinned(b), "past --pin-max-bytes");
  assertEquals(t.refused, ["limit"]);
  t.rest(a);
  const c = await t.complete("c", "12345");
  assert(t.pins.isPinned(c), "under the bound again");
});
