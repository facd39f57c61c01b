/**
 * `FileHasher`: the MD5s a restore checks and the watcher sends, computed
 * on the hashing thread (reading the file back) or on this one (from the
 * chunks offered as they are written), with the same answers and errors.
 */
import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { FileHasher } from "../../lib/common/file_hasher.ts";
import { NotRegularFileError } from "../../lib/common/fs.ts";

const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

function patterned(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed + (i >> 12)) & 0xff;
  return bytes;
}

for (const offThread of [true, false]) {
  const where = offThread ? "on its thread" : "on the main thread";

  Deno.test(`FileHasher ${where}: a file's MD5 and its parts' MD5s`, async () => {
    await using dir = await tempDir("tablesnap-hasher-");
    const hasher = new FileHasher({ offThread });
    try {
      const bytes = patterned(3 * 1024 * 1024 + 17, 5);
      const path = `${dir.path}/nb-1-big-Data.db`;
      await Deno.writeFile(path, bytes);
      const part = 1024 * 1024;
      const digests = await hasher.digestFile(path, bytes.length, part);
      assertEquals(digests.md5, md5(bytes));
      assertEquals(digests.size, bytes.length);
      assertEquals(
        digests.partMd5s,
        [0, 1, 2, 3].map((i) => md5(bytes.subarray(i * part, (i + 1) * part))),
      );
      // At most `size` bytes: a file grown since its stat is not read further.
      assertEquals((await hasher.digestFile(path, 1000)).md5, md5(bytes.subarray(0, 1000)));
    } finally {
      hasher.close();
    }
  });

  Deno.test(`FileHasher ${where}: a file written in ranges, out of order`, async () => {
    await using dir = await tempDir("tablesnap-hasher-");
    const hasher = new FileHasher({ offThread });
    try {
      const range = 256 * 1024;
      const bytes = patterned(4 * range - 3, 9);
      const path = `${dir.path}/.nb-2-big-Data.db.tablesnap-partial`;
      using file = await Deno.open(path, { write: true, createNew: true });
      await file.truncate(bytes.length);
      const fileMd5 = hasher.fileMd5(64 * 1024);
      // Ranges 1 and 0 are written (0's chunks offered as they land), then 3 and 2.
      for (const i of [1, 0, 3, 2]) {
        const chunk = bytes.subarray(i * range, Math.min(bytes.length, (i + 1) * range));
        await file.seek(i * range, Deno.SeekMode.Start);
        await file.write(chunk);
        fileMd5.offer(i * range, chunk);
        if (i === 0) await fileMd5.update(path, 2 * range);
      }
      assertEquals(await fileMd5.finish(path, bytes.length), md5(bytes));
    } finally {
      hasher.close();
    }
  });

  Deno.test(`FileHasher ${where}: a missing, short or odd file fails as the main thread would`, async () => {
    await using dir = await tempDir("tablesnap-hasher-");
    const hasher = new FileHasher({ offThread });
    try {
      await assertRejects(() => hasher.digestFile(`${dir.path}/gone`, 10), Deno.errors.NotFound);
      await assertRejects(() => hasher.digestFile(dir.path, 10), NotRegularFileError);
      const path = `${dir.path}/short`;
      await Deno.writeFile(path, new Uint8Array(10));
      const err = await assertRejects(() => hasher.fileMd5(1024).finish(path, 20));
      assert(String(err).includes("shorter than expected"), String(err));
      // The hasher still answers after failures.
      assertEquals((await hasher.digestFile(path, 10)).md5, md5(new Uint8Array(10)));
    } finally {
      hasher.close();
    }
  });
}

Deno.test("FileHasher whose thread fails: its jobs fail with the cause, later ones hash here", async () => {
  await using dir = await tempDir("tablesnap-hasher-");
  const broken = `${dir.path}/broken_thread.js`;
  await Deno.writeTextFile(broken, 'throw new Error("no such module in this binary");\n');
  const hasher = new FileHasher({ offThread: true, workerUrl: new URL(`file://${broken}`) });
  try {
    const bytes = patterned(5 * 1024 * 1024 + 3, 9);
    const path = `${dir.path}/nb-1-big-Data.db`;
    await Deno.writeFile(path, bytes);
    const stream = hasher.fileMd5(256 * 1024);
    const err = await assertRejects(() => hasher.digestFile(path, bytes.byteLength));
    assert(
      err instanceof Error && /hashing thread failed.*no such module/.test(err.message),
      `the cause is named: ${err}`,
    );
    assertEquals((await hasher.digestFile(path, bytes.byteLength)).md5, md5(bytes));
    await assertRejects(() => stream.finish(path, bytes.byteLength), Error, "hashing thread");
    const next = hasher.fileMd5(256 * 1024);
    assertEquals(await next.finish(path, bytes.byteLength), md5(bytes), "a new stream hashes here");
  } finally {
    hasher.close();
  }
});

Deno.test("FileHasher on its thread refuses a FIFO without opening it, and goes on", async () => {
  await using dir = await tempDir("tablesnap-hasher-");
  const fifo = `${dir.path}/nb-1-big-Data.db`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert(made.success, "mkfifo failed");
  const hasher = new FileHasher({ offThread: true });
  try {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const refused = hasher.digestFile(fifo, 10).then(
      () => "hashed",
      (err) => err instanceof NotRegularFileError ? "refused" : `${err}`,
    );
    const blocked = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve("blocked"), 10_000);
    });
    const outcome = await Promise.race([refused, blocked]);
    clearTimeout(timer);
    if (outcome === "blocked") {
      // Opening it for writing lets the thread's open return, so the test ends.
      (await Deno.open(fifo, { write: true })).close();
      await refused;
    }
    assertEquals(outcome, "refused");
    const path = `${dir.path}/nb-2-big-Data.db`;
    await Deno.writeFile(path, new Uint8Array(10));
    assertEquals((await hasher.digestFile(path, 10)).md5, md5(new Uint8Array(10)));
  } finally {
    hasher.close();
  }
});
