/**
 * Versioned buckets and Object Lock, against moto (which implements both,
 * and refuses a PUT without Content-MD5 into a bucket with a default
 * retention, as S3 does): uploads with the bucket's default retention and
 * with --object-lock-mode/--object-lock-days, restores reading the current
 * versions, and chop deleting versions around what the lock keeps.
 */
import {
  CreateBucketCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutObjectLockConfigurationCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { parseWatchArgs } from "../lib/cli/watch.ts";
import { UsageError } from "../lib/common/errors.ts";
import { type ObjectLockRetention, S3Store } from "../lib/store/s3/s3_store.ts";
import type { ObjectVersion } from "../lib/store/store.ts";
import { assert, assertEquals, assertStringIncludes, assertThrows } from "./_assert.ts";
import {
  type BucketWriter,
  contentOf,
  DAY,
  generation,
  key,
  NAMING,
  putFile,
  putIndex,
  putTable,
} from "./_bucket_fixture.ts";
import { runCli, type S3Server, startS3Server, tempDir } from "./_helpers.ts";

const HOST = NAMING.name;
const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

/** A bucket with Object Lock (so versioned), with a default retention if given. */
async function lockedBucket(s3: S3Server, name: string, defaultDays?: number): Promise<string> {
  await s3.client.send(new CreateBucketCommand({ Bucket: name, ObjectLockEnabledForBucket: true }));
  if (defaultDays !== undefined) {
    await s3.client.send(
      new PutObjectLockConfigurationCommand({
        Bucket: name,
        ObjectLockConfiguration: {
          ObjectLockEnabled: "Enabled",
          Rule: { DefaultRetention: { Mode: "GOVERNANCE", Days: defaultDays } },
        },
      }),
    );
  }
  return name;
}

function storeOf(s3: S3Server, bucket: string, lock?: ObjectLockRetention): S3Store {
  return new S3Store({
    bucket,
    endpoint: s3.endpoint,
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    ...(lock ? { objectLock: lock } : {}),
  });
}

/** Writes through an `S3Store`, so that its Object Lock settings apply. */
function storeWriter(store: S3Store): BucketWriter {
  return {
    put: (k, body, options = {}) =>
      store.putBytes(k, body, {
        metadata: options.metadata ?? {},
        ...(options.contentType ? { contentType: options.contentType } : {}),
      }),
  };
}

async function versionsOf(client: S3Client, bucket: string): Promise<ObjectVersion[]> {
  const out = await client.send(new ListObjectVersionsCommand({ Bucket: bucket }));
  return [
    ...(out.Versions ?? []).map((v) => ({
      key: v.Key!,
      versionId: v.VersionId!,
      size: v.Size ?? 0,
      etag: "",
      lastModified: v.LastModified!,
      latest: v.IsLatest === true,
      deleteMarker: false,
    })),
    ...(out.DeleteMarkers ?? []).map((m) => ({
      key: m.Key!,
      versionId: m.VersionId!,
      size: 0,
      etag: "",
      lastModified: m.LastModified!,
      latest: m.IsLatest === true,
      deleteMarker: true,
    })),
  ];
}

interface Recorded {
  method: string;
  url: URL;
  headers: Headers;
}

/**
 * A pass-through HTTP proxy in front of a real server, recording each
 * request's method, URL and headers: moto keeps no Object Lock for
 * multipart uploads (neither the bucket's default nor the headers) and
 * does not check parts for Content-MD5, so what the watcher sent is
 * checked on the way.
 */
function recordingProxy(target: string): AsyncDisposable & { endpoint: string; log: Recorded[] } {
  const log: Recorded[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    log.push({ method: req.method, url, headers: req.headers });
    // Buffered (parts are 5 MiB here): the server gets a Content-Length, as from the watcher.
    const body = req.body ? new Uint8Array(await req.arrayBuffer()) : undefined;
    const res = await fetch(`${target}${url.pathname}${url.search}`, {
      method: req.method,
      headers: req.headers,
      ...(body ? { body } : {}),
    });
    return new Response(res.body, { status: res.status, headers: res.headers });
  });
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    log,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** A table as Cassandra leaves it, with a Data.db over 5 MiB (two parts of 5 MiB). */
async function writeTable(table: string): Promise<string[]> {
  await Deno.mkdir(table, { recursive: true });
  const names = ["nb-1-big-Data.db", "nb-1-big-Index.db", "nb-1-big-TOC.txt"];
  await Deno.writeFile(
    `${table}/nb-1-big-Data.db`,
    new Uint8Array(5 * 1024 * 1024 + 77).map((_, i) => (i * 13) % 251),
  );
  await Deno.writeFile(`${table}/nb-1-big-Index.db`, contentOf("index"));
  await Deno.writeTextFile(`${table}/nb-1-big-TOC.txt`, "Data.db\nIndex.db\nTOC.txt\n");
  return names;
}

Deno.test("--object-lock-mode and --object-lock-days: both or neither, valid, for S3", () => {
  const base = ["-n", "h", "bucket", "/tmp"];
  const bad: [string[], string][] = [
    [["--object-lock-days", "3"], "Option '--object-lock-days' needs '--object-lock-mode' too"],
    [
      ["--object-lock-mode", "COMPLIANCE"],
      "Option '--object-lock-mode' needs '--object-lock-days' too",
    ],
    [
      ["--object-lock-mode", "forever", "--object-lock-days", "3"],
      "Option '--object-lock-mode' takes GOVERNANCE or COMPLIANCE, got 'forever'",
    ],
    [
      ["--object-lock-mode", "GOVERNANCE", "--object-lock-days", "0"],
      "Option '--object-lock-days' must be at least 1, got 0",
    ],
    [
      ["--object-lock-mode", "GOVERNANCE", "--object-lock-days", "3.5"],
      "Option '--object-lock-days' needs a whole number, got '3.5'",
    ],
    [
      ["--object-lock-mode", "GOVERNANCE", "--object-lock-days", "99999"],
      "Option '--object-lock-days' must be at most 36500, got 99999",
    ],
  ];
  for (const [flags, message] of bad) {
    assertThrows(() => parseWatchArgs([...flags, ...base]), UsageError, message);
  }
  assertThrows(
    () =>
      parseWatchArgs([
        "--object-lock-mode=GOVERNANCE",
        "--object-lock-days=1",
        "-n",
        "h",
        "file:///tmp",
        "/tmp",
      ]),
    UsageError,
    "need an S3 bucket, not a local store",
  );
  const ok = parseWatchArgs([
    "--object-lock-mode",
    "compliance",
    "--object-lock-days",
    "7",
    ...base,
  ]);
  assert(typeof ok === "object");
  assertEquals(ok.objectLock, { mode: "COMPLIANCE", days: 7 });
  const none = parseWatchArgs(base);
  assert(typeof none === "object");
  assertEquals(none.objectLock, undefined);
});

Deno.test("a bad --object-lock-mode exits 2 with one line naming it", async () => {
  const out = await runCli(["--object-lock-mode", "LEGAL", "--object-lock-days", "3", "b", "/tmp"]);
  assertEquals(out.code, 2, out.stderr);
  const lines = out.stderr.trim().split("\n");
  assertEquals(
    lines[0],
    "error: Option '--object-lock-mode' takes GOVERNANCE or COMPLIANCE, got 'LEGAL'",
  );
  assert(lines.length <= 2 && !/\n\s+at /.test(out.stderr), out.stderr);
});

Deno.test("uploads into a bucket with Object Lock: default retention, --object-lock-*, new versions", async (t) => {
  await using s3 = await startS3Server("plain", { server: "moto", tls: false });
  await using dir = await tempDir();
  const bucket = await lockedBucket(s3, "locked", 1);
  const table = `${dir.path}/ks/t-1`;
  const names = await writeTable(table);
  const keysUnder = (prefix: string) => [
    ...names.map((n) => `${prefix}${HOST}:${table}/${n}`),
    `${prefix}${HOST}:${table}/nb-1-big-Data.db-listdir.json`,
  ];
  const watch = ["--once", "-B", "-r", "-n", HOST, "--max-upload-size", "5"];
  const args = [...watch, "--multipart-chunk-size", "5", "--index-wait", "5"];
  const head = (k: string, b = bucket) =>
    s3.client.send(new HeadObjectCommand({ Bucket: b, Key: k }));
  await using proxy = recordingProxy(s3.endpoint);
  const env = { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint };
  /** The requests that wrote `k`: its PUT, or its multipart upload's POSTs and part PUTs. */
  const writesOf = (k: string) =>
    proxy.log.filter((r) =>
      decodeURIComponent(r.url.pathname) === `/${bucket}/${k}` && r.method !== "HEAD" &&
      r.method !== "GET"
    );
  const isPart = (r: Recorded) => r.method === "PUT" && r.url.searchParams.has("partNumber");
  const isCreate = (r: Recorded) => r.method === "POST" && r.url.searchParams.has("uploads");

  await t.step(
    "the bucket's default retention applies; every PUT, parts too, carried Content-MD5",
    async () => {
      const out = await runCli([...args, bucket, dir.path], { env });
      assertEquals(out.code, 0, out.stderr);
      for (const k of keysUnder("")) {
        const writes = writesOf(k);
        const puts = writes.filter((r) => r.method === "PUT");
        assert(puts.length > 0, k);
        for (const r of puts) assert(r.headers.has("content-md5"), `${r.method} ${r.url}`);
        if (k.endsWith("Data.db")) {
          assertEquals(puts.filter(isPart).length, 2, `multipart ${k}`);
          continue; // moto keeps no retention for multipart uploads
        }
        assertEquals((await head(k)).ObjectLockMode, "GOVERNANCE", k);
      }
    },
  );

  for (const [prefix, extra] of [["direct/", {}], ["sdk/", { TABLESNAP_DIRECT_REQUESTS: "0" }]]) {
    await t.step(`--object-lock-* sets each object's retention (${prefix})`, async () => {
      const before = Date.now();
      const out = await runCli([
        ...args,
        "-p",
        prefix as string,
        "--object-lock-mode",
        "COMPLIANCE",
        "--object-lock-days",
        "3",
        bucket,
        dir.path,
      ], { env: { ...env, ...extra as Record<string, string> } });
      assertEquals(out.code, 0, out.stderr);
      const after = Date.now();
      // Three days from each object's own upload.
      const near3Days = (until: number, what: string) =>
        assert(until >= before + 3 * DAY - 1000 && until <= after + 3 * DAY + 1000, what);
      for (const k of keysUnder(prefix as string)) {
        // The request that creates the object says so: a PUT, or CreateMultipartUpload.
        const creating = writesOf(k).filter((r) =>
          isCreate(r) || (r.method === "PUT" && !isPart(r))
        );
        assertEquals(creating.length, 1, k);
        assertEquals(creating[0]!.headers.get("x-amz-object-lock-mode"), "COMPLIANCE", k);
        near3Days(Date.parse(creating[0]!.headers.get("x-amz-object-lock-retain-until-date")!), k);
        if (k.endsWith("Data.db")) {
          assertEquals(isCreate(creating[0]!), true, `multipart ${k}`);
          continue; // moto keeps no retention for multipart uploads
        }
        const h = await head(k);
        assertEquals(h.ObjectLockMode, "COMPLIANCE", k);
        near3Days(h.ObjectLockRetainUntilDate!.getTime(), k);
      }
    });
  }

  await t.step("--object-lock-* into a bucket without Object Lock fails, saying so", async () => {
    const out = await runCli([
      ...watch,
      "--without-index",
      "--object-lock-mode",
      "GOVERNANCE",
      "--object-lock-days",
      "1",
      "plain",
      dir.path,
    ], { env });
    assertEquals(out.code, 1, out.stderr);
    assertStringIncludes(out.stderr, "Bucket is missing ObjectLockConfiguration");
  });

  await t.step(
    "a re-upload makes a new version; slurp and verify read the current ones",
    async () => {
      const store = storeOf(s3, bucket);
      try {
        const w = storeWriter(store);
        // The index again, naming only two files, and Index.db with other bytes.
        const indexKey = await putIndex(w, `${table}/nb-1-big-Data.db`, [
          "nb-1-big-Data.db",
          "nb-1-big-Index.db",
        ]);
        const newer = contentOf("index, again");
        const indexDb = await putFile(w, `${table}/nb-1-big-Index.db`, newer);
        const versions = await versionsOf(s3.client, bucket);
        for (const k of [indexKey, indexDb]) {
          assertEquals(versions.filter((v) => v.key === k).length, 2, k);
        }
      } finally {
        store.close();
      }
      const target = `${dir.path}/restored`;
      const slurp = await runCli(["slurp", "-n", HOST, bucket, table, target], { env: s3.env });
      assertEquals(slurp.code, 0, slurp.stderr);
      assertEquals(
        [...Deno.readDirSync(target)].map((e) => e.name).sort(),
        ["nb-1-big-Data.db", "nb-1-big-Index.db"],
      );
      assertEquals(
        md5(await Deno.readFile(`${target}/nb-1-big-Index.db`)),
        md5(contentOf("index, again")),
      );
      assertEquals(
        md5(await Deno.readFile(`${target}/nb-1-big-Data.db`)),
        md5(await Deno.readFile(`${table}/nb-1-big-Data.db`)),
      );
      const verify = await runCli(["verify", "--md5", "-n", HOST, bucket, dir.path], {
        env: s3.env,
      });
      assertEquals(verify.code, 0, verify.stdout + verify.stderr);
    },
  );
});

Deno.test("listVersions pages through versions and delete markers in S3's order", async () => {
  await using s3 = await startS3Server("plain", { server: "moto", tls: false });
  const bucket = await lockedBucket(s3, "versions");
  const store = storeOf(s3, bucket);
  try {
    const keys = Array.from({ length: 1010 }, (_, i) => `h:/d/k${String(i).padStart(4, "0")}`);
    await Promise.all(keys.map((k) => store.putBytes(k, new Uint8Array([1]), {})));
    // Versions on both sides of the first page's end, and a delete marker.
    for (const k of [keys[0]!, keys[999]!, keys[1000]!]) {
      await store.putBytes(k, new Uint8Array([2, 2]), {});
    }
    await store.deleteMany([keys[500]!]);
    const listed = await Array.fromAsync(store.listVersions("h:/d/"));
    assertEquals(listed.length, 1010 + 3 + 1);
    // Each key's versions together, keys in order, the current one first.
    const order = [...new Set(listed.map((v) => v.key))];
    assertEquals(order, keys);
    for (const k of [keys[0]!, keys[999]!, keys[1000]!]) {
      const mine = listed.filter((v) => v.key === k);
      assertEquals(mine.map((v) => [v.latest, v.size]), [[true, 2], [false, 1]], k);
    }
    const deleted = listed.filter((v) => v.key === keys[500]);
    assertEquals(deleted.map((v) => [v.latest, v.deleteMarker]), [[true, true], [false, false]]);
    await store.deleteVersions(listed);
    assertEquals(await Array.fromAsync(store.listVersions("h:/d/")), []);
  } finally {
    store.close();
  }
});

Deno.test("chop on a versioned bucket deletes versions, reports what the lock kept, keeps what indexes need", async (t) => {
  await using s3 = await startS3Server("plain", { server: "moto", tls: false });
  const bucket = await lockedBucket(s3, "chopped");
  const plain = storeOf(s3, bucket);
  const locking = storeOf(s3, bucket, { mode: "GOVERNANCE", days: 1 });
  try {
    const w = storeWriter(plain);
    const table = "/var/lib/cassandra/data/ks/t";
    // Generation 1: its index and files, one of them re-uploaded (2 versions), one locked.
    const reuploaded = await putFile(w, `${table}/nb-1-big-Data.db`, contentOf("a"));
    await putFile(w, `${table}/nb-1-big-Data.db`, contentOf("a, again"));
    const locked = await putFile(
      storeWriter(locking),
      `${table}/nb-1-big-Index.db`,
      contentOf("b"),
    );
    const shared = await putFile(w, `${table}/nb-1-big-Filter.db`, contentOf("s"));
    await putFile(w, `${table}/nb-1-big-Filter.db`, contentOf("s, again"));
    const index1 = await putIndex(w, `${table}/nb-1-big-Data.db`, [
      "nb-1-big-Data.db",
      "nb-1-big-Index.db",
      "nb-1-big-Filter.db",
    ]);
    // A file deleted earlier: a delete marker over its one version.
    const gone = await putFile(w, `${table}/nb-0-big-Data.db`, contentOf("c"));
    await plain.deleteMany([gone]);
    // Generation 2, the newest index: it still names generation 1's Filter.db.
    const index2 = await putTable(w, table, [...generation(2), "nb-1-big-Filter.db"], {
      written: new Set([`${table}/nb-1-big-Filter.db`]),
    });
    const all = await versionsOf(s3.client, bucket);
    const future = new Date(Date.now() + 30 * DAY).toISOString();
    const args = ["-l", "--now", future, "-n", HOST, bucket, "/var/lib/cassandra/data", "7"];
    const gen2 = [...generation(2).map((n) => key(NAMING, `${table}/${n}`)), index2];

    await t.step("a dry run lists every version it would delete and deletes none", async () => {
      const out = await runCli(["chop", "-d", ...args], { env: s3.env });
      assertEquals(out.code, 0, out.stderr);
      const would = out.stdout.split("\n").filter((l) => l.startsWith("would delete "));
      assertEquals(would.length, 6, out.stdout); // 2 + 1 + 1 (index1) + 1 + 1 marker
      for (const k of [reuploaded, locked, index1, gone]) assertStringIncludes(out.stdout, k);
      assertEquals((await versionsOf(s3.client, bucket)).length, all.length);
    });

    await t.step("a real run deletes them, but for the locked one, and exits 0", async () => {
      const out = await runCli(["chop", ...args], { env: s3.env });
      assertEquals(out.code, 0, out.stderr);
      const lockedVersion = all.find((v) => v.key === locked)!.versionId;
      assertStringIncludes(out.stdout, `kept by lock ${locked} (version ${lockedVersion})`);
      assertStringIncludes(out.stdout, `deleted ${gone} (delete marker `);
      const summary = out.stdout.trim().split("\n").at(-1)!;
      assertStringIncludes(summary, "(versioned)");
      assertStringIncludes(summary, "deleted 4 versions");
      assertStringIncludes(summary, "and 1 delete markers");
      assertStringIncludes(summary, `kept by lock 1 versions (${contentOf("b").length} B)`);
      const left = await versionsOf(s3.client, bucket);
      // What the newest index needs stays with all its versions; nothing of the rest but the lock's.
      assertEquals(
        left.map((v) => v.key).sort(),
        [...gen2, shared, shared, locked].sort(),
      );
    });

    await t.step("the next run finds only the locked version to delete, and keeps it", async () => {
      const out = await runCli(["chop", ...args], { env: s3.env });
      assertEquals(out.code, 0, out.stderr);
      assertStringIncludes(out.stdout.trim().split("\n").at(-1)!, "deleted 0 versions");
      assertStringIncludes(out.stdout, `kept by lock ${locked}`);
    });
  } finally {
    plain.close();
    locking.close();
  }
});
