/**
 * Client-side encryption end to end: the watcher with --encrypt-to against
 * s3rver (a multipart file included), the age CLI decrypting what is in the
 * bucket, slurp and verify with and without the right identity, a tampered
 * object, -B over an encrypted tree, and an Object Lock bucket on moto.
 */
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  PutObjectLockConfigurationCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { Encrypter, generateIdentity, identityToRecipient } from "age-encryption";
import { createHash } from "node:crypto";
import { parseSlurpArgs } from "../lib/cli/slurp.ts";
import { parseVerifyArgs } from "../lib/cli/verify.ts";
import { parseWatchArgs } from "../lib/cli/watch.ts";
import { UsageError } from "../lib/common/errors.ts";
import {
  openedSize as plaintextSize,
  sealedSize as ciphertextPayloadSize,
} from "../lib/store/age_payload.ts";
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { runCli, type S3Server, startS3Server, tempDir } from "./_helpers.ts";

const HOST = "enc-host";
const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

/** A new age key pair from `age-keygen`: the identity file's path and the recipient. */
async function keyPair(dir: string, name: string): Promise<{ file: string; recipient: string }> {
  const file = `${dir}/${name}.txt`;
  const out = await new Deno.Command("age-keygen", { args: ["-o", file], stderr: "piped" })
    .output();
  assertEquals(out.code, 0);
  const recipient = /age1[0-9a-z]+/.exec(new TextDecoder().decode(out.stderr))![0];
  return { file, recipient };
}

/** `age -d -i identity` of `ciphertext` (through a file: no pipe to fill). */
async function ageDecrypt(identity: string, ciphertext: Uint8Array): Promise<Uint8Array> {
  const path = await Deno.makeTempFile({ prefix: "tablesnap-age-" });
  try {
    await Deno.writeFile(path, ciphertext);
    const out = await new Deno.Command("age", { args: ["-d", "-i", identity, path] }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    return out.stdout;
  } finally {
    await Deno.remove(path);
  }
}

async function rawObject(client: S3Client, bucket: string, key: string) {
  const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return { bytes: await out.Body!.transformToByteArray(), metadata: out.Metadata ?? {} };
}

/** A table directory: a Data.db that goes multipart at 5 MB, and small components. */
async function writeTable(table: string): Promise<Map<string, Uint8Array>> {
  await Deno.mkdir(table, { recursive: true });
  const files = new Map<string, Uint8Array>([
    ["nb-1-big-Data.db", new Uint8Array(7 * 1024 * 1024 + 77).map((_, i) => (i * 13) % 251)],
    ["nb-1-big-Index.db", new Uint8Array(200_000).map((_, i) => (i * 7) % 256)],
    ["nb-1-big-Statistics.db", new TextEncoder().encode("statistics")],
    ["nb-1-big-TOC.txt", new TextEncoder().encode("Data.db\nIndex.db\nStatistics.db\nTOC.txt\n")],
  ]);
  for (const [name, bytes] of files) await Deno.writeFile(`${table}/${name}`, bytes);
  return files;
}

/** Etags of every object under the prefix: a re-upload of an encrypted file changes its ETag. */
async function etags(s3: S3Server, keys: string[]): Promise<string[]> {
  return await Promise.all(
    keys.map(async (k) =>
      (await s3.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: k }))).ETag!
    ),
  );
}

Deno.test("plaintextSize() inverts age's ciphertext size at every chunk boundary", async () => {
  const recipient = await identityToRecipient(await generateIdentity());
  const encrypter = new Encrypter();
  encrypter.addRecipient(recipient);
  const stream = await encrypter.encrypt(new ReadableStream({ start: (c) => c.close() }));
  await stream.cancel();
  const header = stream.size(0) - ciphertextPayloadSize(0);
  assertEquals(header, 184); // one X25519 stanza, the MAC line and the nonce
  const K = 64 * 1024;
  for (const size of [0, 1, K - 1, K, K + 1, 2 * K, 2 * K + 1, 5 * 1024 * 1024 + 3]) {
    assertEquals(ciphertextPayloadSize(size) + header, stream.size(size), `size ${size}`);
    assertEquals(plaintextSize(ciphertextPayloadSize(size)), size, `size ${size}`);
  }
  // Sizes no age payload has: shorter than a tag, or a last chunk of tag only.
  for (const payload of [0, 15, K + 16 + 1, K + 16 + 16]) {
    assertEquals(plaintextSize(payload), null, `payload ${payload}`);
  }
});

Deno.test("bad recipients and identities are one-line usage errors that never echo keys", async () => {
  await using dir = await tempDir();
  const { file } = await keyPair(dir.path, "key");
  const secret = (await Deno.readTextFile(file)).match(/AGE-SECRET-KEY-1\S+/)![0];
  const recipients = `${dir.path}/recipients.txt`;
  await Deno.writeTextFile(recipients, "# ops team\nage1notakey\n");
  const cases: [string[], string][] = [
    [["--encrypt-to", "age1qqqq", "file:///tmp", "/tmp"], "not a valid age X25519 recipient"],
    [["--encrypt-to", secret, "file:///tmp", "/tmp"], "is an age secret key"],
    [["--encrypt-to-file", recipients, "file:///tmp", "/tmp"], `Line 2 of recipients file`],
    [["--encrypt-to-file", `${dir.path}/none`, "file:///tmp", "/tmp"], "no such file"],
    [["slurp", "--identity", `${dir.path}/none`, "file:///tmp", "/o", "/t"], "no such file"],
    [["verify", "--identity", recipients, "file:///tmp", "/o"], "not an age X25519 identity"],
  ];
  for (const [args, expected] of cases) {
    let message = "";
    try {
      if (args[0] === "slurp") parseSlurpArgs(args.slice(1));
      else if (args[0] === "verify") parseVerifyArgs(args.slice(1));
      else parseWatchArgs(args);
    } catch (err) {
      assert(err instanceof UsageError, String(err));
      message = err.message;
    }
    assertStringIncludes(message, expected);
    assert(!message.includes(secret) && !message.includes("age1notakey"), message);
  }
  // The exit and the output of one of them, from the CLI itself.
  for (const [args, expected] of [cases[1]!]) {
    const out = await runCli(args);
    assertEquals(out.code, 2, `${args.join(" ")}: ${out.stderr}`);
    // One line, then the usual hint to --help.
    assertStringIncludes(out.stderr.split("\n")[0]!, expected);
    assertStringIncludes(out.stderr.split("\n")[1]!, "--help");
    assert(!out.stderr.includes(secret) && !out.stderr.includes("age1notakey"), out.stderr);
  }
});

Deno.test("an encrypted backup: age CLI, slurp, verify, tampering, -B", async (t) => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const key = await keyPair(dir.path, "key");
  const other = await keyPair(dir.path, "other");
  const recipients = `${dir.path}/recipients.txt`;
  await Deno.writeTextFile(recipients, `# backup key\n${key.recipient}\n`);
  const table = `${dir.path}/data/ks/t-1`;
  const files = await writeTable(table);
  const keyOf = (name: string) => `${HOST}:${table}/${name}`;
  const fileKeys = [...files.keys()].map(keyOf);
  const indexKey = keyOf("nb-1-big-Data.db-listdir.json");
  const watch = [
    ...["--once", "-B", "-r", "-n", HOST, "--index-wait", "5"],
    ...["--max-upload-size", "5", "--multipart-chunk-size", "5"],
    ...["--encrypt-to-file", recipients],
  ];
  const env = s3.env;

  await t.step("the watcher uploads ciphertext with the plaintext's metadata", async () => {
    const out = await runCli([...watch, s3.bucket, `${dir.path}/data`], { env });
    assertEquals(out.code, 0, out.stderr);
    for (const [name, plain] of files) {
      const { bytes, metadata } = await rawObject(s3.client, s3.bucket, keyOf(name));
      if (name.endsWith("TOC.txt")) {
        // Component names only, kept readable for whole-SSTable checks without the key.
        assertEquals(md5(bytes), md5(plain));
        assertEquals(metadata["tablesnap-encryption"], undefined);
        continue;
      }
      assertEquals(metadata["tablesnap-encryption"], "age-v1", name);
      assertEquals(metadata["tablesnap-plaintext-size"], String(plain.length), name);
      assertEquals(metadata["md5sum"], md5(plain), name);
      assert(metadata["stat"]?.includes('"mode"'), name);
      assert(bytes.length > plain.length && md5(bytes) !== md5(plain), name);
      assertEquals(new TextDecoder().decode(bytes.subarray(0, 22)), "age-encryption.org/v1\n");
      // The age CLI decrypts what is in the bucket, multipart included.
      assertEquals(md5(await ageDecrypt(key.file, bytes)), md5(plain), name);
    }
    // The index stays plaintext JSON, marked as naming encrypted files.
    const index = await rawObject(s3.client, s3.bucket, indexKey);
    const names = JSON.parse(new TextDecoder().decode(index.bytes))[table] as string[];
    assertEquals(names.sort(), [...files.keys()].sort());
    assertEquals(index.metadata["tablesnap-file-encryption"], "age-v1");
  });

  await t.step(
    "-B over the uploaded tree uploads nothing, also with another recipient",
    async () => {
      const before = await etags(s3, fileKeys);
      // Sizes first (the listing's, computed for the plaintext), then MD5s.
      const out = await runCli([...watch, "--md5-on-start", s3.bucket, `${dir.path}/data`], {
        env,
      });
      assertEquals(out.code, 0, out.stderr);
      // Each encryption has its own file key: a re-upload would change the ETag.
      assertEquals(await etags(s3, fileKeys), before);
      // A second recipient (rotation): listed sizes, computed for two, are all
      // off by one stanza; HEADs find the same plaintext sizes.
      const rotated = await runCli(
        [...watch, "--encrypt-to", other.recipient, s3.bucket, `${dir.path}/data`],
        { env },
      );
      assertEquals(rotated.code, 0, rotated.stderr);
      // Nor was any file mistaken for another size (left alone, with a warning).
      assert(!rotated.stderr.includes(" WARN "), rotated.stderr);
      assertEquals(await etags(s3, fileKeys), before, "after adding a recipient");
    },
  );

  const slurp = (target: string, ...extra: string[]) =>
    runCli(["slurp", "-n", HOST, ...extra, s3.bucket, table, target], { env });

  await t.step("slurp --identity restores every file byte for byte", async () => {
    const target = `${dir.path}/restored`;
    const out = await slurp(target, "--identity", key.file);
    assertEquals(out.code, 0, out.stderr);
    for (const [name, plain] of files) {
      assertEquals(md5(await Deno.readFile(`${target}/${name}`)), md5(plain), name);
    }
    // A re-run finds them restored (plaintext sizes and MD5s compared).
    const again = await slurp(target, "--identity", key.file);
    assertEquals(again.code, 0, again.stderr);
    assertStringIncludes(again.stdout, `0 downloaded, ${files.size} already present`);
  });

  await t.step("slurp without --identity refuses in one line before downloading", async () => {
    const target = `${dir.path}/no-identity`;
    const out = await slurp(target);
    assertEquals(out.code, 1, out.stderr);
    assertStringIncludes(out.stderr, "encrypted with age: give --identity FILE");
    assertEquals(out.stderr.trim().split("\n").length, 1, out.stderr);
    assertEquals([...Deno.readDirSync(dir.path)].some((e) => e.name === "no-identity"), false);
  });

  await t.step("slurp with another identity fails naming the key, without retrying", async () => {
    const target = `${dir.path}/wrong`;
    const out = await slurp(target, "--identity", other.file, "-t", "1");
    assertEquals(out.code, 1, out.stderr);
    assertStringIncludes(
      out.stdout,
      `Cannot decrypt '${keyOf("nb-1-big-Index.db")}' with the identity in '${other.file}': ` +
        "the identity does not match any of its recipients",
    );
    assert(!out.stderr.includes("retrying"), out.stderr);
    // Only the plaintext TOC.txt could be restored.
    assertEquals([...Deno.readDirSync(target)].map((e) => e.name), ["nb-1-big-TOC.txt"]);
  });

  await t.step("verify checks the plaintext: without --md5 too, and with --identity", async () => {
    const plain = await runCli(["verify", "-n", HOST, s3.bucket, table], { env });
    assertEquals(plain.code, 0, plain.stdout + plain.stderr);
    const full = await runCli(
      ["verify", "-n", HOST, "--md5", "--identity", key.file, s3.bucket, table],
      { env },
    );
    assertEquals(full.code, 0, full.stdout + full.stderr);
    assertStringIncludes(full.stdout, `${files.size} files`);
    assertStringIncludes(full.stdout, "0 problems");
  });

  await t.step("a re-encrypted object of other bytes fails verify --md5 and slurp", async () => {
    // Someone holding a recipient key swaps the body: it decrypts cleanly,
    // but to bytes whose MD5 is not the `md5sum` the watcher recorded.
    const swapped = keyOf("nb-1-big-Index.db");
    const original = await rawObject(s3.client, s3.bucket, swapped);
    const other = files.get("nb-1-big-Index.db")!.slice();
    other[12_345]! ^= 0x40;
    const plainPath = `${dir.path}/swapped-plain`;
    await Deno.writeFile(plainPath, other);
    const age = await new Deno.Command("age", { args: ["-r", key.recipient, plainPath] }).output();
    assertEquals(age.code, 0);
    const put = (body: Uint8Array) =>
      s3.client.send(
        new PutObjectCommand({
          Bucket: s3.bucket,
          Key: swapped,
          Body: body,
          Metadata: original.metadata,
        }),
      );
    await put(age.stdout);
    try {
      const out = await runCli(
        ["verify", "-n", HOST, "--md5", "--identity", key.file, s3.bucket, table],
        { env },
      );
      assertEquals(out.code, 1, out.stdout + out.stderr);
      assertStringIncludes(out.stdout, `PROBLEM ${swapped}: MD5 ${md5(other)}`);
      assertStringIncludes(out.stdout, "1 problem");
      const restore = await slurp(`${dir.path}/swapped`, "--identity", key.file);
      assertEquals(restore.code, 1, restore.stdout + restore.stderr);
      assertStringIncludes(
        restore.stdout,
        `MD5 of '${swapped}' is ${md5(other)}, expected ${original.metadata.md5sum}`,
      );
      assert(!Deno.readDirSync(`${dir.path}/swapped`).some((e) => e.name.endsWith("Index.db")));
    } finally {
      await put(original.bytes);
    }
  });

  await t.step("a tampered object fails verify --md5 and slurp, naming the key", async () => {
    const tampered = keyOf("nb-1-big-Index.db");
    const { bytes, metadata } = await rawObject(s3.client, s3.bucket, tampered);
    bytes[bytes.length - 1000]! ^= 0x01;
    await s3.client.send(
      new PutObjectCommand({ Bucket: s3.bucket, Key: tampered, Body: bytes, Metadata: metadata }),
    );
    const out = await runCli(
      ["verify", "-n", HOST, "--md5", "--identity", key.file, s3.bucket, table],
      { env },
    );
    assertEquals(out.code, 1, out.stdout + out.stderr);
    assertStringIncludes(
      out.stdout,
      `PROBLEM ${tampered}: cannot check: Cannot decrypt '${tampered}'`,
    );
    assertStringIncludes(out.stdout, "damaged or was tampered with");
    assertStringIncludes(out.stdout, "1 problem");
    const restore = await slurp(`${dir.path}/tampered`, "--identity", key.file);
    assertEquals(restore.code, 1, restore.stderr);
    assertStringIncludes(restore.stdout, `Cannot decrypt '${tampered}'`);
    assertStringIncludes(restore.stdout, `${files.size - 1} downloaded`);
    assertEquals([...Deno.readDirSync(`${dir.path}/tampered`)].length, files.size - 1);
  });
});

Deno.test("an Object Lock bucket on moto takes encrypted uploads (Content-MD5 on each)", async () => {
  await using s3 = await startS3Server("plain", { server: "moto" });
  await using dir = await tempDir();
  const key = await keyPair(dir.path, "key");
  const bucket = "locked";
  await s3.client.send(
    new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }),
  );
  await s3.client.send(
    new PutObjectLockConfigurationCommand({
      Bucket: bucket,
      ObjectLockConfiguration: {
        ObjectLockEnabled: "Enabled",
        Rule: { DefaultRetention: { Mode: "GOVERNANCE", Days: 1 } },
      },
    }),
  );
  const table = `${dir.path}/ks/t-1`;
  const files = await writeTable(table);
  const out = await runCli([
    ...["--once", "-B", "-r", "-n", HOST, "--index-wait", "5", "--max-upload-size", "5"],
    ...["--multipart-chunk-size", "5", "--encrypt-to", key.recipient, bucket, dir.path],
  ], { env: s3.env });
  assertEquals(out.code, 0, out.stderr);
  for (const [name, plain] of files) {
    const k = `${HOST}:${table}/${name}`;
    const { bytes, metadata } = await rawObject(s3.client, bucket, k);
    if (name.endsWith("TOC.txt")) continue; // plaintext
    assertEquals(metadata["tablesnap-encryption"], "age-v1", name);
    assertEquals(md5(await ageDecrypt(key.file, bytes)), md5(plain), name);
    const head = await s3.client.send(new HeadObjectCommand({ Bucket: bucket, Key: k }));
    if (name.endsWith("Data.db")) {
      // Two parts of the ciphertext, each sent with its Content-MD5.
      assert(head.ETag!.endsWith('-2"'), `multipart ETag ${head.ETag}`);
      continue; // moto keeps no retention for multipart uploads
    }
    assertEquals(head.ObjectLockMode, "GOVERNANCE", name);
  }
});
