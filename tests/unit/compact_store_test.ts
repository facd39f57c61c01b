/**
 * The compact per-file store: paths by slot with each directory held once
 * (lib/common/path_slots.ts), the listing table (listed_objects.ts) and the
 * ledger's resting files (records.ts `StoredFiles`, through the ledger).
 */
import { assert, assertEquals } from "../_assert.ts";
import { PathSlots } from "../../lib/common/path_slots.ts";
import { ListedObjects } from "../../lib/watch/upload/listed_objects.ts";
import { Ledger } from "../../lib/watch/ledger.ts";

Deno.test("PathSlots numbers paths densely, reuses freed slots and rebuilds paths", () => {
  const slots = new PathSlots();
  const a = slots.add("/d/a");
  const b = slots.add("/d/b");
  const c = slots.add("/e/f/c");
  assertEquals([a, b, c], [0, 1, 2]);
  assertEquals(slots.add("/d/a"), a, "a path held keeps its slot");
  assertEquals(slots.slotOf("/d/b"), b);
  assertEquals(slots.slotOf("/d/c"), undefined);
  assertEquals(slots.slotOf("/d"), undefined, "a directory is no path");
  assertEquals(slots.delete("/d/b"), b);
  assertEquals(slots.delete("/d/b"), undefined);
  assertEquals(slots.add("/x/new"), b, "the freed slot is reused");
  assertEquals(slots.size, 3);
  assertEquals(slots.capacity, 3);
  assertEquals([...slots.entries()].sort(), [["/d/a", 0], ["/e/f/c", 2], ["/x/new", 1]]);
  assertEquals(slots.directories().sort(), ["/d", "/e/f", "/x"]);
  slots.delete("/x/new");
  assertEquals(slots.directories().sort(), ["/d", "/e/f"], "an emptied directory is let go");
  // A key (no leading slash) works alike: its "directory" is before the last "/".
  const key = slots.add("h:/d/a");
  assertEquals([key, slots.slotOf("h:/d/a"), slots.slotOf("/d/a")], [1, 1, a]);
});

Deno.test("ListedObjects gives back what was listed: sizes, MD5 ETags, other ETags, full objects", () => {
  const listed = new ListedObjects();
  const md5 = "0123456789abcdef0123456789abcdef";
  listed.set("p/h:/data/ks/t/nb-1-big-Data.db", { size: 5_000_000_000, etag: md5 });
  listed.set("p/h:/data/ks/t/nb-1-big-Index.db", { size: 0, etag: "abc-3" });
  listed.set("p/h:/data/ks/t/nb-2-big-TOC.txt", {
    size: 7,
    etag: md5,
    md5sum: md5,
    mtimeMs: 1_700_000_000_123,
  });
  assertEquals(listed.get("p/h:/data/ks/t/nb-1-big-Data.db"), { size: 5_000_000_000, etag: md5 });
  assertEquals(listed.get("p/h:/data/ks/t/nb-1-big-Index.db"), { size: 0, etag: "abc-3" });
  assertEquals(listed.get("p/h:/data/ks/t/nb-2-big-TOC.txt")?.mtimeMs, 1_700_000_000_123);
  assertEquals(listed.get("p/h:/data/ks/t/nb-3-big-Data.db"), undefined);
  // Overwritten by our own upload, then by a plain listing entry again.
  listed.set("p/h:/data/ks/t/nb-1-big-Index.db", { size: 9, etag: md5 });
  assertEquals(listed.get("p/h:/data/ks/t/nb-1-big-Index.db"), { size: 9, etag: md5 });
  listed.set("p/h:/data/ks/t/nb-2-big-TOC.txt", { size: 8, etag: "x" });
  assertEquals(listed.get("p/h:/data/ks/t/nb-2-big-TOC.txt"), { size: 8, etag: "x" });
  assert(listed.delete("p/h:/data/ks/t/nb-1-big-Data.db"));
  assert(!listed.has("p/h:/data/ks/t/nb-1-big-Data.db"));
  assertEquals(listed.size, 2);
  assertEquals([...listed.keys()].sort(), [
    "p/h:/data/ks/t/nb-1-big-Index.db",
    "p/h:/data/ks/t/nb-2-big-TOC.txt",
  ]);
});

Deno.test("Ledger keeps resting stored files compactly and hands out records to change", () => {
  const ledger = new Ledger();
  const record = ledger.getOrCreate("/d/t/a");
  ledger.move(record, "queued");
  ledger.move(record, "uploading");
  ledger.stored(record, { size: 3, mtimeMs: 1_700_000_000_001 }, "uploaded");
  ledger.move(record, "resting");
  assert(ledger.isStoredUnchanged("/d/t/a", 3, 1_700_000_000_001));
  assert(!ledger.isStoredUnchanged("/d/t/a", 3, 1_700_000_000_002));
  assertEquals(ledger.count("resting"), 1);
  // Pending again: a full record with its stored version, counted once.
  const again = ledger.getOrCreate("/d/t/a");
  assertEquals(again.stored, { size: 3, mtimeMs: 1_700_000_000_001 });
  ledger.move(again, "queued");
  assert(ledger.isPending("/d/t/a"));
  assertEquals([ledger.storedCount(), ledger.count("resting"), ledger.count("queued")], [1, 0, 1]);
  ledger.move(again, "uploading");
  ledger.move(again, "resting");
  assertEquals([ledger.storedCount(), ledger.count("resting")], [1, 1]);
  // Pruning: the directory no longer holds it.
  ledger.getOrCreate("/d/t/b");
  ledger.remember(ledger.get("/d/t/b")!, { size: 1, mtimeMs: 1 });
  assertEquals(ledger.storedCount(), 2);
  ledger.forgetGone("/d/t", new Set(["b"]));
  assertEquals([ledger.storedCount(), ledger.count("resting")], [1, 1]);
  assert(!ledger.isStored("/d/t/a"));
  assert(ledger.isStored("/d/t/b", 1));
  ledger.forgetGone("/d/t", null);
  assertEquals([ledger.storedCount(), ledger.count("resting")], [0, 0]);
});
