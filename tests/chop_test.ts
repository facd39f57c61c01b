import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { chop } from "../lib/maintenance/chop.ts";
import type { LocalStore } from "../lib/store/local_store.ts";
import type { Store } from "../lib/store/store.ts";
import { assertEquals, assertStringIncludes } from "./_assert.ts";
import {
  contentOf,
  DAY,
  generation,
  key,
  localStore,
  localWriter,
  NAMING,
  putFile,
  putIndex,
  putTable,
  s3Writer,
} from "./_bucket_fixture.ts";
import { runCli, type S3Server, startS3Server, tempDir } from "./_helpers.ts";

const HOST = NAMING.name;

async function localKeys(store: LocalStore, prefix = ""): Promise<string[]> {
  return (await Array.fromAsync(store.list(prefix))).map((i) => i.key);
}

async function s3Keys(s3: S3Server): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.client.send(
      new ListObjectsV2Command({ Bucket: s3.bucket, ContinuationToken: token }),
    );
    for (const item of page.Contents ?? []) keys.push(item.Key!);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys.sort();
}

Deno.test("chop keeps young indexes, each table's newest index, their files and young objects", async (t) => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const w = localWriter(store);
  const ago = (days: number) => new Date(Date.now() - days * DAY);
  const t1 = "/data/ks/t";
  const file = (dirPath: string, name: string, days: number) =>
    putFile(w, `${dirPath}/${name}`, contentOf(name), { mtime: ago(days) });
  const a = await file(t1, "nb-1-big-Data.db", 40);
  const b = await file(t1, "nb-1-big-Index.db", 40);
  const idx1 = await putIndex(w, `${t1}/nb-1-big-Data.db`, [
    "nb-1-big-Data.db",
    "nb-1-big-Index.db",
  ], {
    mtime: ago(40),
  });
  const c = await file(t1, "nb-2-big-Data.db", 20);
  const idx2 = await putIndex(w, `${t1}/nb-2-big-Data.db`, [
    "nb-1-big-Index.db",
    "nb-2-big-Data.db",
  ], {
    mtime: ago(20),
  });
  const d = await file(t1, "nb-3-big-Data.db", 2);
  const idx3 = await putIndex(
    w,
    `${t1}/nb-3-big-Data.db`,
    ["nb-2-big-Data.db", "nb-3-big-Data.db"],
    {
      mtime: ago(2),
    },
  );
  const e = await file(t1, "orphan-Data.db", 40);
  const f = await file(t1, "fresh-no-index-yet-Data.db", 1);
  // A table nobody wrote to for a month: its newest index and files stay.
  const t2 = "/data/ks/u";
  const g = await file(t2, "nb-1-big-Data.db", 30);
  const h = await file(t2, "nb-0-big-Data.db", 30);
  const idxU = await putIndex(w, `${t2}/nb-1-big-Data.db`, ["nb-1-big-Data.db"], {
    mtime: ago(30),
  });
  const before = await localKeys(store);
  const kept = [c, d, f, g, idx3, idxU].sort();
  const deleted = [a, b, e, h, idx1, idx2].sort();
  const args = ["chop", "-n", HOST, `file://${store.root}`, "/data/ks/", "7"];

  await t.step("-d deletes nothing and reports what it would delete", async () => {
    const out = await runCli(["chop", "-d", "-l", ...args.slice(1)]);
    assertEquals(out.code, 0, out.stderr);
    // -l names exactly the keys a real run deletes; nothing is deleted.
    const listed = out.stdout.split("\n").filter((l) => l.startsWith("would delete "));
    assertEquals(listed.map((l) => l.slice("would delete ".length)).sort(), deleted);
    assertEquals(await localKeys(store), before);
  });

  await t.step("a real run deletes exactly the rest", async () => {
    const out = await runCli([...args.slice(0, 1), "-l", ...args.slice(1)]);
    assertEquals(out.code, 0, out.stderr);
    assertEquals(await localKeys(store), kept);
  });

  await t.step("running again deletes nothing more", async () => {
    const result = await chop({
      store,
      naming: NAMING,
      path: "/data/ks/",
      ageDays: 7,
      print: () => {},
    });
    assertEquals([result.kept, result.deleted], [6, 0]);
  });

  await t.step(
    "a clock in the future ages everything but the newest indexes and their files",
    async () => {
      const result = await chop({
        store,
        naming: NAMING,
        path: "/data/ks/",
        ageDays: 7,
        now: new Date(Date.now() + 60 * DAY),
        print: () => {},
      });
      assertEquals(result.deleted, 1); // f: never named by an index, now old
      assertEquals(await localKeys(store), [c, d, g, idx3, idxU].sort());
    },
  );
});

Deno.test("chop deletes nothing when an index it needs is broken, or there is no index", async (t) => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const w = localWriter(store);
  const old = new Date(Date.now() - 30 * DAY);
  const bucket = `file://${store.root}`;

  await t.step("a broken newest index aborts, naming it", async () => {
    await putFile(w, "/data/ks/t/nb-1-big-Data.db", contentOf("x"), { mtime: old });
    await putFile(w, "/data/ks/t/orphan", contentOf("y"), { mtime: old });
    const broken = await putIndex(
      w,
      "/data/ks/t/nb-1-big-Data.db",
      '{"/data/ks/t": ["a"], "b": []}',
      {
        mtime: old,
      },
    );
    const before = await localKeys(store);
    const out = await runCli(["chop", "-n", HOST, bucket, "/data/ks", "7"]);
    assertEquals(out.code, 1);
    assertStringIncludes(out.stderr, `Cannot read index '${broken}', nothing deleted`);
    assertStringIncludes(out.stderr, "exactly one member");
    assertEquals(await localKeys(store), before);
  });

  await t.step("no index under the prefix aborts", async () => {
    await putFile(w, "/data/other/t/nb-1-big-Data.db", contentOf("z"), { mtime: old });
    const out = await runCli(["chop", "-n", HOST, bucket, "/data/other", "7"]);
    assertEquals(out.code, 1);
    assertStringIncludes(out.stderr, "No index under 'cass1.example.com:/data/other'");
    assertEquals((await localKeys(store, key(NAMING, "/data/other"))).length, 1);
  });

  await t.step("bad arguments are usage errors", async () => {
    const out = await runCli(["chop", "-n", HOST, bucket, "/data", "seven"]);
    assertEquals(out.code, 2);
    const now = await runCli(["chop", "--now", "yesterday", "-n", HOST, bucket, "/data", "7"]);
    assertEquals(now.code, 2);
    assertStringIncludes(now.stderr, "Option '--now' needs an ISO 8601 time");
  });
});

Deno.test("chop on S3: --now ages objects that the server dated today", async () => {
  await using s3 = await startS3Server();
  const w = s3Writer(s3);
  const table = "/var/lib/cassandra/data/ks/t";
  const indexKey = await putTable(w, table, generation(1));
  const names = Array.from({ length: 40 }, (_, i) => `nb-0-big-Old${i}.db`);
  await Promise.all(names.map((n) => putFile(w, `${table}/${n}`, contentOf(n, 10))));
  const keep = [indexKey, ...generation(1).map((n) => key(NAMING, `${table}/${n}`))].sort();
  const base = ["chop", "-n", HOST, s3.bucket, "/var/lib/cassandra/data", "7"];
  const future = new Date(Date.now() + 30 * DAY).toISOString();

  const all = await s3Keys(s3);
  assertEquals(all.length, 46);
  const today = await runCli(base, { env: s3.env });
  assertEquals(today.code, 0, today.stderr);
  assertEquals(await s3Keys(s3), all, "nothing is old today");

  const out = await runCli(["chop", "--now", future, ...base.slice(1)], { env: s3.env });
  assertEquals(out.code, 0, out.stderr);
  assertEquals(await s3Keys(s3), keep);
});

Deno.test("chop deletes in streamed batches of at most 1,000 keys", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const w = localWriter(store);
  const old = new Date(Date.now() - 30 * DAY);
  const table = "/data/ks/t";
  await putTable(w, table, generation(1), { mtime: old });
  for (let i = 0; i < 2050; i++) {
    const k = key(NAMING, `${table}/old-${String(i).padStart(4, "0")}`);
    await store.putBytes(k, new Uint8Array([i & 0xff]), {});
    await Deno.utime(store.dataPath(k), old, old);
  }
  const batches: number[] = [];
  const counting: Store = {
    url: store.url,
    traits: store.traits,
    check: () => store.check(),
    list: (prefix) => store.list(prefix),
    head: (k) => store.head(k),
    get: (k) => store.get(k),
    putBytes: (k, body, options) => store.putBytes(k, body, options),
    putFile: (k, file, options) => store.putFile(k, file, options),
    deleteMany: (keys) => {
      batches.push(keys.length);
      return store.deleteMany(keys);
    },
    close: () => store.close(),
  };
  const result = await chop({
    store: counting,
    naming: NAMING,
    path: table,
    ageDays: 7,
    print: () => {},
  });
  assertEquals(batches, [1000, 1000, 50]);
  assertEquals([result.kept, result.deleted, result.deletedBytes], [6, 2050, 2050]);
  assertEquals((await localKeys(store)).length, 6);
});
