/**
 * Cassandra's file lifecycle against the real watcher: every naming scheme
 * in one tree, the components Cassandra rewrites after writing them
 * (Statistics.db renamed over itself, Summary.db rebuilt, TOC.txt appended
 * to by SAI) found by events, by sweeps and at start-up, and a file that
 * changes during its upload replaced without any delete request. Real
 * tablesnap processes, real files, s3rver or moto, or the local store.
 */
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { assert, assertEquals } from "./_assert.ts";
import { localStore, md5Hex, statJson } from "./_bucket_fixture.ts";
import { startCountingProxy } from "./_counting_proxy.ts";
import {
  bucketKeys,
  headObject,
  objectText,
  runCli,
  type S3Server,
  type Scrape,
  spawnWatcher,
  startS3Server,
  tempDir,
  waitFor,
} from "./_helpers.ts";

const HOST = "testhost";
const UUID_ID = "3g1m_0oe5_2kxx42qmnomqc4sx6a";
const TXN_UUID = "3a5b0c20-0d3e-11ef-9f49-5b1e0a3c6f11";
const encoder = new TextEncoder();

const keyOf = (path: string) => `${HOST}:${path}`;

/** Puts an object the way the Python tablesnap did (`stat`, `md5sum`), plus a marker. */
async function putLikePython(s3: S3Server, path: string, body: string): Promise<void> {
  const bytes = encoder.encode(body);
  await s3.client.send(
    new PutObjectCommand({
      Bucket: s3.bucket,
      Key: keyOf(path),
      Body: bytes,
      Metadata: { stat: statJson(), md5sum: md5Hex(bytes), origin: "python" },
    }),
  );
}

/** A TOC.txt listing these components (plus itself), one per line. */
function toc(components: string[]): string {
  return [...components, "TOC.txt"].join("\n") + "\n";
}

/** Writes each component of a generation (`prefix` + component) with distinct bytes. */
async function writeGeneration(
  dir: string,
  prefix: string,
  components: string[],
): Promise<string[]> {
  const names: string[] = [];
  for (const c of components) {
    const name = `${prefix}${c}`;
    // 0-byte completion markers exist (SAI's *Complete.db).
    await Deno.writeTextFile(`${dir}/${name}`, c.endsWith("Complete.db") ? "" : `${name} bytes`);
    names.push(name);
  }
  await Deno.writeTextFile(`${dir}/${prefix}TOC.txt`, toc(components));
  names.push(`${prefix}TOC.txt`);
  return names;
}

Deno.test("--once -B -r over every naming scheme: no transient objects, an index per real Data.db naming its generation", async () => {
  await using dir = await tempDir();
  await using storeDir = await tempDir("tablesnap-store-");
  const data = `${dir.path}/data`;
  const table = `${data}/ks/users-1b2c3d4e5f60718293a4b5c6d7e8f901`;
  const legacy = `${data}/ks_old/users`;
  const secondary = `${table}/.users_email_idx`;
  const backups = `${table}/backups`;
  const snapshot = `${table}/snapshots/1712345678901-before_upgrade`;
  for (const d of [table, legacy, secondary, backups, snapshot]) {
    await Deno.mkdir(d, { recursive: true });
  }
  const big = ["Data.db", "Index.db", "Summary.db", "Statistics.db", "Filter.db", "CRC.db"];
  const sai = ["SAI+aa+idx+TermsData.db", "SAI+aa+idx+Meta.db", "SAI+aa+GroupComplete.db"];
  const bti = ["Data.db", "Partitions.db", "Rows.db", "Statistics.db", "Filter.db"];
  /** Generation prefix -> its directory and component names: what each index must name. */
  const generations = new Map<string, { dir: string; names: string[] }>();
  const add = async (d: string, prefix: string, components: string[]) => {
    const names = await writeGeneration(d, prefix, components);
    generations.set(`${d}/${prefix}`, { dir: d, names });
    return names;
  };
  const nb7 = await add(table, "nb-7-big-", [...big, ...sai]);
  await add(table, "nb-70-big-", big); // must not be mistaken for generation 7
  await add(table, `nb-${UUID_ID}-big-`, big);
  const da1 = await add(table, "da-1-bti-", bti);
  await add(secondary, "nb-2-big-", ["Data.db", "Index.db", "Statistics.db"]);
  await add(legacy, "ks_old-users-ka-7-", ["Data.db", "Index.db", "Statistics.db", "Digest.sha1"]);
  // Incremental backups and a snapshot: hard links, the snapshot with its manifest and schema.
  generations.set(`${backups}/nb-7-big-`, { dir: backups, names: nb7 });
  for (const n of nb7) await Deno.link(`${table}/${n}`, `${backups}/${n}`);
  generations.set(`${snapshot}/nb-7-big-`, { dir: snapshot, names: nb7 });
  generations.set(`${snapshot}/da-1-bti-`, { dir: snapshot, names: da1 });
  for (const n of [...nb7, ...da1]) await Deno.link(`${table}/${n}`, `${snapshot}/${n}`);
  await Deno.writeTextFile(
    `${snapshot}/manifest.json`,
    JSON.stringify({ files: [...nb7, ...da1] }),
  );
  await Deno.writeTextFile(`${snapshot}/schema.cql`, "CREATE TABLE IF NOT EXISTS ks.users (...);");
  // Transient files: none may become an object or be named by an index.
  const transient = [
    `${table}/nb_txn_flush_${TXN_UUID}.log`,
    `${table}/nb_txn_compaction_${TXN_UUID}.log`,
    `${table}/nb-7-big-Statistics.db.tmp`,
    `${table}/nb-9-big-Data.db.${TXN_UUID}.tmp`,
    `${legacy}/ks_old-users-tmp-ka-8-Data.db`,
    `${legacy}/ks_old-users-tmplink-ka-9-Data.db`,
  ];
  for (const path of transient) await Deno.writeTextFile(path, "transient");

  const run = await runCli(
    ["-B", "--once", "-r", "-n", HOST, "--index-wait", "20", `file://${storeDir.path}`, data],
  );
  assertEquals(run.code, 0, run.stderr);

  const store = await localStore(storeDir.path);
  const keys = new Set((await Array.fromAsync(store.list(keyOf(data)))).map((o) => o.key));
  const expected = new Set<string>();
  for (const { dir: d, names } of generations.values()) {
    for (const n of names) expected.add(keyOf(`${d}/${n}`));
  }
  expected.add(keyOf(`${snapshot}/manifest.json`));
  expected.add(keyOf(`${snapshot}/schema.cql`));
  const dataFiles = [...generations].map(([prefix]) => `${prefix}Data.db`);
  for (const d of dataFiles) expected.add(`${keyOf(d)}-listdir.json`);
  assertEquals([...keys].sort(), [...expected].sort(), run.stderr);
  for (const path of transient) assert(!keys.has(keyOf(path)), `${path} not uploaded`);
  assert(
    ![...keys].some((k) => k.includes("TermsData.db-listdir.json")),
    "no index for an SAI TermsData part",
  );

  // Each index: its directory, its whole generation, nothing transient, nothing not stored.
  for (const [prefix, { dir: d, names }] of generations) {
    const indexKey = `${keyOf(`${prefix}Data.db`)}-listdir.json`;
    const object = await store.get(indexKey);
    assert(object, `index of ${prefix}Data.db`);
    const index = JSON.parse(await new Response(object.body).text());
    assertEquals(Object.keys(index), [d], indexKey);
    const named: string[] = index[d];
    for (const n of names) assert(named.includes(n), `${indexKey} names ${n}`);
    for (const n of named) {
      assert(keys.has(keyOf(`${d}/${n}`)), `${n}, named by ${indexKey}, is in the bucket`);
      assert(!transient.includes(`${d}/${n}`), `${indexKey} names no transient file (${n})`);
    }
    if (d === snapshot) {
      assert(named.includes("manifest.json") && named.includes("schema.cql"), indexKey);
    }
  }
});

Deno.test("a Statistics.db renamed over itself at the same size, a rebuilt Summary.db and an appended TOC.txt are uploaded again; a Data.db is not", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const table = `${dir.path}/ks/t1-0a1b`;
  await Deno.mkdir(table, { recursive: true });
  await using watcher = spawnWatcher(
    ["-r", "-a", "-n", HOST, "--settle-seconds", "1", s3.bucket, dir.path],
    { env: s3.env },
  );
  await watcher.waitUntilWatching();
  const path = (name: string) => `${table}/${name}`;
  const uploaded = (n: number) => (m: Scrape) =>
    m.get("tablesnap_uploaded_files_total") === n && m.get("tablesnap_pending_files") === 0;

  const components = ["Data.db", "Index.db", "Statistics.db", "Summary.db"];
  await Deno.writeTextFile(path("nb-1-big-Statistics.db"), "statistics: repairedAt=0");
  await Deno.writeTextFile(path("nb-1-big-Summary.db"), "summary v1");
  await Deno.writeTextFile(path("nb-1-big-Data.db"), "data");
  await Deno.writeTextFile(path("nb-1-big-Index.db"), "index");
  await Deno.writeTextFile(path("nb-1-big-TOC.txt"), toc(components));
  await watcher.waitForMetrics("the generation uploaded", uploaded(5));
  await waitFor(
    "its index",
    () => headObject(s3, `${keyOf(path("nb-1-big-Data.db"))}-listdir.json`),
  );

  // Repair marks it repaired: written to .tmp, renamed over the old file, same size.
  const statistics = "statistics: repairedAt=7";
  await Deno.writeTextFile(path("nb-1-big-Statistics.db.tmp"), statistics);
  await Deno.rename(path("nb-1-big-Statistics.db.tmp"), path("nb-1-big-Statistics.db"));
  // Index summary redistribution rewrites the Summary.db in place, same size.
  await Deno.writeTextFile(path("nb-1-big-Summary.db"), "summary v2");
  // SAI appends its components to the TOC.
  const saiToc = toc([...components, "SAI+aa+GroupComplete.db"]);
  await Deno.writeTextFile(path("nb-1-big-TOC.txt"), saiToc);
  // An immutable component rewritten with another size: left alone.
  await Deno.writeTextFile(path("nb-1-big-Data.db"), "data, damaged and longer");
  // Written last: once it is up and nothing is pending, the rest has been decided.
  await Deno.writeTextFile(path("nb-2-big-Index.db"), "written last");
  const metrics = await watcher.waitForMetrics("the changes decided", uploaded(5 + 3 + 1));

  assertEquals(await objectText(s3, keyOf(path("nb-1-big-Statistics.db"))), statistics);
  assertEquals(await objectText(s3, keyOf(path("nb-1-big-Summary.db"))), "summary v2");
  assertEquals(await objectText(s3, keyOf(path("nb-1-big-TOC.txt"))), saiToc);
  assertEquals(await objectText(s3, keyOf(path("nb-1-big-Data.db"))), "data", "Data.db left alone");
  const statsHead = await headObject(s3, keyOf(path("nb-1-big-Statistics.db")));
  assertEquals(statsHead?.Metadata?.md5sum, md5Hex(encoder.encode(statistics)));
  const mtime = (await Deno.stat(path("nb-1-big-Statistics.db"))).mtime!;
  assertEquals(statsHead?.Metadata?.mtime, mtime.toISOString(), "mtime metadata");
  // `stat` keeps exactly the fields the Python tableslurp reads.
  assertEquals(
    Object.keys(JSON.parse(statsHead!.Metadata!.stat!)).filter((k) =>
      !["user", "group"].includes(k)
    ),
    ["uid", "gid", "mode"],
  );
  assert(!(await bucketKeys(s3)).has(keyOf(path("nb-1-big-Statistics.db.tmp"))), "no .tmp object");
  assertEquals(metrics.sum("tablesnap_upload_failures_total"), 0, metrics.text);
  assertEquals(await watcher.stop(), 0, watcher.stderr());
});

Deno.test("sweeps upload again a mutable component rewritten without an event; an immutable one stays", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const path = (name: string) => `${dir.path}/${name}`;
  await Deno.writeTextFile(path("nb-1-big-Statistics.db"), "level 0");
  await Deno.writeTextFile(path("nb-1-big-Index.db"), "index v1");
  // IN_MOVED_TO only: a file rewritten in place sends no event we listen to,
  // as when the kernel drops events. Only the sweep can find the change.
  await using watcher = spawnWatcher(
    [
      "-B",
      "-n",
      HOST,
      "--without-index",
      "--listen-events",
      "IN_MOVED_TO",
      "--sweep-interval",
      "1",
      "--settle-seconds",
      "1",
      s3.bucket,
      dir.path,
    ],
    { env: { ...s3.env, TDEBUG: "1" } }, // debug lines: "sweep done"
  );
  await watcher.waitForMetrics(
    "the start-up backlog uploaded",
    (m) => m.get("tablesnap_uploaded_files_total") === 2 && m.get("tablesnap_pending_files") === 0,
  );
  await Deno.writeTextFile(path("nb-1-big-Statistics.db"), "level 1");
  await Deno.writeTextFile(path("nb-1-big-Index.db"), "index v2");
  await waitFor(
    "the new Statistics.db in the bucket",
    async () => await objectText(s3, keyOf(path("nb-1-big-Statistics.db"))) === "level 1",
    20_000,
  ).catch((err) => {
    throw new Error(`${err.message}\n${watcher.stderr()}`);
  });
  // Both settled in the same sweep; a few more sweeps change nothing. Counted
  // from the debug log: three more ends mean two whole sweeps began after it.
  const sweeps = () => watcher.stderr().split("sweep done").length - 1;
  const seen = sweeps();
  await waitFor("two more whole sweeps", () => sweeps() >= seen + 3, 20_000);
  const metrics = await watcher.waitForMetrics(
    "nothing pending",
    (m) => m.get("tablesnap_pending_files") === 0,
  );
  assertEquals(metrics.get("tablesnap_uploaded_files_total"), 3, metrics.text);
  assertEquals(await objectText(s3, keyOf(path("nb-1-big-Index.db"))), "index v1");
  assertEquals(await watcher.stop(), 0, watcher.stderr());
});

Deno.test("-B uploads again a mutable component whose bytes differ from its object, with no request per unchanged one", async () => {
  // moto: its multipart ETags are not MD5s, as on S3.
  await using s3 = await startS3Server("test-bucket", { server: "moto" });
  await using dir = await tempDir();
  const table = `${dir.path}/ks/t1-0a1b`;
  await Deno.mkdir(table, { recursive: true });
  const path = (name: string) => `${table}/${name}`;
  /** Local file and object, as the Python tablesnap (or an older run) left them. */
  const both = async (name: string, local: string, remote = local) => {
    await Deno.writeTextFile(path(name), local);
    await putLikePython(s3, path(name), remote);
  };
  // Changed while tablesnap was down, at the same size (repair) or longer (SAI).
  await both("nb-1-big-Statistics.db", "repairedAt=1712345678", "repairedAt=0000000000");
  await both("nb-1-big-TOC.txt", toc(["Data.db", "SAI+aa+GroupComplete.db"]), toc(["Data.db"]));
  // Unchanged mutable components: the listing's ETag (their MD5) is enough.
  for (const n of [1, 2, 3]) await both(`nb-${n}-big-Summary.db`, `summary of ${n}`);
  await both("nb-2-big-Statistics.db", "repairedAt=0");
  await both("nb-2-big-TOC.txt", toc(["Data.db"]));
  // Immutable: another size is left alone, the same size is present.
  await both("nb-1-big-Data.db", "local data, longer", "data");
  await both("nb-1-big-Index.db", "index");
  await both("nb-2-big-Data.db", "data of 2");
  await putLikePython(s3, `${path("nb-2-big-Data.db")}-listdir.json`, "{}");
  // Unchanged, stored multipart: its ETag is no MD5, so a HEAD reads its md5sum.
  const multipart = "statistics of 3";
  await Deno.writeTextFile(path("nb-3-big-Statistics.db"), multipart);
  const key3 = keyOf(path("nb-3-big-Statistics.db"));
  const { UploadId } = await s3.client.send(
    new CreateMultipartUploadCommand({
      Bucket: s3.bucket,
      Key: key3,
      Metadata: { md5sum: md5Hex(encoder.encode(multipart)), origin: "python" },
    }),
  );
  const part = await s3.client.send(
    new UploadPartCommand({
      Bucket: s3.bucket,
      Key: key3,
      UploadId,
      PartNumber: 1,
      Body: multipart,
    }),
  );
  await s3.client.send(
    new CompleteMultipartUploadCommand({
      Bucket: s3.bucket,
      Key: key3,
      UploadId,
      MultipartUpload: { Parts: [{ ETag: part.ETag!, PartNumber: 1 }] },
    }),
  );
  assert((await headObject(s3, key3))?.ETag?.includes("-"), "a multipart ETag");

  await using watcher = spawnWatcher(["-B", "-r", "-n", HOST, s3.bucket, dir.path], {
    env: s3.env,
  });
  const metrics = await watcher.waitForMetrics(
    "the start-up backlog decided",
    (m) => m.get("tablesnap_uploaded_files_total") === 2 && m.get("tablesnap_pending_files") === 0,
  );
  assertEquals(await watcher.stop(), 0, watcher.stderr());

  for (const name of ["nb-1-big-Statistics.db", "nb-1-big-TOC.txt"]) {
    const local = await Deno.readFile(path(name));
    assertEquals(await objectText(s3, keyOf(path(name))), new TextDecoder().decode(local), name);
    const meta = (await headObject(s3, keyOf(path(name))))?.Metadata;
    assertEquals(meta?.md5sum, md5Hex(local), name);
    assertEquals(meta?.origin, undefined, `${name} replaced`);
    assertEquals(meta?.mtime, (await Deno.stat(path(name))).mtime!.toISOString(), name);
  }
  for (
    const name of [
      "nb-1-big-Summary.db",
      "nb-2-big-Summary.db",
      "nb-3-big-Summary.db",
      "nb-2-big-Statistics.db",
      "nb-2-big-TOC.txt",
      "nb-3-big-Statistics.db",
      "nb-1-big-Index.db",
      "nb-2-big-Data.db",
    ]
  ) {
    assertEquals(
      (await headObject(s3, keyOf(path(name))))?.Metadata?.origin,
      "python",
      `${name} kept`,
    );
  }
  assertEquals(await objectText(s3, keyOf(path("nb-1-big-Data.db"))), "data", "Data.db left alone");
  // One listing; a HEAD only for the changed Statistics.db (its ETag differed)
  // and for the multipart one: none for the six unchanged single-part components.
  const requests = (operation: string) =>
    metrics.get("tablesnap_s3_request_duration_seconds_count", { operation }) ?? 0;
  assertEquals(requests("ListObjectsV2"), 1, metrics.text);
  assertEquals(requests("HeadObject"), 2, metrics.text);
});

Deno.test("a Data.db that changes during its upload is replaced by the retry, with no delete request", async () => {
  // Plain HTTP: the counting proxy below reads the requests on the wire.
  await using s3 = await startS3Server(undefined, { tls: false });
  await using dir = await tempDir();
  await using proxy = startCountingProxy(s3.port);
  await using watcher = spawnWatcher(
    ["-n", HOST, "--without-index", "--max-bandwidth", "1M", "--retries", "1", s3.bucket, dir.path],
    { env: { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint } },
  );
  await watcher.waitUntilWatching();
  const path = `${dir.path}/nb-1-big-Data.db`;
  // Over the 4 MiB kept in memory, so the body streams from the file and each
  // chunk waits for --max-bandwidth: the change lands during the send.
  const first = new Uint8Array(5 * 1024 * 1024).fill(1);
  await Deno.writeFile(path, first);
  // At 1 MiB/s the upload takes about 4 s; the file grows once a quarter is sent.
  await waitFor("the upload under way", () => proxy.sent() >= first.length / 4, 20_000);
  const file = await Deno.open(path, { append: true });
  await file.write(new Uint8Array(1024).fill(2));
  file.close();
  const final = await Deno.readFile(path);
  const key = keyOf(path);
  await waitFor("the final version in the bucket", async () => {
    const object = await headObject(s3, key);
    return object?.ContentLength === final.length && object.Metadata?.md5sum === md5Hex(final);
  }, 40_000).catch((err) => {
    throw new Error(`${err.message}\n${watcher.stderr()}`);
  });
  const metrics = await watcher.waitForMetrics(
    "nothing pending",
    (m) => m.get("tablesnap_pending_files") === 0,
  );
  const changed = (metrics.get("tablesnap_upload_retries_total", { reason: "changed" }) ?? 0) +
    (metrics.get("tablesnap_upload_failures_total", { reason: "changed" }) ?? 0);
  assert(changed >= 1, `the change was noticed\n${metrics.text}`);
  assertEquals(metrics.get("tablesnap_uploaded_files_total"), 1, metrics.text);
  // The earlier, complete version was overwritten, not deleted (no s3:DeleteObject).
  const requests = (operation: string) =>
    metrics.get("tablesnap_s3_request_duration_seconds_count", { operation }) ?? 0;
  assertEquals(requests("DeleteObjects") + requests("DeleteObject"), 0, metrics.text);
  assertEquals(requests("PutObject"), 2, metrics.text);
  assertEquals(await watcher.stop(), 0, watcher.stderr());
});
