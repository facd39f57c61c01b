/**
 * The keys that keep every restore point: later cuts of a generation's
 * index and the superseded copies of rewritten components, parsed back and
 * ordered as the readers (and the Python tableslurp) need them.
 */
import { assertEquals } from "../_assert.ts";
import { chooseRestorePoint, compareIndexes } from "../../lib/bucket/index_reader.ts";
import type { Store } from "../../lib/store/store.ts";
import {
  dataKeyOfIndex,
  indexKey,
  keyTime,
  parseKeyTime,
  recutIndexKey,
} from "../../lib/bucket/keys.ts";
import { generationOf } from "../../lib/bucket/sstable.ts";
import {
  parseSupersededKey,
  SupersededCopies,
  supersededKey,
} from "../../lib/bucket/superseded.ts";

const NAMING = { prefix: "", name: "h", separator: ":" };
const DATA = "/d/ks/t-1/nb-7-big-Data.db";
const T = Date.parse("2026-12-07T21:35:02.118Z");

Deno.test("a later cut's key: the Data.db's key, -recut-, its cut time, -listdir.json", () => {
  const key = recutIndexKey(NAMING, DATA, T);
  assertEquals(key, "h:/d/ks/t-1/nb-7-big-Data.db-recut-20261207T213502.118Z-listdir.json");
  assertEquals(dataKeyOfIndex(key), `h:${DATA}`);
  assertEquals(dataKeyOfIndex(indexKey(NAMING, DATA)), `h:${DATA}`);
  assertEquals(generationOf(key), generationOf(indexKey(NAMING, DATA)));
  assertEquals(parseKeyTime(keyTime(T)), T);
  assertEquals(parseKeyTime("20261207T213502Z"), null);
  // A file whose own name merely ends like a time keeps its whole name.
  assertEquals(dataKeyOfIndex("h:/d/x-recut-1-listdir.json"), "h:/d/x-recut-1");
});

Deno.test("within one second, a later cut sorts after the first index, as the Python rule needs", () => {
  const second = new Date("2026-12-07T21:35:02Z");
  const info = (key: string) => ({ key, size: 1, etag: "", lastModified: second });
  const first = info(indexKey(NAMING, DATA));
  const later = info(recutIndexKey(NAMING, DATA, T));
  const laterStill = info(recutIndexKey(NAMING, DATA, T + 400));
  // S3 lists keys in byte order; Python sorts stably by LastModified and takes the last.
  assertEquals([later.key, first.key, laterStill.key].sort(), [
    first.key,
    later.key,
    laterStill.key,
  ]);
  assertEquals([laterStill, first, later].sort(compareIndexes), [first, later, laterStill]);
});

Deno.test("a point takes the copy of its time, else the current object", () => {
  const stats = "h:/d/ks/t-1/nb-7-big-Statistics.db";
  const copies = new SupersededCopies();
  const add = (until: number) =>
    copies.add({ key: supersededKey(stats, until), size: 1, etag: "", lastModified: new Date() });
  assertEquals(add(T), true);
  assertEquals(add(T + 1000), true);
  assertEquals(copies.add({ key: stats, size: 1, etag: "", lastModified: new Date() }), false);
  assertEquals(parseSupersededKey(supersededKey(stats, T)), { key: stats, until: T });
  // Only mutable components have copies: anything else named so is a file.
  assertEquals(parseSupersededKey(supersededKey("h:/d/nb-7-big-Data.db", T)), null);
  assertEquals(copies.at(stats, T - 1)?.key, supersededKey(stats, T));
  assertEquals(copies.at(stats, T)?.key, supersededKey(stats, T + 1000));
  assertEquals(copies.at(stats, T + 999)?.key, supersededKey(stats, T + 1000));
  assertEquals(copies.at(stats, T + 1000), null);
  assertEquals(copies.at("h:/d/ks/t-1/nb-8-big-Statistics.db", 0), null);
});

Deno.test("a later cut wins over a newer generation's index of the same second", async () => {
  // S3 truncates LastModified to the second: both show 21:35:02.000, while
  // nb-8's index was cut at .400 and nb-7's later cut at .690.
  const second = new Date("2026-12-07T21:35:02Z");
  const cuts = new Map([
    [indexKey(NAMING, "/d/ks/t-1/nb-8-big-Data.db"), "2026-12-07T21:35:02.400Z"],
    [
      recutIndexKey(NAMING, DATA, Date.parse("2026-12-07T21:35:02.690Z")),
      "2026-12-07T21:35:02.690Z",
    ],
  ]);
  const infos = [...cuts.keys()].map((key) => ({ key, size: 1, etag: "", lastModified: second }));
  const store = {
    head: (key: string) =>
      Promise.resolve({
        ...infos.find((i) => i.key === key)!,
        metadata: { "cut-time": cuts.get(key)! },
      }),
  } as unknown as Store;
  const at = new Date("2026-12-07T21:35:03.100Z");
  assertEquals((await chooseRestorePoint(store, infos, at))?.info.key, infos[1]!.key);
  assertEquals((await chooseRestorePoint(store, infos))?.info.key, infos[1]!.key);
});
