/**
 * age's payload STREAM as written and read on the platform's cipher
 * (lib/store/age_payload.ts), cross-checked both ways against the `age` CLI
 * and the `age-encryption` library, at the sizes where chunking can go
 * wrong: empty, 1 byte, exactly one chunk, one chunk and a byte, and a file
 * large enough for parts. Then tampering: a flipped bit anywhere, a cut or
 * lengthened object, each refused in one line naming the key.
 */
import { Decrypter, generateIdentity, identityToRecipient } from "age-encryption";
import { createHash } from "node:crypto";
import { assert, assertEquals } from "./_assert.ts";
import { tempDir } from "./_helpers.ts";
import { digestFile } from "../lib/common/digest.ts";
import { EncryptingStore } from "../lib/store/encrypting_store.ts";
import { DecryptionError } from "../lib/store/encryption_metadata.ts";
import { LocalStore } from "../lib/store/local_store.ts";

const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");
const SIZES = [0, 1, 65_536, 65_537, 6 * 1024 * 1024 + 12_345];
const PART = 5 * 1024 * 1024;

function pattern(size: number, seed: number): Uint8Array {
  return new Uint8Array(size).map((_, i) => (i * seed + (i >> 11)) % 251);
}

async function run(cmd: string, args: string[]): Promise<Uint8Array> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  return out.stdout;
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(body).arrayBuffer());
}

async function setUp(dir: string) {
  const identity = await generateIdentity();
  const recipient = await identityToRecipient(identity);
  const keyFile = `${dir}/key.txt`;
  await Deno.writeTextFile(keyFile, `${identity}\n`);
  await Deno.mkdir(`${dir}/store`);
  const inner = new LocalStore(`${dir}/store`);
  const store = new EncryptingStore(inner, {
    recipients: [recipient],
    identities: { file: keyFile, identities: [identity] },
  });
  return { identity, recipient, keyFile, inner, store };
}

Deno.test("our ciphertext decrypts with age and age-encryption; age's decrypts with ours", async (t) => {
  await using dir = await tempDir();
  const { identity, recipient, keyFile, inner, store } = await setUp(dir.path);
  const decrypter = new Decrypter();
  decrypter.addIdentity(identity);
  for (const size of SIZES) {
    const plain = pattern(size, 7 + size % 13);
    const path = `${dir.path}/plain-${size}`;
    await Deno.writeFile(path, plain);
    const digests = await digestFile(path, size, PART);
    const parts = size > PART ? { parts: { partSize: PART, md5s: digests.partMd5s! } } : {};
    await t.step(`${size} bytes, streamed from the file and from memory`, async () => {
      for (const inMemory of [false, true]) {
        const key = `h:${path}-${inMemory}`;
        await store.putFile(key, {
          path,
          size,
          md5: digests.md5,
          metadata: { md5sum: digests.md5 },
          ...parts,
          ...(inMemory ? { body: plain } : {}),
        });
        const raw = await inner.get(key);
        const ciphertext = await readAll(raw!.body);
        // The local store keeps S3's ETag shapes: the ciphertext's MD5, or a multipart ETag.
        const etag = raw!.head.etag;
        assert(etag === md5(ciphertext) || (size > PART && etag.endsWith("-2")), etag);
        const cipherPath = `${dir.path}/cipher`;
        await Deno.writeFile(cipherPath, ciphertext);
        assertEquals(md5(await run("age", ["-d", "-i", keyFile, cipherPath])), digests.md5);
        assertEquals(md5(await decrypter.decrypt(ciphertext)), digests.md5);
        const ours = await store.get(key);
        assertEquals(ours!.head.size, size);
        assertEquals(md5(await readAll(ours!.body)), digests.md5);
      }
    });
    await t.step(`${size} bytes encrypted by the age CLI`, async () => {
      const ciphertext = await run("age", ["-r", recipient, path]);
      const key = `h:${path}-age`;
      await inner.putBytes(key, ciphertext, { metadata: { "tablesnap-encryption": "age-v1" } });
      const ours = await store.get(key);
      assertEquals(ours!.head.size, size);
      assertEquals(md5(await readAll(ours!.body)), digests.md5);
    });
  }
});

/** What reading `key` through `store` ends with: "ok", or the error's message. */
async function readOutcome(store: EncryptingStore, key: string): Promise<string> {
  try {
    const object = await store.get(key);
    await readAll(object!.body);
    return "ok";
  } catch (err) {
    if (!(err instanceof DecryptionError)) throw err;
    return err.message;
  }
}

Deno.test("a flipped bit anywhere, a cut or a longer object fails in one line naming the key", async () => {
  await using dir = await tempDir();
  const { inner, store } = await setUp(dir.path);
  const size = 2 * 65_536 + 100;
  const path = `${dir.path}/plain`;
  await Deno.writeFile(path, pattern(size, 11));
  const { md5: plainMd5 } = await digestFile(path, size);
  await store.putFile("h:/plain", { path, size, md5: plainMd5, metadata: {} });
  const ciphertext = await readAll((await inner.get("h:/plain"))!.body);
  const metadata = { "tablesnap-encryption": "age-v1" };
  const tampered = async (bytes: Uint8Array) => {
    await inner.putBytes("h:/tampered", bytes, { metadata });
    return await readOutcome(store, "h:/tampered");
  };
  assertEquals(await tampered(ciphertext), "ok");
  const headerEnd = new TextDecoder().decode(ciphertext.subarray(0, 400)).indexOf("\n---") + 48;
  // Every byte of the header, nonce and first tag's neighbourhood; then a stride through the rest.
  const positions = [];
  for (let i = 0; i < headerEnd + 40; i++) positions.push(i);
  for (let i = headerEnd + 40; i < ciphertext.length; i += 997) positions.push(i);
  positions.push(ciphertext.length - 1, ciphertext.length - 17, headerEnd + 16 + 65_552);
  for (const at of positions) {
    const bytes = ciphertext.slice();
    bytes[at]! ^= 1 << (at % 8);
    const outcome = await tampered(bytes);
    assert(outcome.startsWith("Cannot decrypt 'h:/tampered'"), `byte ${at}: ${outcome}`);
    assertEquals(outcome.split("\n").length, 1);
  }
  const cuts = [ciphertext.length - 1, ciphertext.length - 100, headerEnd + 16 + 65_552, 30];
  for (const length of cuts) {
    const outcome = await tampered(ciphertext.slice(0, length));
    assert(outcome.startsWith("Cannot decrypt 'h:/tampered'"), `cut at ${length}: ${outcome}`);
  }
  const longer = new Uint8Array(ciphertext.length + 1);
  longer.set(ciphertext);
  assert((await tampered(longer)).startsWith("Cannot decrypt 'h:/tampered'"));
});
