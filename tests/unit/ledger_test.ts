/** One record per file (lib/watch/ledger.ts): its moves, and what each keeps or drops. */
import { assert, assertEquals } from "../_assert.ts";
import { Ledger } from "../../lib/watch/ledger.ts";

Deno.test("Ledger queues in order and counts every state", () => {
  const records = new Ledger();
  for (const path of ["/d/a", "/d/b", "/d/c"]) records.move(records.getOrCreate(path), "queued");
  assertEquals(records.count("queued"), 3);
  const first = records.nextQueued()!;
  assertEquals(first.path, "/d/a");
  records.move(first, "uploading");
  assertEquals(records.nextQueued()?.path, "/d/b");
  assertEquals([records.count("queued"), records.count("uploading")], [2, 1]);
  assertEquals(records.pendingCount(), 3);
  assertEquals(records.inState("queued").map((r) => r.path), ["/d/b", "/d/c"]);
});

Deno.test("Ledger keeps failed cycles across retry, queue and upload", () => {
  // A file whose cycles keep failing must wait longer each time: the count
  // survives its way back through the queue (it was once lost there).
  const records = new Ledger();
  const record = records.getOrCreate("/d/a");
  records.move(record, "queued");
  records.move(record, "uploading");
  record.failedCycles++;
  records.move(record, "retrying");
  records.move(record, "queued");
  records.move(record, "uploading");
  record.failedCycles++;
  assertEquals(record.failedCycles, 2);
});

Deno.test("Ledger forgets a record that rests with nothing stored, keeps one that has", () => {
  const records = new Ledger();
  const skipped = records.getOrCreate("/d/gone");
  records.move(skipped, "queued");
  records.move(skipped, "resting");
  assertEquals(records.get("/d/gone"), undefined);

  const stored = records.getOrCreate("/d/kept");
  records.move(stored, "queued");
  records.move(stored, "uploading");
  records.remember(stored, { size: 10, mtimeMs: 5 });
  records.remember(stored, { size: 12, mtimeMs: 6 }); // a newer version: still one stored file
  records.move(stored, "resting");
  assertEquals(records.get("/d/kept"), stored);
  assertEquals(records.storedDirectories(), ["/d"]);
  assertEquals(records.storedCount(), 1);
  records.forget(stored);
  assertEquals(records.get("/d/kept"), undefined);
  assertEquals(records.count("resting"), 0);
  assertEquals(records.storedCount(), 0);
});

Deno.test("Ledger clears a retry timer and the 'again' mark on the way", () => {
  const records = new Ledger();
  const record = records.getOrCreate("/d/a");
  records.move(record, "queued");
  records.move(record, "uploading");
  record.again = true; // complete again while uploading
  records.move(record, "queued");
  records.move(record, "uploading");
  assert(!record.again, "the new upload covers what arrived during the last one");
  records.move(record, "retrying");
  let fired = false;
  const timer = setTimeout(() => fired = true, 10);
  record.cancelRetry = () => clearTimeout(timer);
  records.move(record, "queued");
  assertEquals(record.cancelRetry, undefined);
  return new Promise((resolve) =>
    setTimeout(() => {
      assert(!fired, "the timer of a retry that was overtaken does not fire");
      resolve();
    }, 30)
  );
});

Deno.test("Ledger.pending() sums sizes and finds the oldest completion time", () => {
  const records = new Ledger();
  const a = records.getOrCreate("/d/a");
  a.since = 2_000;
  records.move(a, "queued");
  const b = records.getOrCreate("/d/b");
  b.since = 1_000;
  b.bytes = 300;
  records.move(b, "queued");
  records.move(b, "uploading");
  const c = records.getOrCreate("/d/c");
  records.remember(c, { size: 1, mtimeMs: 1 });
  assertEquals(records.pending(), { files: 2, bytes: 300, oldestSince: 1_000 });
  records.move(a, "uploading");
  records.move(a, "resting");
  records.move(b, "resting");
  assertEquals(records.pending(), { files: 0, bytes: 0, oldestSince: null });
});
