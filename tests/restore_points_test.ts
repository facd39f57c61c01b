/**
 * Restore points you can trust: whole-directory indexes with exact cut
 * times, `tablesnap list`, `slurp --at`, ties in the same second, refusal of
 * incomplete SSTables, and commit logs up to a point in time. Real watcher,
 * real files, s3rver and the local store.
 */
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { key, localStore, localWriter, NAMING, putFile, putIndex } from "./_bucket_fixture.ts";
import { delay, runCli, spawnWatcher, startS3Server, tempDir, waitFor } from "./_helpers.ts";
import { chooseRestorePoint, CUT_TIME_METADATA } from "../lib/bucket/index_reader.ts";
import { indexBody } from "../lib/bucket/index_body.ts";
import type { Store } from "../lib/store/store.ts";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";

const MB = 1024 * 1024;
const COMPONENTS = ["Data.db", "Index.db", "Filter.db", "Statistics.db", "TOC.txt"];

/** Bytes of a component: distinct per name, `size` long. */
function bytesOf(name: string, size = 200 + name.length): Uint8Array {
  const out = new Uint8Array(size);
  let x = 7;
  for (const c of name) x = (x * 31 + c.charCodeAt(0)) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Writes one flushed SSTable generation as Cassandra does: components, then the TOC. */
async function flush(dir: string, gen: number, dataBytes?: number): Promise<string[]> {
  const names = COMPONENTS.map((c) => `nb-${gen}-big-${c}`);
  for (const name of names.filter((n) => !n.endsWith("TOC.txt"))) {
    const size = name.endsWith("Data.db") ? dataBytes : undefined;
    await Deno.writeFile(`${dir}/${name}`, bytesOf(name, size));
  }
  await Deno.writeTextFile(`${dir}/nb-${gen}-big-TOC.txt`, COMPONENTS.join("\n") + "\n");
  return names;
}

async function treeFiles(root: string, rel = ""): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for await (const entry of Deno.readDir(`${root}${rel}`)) {
    const path = `${rel}/${entry.name}`;
    if (entry.isDirectory) { for (const [p, b] of await treeFiles(root, path)) out.set(p, b); }
    else out.set(path, await Deno.readFile(`${root}${path}`));
  }
  return out;
}

async function assertSameTree(restored: string, original: string): Promise<void> {
  const want = await treeFiles(original);
  const got = await treeFiles(restored);
  assertEquals([...got.keys()].sort(), [...want.keys()].sort());
  for (const [path, bytes] of want) assertEquals(got.get(path), bytes, path);
}

for (const server of ["local store", "s3rver"] as const) {
  Deno.test(`a -B --once backup of a finished tree restores whole with slurp -r (${server})`, async () => {
    await using work = await tempDir();
    await using s3 = server === "s3rver" ? await startS3Server() : undefined;
    const bucket = s3 ? s3.bucket : `file://${work.path}/bucket`;
    if (!s3) await Deno.mkdir(`${work.path}/bucket`);
    const env = s3?.env ?? {};
    const data = `${work.path}/data`;
    // Several generations per table, two of them with multipart Data.db files.
    for (const [table, gens] of [["ks1/t1-aa", [1, 2, 3]], ["ks1/t2-bb", [4, 5]]] as const) {
      await Deno.mkdir(`${data}/${table}`, { recursive: true });
      for (const gen of gens) await flush(`${data}/${table}`, gen, gen % 3 === 2 ? 6 * MB : 4096);
    }
    const up = await runCli([
      "-n",
      "h",
      "-r",
      "-B",
      "--once",
      "--max-upload-size",
      "5",
      "--multipart-chunk-size",
      "5",
      bucket,
      data,
    ], { env });
    assertEquals(up.code, 0, up.stderr);
    // Every index of the backlog names its whole directory.
    const list = await runCli(["list", "-n", "h", "--json", bucket, data], { env });
    assertEquals(list.code, 0, list.stdout + list.stderr);
    const points = list.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(points.length, 5);
    for (const p of points) {
      assertEquals(p.files, p.directory.endsWith("t1-aa") ? 15 : 10, JSON.stringify(p));
      assertEquals(p.complete, true);
    }
    const target = `${work.path}/restore`;
    const out = await runCli(["slurp", "-n", "h", "-r", bucket, data, target], { env });
    assertEquals(out.code, 0, out.stdout + out.stderr);
    await assertSameTree(target, data);
  });
}

Deno.test("slurp --at restores the live set of that moment, also after compaction (s3rver)", async () => {
  await using s3 = await startS3Server();
  await using work = await tempDir();
  const data = `${work.path}/data`;
  const table = `${data}/ks/t-cc`;
  await Deno.mkdir(table, { recursive: true });
  await using watcher = spawnWatcher(["-n", "h", "-r", s3.bucket, data], { env: s3.env });
  await watcher.waitUntilWatching();
  const indexes = async () => {
    const out = await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
    return (out.Contents ?? []).map((o) => o.Key ?? "").filter((k) => k.endsWith("-listdir.json"));
  };
  const waitIndex = (gen: number) =>
    waitFor(
      `index of generation ${gen}`,
      async () => (await indexes()).some((k) => k.includes(`nb-${gen}-big-Data.db`)),
    );

  const gen1 = await flush(table, 1);
  await waitIndex(1);
  await delay(20);
  const afterFirst = new Date();
  await delay(20);
  const gen2 = await flush(table, 2);
  await waitIndex(2);
  await delay(20);
  const afterSecond = new Date();
  await delay(20);
  // Compaction: the new generation is written, then its inputs are deleted.
  const gen3 = await flush(table, 3);
  for (const name of [...gen1, ...gen2]) await Deno.remove(`${table}/${name}`);
  await waitIndex(3);
  assertEquals(await watcher.stop(), 0);

  const restore = async (at: Date | undefined, into: string) => {
    const args = ["slurp", "-n", "h", ...(at ? ["--at", at.toISOString()] : [])];
    const out = await runCli([...args, s3.bucket, table, into], { env: s3.env });
    assertEquals(out.code, 0, out.stdout + out.stderr);
    return [...(await treeFiles(into)).keys()].map((p) => p.slice(1)).sort();
  };
  assertEquals(await restore(afterFirst, `${work.path}/r1`), [...gen1].sort());
  assertEquals(await restore(afterSecond, `${work.path}/r2`), [...gen1, ...gen2].sort());
  assertEquals(await restore(undefined, `${work.path}/r3`), [...gen3].sort());
  // The restored bytes are the flushed bytes.
  for (const name of gen1.filter((n) => !n.endsWith("TOC.txt"))) {
    assertEquals(await Deno.readFile(`${work.path}/r2/${name}`), bytesOf(name));
  }

  // --at before the first point: one line naming the directory and its oldest point.
  const early = await runCli(
    ["slurp", "-n", "h", "--at", "2020-01-01T00:00:00Z", s3.bucket, table, `${work.path}/r0`],
    { env: s3.env },
  );
  assertEquals(early.code, 1);
  assertStringIncludes(early.stderr, `error: No restore point of '${table}' at or before`);
  assertStringIncludes(early.stderr, "its oldest is 20");
  assertEquals(early.stderr.trim().split("\n").length, 1, early.stderr);

  // list marks the newest point, and with --at the one slurp --at would use.
  const list = await runCli(
    ["list", "-n", "h", "--json", "--at", afterFirst.toISOString(), s3.bucket, data],
    { env: s3.env },
  );
  const points = list.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assertEquals(points.map((p) => p.index.replace(/.*\//, "")), [
    "nb-1-big-Data.db-listdir.json",
    "nb-2-big-Data.db-listdir.json",
    "nb-3-big-Data.db-listdir.json",
  ]);
  assertEquals(points.map((p) => [p.files, p.newest, p.at_choice]), [
    [5, false, true],
    [10, false, false],
    [5, true, false],
  ]);
  for (const p of points) {
    assertEquals(p.directory, table);
    assertEquals(p.exact_time, true);
    assert(Date.parse(p.time) > 0 && p.time.endsWith("Z"), p.time);
  }
  // Compaction deleted the older generations' objects? No: nothing deletes them but chop.
  assertEquals(points.every((p) => p.complete && p.missing.length === 0), true);
  assertEquals(list.code, 0);
});

/** Puts an index with a given LastModified and, optionally, a recorded cut time. */
async function putPoint(
  store: Store & { dataPath(key: string): string },
  data: string,
  names: string[],
  modified: Date,
  cut?: Date,
): Promise<string> {
  const k = key(NAMING, `/d/t/${data}`) + "-listdir.json";
  await store.putBytes(k, new TextEncoder().encode(indexBody("/d/t", names)), {
    contentType: "application/json",
    metadata: cut ? { [CUT_TIME_METADATA]: cut.toISOString() } : {},
  });
  await Deno.utime(store.dataPath(k), modified, modified);
  return k;
}

Deno.test("indexes in the same second are ordered by their cut times, Python ties by size", async () => {
  await using dir = await tempDir("tablesnap-store-");
  const store = await localStore(dir.path);
  const second = new Date("2026-11-30T10:00:05.000Z");
  // The higher generation was cut first: generation order alone would pick it.
  const early = await putPoint(
    store,
    "nb-9-big-Data.db",
    ["a"],
    second,
    new Date("2026-11-30T10:00:04.100Z"),
  );
  const late = await putPoint(
    store,
    "nb-3-big-Data.db",
    ["a", "b"],
    second,
    new Date("2026-11-30T10:00:04.900Z"),
  );
  const infos = [];
  for await (const info of store.list(key(NAMING, "/d/t/"))) infos.push(info);
  assertEquals((await chooseRestorePoint(store, infos))?.info.key, late);
  assertEquals(
    (await chooseRestorePoint(store, infos, new Date("2026-11-30T10:00:04.500Z")))?.info.key,
    early,
  );
  assertEquals(await chooseRestorePoint(store, infos, new Date("2026-11-30T10:00:04.000Z")), null);
  // What a caller read already (list reads every index) is not asked again.
  const known = new Map([
    [early, { cut: new Date("2026-11-30T10:00:04.100Z"), files: 1 }],
    [late, { cut: new Date("2026-11-30T10:00:04.900Z"), files: 2 }],
  ]);
  const noHead = Object.assign(Object.create(null), {
    head: () => Promise.reject(new Error("HEAD of an index already read")),
    get: () => Promise.reject(new Error("GET of an index already read")),
  }) as Store;
  assertEquals((await chooseRestorePoint(noHead, infos, undefined, known))?.info.key, late);

  // Written by the Python tablesnap: no cut times, one second for a whole backlog.
  await using py = await tempDir("tablesnap-store-");
  const pyStore = await localStore(py.path);
  await putPoint(pyStore, "nb-5-big-Data.db", ["x"], second);
  const most = await putPoint(pyStore, "nb-2-big-Data.db", ["x", "y", "z"], second);
  await putPoint(pyStore, "nb-1-big-Data.db", ["x"], new Date(second.getTime() - 60_000));
  const pyInfos = [];
  for await (const info of pyStore.list(key(NAMING, "/d/t/"))) pyInfos.push(info);
  assertEquals((await chooseRestorePoint(pyStore, pyInfos))?.info.key, most);
});

Deno.test("a Python-style bucket with tied indexes restores the most complete one", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const w = localWriter(store);
  const table = "/var/lib/cassandra/data/ks/t";
  const names = COMPONENTS.flatMap((c) => [`nb-1-big-${c}`, `nb-2-big-${c}`]);
  for (const name of names) {
    const body = name.endsWith("TOC.txt")
      ? new TextEncoder().encode(COMPONENTS.join("\n"))
      : bytesOf(name);
    await putFile(w, `${table}/${name}`, body);
  }
  const second = new Date("2026-11-30T10:00:05.000Z");
  // The backlog's indexes, cut while the directory was uploading: the later
  // generation's names fewer files.
  await putIndex(w, `${table}/nb-2-big-Data.db`, names.filter((n) => n.startsWith("nb-2")), {
    mtime: second,
  });
  await putIndex(w, `${table}/nb-1-big-Data.db`, names, { mtime: second });
  const target = `${dir.path}/restore`;
  const out = await runCli([
    "slurp",
    "-n",
    NAMING.name,
    `file://${dir.path}/bucket`,
    table,
    target,
  ]);
  assertEquals(out.code, 0, out.stdout + out.stderr);
  assertEquals([...(await treeFiles(target)).keys()].length, names.length);
});

Deno.test("slurp -r --at skips tables created later and writes the commit log replay point", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const w = localWriter(store);
  const data = "/var/lib/cassandra/data";
  const logs = "/var/lib/cassandra/commitlog";
  const t0 = Date.parse("2026-11-30T10:00:00.000Z");
  const at = new Date(t0 + 3_600_000 + 1_500); // 11:00:01.500
  const put = async (table: string, gen: number, time: number) => {
    const names = COMPONENTS.map((c) => `nb-${gen}-big-${c}`);
    for (const name of names) {
      const body = name.endsWith("TOC.txt")
        ? new TextEncoder().encode(COMPONENTS.join("\n"))
        : bytesOf(name);
      await putFile(w, `${data}/${table}/${name}`, body, { mtime: new Date(time) });
    }
    await putIndex(w, `${data}/${table}/nb-${gen}-big-Data.db`, names, { mtime: new Date(time) });
  };
  await put("ks/old", 1, t0);
  await put("ks/new", 1, t0 + 7_200_000); // created after --at
  const segment = (created: number) => `CommitLog-7-${created}.log`;
  const segments = {
    before: segment(t0 - 600_000), // closed before the oldest point
    during: segment(t0 + 600_000),
    straddling: segment(t0 - 60_000), // created before, uploaded after the point
    after: segment(at.getTime() + 1), // holds nothing up to --at
  };
  await putFile(w, `${logs}/${segments.before}`, bytesOf("b"), { mtime: new Date(t0 - 300_000) });
  await putFile(w, `${logs}/${segments.during}`, bytesOf("d"), { mtime: new Date(t0 + 900_000) });
  await putFile(w, `${logs}/${segments.straddling}`, bytesOf("s"), {
    mtime: new Date(t0 + 60_000),
  });
  await putFile(w, `${logs}/${segments.after}`, bytesOf("a"), { mtime: new Date(t0 + 9e6) });
  const target = `${dir.path}/restore`;
  const args = ["slurp", "-n", NAMING.name, "-r", "--at", at.toISOString(), "--commitlogs", logs];
  const plan = await runCli([...args, "--plan", `file://${dir.path}/bucket`, data, target]);
  assertEquals(plan.code, 0, plan.stderr);
  assertStringIncludes(
    plan.stdout,
    `No restore point by then, not restored (1):\n  ${data}/ks/new`,
  );
  assertStringIncludes(plan.stdout, "restore_point_in_time=2026:11:30 11:00:01");
  const out = await runCli([...args, `file://${dir.path}/bucket`, data, target]);
  assertEquals(out.code, 0, out.stdout + out.stderr);
  assertStringIncludes(out.stdout, "Commit log replay: restore_point_in_time=2026:11:30 11:00:01");
  const restored = [...(await treeFiles(target)).keys()].sort();
  assertEquals(
    restored.filter((p) => p.startsWith("/commitlogs/")),
    [
      "/commitlogs/commitlog_archiving.properties.tablesnap",
      `/commitlogs/${segments.straddling}`,
      `/commitlogs/${segments.during}`,
    ].sort(),
  );
  assertEquals(restored.filter((p) => p.startsWith("/ks/")).length, 5);
  const properties = await Deno.readTextFile(
    `${target}/commitlogs/commitlog_archiving.properties.tablesnap`,
  );
  assertStringIncludes(properties, "\nrestore_point_in_time=2026:11:30 11:00:01\n");
  assertStringIncludes(properties, `\nrestore_directories=${target}/commitlogs\n`);
  assertStringIncludes(properties, "\nrestore_command=/bin/cp -f %from %to\n");

  // A malformed time is a usage error naming it.
  const bad = await runCli(["slurp", "--at", "yesterday", "file:///x", data, target]);
  assertEquals(bad.code, 2);
  assertStringIncludes(bad.stderr, "Option '--at' needs an ISO 8601 time with a zone");
  assertStringIncludes(bad.stderr, "'yesterday'");
});
