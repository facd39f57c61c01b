/**
 * Which digest an encrypted body is sent with (`Store.bodyCheck`,
 * lib/store/s3/body_check.ts): a CRC-32 where the server verifies one (as
 * AWS does), Content-MD5 where it verifies only that, none where it
 * verifies neither (moto, s3rver). The servers that verify are a front of
 * this file's over a real moto server, checking bodies as S3 does and
 * answering `BadDigest`. Signed frames, which Ceph RGW verifies, are
 * store_contract_test's.
 */
import { generateIdentity, identityToRecipient } from "age-encryption";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { type S3Server, startS3Server, tempDir } from "./_helpers.ts";
import { makeTestTls } from "./_tls.ts";
import { EncryptingStore } from "../lib/store/encrypting_store.ts";
import { S3Store } from "../lib/store/s3/s3_store.ts";
import type { BodyCheck, Store } from "../lib/store/store.ts";

/** What the front saw of one request. */
interface Seen {
  method: string;
  path: string;
  headers: Headers;
}

interface CheckingFront extends AsyncDisposable {
  endpoint: string;
  caPem: string;
  seen: Seen[];
}

const md5Of = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("base64");
const crc32Of = (bytes: Uint8Array) => {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(crc32(bytes) >>> 0);
  return out.toString("base64");
};

/**
 * An HTTPS front to `upstream` that refuses a PUT whose body does not match
 * its Content-MD5 (and, with `checks: "crc32"`, its `x-amz-checksum-crc32`);
 * with `checks: "none"` it refuses nothing.
 */
async function startCheckingFront(
  upstream: S3Server,
  checks: BodyCheck,
  dir: string,
): Promise<CheckingFront> {
  const tlsDir = await Deno.makeTempDir({ dir, prefix: `front-${checks}-` });
  const tls = await makeTestTls(tlsDir);
  const seen: Seen[] = [];
  // S3's answers, word for word.
  const badDigest = (which: string) =>
    new Response(
      `<Error><Code>BadDigest</Code><Message>The ${which} you specified did not match the calculated checksum.</Message></Error>`,
      { status: 400, headers: { "content-type": "application/xml" } },
    );
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(tls.certFile),
    key: await Deno.readTextFile(tls.keyFile),
    onListen() {},
  }, async (req) => {
    const url = new URL(req.url);
    // A body the client cut short (it found its file changed) is no request.
    const read = await req.arrayBuffer().catch(() => null);
    if (read === null) return new Response(null, { status: 400 });
    const body = new Uint8Array(read);
    seen.push({ method: req.method, path: url.pathname + url.search, headers: req.headers });
    if (req.method === "PUT") {
      const md5 = req.headers.get("content-md5");
      if (checks !== "none" && md5 !== null && md5 !== md5Of(body)) return badDigest("Content-MD5");
      const crc = req.headers.get("x-amz-checksum-crc32");
      if (checks === "crc32" && crc !== null && crc !== crc32Of(body)) return badDigest("CRC32");
    }
    const headers = new Headers(req.headers);
    headers.delete("host");
    headers.delete("content-length");
    const answer = await fetch(`${upstream.endpoint}${url.pathname}${url.search}`, {
      method: req.method,
      headers,
      ...(req.method === "GET" || req.method === "HEAD" ? {} : { body }),
    });
    return new Response(answer.body, { status: answer.status, headers: answer.headers });
  });
  const port = server.addr.port;
  return {
    endpoint: `https://127.0.0.1:${port}`,
    caPem: tls.caPem,
    seen,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

function storeAt(endpoint: string, bucket: string, caPem?: string): S3Store {
  return new S3Store({
    bucket,
    endpoint,
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    ...(caPem ? { caCerts: [caPem] } : {}),
  });
}

async function keysAndUploads(store: Store): Promise<string[]> {
  const found: string[] = [];
  for await (const info of store.list("")) found.push(info.key);
  for await (const upload of store.listUploads!("")) found.push(`upload of ${upload.key}`);
  return found;
}

/** A file of `size` bytes that are not all alike. */
async function writeFile(path: string, size: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 4093) bytes[i] = (i / 4093) % 251;
  await Deno.writeFile(path, bytes);
  return bytes;
}

Deno.test("bodyCheck finds the digest the server verifies, and leaves nothing behind", async () => {
  await using scratch = await tempDir();
  await using moto = await startS3Server("probe", { server: "moto", tls: false });
  await using crcFront = await startCheckingFront(moto, "crc32", scratch.path);
  await using md5Front = await startCheckingFront(moto, "md5", scratch.path);
  const cases: [string, S3Store, BodyCheck][] = [
    ["verifies CRC-32", storeAt(crcFront.endpoint, moto.bucket, crcFront.caPem), "crc32"],
    ["verifies only Content-MD5", storeAt(md5Front.endpoint, moto.bucket, md5Front.caPem), "md5"],
    // moto checks neither digest (nor signed frames): none is sent.
    ["verifies neither", storeAt(moto.endpoint, moto.bucket), "none"],
  ];
  for (const [what, store, expected] of cases) {
    try {
      assertEquals(await store.bodyCheck("h:/d/nb-1-big-Data.db"), expected, what);
      // Asked once per store.
      assertEquals(await store.bodyCheck("h:/d/nb-2-big-Data.db"), expected, what);
      assertEquals(await keysAndUploads(store), [], what);
    } finally {
      store.close();
    }
  }
  const probes = crcFront.seen.filter((r) => r.method === "POST" && r.path.includes("?uploads"));
  assertEquals(probes.length, 1);
});

Deno.test("an encrypted body carries the digest the server verifies", async (t) => {
  await using scratch = await tempDir();
  await using moto = await startS3Server("bodies", { server: "moto", tls: false });
  const identity = await generateIdentity();
  const recipients = [await identityToRecipient(identity)];
  const identities = { file: "key.txt", identities: [identity] };
  // Over 4 MiB: sealed from the file, not in memory.
  const plaintext = await writeFile(`${scratch.path}/big`, 5 * 1024 * 1024 + 3);
  const fileMd5 = createHash("md5").update(plaintext).digest("hex");
  for (const checks of ["crc32", "md5", "none"] as const) {
    await t.step(`a server that verifies ${checks}`, async () => {
      await using front = await startCheckingFront(moto, checks, scratch.path);
      const inner = storeAt(front.endpoint, moto.bucket, front.caPem);
      const store = new EncryptingStore(inner, { recipients, identities });
      try {
        const key = `h:/d/${checks}-Data.db`;
        let reported = "";
        // The file's MD5 is left to the store, as the watcher leaves it.
        await store.putFile(key, {
          path: `${scratch.path}/big`,
          size: plaintext.byteLength,
          md5: "",
          metadata: { stat: "{}" },
        }, { onFileMd5: (md5) => reported = md5 });
        assertEquals(reported, fileMd5);
        const put = front.seen.filter((r) => r.method === "PUT" && !r.path.includes("uploadId"));
        assertEquals(put.length, 1);
        const headers = put[0]!.headers;
        assertEquals(headers.get("x-amz-meta-md5sum"), fileMd5);
        if (checks === "crc32") {
          assertEquals(headers.get("content-md5"), null);
          assertEquals(headers.get("x-amz-sdk-checksum-algorithm"), "CRC32");
          assert(headers.get("x-amz-checksum-crc32"));
        } else if (checks === "none") {
          assertEquals(headers.get("content-md5"), null);
          assertEquals(headers.get("x-amz-checksum-crc32"), null);
          assertEquals(headers.get("x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
        } else {
          assert(headers.get("content-md5"));
          assertEquals(headers.get("x-amz-checksum-crc32"), null);
        }
        const got = await store.get(key);
        const back = new Uint8Array(await new Response(got!.body).arrayBuffer());
        assertEquals(createHash("md5").update(back).digest("hex"), fileMd5);
      } finally {
        inner.close();
      }
    });
  }
});

Deno.test("a body whose CRC-32 is wrong is refused by a server that verifies it", async () => {
  await using scratch = await tempDir();
  await using moto = await startS3Server("refused", { server: "moto", tls: false });
  await using front = await startCheckingFront(moto, "crc32", scratch.path);
  const store = storeAt(front.endpoint, moto.bucket, front.caPem);
  try {
    const bytes = await writeFile(`${scratch.path}/f`, 100_000);
    const upload = {
      path: `${scratch.path}/f`,
      size: bytes.byteLength,
      md5: "",
      metadata: {},
      crc32: crc32Of(bytes.subarray(1)),
    };
    await assertRejects(() => store.putFile("h:/d/f", upload), Error, "The CRC32 you specified");
    assertEquals(await store.head("h:/d/f"), null);
    await store.putFile("h:/d/f", { ...upload, crc32: crc32Of(bytes) });
    assertEquals((await store.head("h:/d/f"))?.size, bytes.byteLength);
  } finally {
    store.close();
  }
});

Deno.test("a file changed between the digest pass and the send makes no object", async () => {
  await using scratch = await tempDir();
  await using moto = await startS3Server("changed", { server: "moto", tls: false });
  await using front = await startCheckingFront(moto, "none", scratch.path);
  const inner = storeAt(front.endpoint, moto.bucket, front.caPem);
  const identity = await generateIdentity();
  const store = new EncryptingStore(inner, { recipients: [await identityToRecipient(identity)] });
  try {
    const path = `${scratch.path}/changing`;
    const bytes = await writeFile(path, 5 * 1024 * 1024 + 3);
    assertEquals(await inner.bodyCheck("h:/d/changing-Data.db"), "none");
    // The store reports the file's MD5 between its two passes: change a byte then.
    const changeIt = () => {
      bytes[bytes.byteLength - 2] = bytes[bytes.byteLength - 2]! ^ 1;
      Deno.writeFileSync(path, bytes);
    };
    const started = performance.now();
    await assertRejects(
      () =>
        store.putFile("h:/d/changing-Data.db", {
          path,
          size: bytes.byteLength,
          md5: "",
          metadata: {},
        }, { onFileMd5: changeIt }),
      Error,
      "changed during upload",
    );
    // At once: the request is closed when its body fails, not left to the idle timeout.
    assert(performance.now() - started < 20_000);
    assertEquals(await inner.head("h:/d/changing-Data.db"), null);
  } finally {
    inner.close();
  }
});
