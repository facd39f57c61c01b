/**
 * Multipart uploads across SIGKILL (`--state-dir`, lib/watch/upload/multipart_resume.ts
 * and stale_uploads.ts): a real watcher killed mid-upload against moto (which,
 * unlike s3rver, lists multipart uploads and their parts), its bytes counted
 * by a TCP proxy in between, then restarted without -B.
 */
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { generateIdentity, identityToRecipient } from "age-encryption";
import { createHash } from "node:crypto";
import { assert, assertEquals } from "./_assert.ts";
import { startCountingProxy } from "./_counting_proxy.ts";
import {
  headObject,
  runCli,
  type S3Server,
  spawnWatcher,
  startS3Server,
  tempDir,
  waitFor,
} from "./_helpers.ts";
import { Journal } from "../lib/watch/durable/journal.ts";
import { JOURNAL_FILE, parseJournal } from "../lib/watch/durable/journal_format.ts";
import { S3Store } from "../lib/store/s3/s3_store.ts";

const HOST = "resumehost";
const MiB = 1024 * 1024;
const PART = 5 * MiB;

/** Every incomplete multipart upload under `prefix`, through the test's own client. */
async function uploadsUnder(s3: S3Server, prefix = "") {
  const out = await s3.client.send(
    new ListMultipartUploadsCommand({ Bucket: s3.bucket, Prefix: prefix }),
  );
  return (out.Uploads ?? []).map((u) => ({ key: u.Key!, uploadId: u.UploadId! }));
}

async function partsOf(s3: S3Server, key: string, uploadId: string): Promise<number> {
  const out = await s3.client.send(
    new ListPartsCommand({ Bucket: s3.bucket, Key: key, UploadId: uploadId }),
  );
  return out.Parts?.length ?? 0;
}

function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/** Bytes that differ in every part, so a part sent at the wrong place shows. */
function fileBytes(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < size; i += 4) {
    x = (x * 1664525 + 1013904223) >>> 0;
    bytes[i] = x & 255;
    bytes[i + 1] = (x >>> 8) & 255;
    bytes[i + 2] = (x >>> 16) & 255;
    bytes[i + 3] = x >>> 24;
  }
  return bytes;
}

async function objectBytes(s3: S3Server, key: string): Promise<Uint8Array> {
  const out = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
  return await out.Body!.transformToByteArray();
}

/** Written under a name the watcher skips, then renamed into place, as Cassandra's -tmp files are. */
async function writeComplete(path: string, bytes: Uint8Array): Promise<void> {
  await Deno.writeFile(`${path}.tmp`, bytes);
  await Deno.rename(`${path}.tmp`, path);
}

function watchArgs(stateDir: string, bucket: string, root: string, ...extra: string[]) {
  return [
    "-r",
    "-a",
    "-n",
    HOST,
    "--without-index",
    "--state-dir",
    stateDir,
    "--max-upload-size",
    "5",
    "--multipart-chunk-size",
    "5",
    ...extra,
    bucket,
    root,
  ];
}

/** Waits until `key` has an upload in progress with at least `parts` parts; returns its id. */
function waitForParts(s3: S3Server, key: string, parts: number): Promise<string> {
  return waitFor(`${parts} parts of ${key}`, async () => {
    const upload = (await uploadsUnder(s3, key)).find((u) => u.key === key);
    return upload && await partsOf(s3, key, upload.uploadId) >= parts && upload.uploadId;
  }, 30_000);
}

Deno.test("journal: upload lines load, old journals still load, compaction keeps live uploads", async () => {
  const header = `{"journal":"tablesnap","version":1}`;
  const text = [
    header,
    `{"op":"pending","path":"/d/big","since":5}`,
    `{"op":"upload","path":"/d/big","key":"h:/d/big","uploadId":"u1","partSize":5,"size":12,"mtime":7}`,
    `{"op":"part","path":"/d/big","n":1,"etag":"\\"aa\\""}`,
    `{"op":"upload","path":"/d/old","key":"h:/d/old","uploadId":"u0","partSize":5,"size":9,"mtime":3}`,
    `{"op":"upload-end","path":"/d/old"}`,
  ].join("\n") + "\n";
  const parsed = parseJournal(text);
  assertEquals(parsed.damage, undefined);
  assertEquals([...parsed.uploads.keys()], ["/d/big"]);
  assertEquals(parsed.uploads.get("/d/big")?.uploadId, "u1");
  assertEquals([...parsed.uploads.get("/d/big")!.parts], [[1, `"aa"`]]);
  // A journal written before multipart resume reads as it did.
  const old = parseJournal(`${header}\n{"op":"pending","path":"/d/a","since":1}\n`);
  assertEquals([...old.pending], [["/d/a", 1]]);
  assertEquals(old.uploads.size, 0);
  assert(
    parseJournal(`${header}\n{"op":"upload","path":"/d/a"}\n`).damage?.includes("line 2"),
    "an upload line without its fields is damage",
  );

  await using dir = await tempDir("tablesnap-state-");
  await Deno.writeTextFile(`${dir.path}/${JOURNAL_FILE}`, text);
  const { journal, recovery } = await Journal.open(dir.path, { flushDelayMs: 10_000 });
  assertEquals(recovery.uploads.get("/d/big")?.uploadId, "u1");
  journal.uploadStarted("/d/new", {
    key: "h:/d/new",
    uploadId: "u2",
    partSize: 5,
    size: 10,
    mtimeMs: 8,
  });
  journal.partDone("/d/new", 1, `"bb"`);
  journal.uploadEnded("/d/big");
  await journal.close(); // compacted: only the live upload and its part remain
  const after = parseJournal(await Deno.readTextFile(`${dir.path}/${JOURNAL_FILE}`));
  assertEquals([...after.uploads.keys()], ["/d/new"]);
  assertEquals([...after.uploads.get("/d/new")!.parts], [[1, `"bb"`]]);
  const again = await Journal.open(dir.path);
  assertEquals(again.journal.uploads().map(([path, u]) => [path, u.uploadId]), [["/d/new", "u2"]]);
  await again.journal.close();
});

Deno.test("S3Store resumes only the parts whose ETag is the file's part MD5, and replaces a lost upload", async () => {
  await using s3 = await startS3Server("resume-bucket", { server: "moto", tls: false });
  await using dir = await tempDir();
  const path = `${dir.path}/f`;
  const bytes = fileBytes(3 * PART + 1000, 5);
  await Deno.writeFile(path, bytes);
  const partMd5s = [0, 1, 2, 3].map((i) => md5(bytes.subarray(i * PART, (i + 1) * PART)));
  const upload = {
    path,
    size: bytes.length,
    md5: md5(bytes),
    parts: { partSize: PART, md5s: partMd5s },
    metadata: { md5sum: md5(bytes) },
  };
  const store = new S3Store({
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
  });
  try {
    // An upload with part 1 right, part 2 of other bytes (same size), no part 3 or 4.
    const key = "h:/resumed";
    const { UploadId } = await s3.client.send(
      new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: key }),
    );
    for (const [n, body] of [[1, bytes.subarray(0, PART)], [2, fileBytes(PART, 6)]] as const) {
      await s3.client.send(
        new UploadPartCommand({ Bucket: s3.bucket, Key: key, UploadId, PartNumber: n, Body: body }),
      );
    }
    let sent = 0;
    const started: string[] = [];
    const done: number[] = [];
    await store.putFile(key, upload, {
      resume: { uploadId: UploadId! },
      onBytes: (n) => void (sent += n),
      onUploadStarted: (id) => void started.push(id),
      onPartDone: (n) => void done.push(n),
    });
    assertEquals(sent, bytes.length - PART, "every part but the first was sent");
    assertEquals(started, []);
    assertEquals(done, [2, 3, 4]);
    assertEquals(md5(await objectBytes(s3, key)), md5(bytes));

    // An upload S3 no longer has: a new one, announced, and the whole file sent.
    sent = 0;
    await store.putFile("h:/lost", upload, {
      resume: { uploadId: "no-such-upload" },
      onBytes: (n) => void (sent += n),
      onUploadStarted: (id) => void started.push(id),
    });
    assertEquals(sent, bytes.length);
    assertEquals(started.length, 1);
    assertEquals(md5(await objectBytes(s3, "h:/lost")), md5(bytes));
    assertEquals(await uploadsUnder(s3), []);
  } finally {
    store.close();
  }
});

/**
 * A 60 MiB file's multipart upload killed after a few parts, then the
 * watcher restarted: the stored parts are kept, at most the part in flight
 * is sent again. `recipient`: encrypted, each part sealed again from the
 * file with the header and file key the journal kept.
 */
async function killAndResume(recipient?: { recipient: string; identityFile: string }) {
  await using s3 = await startS3Server("resume-bucket", { server: "moto", tls: false });
  await using proxy = startCountingProxy(s3.port);
  await using dir = await tempDir();
  const root = `${dir.path}/data`;
  const stateDir = `${dir.path}/state`;
  await Deno.mkdir(`${root}/ks/t`, { recursive: true });
  const path = `${root}/ks/t/nb-1-big-Data.db`;
  const key = `${HOST}:${path}`;
  const size = 60 * MiB + 12345; // 13 parts, the last one short
  // Encrypted: the header and a 16-byte tag per 64 KiB chunk, still 13 parts.
  const stored = recipient ? size + Math.ceil(size / 65536) * 16 + 200 : size;
  const totalParts = Math.ceil(stored / PART);
  const bytes = fileBytes(size, 1);
  const env = { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint };
  const encrypt = recipient ? ["--encrypt-to", recipient.recipient] : [];

  {
    await using watcher = spawnWatcher(
      watchArgs(stateDir, s3.bucket, root, "--max-bandwidth", "8M", ...encrypt),
      { env },
    );
    await watcher.waitUntilWatching();
    await writeComplete(path, bytes);
    await waitForParts(s3, key, 3);
    await watcher.stop("SIGKILL");
  }
  const [upload] = await uploadsUnder(s3, HOST);
  assert(upload, "the killed upload is still in progress");
  const partsBefore = await partsOf(s3, key, upload.uploadId);
  assert(partsBefore >= 3 && partsBefore < totalParts, `parts before the restart: ${partsBefore}`);
  if (recipient) {
    // What regenerates the parts is a secret: the journal is the owner's alone.
    const journal = await Deno.stat(`${stateDir}/${JOURNAL_FILE}`);
    assertEquals((journal.mode ?? 0) & 0o777, 0o600);
  }
  const sentBefore = proxy.bodyBytes();
  proxy.reset();

  {
    await using watcher = spawnWatcher(watchArgs(stateDir, s3.bucket, root, ...encrypt), { env });
    await waitFor("the object", () => headObject(s3, key), 60_000);
    await waitFor("no upload in progress", async () => (await uploadsUnder(s3)).length === 0);
    assertEquals(await watcher.stop("SIGTERM"), 0, watcher.stderr());
  }
  const sentAfter = proxy.bodyBytes();
  // What had to be sent (the parts not yet stored) plus at most one part,
  // and a little for the completion's XML.
  const remaining = stored - partsBefore * PART;
  assert(
    sentAfter <= remaining + PART + 16 * 1024,
    `after the restart ${sentAfter} body bytes were sent; ${remaining} were left`,
  );
  assert(
    sentAfter >= remaining - 1024,
    `the remaining ${remaining} bytes were sent (${sentAfter})`,
  );
  assert(sentBefore + sentAfter < stored + 2 * PART, `in all ${sentBefore + sentAfter} bytes`);
  console.log(
    `${recipient ? "encrypted: " : ""}resumed after ${partsBefore} of ${totalParts} parts: ` +
      `${sentAfter} bytes sent after the restart for ${remaining} left ` +
      `(${sentAfter - remaining} again), ${sentBefore + sentAfter} in all for a ${size}-byte file`,
  );

  const head = await headObject(s3, key);
  assertEquals(head?.ETag?.endsWith(`-${totalParts}"`), true, head?.ETag);
  assertEquals(head?.Metadata?.md5sum, md5(bytes));
  const info = await Deno.lstat(path);
  assertEquals(JSON.parse(head?.Metadata?.stat ?? "{}").mode, info.mode);
  let object = await objectBytes(s3, key);
  if (recipient) {
    // The age CLI reads the object whose parts came from two runs.
    const cipher = `${dir.path}/object.age`;
    await Deno.writeFile(cipher, object);
    const out = await new Deno.Command("age", {
      args: ["-d", "-i", recipient.identityFile, cipher],
    })
      .output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    object = out.stdout;
  }
  assertEquals(md5(object), md5(bytes));
}

Deno.test("a 60 MiB multipart upload killed mid-way resumes from its last part after a restart without -B", async () => {
  await killAndResume();
});

Deno.test("an encrypted multipart upload killed mid-way resumes from its last part, same header", async () => {
  await using keys = await tempDir();
  const identity = await generateIdentity();
  const identityFile = `${keys.path}/key.txt`;
  await Deno.writeTextFile(identityFile, `${identity}\n`);
  await killAndResume({ recipient: await identityToRecipient(identity), identityFile });
});

Deno.test("a stop past --shutdown-grace keeps the multipart upload, and the next start resumes it", async () => {
  await using s3 = await startS3Server("resume-bucket", { server: "moto", tls: false });
  await using proxy = startCountingProxy(s3.port);
  await using dir = await tempDir();
  const root = `${dir.path}/data`;
  const stateDir = `${dir.path}/state`;
  await Deno.mkdir(`${root}/ks/t`, { recursive: true });
  const path = `${root}/ks/t/nb-3-big-Data.db`;
  const key = `${HOST}:${path}`;
  const size = 25 * MiB;
  const bytes = fileBytes(size, 7);
  const env = { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint };
  {
    await using watcher = spawnWatcher(
      watchArgs(stateDir, s3.bucket, root, "--max-bandwidth", "6M", "--shutdown-grace", "0"),
      { env },
    );
    await watcher.waitUntilWatching();
    await writeComplete(path, bytes);
    await waitForParts(s3, key, 2);
    assertEquals(await watcher.stop("SIGTERM"), 0, watcher.stderr());
  }
  const [kept] = await uploadsUnder(s3, HOST);
  assert(kept, "the interrupted upload is kept for the next start");
  const partsBefore = await partsOf(s3, key, kept.uploadId);
  proxy.reset();
  {
    await using watcher = spawnWatcher(watchArgs(stateDir, s3.bucket, root), { env });
    await waitFor("the object", () => headObject(s3, key), 60_000);
    await waitFor("no upload in progress", async () => (await uploadsUnder(s3)).length === 0);
    assertEquals(await watcher.stop("SIGTERM"), 0, watcher.stderr());
  }
  const remaining = size - partsBefore * PART;
  assert(
    proxy.bodyBytes() <= remaining + PART + 16 * 1024,
    `after the restart ${proxy.bodyBytes()} body bytes were sent; ${remaining} were left`,
  );
  assertEquals(md5(await objectBytes(s3, key)), md5(bytes));
});

Deno.test("a file changed while the watcher was down: its old upload is aborted, the new bytes land", async () => {
  await using s3 = await startS3Server("resume-bucket", { server: "moto" });
  await using dir = await tempDir();
  const root = `${dir.path}/data`;
  const stateDir = `${dir.path}/state`;
  await Deno.mkdir(`${root}/ks/t`, { recursive: true });
  const path = `${root}/ks/t/nb-2-big-Data.db`;
  const key = `${HOST}:${path}`;
  const size = 20 * MiB;

  let oldUpload: string;
  {
    await using watcher = spawnWatcher(
      watchArgs(stateDir, s3.bucket, root, "--max-bandwidth", "6M"),
      { env: s3.env },
    );
    await watcher.waitUntilWatching();
    await writeComplete(path, fileBytes(size, 2));
    oldUpload = await waitForParts(s3, key, 1);
    // The journal's batch (written every 100 ms) holds the upload.
    await waitFor("the upload in the journal", async () => {
      const text = await Deno.readTextFile(`${stateDir}/${JOURNAL_FILE}`).catch(() => "");
      return text.includes(`"uploadId":${JSON.stringify(oldUpload)}`);
    });
    await watcher.stop("SIGKILL");
  }
  // Rewritten in place, same size: only the content and the mtime differ.
  const newer = fileBytes(size, 3);
  await writeComplete(path, newer);
  {
    await using watcher = spawnWatcher(watchArgs(stateDir, s3.bucket, root), { env: s3.env });
    await waitFor("the new object", async () => {
      const head = await headObject(s3, key);
      return head?.Metadata?.md5sum === md5(newer);
    }, 60_000);
    await waitFor("no upload in progress", async () => (await uploadsUnder(s3)).length === 0);
    assertEquals(await watcher.stop("SIGTERM"), 0, watcher.stderr());
  }
  assertEquals(md5(await objectBytes(s3, key)), md5(newer));
  assert(!(await uploadsUnder(s3)).some((u) => u.uploadId === oldUpload), "old upload aborted");
});

Deno.test("stale uploads under the watched paths are aborted at start, others are left alone", async () => {
  await using s3 = await startS3Server("resume-bucket", { server: "moto" });
  await using dir = await tempDir();
  const root = `${dir.path}/data`;
  await Deno.mkdir(root, { recursive: true });
  const create = async (key: string) => {
    const out = await s3.client.send(
      new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: key }),
    );
    await s3.client.send(
      new UploadPartCommand({
        Bucket: s3.bucket,
        Key: key,
        UploadId: out.UploadId!,
        PartNumber: 1,
        Body: fileBytes(PART, 4),
      }),
    );
    return out.UploadId!;
  };
  const mine = [`${HOST}:${root}/ks/t/nb-9-big-Data.db`, `${HOST}:${root}/a`];
  const others = [
    `other-${HOST}:${root}/ks/t/nb-9-big-Data.db`, // another host
    `${HOST}x:${root}/a`, // a host whose name starts like this one's
    `${HOST}:/elsewhere/CommitLog-7-1.log`, // this host's, another watcher's PATH
  ];

  for (const withState of [true, false]) {
    for (const key of [...mine, ...others]) await create(key);
    if (withState) {
      await using watcher = spawnWatcher(watchArgs(`${dir.path}/state`, s3.bucket, root), {
        env: s3.env,
      });
      // The clean-up runs before the watches are set up.
      await watcher.waitUntilWatching();
      assertEquals(await watcher.stop("SIGTERM"), 0, watcher.stderr());
    } else {
      // Without --state-dir it runs at -B starts (here with --once).
      const out = await runCli(["--once", "-B", "-n", HOST, s3.bucket, root], { env: s3.env });
      assertEquals(out.code, 0, out.stderr);
    }
    const left = (await uploadsUnder(s3)).map((u) => u.key).sort();
    assertEquals(left, [...others].sort(), `with state dir: ${withState}`);
    // The other hosts' go before the next round.
    for (const u of await uploadsUnder(s3)) {
      await s3.client.send(
        new AbortMultipartUploadCommand({ Bucket: s3.bucket, Key: u.key, UploadId: u.uploadId }),
      );
    }
  }
});
