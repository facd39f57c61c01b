/**
 * End-to-end tests of the watcher: a real s3rver process, a real tablesnap
 * process, real files and real inotify. The bucket is checked with our own
 * S3 client, field by field against the contract.
 */
import {
  GetObjectCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { localStore } from "./_bucket_fixture.ts";
import { startCountingProxy } from "./_counting_proxy.ts";
import {
  bucketKeys,
  delay,
  headObject,
  objectText,
  runCli,
  type S3Server,
  type Scrape,
  spawnCli,
  spawnWatcher,
  startS3Server,
  tempDir,
  waitFor,
} from "./_helpers.ts";

const HOST = "testhost";

function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/** Writes a file the way Cassandra 3+ does: directly under its final name. */
async function writeFile(path: string, bytes: Uint8Array | string): Promise<Uint8Array> {
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  await Deno.writeFile(path, data);
  return data;
}

Deno.test("watcher uploads close-written, renamed, hard-linked and new-directory files with the contract's layout", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const data = `${dir.path}/data`;
  const table = `${data}/ks/users-1b2c`;
  await Deno.mkdir(table, { recursive: true });
  await using watcher = spawnWatcher(
    [
      "-r",
      "-a",
      "-n",
      HOST,
      "--settle-seconds",
      "1",
      "--max-upload-size",
      "1",
      "--multipart-chunk-size",
      "5",
      s3.bucket,
      data,
    ],
    { env: s3.env },
  );
  await watcher.waitUntilWatching();
  const key = (path: string) => `${HOST}:${path}`;

  // 1. An SSTable generation written directly under final names, TOC last.
  const components = ["Data.db", "Index.db", "Filter.db", "Statistics.db", "Summary.db"];
  const written = new Map<string, Uint8Array>();
  for (const c of components) {
    written.set(
      `nb-1-big-${c}`,
      await writeFile(`${table}/nb-1-big-${c}`, `${c} bytes of generation 1`),
    );
  }
  written.set(
    "nb-1-big-TOC.txt",
    await writeFile(`${table}/nb-1-big-TOC.txt`, [...components, "TOC.txt"].join("\n") + "\n"),
  );
  // 2. Older style: written under -tmp, then renamed into place.
  const tmpPath = `${table}/ks-users-tmp-ka-2-Data.db`;
  written.set("ks-users-ka-2-Data.db", await writeFile(tmpPath, "renamed into place"));
  await Deno.rename(tmpPath, `${table}/ks-users-ka-2-Data.db`);
  // 3. A hard link into backups/ (incremental backups).
  await Deno.mkdir(`${table}/backups`);
  await Deno.link(`${table}/nb-1-big-Index.db`, `${table}/backups/nb-1-big-Index.db`);
  // 4. A directory created and written at once (new table).
  await Deno.mkdir(`${data}/ks/new_table-9f/sub`, { recursive: true });
  const fresh = await writeFile(`${data}/ks/new_table-9f/sub/nb-3-big-Index.db`, "fresh");
  // 5. A multipart-sized file (12 MiB with 1 MB threshold and 5 MB parts).
  const big = new Uint8Array(12 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) % 251;
  await writeFile(`${table}/nb-5-big-Index.db`, big);
  // 6. A file deleted right after it is written (compaction).
  await writeFile(`${table}/nb-4-big-Index.db`, "short-lived");
  await Deno.remove(`${table}/nb-4-big-Index.db`);

  const expected = [
    ...[...written.keys()].map((n) => `${table}/${n}`),
    `${table}/backups/nb-1-big-Index.db`,
    `${data}/ks/new_table-9f/sub/nb-3-big-Index.db`,
    `${table}/nb-5-big-Index.db`,
    `${table}/nb-1-big-Data.db-listdir.json`,
    `${table}/ks-users-ka-2-Data.db-listdir.json`,
  ].map(key);
  await waitFor("every object", async () => {
    const keys = await bucketKeys(s3);
    return expected.every((k) => keys.has(k));
  }, 30_000).catch((err) => {
    throw new Error(`${err.message}\n${watcher.stderr()}`);
  });

  // Contract: metadata of a single-part upload.
  const dataKey = key(`${table}/nb-1-big-Data.db`);
  const dataHead = await headObject(s3, dataKey);
  const dataBytes = written.get("nb-1-big-Data.db")!;
  assertEquals(dataHead?.ContentLength, dataBytes.length);
  assertEquals(dataHead?.Metadata?.md5sum, md5(dataBytes));
  const stat = JSON.parse(dataHead!.Metadata!.stat!);
  const local = await Deno.stat(`${table}/nb-1-big-Data.db`);
  assertEquals(stat.uid, local.uid);
  assertEquals(stat.gid, local.gid);
  assertEquals(stat.mode, local.mode);
  assertEquals(typeof stat.user, "string");
  assertMatch(dataHead!.Metadata!.stat!, /^\{"uid": \d+, "gid": \d+, "mode": \d+/);

  // Contract: the index names exactly the generation (and nothing not uploaded).
  const indexKey = `${dataKey}-listdir.json`;
  const indexHead = await headObject(s3, indexKey);
  assertEquals(indexHead?.ContentType, "application/json");
  const index = JSON.parse(await objectText(s3, indexKey) ?? "missing");
  assertEquals(Object.keys(index), [table]);
  const named: string[] = index[table];
  for (const c of [...components, "TOC.txt"]) {
    assert(named.includes(`nb-1-big-${c}`), `index names ${c}`);
  }
  assert(!named.some((n) => n.includes("-tmp")), "no -tmp file in the index");
  const keys = await bucketKeys(s3);
  for (const n of named) {
    assert(keys.has(key(`${table}/${n}`)), `${n} named by the index is in the bucket`);
  }

  // Multipart: md5sum metadata of the whole file, bytes intact.
  const bigKey = key(`${table}/nb-5-big-Index.db`);
  assertEquals((await headObject(s3, bigKey))?.Metadata?.md5sum, md5(big));
  const bigBack =
    await (await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: bigKey })))
      .Body!.transformToByteArray();
  assertEquals(md5(bigBack), md5(big));
  // Every file has been dealt with: what /metrics says now is final.
  const metrics = await watcher.waitForMetrics(
    "nothing pending",
    (m) => m.get("tablesnap_pending_files") === 0,
  );
  const requests = (operation: string) =>
    metrics.get("tablesnap_s3_request_duration_seconds_count", { operation });
  // 12 MiB in 5 MiB parts: one multipart upload of 3 parts.
  assertEquals(requests("CreateMultipartUpload"), 1, metrics.text);
  assertEquals(requests("UploadPart"), 3, metrics.text);
  assertEquals(requests("CompleteMultipartUpload"), 1, metrics.text);

  // New directory content and hard link.
  assertEquals(keys.get(key(`${data}/ks/new_table-9f/sub/nb-3-big-Index.db`)), fresh.length);
  // The -tmp file and the short-lived file never became objects.
  assert(!keys.has(key(tmpPath)), "-tmp file not uploaded");
  assert(!keys.has(key(`${table}/nb-4-big-Index.db`)), "deleted file not uploaded");
  // One upload per file (the 10 above; indexes are not counted), even
  // though Deno reports renames twice.
  assertEquals(metrics.get("tablesnap_uploaded_files_total"), 10, metrics.text);
  // Nothing failed, nothing was retried, and the watcher is healthy.
  assertEquals(metrics.sum("tablesnap_upload_failures_total"), 0, metrics.text);
  assertEquals(metrics.sum("tablesnap_upload_retries_total"), 0, metrics.text);
  assertEquals(metrics.sum("tablesnap_s3_request_failures_total"), 0, metrics.text);
  assertEquals(metrics.get("tablesnap_healthy"), 1, metrics.text);

  const code = await watcher.stop("SIGTERM");
  assertEquals(code, 0, watcher.stderr());
});

Deno.test("-B uploads only what the bucket lacks, leaves a different-size object alone, and --once exits", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const table = `${dir.path}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  const same = await writeFile(`${table}/nb-1-big-Index.db`, "already there");
  await writeFile(`${table}/nb-1-big-Data.db`, "data one");
  await writeFile(`${table}/nb-2-big-Data.db`, "local version is longer");
  await writeFile(`${table}/nb-3-big-Filter.db`, "missing from the bucket");
  const put = (path: string, body: string | Uint8Array) =>
    s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `${HOST}:${path}`, Body: body }));
  await put(`${table}/nb-1-big-Index.db`, same);
  await put(`${table}/nb-2-big-Data.db`, "short");
  // History: a compacted generation with its index, and a dropped table.
  const history = [
    `${table}/nb-0-big-Data.db`,
    `${table}/nb-0-big-Data.db-listdir.json`,
    `${dir.path}/ks/dropped/nb-9-big-Data.db`,
  ];
  for (const path of history) await put(path, "history");

  await using run = spawnCli(["-B", "--once", "-r", "-n", HOST, s3.bucket, dir.path], {
    env: s3.env,
  });
  const code = await run.child.status.then((s) => s.code);
  await run.stop();
  const log = run.stderr();
  assertEquals(code, 0, log);
  const key = (name: string) => `${HOST}:${table}/${name}`;
  const keys = await bucketKeys(s3);
  // The listing held only what answers for local files, not the bucket's history.
  assertMatch(log, /bucket listed objects=2 skipped=3 /);
  // The two missing files, and the index of the Data.db among them, were added; nothing else.
  assertEquals(
    [...keys.keys()].sort(),
    [
      ...history.map((path) => `${HOST}:${path}`),
      key("nb-1-big-Data.db"),
      key("nb-1-big-Data.db-listdir.json"),
      key("nb-1-big-Index.db"),
      key("nb-2-big-Data.db"),
      key("nb-3-big-Filter.db"),
    ].sort(),
  );
  for (const name of ["nb-1-big-Data.db", "nb-3-big-Filter.db"]) {
    const bytes = await Deno.readFile(`${table}/${name}`);
    assertEquals(await objectText(s3, key(name)), new TextDecoder().decode(bytes), name);
    assertEquals((await headObject(s3, key(name)))?.Metadata?.md5sum, md5(bytes), name);
  }
  // The objects the test put there (without tablesnap's metadata) are untouched.
  assertEquals(keys.get(key("nb-2-big-Data.db")), 5, "different-size object left alone");
  assertEquals(await objectText(s3, key("nb-2-big-Data.db")), "short");
  assertEquals((await headObject(s3, key("nb-2-big-Data.db")))?.Metadata?.md5sum, undefined);
  assertEquals(
    (await headObject(s3, key("nb-1-big-Index.db")))?.Metadata?.md5sum,
    undefined,
    "present file not uploaded again",
  );
  // The Data.db uploaded now got its index; the index names only stored files.
  const index = JSON.parse(
    await objectText(s3, `${HOST}:${table}/nb-1-big-Data.db-listdir.json`) ?? "missing",
  );
  assertEquals(index[table].sort(), [
    "nb-1-big-Data.db",
    "nb-1-big-Index.db",
    "nb-3-big-Filter.db",
  ]);
});

Deno.test("-e and -i decide what is uploaded; default skips -tmp", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  for (const name of ["a-Data.db", "b.log", "c-tmp-x"]) {
    await writeFile(`${dir.path}/${name}`, name);
  }
  let runs = 0;
  const run = async (...flags: string[]) => {
    const prefix = `run${runs++}/`;
    await using cli = spawnCli([
      "-B",
      "--once",
      "--without-index",
      "-p",
      prefix,
      "-n",
      HOST,
      ...flags,
      s3.bucket,
      dir.path,
    ], {
      env: s3.env,
    });
    assertEquals((await cli.child.status).code, 0, cli.stderr());
    await cli.stop();
    return [...(await bucketKeys(s3, prefix)).keys()].map((k) => k.slice(k.lastIndexOf("/") + 1))
      .sort();
  };
  assertEquals(await run(), ["a-Data.db", "b.log"]);
  assertEquals(await run("-e", "\\.log$"), ["a-Data.db", "c-tmp-x"]);
  assertEquals(await run("-i", "Data\\.db$", "--include=-tmp-"), ["a-Data.db", "c-tmp-x"]);
});

Deno.test("an S3 outage delays uploads but loses nothing", async () => {
  await using dir = await tempDir();
  const first = await startS3Server();
  const port = first.port;
  const s3dir = first.dir;
  await first.stop();
  // Keep the bucket directory: restart the same server later.
  let s3: S3Server | undefined;
  try {
    s3 = await startS3Server("test-bucket", { port, dir: s3dir, keepDir: true });
    await using watcher = spawnWatcher(["-n", HOST, "--retries", "1", s3.bucket, dir.path], {
      env: s3.env,
    });
    await watcher.waitUntilWatching();
    await s3.stop();
    await writeFile(`${dir.path}/during-outage`, "written while S3 was down");
    // The upload gives up for now, for a network reason; the file stays pending.
    const down = await watcher.waitForMetrics(
      "an upload given up",
      (m) => (m.get("tablesnap_upload_failures_total", { reason: "network" }) ?? 0) >= 1,
      30_000,
    );
    assertEquals(down.get("tablesnap_pending_files"), 1, down.text);
    assertEquals(down.get("tablesnap_uploaded_files_total"), 0, down.text);
    assertEquals(down.get("tablesnap_s3_reachable"), 0, down.text);
    const back = await startS3Server("test-bucket", { port, dir: s3dir, keepDir: true });
    s3 = back;
    const key = `${HOST}:${dir.path}/during-outage`;
    // The content, not a HEAD: s3rver answers HEAD for an object whose body
    // it is still writing to disk, and a GET then gives an empty body.
    await waitFor(
      "the object once S3 is back",
      async () => (await objectText(back, key)) === "written while S3 was down",
      30_000,
    );
    const up = await watcher.waitForMetrics(
      "nothing pending",
      (m) => m.get("tablesnap_pending_files") === 0,
    );
    assertEquals(up.get("tablesnap_uploaded_files_total"), 1, up.text);
    assertEquals(up.get("tablesnap_s3_reachable"), 1, up.text);
    assertEquals(await watcher.stop(), 0);
  } finally {
    await s3?.stop();
    await Deno.remove(s3dir, { recursive: true }).catch(() => {});
    await Deno.remove(`${s3dir}.tls`, { recursive: true }).catch(() => {});
  }
});

Deno.test("a burst of thousands of files loses none (local store)", async () => {
  await using dir = await tempDir();
  await using store = await tempDir("tablesnap-store-");
  const data = `${dir.path}/data`;
  await Deno.mkdir(data);
  await using watcher = spawnWatcher(
    [
      "-r",
      "-a",
      "-n",
      HOST,
      "-t",
      "8",
      "--without-index",
      "--settle-seconds",
      "1",
      "--sweep-interval",
      "5",
      `file://${store.path}`,
      data,
    ],
  );
  await watcher.waitUntilWatching();
  const count = 3000;
  const started = performance.now();
  for (let d = 0; d < 10; d++) {
    const sub = `${data}/t${d}`;
    await Deno.mkdir(sub);
    for (let i = 0; i < count / 10; i++) {
      // Half written in place, half renamed into place.
      if (i % 2 === 0) await Deno.writeTextFile(`${sub}/f${i}-Index.db`, `file ${d}/${i}`);
      else {
        await Deno.writeTextFile(`${sub}/f${i}-tmp`, `file ${d}/${i}`);
        await Deno.rename(`${sub}/f${i}-tmp`, `${sub}/f${i}-Index.db`);
      }
    }
  }
  const writeSeconds = (performance.now() - started) / 1000;
  const stored = async () => {
    let n = 0;
    for (let d = 0; d < 10; d++) {
      try {
        for await (const _ of Deno.readDir(`${store.path}/data/${HOST}:/${data.slice(1)}/t${d}`)) {
          n++;
        }
      } catch {
        // directory not there yet
      }
    }
    return n;
  };
  await waitFor(`${count} objects`, async () => (await stored()) === count, 60_000).catch(
    async (err) => {
      throw new Error(`${err.message}: ${await stored()} stored`);
    },
  );
  console.log(`burst: ${count} files written in ${writeSeconds.toFixed(2)} s, all ${count} stored`);
  // Each of them uploaded once.
  const metrics = await watcher.waitForMetrics(
    "every upload counted, nothing pending",
    (m) =>
      m.get("tablesnap_pending_files") === 0 &&
      (m.get("tablesnap_uploaded_files_total") ?? 0) >= count,
  );
  assertEquals(metrics.get("tablesnap_uploaded_files_total"), count, metrics.text);
  assertEquals(await watcher.stop(), 0);
});

Deno.test("--once --delete-on-backup exits only after the indexed files are deleted", async () => {
  await using store = await tempDir("tablesnap-store-");
  await using data = await tempDir();
  const table = `${data.path}/ks/t`;
  await Deno.mkdir(table, { recursive: true });
  const names = ["nb-1-big-Data.db", "nb-1-big-Index.db", "nb-1-big-TOC.txt"];
  await Deno.writeTextFile(`${table}/nb-1-big-TOC.txt`, "Data.db\nIndex.db\nTOC.txt\n");
  for (const n of names.slice(0, 2)) await Deno.writeTextFile(`${table}/${n}`, `bytes of ${n}`);
  const out = await runCli([
    "-n",
    HOST,
    "-r",
    "-B",
    "--once",
    "--delete-on-backup",
    `file://${store.path}`,
    data.path,
  ]);
  assertEquals(out.code, 0, out.stderr);
  // Files that waited for their index (the Data.db and its companions) are gone too.
  assertEquals([...Deno.readDirSync(table)].map((e) => e.name), []);
  const bucket = await localStore(store.path);
  const keys = (await Array.fromAsync(bucket.list(`${HOST}:${table}/`))).map((o) => o.key);
  assertEquals(
    keys.sort(),
    [
      ...names.map((n) => `${HOST}:${table}/${n}`),
      `${HOST}:${table}/nb-1-big-Data.db-listdir.json`,
    ].sort(),
  );
});

Deno.test("--delete-on-backup removes local files only after upload and index", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  await using watcher = spawnWatcher(["-n", HOST, "--delete-on-backup", s3.bucket, dir.path], {
    env: s3.env,
  });
  await watcher.waitUntilWatching();
  await writeFile(`${dir.path}/nb-1-big-Index.db`, "index");
  await writeFile(`${dir.path}/nb-1-big-Data.db`, "data");
  await writeFile(`${dir.path}/nb-1-big-TOC.txt`, "Data.db\nIndex.db\nTOC.txt\n");
  await waitFor("local files deleted", async () => {
    const left = await Array.fromAsync(Deno.readDir(dir.path));
    return left.length === 0;
  }, 20_000).catch((err) => {
    throw new Error(`${err.message}\n${watcher.stderr()}`);
  });
  const index = JSON.parse(
    await objectText(s3, `${HOST}:${dir.path}/nb-1-big-Data.db-listdir.json`) ?? "missing",
  );
  assertEquals(index[dir.path].sort(), [
    "nb-1-big-Data.db",
    "nb-1-big-Index.db",
    "nb-1-big-TOC.txt",
  ]);
  for (const n of index[dir.path]) assert(await headObject(s3, `${HOST}:${dir.path}/${n}`), n);
  assertEquals(await watcher.stop(), 0);
});

Deno.test("SIGINT and SIGTERM stop the watcher cleanly, with exit code 0", async () => {
  await using dir = await tempDir();
  await using store = await tempDir("tablesnap-store-");
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    await using watcher = spawnWatcher(["-n", HOST, `file://${store.path}`, dir.path]);
    await watcher.waitUntilWatching();
    // 0, not the 128+N of a process the signal killed.
    assertEquals(await watcher.stop(signal), 0, watcher.stderr());
  }
});

Deno.test("snapshot-style hard links into brand-new directories are all uploaded, without sweeps", async () => {
  await using dir = await tempDir();
  await using store = await tempDir("tablesnap-store-");
  const table = `${dir.path}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  const names = [
    "Data.db",
    "Index.db",
    "Filter.db",
    "Summary.db",
    "Statistics.db",
    "TOC.txt",
    "Digest.crc32",
    "CompressionInfo.db",
  ]
    .map((c) => `nb-1-big-${c}`);
  for (const n of names) await Deno.writeTextFile(`${table}/${n}`, n);
  // Only the snapshots are of interest here.
  await using watcher = spawnWatcher(
    [
      "-r",
      "-a",
      "-n",
      HOST,
      "--without-index",
      "--sweep-interval",
      "0",
      "-i",
      "/snapshots/",
      `file://${store.path}`,
      dir.path,
    ],
  );
  await watcher.waitUntilWatching();
  const snapshots = 30;
  for (let s = 0; s < snapshots; s++) {
    const snap = `${table}/snapshots/s${s}`;
    await Deno.mkdir(snap, { recursive: true });
    for (const n of names) await Deno.link(`${table}/${n}`, `${snap}/${n}`);
  }
  const expected: string[] = [];
  for (let s = 0; s < snapshots; s++) {
    for (const n of names) expected.push(`${HOST}:${table}/snapshots/s${s}/${n}`);
  }
  const bucket = await localStore(store.path);
  const missing = async () => {
    const keys = new Set(
      (await Array.fromAsync(bucket.list(`${HOST}:${table}/`))).map((o) => o.key),
    );
    return expected.filter((k) => !keys.has(k));
  };
  await waitFor(
    `${expected.length} snapshot links in the bucket`,
    async () => (await missing()).length === 0,
    20_000,
  ).catch(async (err) => {
    throw new Error(`${err.message}: missing ${(await missing()).join(" ")}`);
  });
  // Each link uploaded once.
  const metrics = await watcher.waitForMetrics(
    "nothing pending",
    (m) => m.get("tablesnap_pending_files") === 0,
  );
  assertEquals(metrics.get("tablesnap_uploaded_files_total"), expected.length, metrics.text);
  assertEquals(await watcher.stop(), 0);
});

Deno.test("--metrics-listen serves /metrics and /healthz during a real run", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  // spawnWatcher passes --metrics-listen 127.0.0.1:<watcher.metricsPort>.
  await using watcher = spawnWatcher(["-n", HOST, s3.bucket, dir.path], { env: s3.env });
  const port = watcher.metricsPort;
  await watcher.waitUntilWatching();
  await writeFile(`${dir.path}/nb-1-big-Data.db`, "0123456789");
  await writeFile(`${dir.path}/nb-1-big-TOC.txt`, "Data.db\nTOC.txt\n");
  const scrape = async () => await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const indexed = new RegExp(
    `^tablesnap_last_index_timestamp_seconds\\{path="${dir.path}"\\} \\d+`,
    "m",
  );
  await watcher.waitForMetrics(
    "the index written and nothing pending",
    (m) => indexed.test(m.text) && m.get("tablesnap_pending_files") === 0,
  );
  assert(
    await headObject(s3, `${HOST}:${dir.path}/nb-1-big-Data.db-listdir.json`),
    "index in bucket",
  );
  const text = await scrape();
  assertMatch(text, /^tablesnap_uploaded_files_total 2$/m);
  assertMatch(text, /^tablesnap_uploaded_bytes_total 26$/m);
  assertMatch(text, /^tablesnap_oldest_pending_age_seconds 0$/m);
  assertMatch(text, indexed);
  assertMatch(text, /^tablesnap_s3_request_duration_seconds_count\{operation="PutObject"\} [1-9]/m);
  const health = await fetch(`http://127.0.0.1:${port}/healthz`);
  await health.body?.cancel();
  assertEquals(health.status, 200);
  assertEquals(await watcher.stop(), 0);
});

Deno.test("SIGTERM aborts a multipart upload past the grace period and leaves no orphaned parts", async () => {
  await using s3 = await startS3Server("test-bucket", { server: "moto" });
  await using dir = await tempDir();
  const big = new Uint8Array(12 * 1024 * 1024);
  await using watcher = spawnWatcher(
    [
      "-n",
      HOST,
      "--max-upload-size",
      "5",
      "--multipart-chunk-size",
      "5",
      "--max-bandwidth",
      "2M",
      "--shutdown-grace",
      "1",
      s3.bucket,
      dir.path,
    ],
    { env: s3.env },
  );
  await watcher.waitUntilWatching();
  await writeFile(`${dir.path}/big-Index.db`, big);
  // At 2 MiB/s the 12 MiB upload takes about 6 s: stop it half way, once its
  // first 5 MiB part is stored (7 MiB to go take longer than the 1 s grace).
  await watcher.waitForMetrics(
    "the first part stored",
    (m) =>
      (m.get("tablesnap_s3_request_duration_seconds_count", { operation: "UploadPart" }) ??
        0) >= 1,
  );
  const code = await watcher.stop("SIGTERM");
  assertEquals(code, 0, watcher.stderr());
  // Aborted, not completed: no parts left behind and no object.
  const left = await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }));
  assertEquals(left.Uploads ?? [], [], "no multipart upload left behind");
  assertEquals(await headObject(s3, `${HOST}:${dir.path}/big-Index.db`), null);
});

Deno.test("a file that changes during its upload is never left in the bucket half-written", async () => {
  // Plain HTTP: the counting proxy below reads the requests on the wire.
  await using s3 = await startS3Server(undefined, { tls: false });
  await using dir = await tempDir();
  await using proxy = startCountingProxy(s3.port);
  await using watcher = spawnWatcher(
    ["-n", HOST, "--max-bandwidth", "1M", "--retries", "1", s3.bucket, dir.path],
    { env: { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint } },
  );
  await watcher.waitUntilWatching();
  const path = `${dir.path}/growing-Index.db`;
  // Over the 4 MiB kept in memory, so the body streams from the file and each
  // chunk waits for --max-bandwidth: the change lands during the send.
  const first = new Uint8Array(5 * 1024 * 1024).fill(1);
  await writeFile(path, first);
  // At 1 MiB/s the upload takes about 4 s; the file changes once a third is sent.
  await waitFor("the upload under way", () => proxy.sent() >= first.length / 3, 20_000);
  const more = new Uint8Array(1024).fill(2);
  const file = await Deno.open(path, { append: true });
  await file.write(more);
  file.close();
  const final = new Uint8Array([...first, ...more]);
  const key = `${HOST}:${path}`;
  await waitFor("the final version in the bucket", async () => {
    const object = await headObject(s3, key);
    return object?.ContentLength === final.length && object.Metadata?.md5sum === md5(final);
  }, 40_000).catch((err) => {
    throw new Error(`${err.message}\n${watcher.stderr()}`);
  });
  const body = await (await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key })))
    .Body!.transformToByteArray();
  assertEquals(md5(body), md5(final));
  const metrics = await watcher.waitForMetrics(
    "nothing pending",
    (m) => m.get("tablesnap_pending_files") === 0,
  );
  // The change was noticed (the attempt counted as failed for reason "changed"),
  // and only the final version counts as uploaded.
  const changed = (metrics.get("tablesnap_upload_retries_total", { reason: "changed" }) ?? 0) +
    (metrics.get("tablesnap_upload_failures_total", { reason: "changed" }) ?? 0);
  assert(changed >= 1, metrics.text);
  assertEquals(metrics.get("tablesnap_uploaded_files_total"), 1, metrics.text);
  assertEquals(await watcher.stop(), 0);
});

Deno.test("new files are checked against one listing of their directory: existing keys are still respected", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const table = `${dir.path}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  const key = (name: string) => `${HOST}:${table}/${name}`;
  const put = (name: string, body: string) =>
    s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key(name), Body: body }));
  await put("nb-1-big-Data.db", "short");
  await put("nb-2-big-Data.db", "same size!");
  // A key one level down must not count as a file of this directory.
  await put("snapshots/s1/nb-3-big-Data.db", "below");

  await using watcher = spawnWatcher([
    "-r",
    "-n",
    HOST,
    "--without-index",
    s3.bucket,
    dir.path,
  ], { env: s3.env });
  await watcher.waitUntilWatching();
  await writeFile(`${table}/nb-1-big-Data.db`, "a longer local version");
  await writeFile(`${table}/nb-2-big-Data.db`, "same size?");
  const fresh = ["nb-3-big-Data.db", "nb-4-big-Index.db", "nb-5-big-Filter.db", "nb-6-big-TOC.txt"];
  for (const name of fresh) await writeFile(`${table}/${name}`, `new file ${name}`);
  // Files are taken in the order written: once the new ones are uploaded and
  // nothing is pending, nb-1 and nb-2 have been decided too.
  const uploaded = (n: number) => (m: Scrape) =>
    (m.get("tablesnap_uploaded_files_total") ?? 0) >= n && m.get("tablesnap_pending_files") === 0;
  const first = await watcher.waitForMetrics(
    `${fresh.length} uploads, nothing pending`,
    uploaded(fresh.length),
  );
  assertEquals(first.get("tablesnap_uploaded_files_total"), fresh.length, first.text);
  for (const name of fresh) assertEquals(await objectText(s3, key(name)), `new file ${name}`);
  assertEquals(
    (await bucketKeys(s3)).get(key("nb-1-big-Data.db")),
    5,
    "different size: left alone",
  );
  assertEquals(await objectText(s3, key("nb-2-big-Data.db")), "same size!", "same size: skipped");
  // Rewritten after its upload with another size: the key is ours now, and
  // still left alone rather than overwritten. A file written after it shows
  // when the rewrite has been decided.
  await writeFile(`${table}/nb-3-big-Data.db`, "new file, rewritten longer");
  await writeFile(`${table}/nb-7-big-Index.db`, "written last");
  const metrics = await watcher.waitForMetrics(
    "the file written last uploaded, nothing pending",
    uploaded(fresh.length + 1),
  );
  assertEquals(metrics.get("tablesnap_uploaded_files_total"), fresh.length + 1, metrics.text);
  assertEquals(await objectText(s3, key("nb-7-big-Index.db")), "written last");
  // One listing answered for the whole directory, sizes included: no HEAD
  // for the 5 new files, nor for the keys it showed (nb-1, nb-2, then nb-3 once ours).
  const requests = (operation: string) =>
    metrics.get("tablesnap_s3_request_duration_seconds_count", { operation }) ?? 0;
  // One for the start-up check (a listing limited to our prefix), one for the directory.
  assertEquals(requests("ListObjectsV2"), 2, metrics.text);
  assertEquals(requests("HeadObject"), 0, metrics.text);
  assertEquals(await watcher.stop(), 0);
  const keys = await bucketKeys(s3);
  assertEquals(keys.get(key("nb-1-big-Data.db")), 5, "different-size object left alone");
  assertEquals(await objectText(s3, key("nb-2-big-Data.db")), "same size!");
  assertEquals(await objectText(s3, key("nb-3-big-Data.db")), "new file nb-3-big-Data.db");
});

Deno.test("--max-bandwidth holds all uploads together to the rate, within 10%", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const MiB = 1024 * 1024;
  const bytes = new Uint8Array(6 * MiB).map((_, i) => i % 253);
  /** Seconds from writing two 6 MiB files to the end of the last upload (the watcher's clock). */
  const seconds = async (name: string, flags: string[]) => {
    const root = `${dir.path}/${name}`;
    await Deno.mkdir(root);
    await using watcher = spawnWatcher(
      ["--without-index", "-t", "2", "-n", HOST, ...flags, s3.bucket, root],
      { env: s3.env },
    );
    await watcher.waitUntilWatching();
    // The limiter (made before the watches) holds at most one second of
    // tokens and refills while idle: one second on, it is full whatever the
    // start-up took, so the limited run begins with exactly that burst.
    if (flags.length > 0) await delay(1_000);
    const started = Date.now();
    for (const file of ["a-Data.db", "b-Index.db"]) await writeFile(`${root}/${file}`, bytes);
    // Both files upload at once: the last to finish ends the whole transfer.
    const metrics = await watcher.waitForMetrics(
      "both uploads",
      (m) =>
        m.get("tablesnap_uploaded_files_total") === 2 && m.get("tablesnap_pending_files") === 0,
    );
    const finished = metrics.get("tablesnap_last_upload_timestamp_seconds", { path: root });
    assert(finished !== undefined, metrics.text);
    assertEquals(await watcher.stop(), 0, watcher.stderr());
    for (const file of ["a-Data.db", "b-Index.db"]) {
      assertEquals((await headObject(s3, `${HOST}:${root}/${file}`))?.ContentLength, bytes.length);
    }
    return (finished * 1000 - started) / 1000;
  };
  const free = await seconds("free", []);
  const limited = await seconds("limited", ["--max-bandwidth", "3M"]);
  // 12 MiB at 3 MiB/s, the first second's 3 MiB sent at once: 3 s, where the
  // server alone takes well under that. Within 10% of it, plus at most the
  // time the server took by itself (on a loaded machine part of it is not
  // hidden behind the limiter's waits).
  assert(free < 2, `unlimited upload took ${free} s: the server is too slow for this test`);
  const expected = (12 - 3) / 3;
  assert(
    limited >= 0.9 * expected && limited <= 1.1 * expected + free,
    `12 MiB at 3 MiB/s took ${limited} s, not ${expected} s ±10% (+${free} s unlimited)`,
  );
});
