/**
 * End-to-end tests of the watcher: a real s3rver process, a real tablesnap
 * process, real files and real inotify. The bucket is checked with our own
 * S3 client, field by field against the contract.
 */
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import {
  delay,
  freePort,
  runCli,
  type S3Server,
  spawnCli,
  startS3Server,
  tempDir,
  waitFor,
} from "./_helpers.ts";

const HOST = "testhost";

function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

async function listKeys(s3: S3Server, prefix = ""): Promise<Map<string, number>> {
  const keys = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await s3.client.send(
      new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) keys.set(o.Key!, o.Size!);
    token = page.NextContinuationToken;
  } while (token);
  return keys;
}

async function head(s3: S3Server, key: string) {
  try {
    return await s3.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
  } catch {
    return null;
  }
}

async function getText(s3: S3Server, key: string): Promise<string> {
  const out = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
  return await out.Body!.transformToString();
}

function countMatches(text: string, needle: string): number {
  return text.split(needle).length - 1;
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
  await using watcher = spawnCli(
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
  await watcher.waitForLog("tablesnap started");
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
    const keys = await listKeys(s3);
    return expected.every((k) => keys.has(k));
  }, 30_000).catch((err) => {
    throw new Error(`${err.message}\n${watcher.stderr()}`);
  });

  // Contract: metadata of a single-part upload.
  const dataKey = key(`${table}/nb-1-big-Data.db`);
  const dataHead = await head(s3, dataKey);
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
  const indexHead = await head(s3, indexKey);
  assertEquals(indexHead?.ContentType, "application/json");
  const index = JSON.parse(await getText(s3, indexKey));
  assertEquals(Object.keys(index), [table]);
  const named: string[] = index[table];
  for (const c of [...components, "TOC.txt"]) {
    assert(named.includes(`nb-1-big-${c}`), `index names ${c}`);
  }
  assert(!named.some((n) => n.includes("-tmp")), "no -tmp file in the index");
  const keys = await listKeys(s3);
  for (const n of named) {
    assert(keys.has(key(`${table}/${n}`)), `${n} named by the index is in the bucket`);
  }

  // Multipart: md5sum metadata of the whole file, bytes intact.
  const bigKey = key(`${table}/nb-5-big-Index.db`);
  assertEquals((await head(s3, bigKey))?.Metadata?.md5sum, md5(big));
  const bigBack =
    await (await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: bigKey })))
      .Body!.transformToByteArray();
  assertEquals(md5(bigBack), md5(big));
  assertStringIncludes(watcher.stderr(), "parts=3");

  // New directory content and hard link.
  assertEquals(keys.get(key(`${data}/ks/new_table-9f/sub/nb-3-big-Index.db`)), fresh.length);
  // The -tmp file and the short-lived file never became objects.
  assert(!keys.has(key(tmpPath)), "-tmp file not uploaded");
  assert(!keys.has(key(`${table}/nb-4-big-Index.db`)), "deleted file not uploaded");
  // One upload per file even though Deno reports renames twice.
  assertEquals(
    countMatches(watcher.stderr(), `uploaded key=${key(`${table}/ks-users-ka-2-Data.db`)} `),
    1,
  );

  const code = await watcher.stop("SIGTERM");
  assertEquals(code, 0);
  assertMatch(watcher.stderr(), /tablesnap stopped uploaded=\d+/);
  assert(!watcher.stderr().includes("ERROR"), watcher.stderr());
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

  await using run = spawnCli(["-B", "--once", "-r", "-n", HOST, s3.bucket, dir.path], {
    env: s3.env,
  });
  const code = await run.child.status.then((s) => s.code);
  await run.stop();
  const log = run.stderr();
  assertEquals(code, 0, log);
  const keys = await listKeys(s3);
  assert(keys.has(`${HOST}:${table}/nb-1-big-Data.db`));
  assert(keys.has(`${HOST}:${table}/nb-3-big-Filter.db`));
  assertEquals(
    keys.get(`${HOST}:${table}/nb-2-big-Data.db`),
    5,
    "different-size object left alone",
  );
  assertStringIncludes(log, "object exists with a different size");
  assertEquals(countMatches(log, "INFO uploaded "), 2, log);
  assert(
    !log.includes(`uploaded key=${HOST}:${table}/nb-1-big-Index.db`),
    "present file not uploaded again",
  );
  // The Data.db uploaded now got its index; the index names only stored files.
  const index = JSON.parse(await getText(s3, `${HOST}:${table}/nb-1-big-Data.db-listdir.json`));
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
    return [...(await listKeys(s3, prefix)).keys()].map((k) => k.slice(k.lastIndexOf("/") + 1))
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
    await using watcher = spawnCli(["-n", HOST, "--retries", "1", s3.bucket, dir.path], {
      env: s3.env,
    });
    await watcher.waitForLog("tablesnap started");
    await s3.stop();
    await writeFile(`${dir.path}/during-outage`, "written while S3 was down");
    await watcher.waitForLog("upload failed, will try again", 30_000);
    s3 = await startS3Server("test-bucket", { port, dir: s3dir, keepDir: true });
    await watcher.waitForLog(`uploaded key=${HOST}:${dir.path}/during-outage`, 30_000);
    assert(await head(s3, `${HOST}:${dir.path}/during-outage`));
    assertEquals(await watcher.stop(), 0);
  } finally {
    await s3?.stop();
    await Deno.remove(s3dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("a burst of thousands of files loses none (local store)", async () => {
  await using dir = await tempDir();
  await using store = await tempDir("tablesnap-store-");
  const data = `${dir.path}/data`;
  await Deno.mkdir(data);
  await using watcher = spawnCli(
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
  await watcher.waitForLog("tablesnap started");
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
  assertEquals(await watcher.stop(), 0);
  assertEquals(countMatches(watcher.stderr(), "INFO uploaded "), count);
});

Deno.test("--delete-on-backup removes local files only after upload and index", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  await using watcher = spawnCli(["-n", HOST, "--delete-on-backup", s3.bucket, dir.path], {
    env: s3.env,
  });
  await watcher.waitForLog("tablesnap started");
  await writeFile(`${dir.path}/nb-1-big-Index.db`, "index");
  await writeFile(`${dir.path}/nb-1-big-Data.db`, "data");
  await writeFile(`${dir.path}/nb-1-big-TOC.txt`, "Data.db\nIndex.db\nTOC.txt\n");
  await waitFor("local files deleted", async () => {
    const left = await Array.fromAsync(Deno.readDir(dir.path));
    return left.length === 0;
  }, 20_000).catch((err) => {
    throw new Error(`${err.message}\n${watcher.stderr()}`);
  });
  const index = JSON.parse(await getText(s3, `${HOST}:${dir.path}/nb-1-big-Data.db-listdir.json`));
  assertEquals(index[dir.path].sort(), [
    "nb-1-big-Data.db",
    "nb-1-big-Index.db",
    "nb-1-big-TOC.txt",
  ]);
  for (const n of index[dir.path]) assert(await head(s3, `${HOST}:${dir.path}/${n}`), n);
  assertEquals(await watcher.stop(), 0);
});

Deno.test("SIGINT and SIGTERM stop the watcher cleanly with a summary", async () => {
  await using dir = await tempDir();
  await using store = await tempDir("tablesnap-store-");
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    await using watcher = spawnCli(["-n", HOST, `file://${store.path}`, dir.path]);
    await watcher.waitForLog("tablesnap started");
    await delay(100);
    assertEquals(await watcher.stop(signal), 0);
    assertStringIncludes(watcher.stderr(), `signal received, stopping signal=${signal}`);
    assertStringIncludes(watcher.stderr(), "tablesnap stopped");
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
  await using watcher = spawnCli(
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
  await watcher.waitForLog("tablesnap started");
  const snapshots = 30;
  for (let s = 0; s < snapshots; s++) {
    const snap = `${table}/snapshots/s${s}`;
    await Deno.mkdir(snap, { recursive: true });
    for (const n of names) await Deno.link(`${table}/${n}`, `${snap}/${n}`);
  }
  const expected = snapshots * names.length;
  await waitFor(
    `${expected} snapshot links uploaded`,
    () => countMatches(watcher.stderr(), "INFO uploaded ") === expected,
    20_000,
  )
    .catch((err) => {
      const missing = [];
      for (let s = 0; s < snapshots; s++) {
        for (const n of names) {
          if (!watcher.stderr().includes(`/snapshots/s${s}/${n} `)) missing.push(`s${s}/${n}`);
        }
      }
      throw new Error(`${err.message}: missing ${missing.join(" ")}`);
    });
  assertEquals(await watcher.stop(), 0);
});

Deno.test("--metrics-listen serves /metrics and /healthz during a real run", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const port = freePort();
  await using watcher = spawnCli(
    ["-n", HOST, "--metrics-listen", `127.0.0.1:${port}`, s3.bucket, dir.path],
    { env: s3.env },
  );
  await watcher.waitForLog("tablesnap started");
  await writeFile(`${dir.path}/nb-1-big-Data.db`, "0123456789");
  await writeFile(`${dir.path}/nb-1-big-TOC.txt`, "Data.db\nTOC.txt\n");
  await watcher.waitForLog("index written");
  const scrape = async () => await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  // Pending gauges are refreshed every second.
  await waitFor(
    "pending back to 0",
    async () => /^tablesnap_pending_files 0$/m.test(await scrape()),
  );
  const text = await scrape();
  assertMatch(text, /^tablesnap_uploaded_files_total 2$/m);
  assertMatch(text, /^tablesnap_uploaded_bytes_total 26$/m);
  assertMatch(text, /^tablesnap_oldest_pending_age_seconds 0$/m);
  assertMatch(
    text,
    new RegExp(`^tablesnap_last_index_timestamp_seconds\\{path="${dir.path}"\\} \\d+`, "m"),
  );
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
  await using watcher = spawnCli(
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
  await watcher.waitForLog("tablesnap started");
  await writeFile(`${dir.path}/big-Index.db`, big);
  // At 2 MiB/s the 12 MiB upload takes about 6 s: stop it half way.
  await waitFor("the multipart upload to start", async () => {
    const out = await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }));
    return (out.Uploads ?? []).length > 0;
  });
  await delay(1000);
  const code = await watcher.stop("SIGTERM");
  assertEquals(code, 0, watcher.stderr());
  assertStringIncludes(watcher.stderr(), "aborting uploads still in progress");
  assertMatch(watcher.stderr(), /tablesnap stopped .*not_uploaded=1/);
  const left = await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }));
  assertEquals(left.Uploads ?? [], [], "no multipart upload left behind");
  assertEquals(await head(s3, `${HOST}:${dir.path}/big-Index.db`), null);
});

Deno.test("a file that changes during its upload is never left in the bucket half-written", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  await using watcher = spawnCli(
    ["-n", HOST, "--max-bandwidth", "1M", "--retries", "1", s3.bucket, dir.path],
    { env: s3.env },
  );
  await watcher.waitForLog("tablesnap started");
  const path = `${dir.path}/growing-Index.db`;
  const first = new Uint8Array(3 * 1024 * 1024).fill(1);
  await writeFile(path, first);
  // At 1 MiB/s the upload takes about 3 s; the file changes 1 s in.
  await delay(1000);
  const more = new Uint8Array(1024).fill(2);
  const file = await Deno.open(path, { append: true });
  await file.write(more);
  file.close();
  const final = new Uint8Array([...first, ...more]);
  const key = `${HOST}:${path}`;
  await watcher.waitForLog(`uploaded key=${key} bytes=${final.length}`, 40_000);
  assertStringIncludes(watcher.stderr(), "changed while it was being uploaded");
  assertEquals((await head(s3, key))?.Metadata?.md5sum, md5(final));
  assertEquals(countMatches(watcher.stderr(), `uploaded key=${key} `), 1, watcher.stderr());
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

  const port = freePort();
  await using watcher = spawnCli([
    "-r",
    "-n",
    HOST,
    "--without-index",
    "--metrics-listen",
    `127.0.0.1:${port}`,
    s3.bucket,
    dir.path,
  ], { env: { ...s3.env, TDEBUG: "1" } });
  await watcher.waitForLog("tablesnap started");
  await writeFile(`${table}/nb-1-big-Data.db`, "a longer local version");
  await writeFile(`${table}/nb-2-big-Data.db`, "same size?");
  const fresh = ["nb-3-big-Data.db", "nb-4-big-Index.db", "nb-5-big-Filter.db", "nb-6-big-TOC.txt"];
  for (const name of fresh) await writeFile(`${table}/${name}`, `new file ${name}`);
  for (const name of fresh) await watcher.waitForLog(`uploaded key=${key(name)}`);
  await watcher.waitForLog("object exists with a different size");
  await watcher.waitForLog(`skipped: already in bucket key=${key("nb-2-big-Data.db")}`);
  // Rewritten after its upload with another size: the key is ours now, and
  // still left alone rather than overwritten.
  await writeFile(`${table}/nb-3-big-Data.db`, "new file, rewritten longer");
  await waitFor(
    "second conflict",
    () => countMatches(watcher.stderr(), "object exists with a different size") === 2,
  );
  // One listing answered for the whole directory, sizes included: no HEAD
  // for the 4 new files, nor for the keys it showed (nb-1, nb-2, then nb-3 once ours).
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const requests = (operation: string) =>
    Number(
      new RegExp(
        `^tablesnap_s3_request_duration_seconds_count\\{operation="${operation}"\\} (\\d+)$`,
        "m",
      ).exec(metrics)?.[1] ?? 0,
    );
  assertEquals(requests("ListObjectsV2"), 1, metrics);
  assertEquals(requests("HeadObject"), 0, metrics);
  assertEquals(await watcher.stop(), 0);
  const keys = await listKeys(s3);
  assertEquals(keys.get(key("nb-1-big-Data.db")), 5, "different-size object left alone");
  assertEquals(await getText(s3, key("nb-2-big-Data.db")), "same size!");
  assertEquals(await getText(s3, key("nb-3-big-Data.db")), "new file nb-3-big-Data.db");
  assertEquals(countMatches(watcher.stderr(), "INFO uploaded "), fresh.length, watcher.stderr());
});

Deno.test("--max-bandwidth holds all uploads together to the rate, within 10%", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const MiB = 1024 * 1024;
  for (const name of ["a-Data.db", "b-Index.db"]) {
    await writeFile(`${dir.path}/${name}`, new Uint8Array(6 * MiB).map((_, i) => i % 253));
  }
  const seconds = async (flags: string[]) => {
    const run = await runCli(
      ["-B", "--once", "--without-index", "-t", "2", "-n", HOST, ...flags, s3.bucket, dir.path],
      { env: s3.env },
    );
    assertEquals(run.code, 0, run.stderr);
    assertEquals(countMatches(run.stderr, "INFO uploaded "), 2, run.stderr);
    // Both files upload at once; the last to finish took the whole transfer.
    return Math.max(
      ...[...run.stderr.matchAll(/INFO uploaded .* seconds=([\d.]+)/g)].map((m) => Number(m[1])),
    );
  };
  const free = await seconds(["-p", "free/"]);
  const limited = await seconds(["-p", "limited/", "--max-bandwidth", "3M"]);
  // 12 MiB at 3 MiB/s: 4 s, where the server alone takes well under that.
  assert(free < 2, `unlimited upload took ${free} s: the server is too slow for this test`);
  assert(limited >= 3.6 && limited <= 4.4, `12 MiB at 3 MiB/s took ${limited} s, not 4 s ±10%`);
});
