import { checkFileName, parseIndex, unsafeNameReason } from "../../lib/bucket/index_body.ts";
import {
  chooseRestorePoint,
  compareIndexes,
  CUT_TIME_METADATA,
  indexesIn,
  indexesPerDirectory,
  readIndex,
} from "../../lib/bucket/index_reader.ts";
import { directoryPrefix } from "../../lib/bucket/keys.ts";
import { expectedMd5, parseStatMetadata } from "../../lib/bucket/object_meta.ts";
import { FatalError } from "../../lib/common/errors.ts";
import type { ObjectInfo, Store } from "../../lib/store/store.ts";
import { assertEquals, assertRejects, assertThrows } from "../_assert.ts";
import { DAY, key, localStore, localWriter, NAMING, putIndex } from "../_bucket_fixture.ts";
import { tempDir } from "../_helpers.ts";

const KEY = "h:/data/ks/t/nb-1-big-Data.db-listdir.json";

Deno.test("parseIndex() reads a Python index in any order, dropping duplicates", () => {
  const listing = parseIndex(
    KEY,
    '{"/data/ks/t": ["nb-1-big-Index.db", "nb-1-big-Data.db", "nb-1-big-Data.db"]}',
  );
  assertEquals(listing, {
    key: KEY,
    directory: "/data/ks/t",
    names: ["nb-1-big-Index.db", "nb-1-big-Data.db"],
  });
});

Deno.test("parseIndex() rejects malformed bodies naming the key", () => {
  for (
    const [body, text] of [
      ["not json", "is not valid JSON"],
      ['["a"]', "is not a JSON object"],
      ["null", "is not a JSON object"],
      ["{}", "exactly one member"],
      ['{"/a": ["x"], "/b": ["y"]}', "found 2"],
      ['{"/a": "x"}', "to a list of file names"],
      ['{"/a": ["x", 1]}', "to a list of file names"],
      ['{"/a": [null]}', "to a list of file names"],
    ] as const
  ) {
    const err = assertThrows(() => parseIndex(KEY, body), FatalError, text);
    assertEquals(err.message.includes(`'${KEY}'`), true, err.message);
  }
});

Deno.test("unsafeNameReason() refuses names that could leave a directory", () => {
  for (const name of ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\0b", "ks/../../x"]) {
    assertEquals(typeof unsafeNameReason(name), "string", name);
    assertThrows(() => checkFileName(name, KEY), FatalError, "unsafe file");
  }
  for (const name of ["nb-1-big-Data.db", "..x", "x..", ".hidden", "CommitLog-7-1.log", "a b"]) {
    assertEquals(unsafeNameReason(name), null, name);
  }
});

Deno.test("expectedMd5() prefers md5sum metadata and accepts only single-part ETags", () => {
  const md5 = "0123456789abcdef0123456789abcdef";
  const other = "ffffffffffffffffffffffffffffffff";
  assertEquals(expectedMd5({ etag: other, metadata: { md5sum: md5 } }), md5);
  assertEquals(expectedMd5({ etag: other, metadata: {} }), other);
  assertEquals(expectedMd5({ etag: `${other}-3`, metadata: {} }), null);
  assertEquals(expectedMd5({ etag: `${other}-3`, metadata: { md5sum: md5.toUpperCase() } }), md5);
  assertEquals(expectedMd5({ etag: "", metadata: { md5sum: "junk" } }), null);
});

Deno.test("parseStatMetadata() keeps well-typed fields only", () => {
  assertEquals(
    parseStatMetadata('{"uid": 999, "gid": 998, "mode": 33188, "user": "cassandra", "group": "c"}'),
    { uid: 999, gid: 998, mode: 33188, user: "cassandra", group: "c" },
  );
  assertEquals(parseStatMetadata('{"uid": "x", "mode": -1, "user": 3}'), {});
  assertEquals(parseStatMetadata("{bad"), null);
  assertEquals(parseStatMetadata(undefined), null);
});

Deno.test("compareIndexes() orders by time, then generation number, then key", () => {
  const at = (key: string, ms: number): ObjectInfo => ({
    key: `h:/d/${key}-listdir.json`,
    size: 1,
    etag: "",
    lastModified: new Date(ms),
  });
  const sorted = [
    at("nb-10-big-Data.db", 1000),
    at("nb-9-big-Data.db", 1000),
    at("nb-1-big-Data.db", 2000),
    at("nb-2-big-Data.db", 500),
  ].sort(compareIndexes).map((i) => i.key);
  assertEquals(sorted, [
    "h:/d/nb-2-big-Data.db-listdir.json",
    "h:/d/nb-9-big-Data.db-listdir.json",
    "h:/d/nb-10-big-Data.db-listdir.json",
    "h:/d/nb-1-big-Data.db-listdir.json",
  ]);
});

Deno.test("newest index lookups and readIndex() against a local store", async () => {
  await using dir = await tempDir();
  const store = await localStore(dir.path);
  const w = localWriter(store);
  const now = Date.now();
  await putIndex(w, "/data/ks/t/nb-1-big-Data.db", ["nb-1-big-Data.db"], {
    mtime: new Date(now - 2 * DAY),
  });
  const newest = await putIndex(w, "/data/ks/t/nb-2-big-Data.db", ["nb-2-big-Data.db"], {
    mtime: new Date(now - DAY),
  });
  // Deeper (a snapshot) and in a sibling directory sharing the name's start.
  await putIndex(w, "/data/ks/t/snap/nb-3-big-Data.db", ["x"], { mtime: new Date(now) });
  const other = await putIndex(w, "/data/ks/t2/nb-1-big-Data.db", "not json", {
    mtime: new Date(now),
  });

  const prefix = directoryPrefix(NAMING, "/data/ks/t/");
  assertEquals(prefix, "cass1.example.com:/data/ks/t/");
  assertEquals((await chooseRestorePoint(store, await indexesIn(store, prefix)))?.info.key, newest);
  assertEquals(await indexesIn(store, directoryPrefix(NAMING, "/nothing")), []);

  const perDir = await indexesPerDirectory(store, directoryPrefix(NAMING, "/data/ks"));
  assertEquals([...perDir.keys()].sort(), [
    "cass1.example.com:/data/ks/t",
    "cass1.example.com:/data/ks/t/snap",
    "cass1.example.com:/data/ks/t2",
  ]);

  assertEquals((await readIndex(store, newest)).names, ["nb-2-big-Data.db"]);
  await assertRejects(() => readIndex(store, other), FatalError, "is not valid JSON");
  await assertRejects(() => readIndex(store, "nope-listdir.json"), FatalError, "is missing");
});

Deno.test("chooseRestorePoint() --at finds an index uploaded long after its cut (--pin)", async () => {
  await using dir = await tempDir("tablesnap-store-");
  const store = await localStore(dir.path);
  const t = (hms: string) => new Date(`2026-11-30T${hms}Z`);
  // Indexes by cut and LastModified, published in cut order; B's files took 5 minutes to upload.
  const points: [string, string, string][] = [
    ["nb-1-big-Data.db", "10:00:00.000", "10:00:00"],
    ["nb-2-big-Data.db", "10:00:10.000", "10:05:00"],
    ["nb-3-big-Data.db", "10:05:00.500", "10:05:01"],
    ["nb-4-big-Data.db", "10:06:00.000", "10:06:00"],
  ];
  const keys: string[] = [];
  for (const [data, cut, modified] of points) {
    const k = `${key(NAMING, `/d/t/${data}`)}-listdir.json`;
    await store.putBytes(k, new TextEncoder().encode('{"/d/t": []}'), {
      metadata: { [CUT_TIME_METADATA]: t(cut).toISOString() },
    });
    await Deno.utime(store.dataPath(k), t(modified), t(modified));
    keys.push(k);
  }
  let heads = 0;
  const counting = {
    list: (prefix: string, options?: { delimiter?: string }) => store.list(prefix, options),
    get: (k: string) => store.get(k),
    head: (k: string) => {
      heads++;
      return store.head(k);
    },
  } as unknown as Store;
  const infos = await indexesIn(counting, directoryPrefix(NAMING, "/d/t"));
  const at = async (hms: string | undefined) => {
    heads = 0;
    const point = await chooseRestorePoint(counting, infos, hms ? t(hms) : undefined);
    return point && keys.indexOf(point.info.key) + 1;
  };
  assertEquals(await at("10:00:30.000"), 2, "the late index is the point of 10:00:30");
  assertEquals(await at("10:00:05.000"), 1);
  // No late index holds an earlier cut: one HEAD tells (the earliest later upload's).
  assertEquals(heads, 1);
  assertEquals(await at("10:05:30.000"), 3);
  assertEquals(await at(undefined), 4);
  assertEquals(await at("09:00:00.000"), null);
});
