/**
 * Large objects restore as parallel ranged GETs into the partial file, and
 * a restore killed mid-file resumes with the missing ranges only. Real
 * s3rver behind a throttling proxy that counts what it serves.
 */
import { assert, assertEquals } from "./_assert.ts";
import { generateIdentity, identityToRecipient } from "age-encryption";
import { key, md5Hex, NAMING, putFile, putIndex, s3Writer } from "./_bucket_fixture.ts";
import { delay, runCli, spawnCli, startS3Server, tempDir, waitFor } from "./_helpers.ts";
import { RANGE_BYTES } from "../lib/restore/ranged_download.ts";
import { EncryptingStore } from "../lib/store/encrypting_store.ts";
import { S3Store } from "../lib/store/s3/s3_store.ts";

const MB = 1024 * 1024;

/** A proxy to `upstream` that paces every response body and counts ranged GETs. */
function startPacingProxy(
  upstream: (path: string, init: RequestInit) => Promise<Response>,
  bytesPerSecond: number,
) {
  const stats = { rangedGets: 0, bytes: 0, inFlight: 0, maxInFlight: 0 };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const headers = new Headers(req.headers);
    for (const name of ["host", "content-length", "connection"]) headers.delete(name);
    const body = req.method === "GET" || req.method === "HEAD"
      ? undefined
      : await req.arrayBuffer();
    const res = await upstream(url.pathname + url.search, {
      method: req.method,
      headers,
      ...(body ? { body } : {}),
    });
    if (!res.body || req.method !== "GET" || !req.headers.has("range")) {
      return new Response(res.body, { status: res.status, headers: res.headers });
    }
    stats.rangedGets++;
    stats.maxInFlight = Math.max(stats.maxInFlight, ++stats.inFlight);
    const paced = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        async transform(chunk, controller) {
          await delay((chunk.byteLength / bytesPerSecond) * 1000);
          stats.bytes += chunk.byteLength;
          controller.enqueue(chunk);
        },
        flush() {
          stats.inFlight--;
        },
      }),
    );
    return new Response(paced, { status: res.status, headers: res.headers });
  });
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    stats,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

Deno.test("a large object restores in parallel ranges and resumes after SIGKILL", async () => {
  await using s3 = await startS3Server("test-bucket", { tls: false });
  await using work = await tempDir();
  const table = "/var/lib/cassandra/data/ks/big-1";
  const size = 100 * MB + 12_345;
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 4093) bytes[i] = (i / 4093) % 251;
  const w = s3Writer(s3);
  await putFile(w, `${table}/nb-1-big-Data.db`, bytes);
  await putIndex(w, `${table}/nb-1-big-Data.db`, ["nb-1-big-Data.db"]);
  await using proxy = startPacingProxy((path, init) => s3.fetch(path, init), 8 * MB);
  const env = { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint };
  const target = `${work.path}/restore`;
  const args = ["slurp", "-n", NAMING.name, s3.bucket, table, target];
  const state = `${target}/.nb-1-big-Data.db.tablesnap-partial.ranges`;
  const ranges = Math.ceil(size / RANGE_BYTES);

  // First run: killed once a few ranges are recorded.
  await using first = spawnCli(args, { env });
  const doneAtKill = await waitFor("two recorded ranges", async () => {
    try {
      const done = JSON.parse(await Deno.readTextFile(state)).done as number[];
      return done.length >= 2 ? done.length : undefined;
    } catch {
      return undefined;
    }
  }, 60_000);
  await first.stop("SIGKILL");
  assert(
    proxy.stats.maxInFlight >= 2,
    `parallel ranges: at most ${proxy.stats.maxInFlight} at once`,
  );
  const recorded = JSON.parse(await Deno.readTextFile(state)).done.length as number;
  assert(recorded >= doneAtKill && recorded < ranges, `recorded ${recorded} of ${ranges}`);

  // The killed run's responses drain from the proxy before the count starts again.
  for (let last = -1; last !== proxy.stats.bytes;) {
    last = proxy.stats.bytes;
    await delay(300);
  }
  // The re-run fetches only the ranges not recorded, and the file is whole.
  proxy.stats.rangedGets = 0;
  proxy.stats.bytes = 0;
  const second = await runCli(args, { env });
  assertEquals(second.code, 0, second.stdout + second.stderr);
  assertEquals(proxy.stats.rangedGets, ranges - recorded);
  assert(
    proxy.stats.bytes <= size - recorded * RANGE_BYTES,
    `re-fetched ${proxy.stats.bytes} bytes, at most ${size - recorded * RANGE_BYTES} expected`,
  );
  assertEquals(md5Hex(await Deno.readFile(`${target}/nb-1-big-Data.db`)), md5Hex(bytes));
  // No partial file or state is left behind.
  const left = [...Deno.readDirSync(target)].map((e) => e.name);
  assertEquals(left, ["nb-1-big-Data.db"]);
});

Deno.test("a large encrypted object restores in ranges of whole chunks and resumes after SIGKILL", async () => {
  await using s3 = await startS3Server();
  await using work = await tempDir();
  const table = "/var/lib/cassandra/data/ks/secret-1";
  const size = 70 * MB + 4_321;
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 4093) bytes[i] = (i / 4093) % 251;
  // Uploaded as the watcher does, through an encrypting store.
  const identity = await generateIdentity();
  const identityFile = `${work.path}/key.txt`;
  await Deno.writeTextFile(identityFile, `${identity}\n`);
  const inner = new S3Store({
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    caCerts: [s3.tls!.caPem],
  });
  const writer = new EncryptingStore(inner, { recipients: [await identityToRecipient(identity)] });
  const plainPath = `${work.path}/plain`;
  await Deno.writeFile(plainPath, bytes);
  const dataKey = key(NAMING, `${table}/nb-1-big-Data.db`);
  const md5 = md5Hex(bytes);
  try {
    await writer.putFile(dataKey, { path: plainPath, size, md5, metadata: { md5sum: md5 } });
    const index = new TextEncoder().encode(`{${JSON.stringify(table)}: ["nb-1-big-Data.db"]}`);
    await writer.putBytes(`${dataKey}-listdir.json`, index, { contentType: "application/json" });
  } finally {
    writer.close();
  }
  await using proxy = startPacingProxy((path, init) => s3.fetch(path, init), 8 * MB);
  const env = { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint };
  const target = `${work.path}/restore`;
  const args = ["slurp", "-n", NAMING.name, "--identity", identityFile, s3.bucket, table, target];
  const state = `${target}/.nb-1-big-Data.db.tablesnap-partial.ranges`;
  const ranges = Math.ceil(size / RANGE_BYTES);

  await using first = spawnCli(args, { env });
  await waitFor("two recorded ranges", async () => {
    try {
      const done = JSON.parse(await Deno.readTextFile(state)).done as number[];
      return done.length >= 2 ? done.length : undefined;
    } catch {
      return undefined;
    }
  }, 60_000);
  await first.stop("SIGKILL");
  assert(proxy.stats.maxInFlight >= 2, `parallel ranges: at most ${proxy.stats.maxInFlight}`);
  const recorded = JSON.parse(await Deno.readTextFile(state)).done.length as number;
  assert(recorded < ranges, `recorded ${recorded} of ${ranges}`);
  for (let last = -1; last !== proxy.stats.bytes;) {
    last = proxy.stats.bytes;
    await delay(300);
  }
  // The re-run reads the header once (one small ranged GET), then only the
  // ranges not recorded, each as the whole sealed chunks that hold it.
  proxy.stats.rangedGets = 0;
  proxy.stats.bytes = 0;
  const second = await runCli(args, { env });
  assertEquals(second.code, 0, second.stdout + second.stderr);
  assertEquals(proxy.stats.rangedGets, ranges - recorded + 1);
  const sealed = (plain: number) => plain + Math.ceil(plain / (64 * 1024)) * 16;
  const expected = sealed(size - recorded * RANGE_BYTES) + 64 * 1024;
  assert(
    proxy.stats.bytes <= expected,
    `re-fetched ${proxy.stats.bytes} bytes, at most ${expected}`,
  );
  assertEquals(md5Hex(await Deno.readFile(`${target}/nb-1-big-Data.db`)), md5);
  assertEquals([...Deno.readDirSync(target)].map((e) => e.name), ["nb-1-big-Data.db"]);
});
