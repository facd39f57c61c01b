/**
 * The file's MD5 (`md5sum`) when the store, not the watcher, computes it:
 * a store that encrypts hashes the file in the pass it makes anyway
 * (`PutFileOptions.onFileMd5`), for encrypted keys and for the ones it
 * stores as they are (TOC.txt) alike. Files over 4 MiB, which the watcher
 * does not read into memory.
 */
import { generateIdentity, identityToRecipient } from "age-encryption";
import { createHash } from "node:crypto";
import { assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { EncryptingStore } from "../../lib/store/encrypting_store.ts";
import { LocalStore } from "../../lib/store/local_store.ts";
import { testPipeline } from "../_pipeline.ts";

Deno.test("an encrypting store computes md5sum for the watcher, encrypted or not", async () => {
  await using bucket = await tempDir("tablesnap-store-");
  await using data = await tempDir();
  const identity = await generateIdentity();
  const inner = new LocalStore(bucket.path);
  const store = new EncryptingStore(inner, {
    recipients: [await identityToRecipient(identity)],
    identities: { file: "key.txt", identities: [identity] },
    plaintext: (key) => key.endsWith("TOC.txt"),
  });
  const pipeline = testPipeline(store);
  const md5s = new Map<string, string>();
  for (const name of ["nb-1-big-Data.db", "nb-1-big-TOC.txt"]) {
    const bytes = new Uint8Array(5 * 1024 * 1024 + name.length);
    for (let i = 0; i < bytes.length; i += 1021) bytes[i] = (i / 1021 + name.length) % 256;
    await Deno.writeFile(`${data.path}/${name}`, bytes);
    md5s.set(name, createHash("md5").update(bytes).digest("hex"));
    pipeline.enqueue(`${data.path}/${name}`);
  }
  await pipeline.idle();
  assertEquals(pipeline.summary.uploaded, 2);
  for (const [name, md5] of md5s) {
    const key = `h:${data.path}/${name}`;
    const raw = await inner.head(key);
    assertEquals(raw?.metadata.md5sum, md5, name);
    const got = await store.get(key);
    assertEquals(got?.head.etag, md5, name);
    const back = new Uint8Array(await new Response(got!.body).arrayBuffer());
    assertEquals(createHash("md5").update(back).digest("hex"), md5, name);
  }
  // TOC.txt is stored as it is: its ETag is the file's MD5; Data.db's is its ciphertext's.
  assertEquals(
    (await inner.head(`h:${data.path}/nb-1-big-TOC.txt`))?.etag,
    md5s.get("nb-1-big-TOC.txt"),
  );
  assertEquals(
    (await inner.head(`h:${data.path}/nb-1-big-Data.db`))?.metadata["tablesnap-encryption"],
    "age-v1",
  );
});
