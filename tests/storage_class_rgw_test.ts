/**
 * Storage classes and server-side encryption against Ceph RGW 16.2, which
 * keeps a storage class only when the zonegroup's placement defines it
 * (the cluster here defines STANDARD_IA), encrypts with SSE-KMS through a
 * KMS backend (here RGW's `testing` one, keys in its configuration) and
 * accepts `x-amz-server-side-encryption: AES256` without encrypting or
 * reporting it. Each backup is a Cassandra-shaped table by `-B --once`: a
 * multipart Data.db over the 128 KiB threshold and small components.
 */
import { HeadObjectCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { runCli, tempDir } from "./_helpers.ts";
import { startRgw } from "./_rgw.ts";

const HOST = "cass1.example.com";
const KMS_KEY = "tablesnap-test-key";
const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

/** Component: size in bytes; Data.db goes in two parts of 5 MiB. */
const COMPONENTS: Record<string, number> = {
  "Data.db": 5 * 1024 * 1024 + 4321,
  "Filter.db": 1000,
  "Statistics.db": 4000,
  "Digest.crc32": 10,
  "TOC.txt": 0,
};

async function writeTable(table: string): Promise<string[]> {
  await Deno.mkdir(table, { recursive: true });
  for (const [component, size] of Object.entries(COMPONENTS)) {
    const bytes = component === "TOC.txt"
      ? new TextEncoder().encode(Object.keys(COMPONENTS).join("\n") + "\n")
      : new Uint8Array(size).map((_, i) => (i * 31 + component.length) % 251);
    await Deno.writeFile(`${table}/nb-1-big-${component}`, bytes);
  }
  return Object.keys(COMPONENTS).map((c) => `nb-1-big-${c}`);
}

/** Each object under the prefix as RGW reports it: the listing's class and the HEAD's. */
async function reported(client: S3Client, bucket: string, prefix: string) {
  const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return await Promise.all((listed.Contents ?? []).map(async (o) => {
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: o.Key! }));
    return {
      key: o.Key!,
      classes: [o.StorageClass, head.StorageClass ?? "STANDARD"],
      sse: [head.ServerSideEncryption, head.SSEKMSKeyId],
      etag: head.ETag!.replaceAll('"', ""),
    };
  }));
}

const WATCH = [
  "-B",
  "--once",
  "-r",
  "-n",
  HOST,
  "--max-upload-size",
  "5",
  "--multipart-chunk-size",
  "5",
];

Deno.test("RGW keeps STANDARD_IA and SSE-KMS as asked, ignores AES256, refuses classes it lacks", async (t) => {
  await using rgw = await startRgw({
    storageClasses: ["STANDARD_IA"],
    rgwConf: [
      "rgw crypt s3 kms backend = testing",
      `rgw crypt s3 kms encryption keys = ${KMS_KEY}=${
        Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64")
      }`,
    ],
  });
  const s3 = await rgw.bucket("backups");
  await using dir = await tempDir();
  const data = `${dir.path}/data`;
  const table = `${data}/ks/t-1`;
  const names = await writeTable(table);
  const keyOf = (prefix: string, name: string) => `${prefix}${HOST}:${table}/${name}`;

  const backUpAndRestore = async (prefix: string, args: string[]) => {
    const out = await runCli([...WATCH, "--prefix", prefix, ...args, "backups", data], {
      env: s3.env,
    });
    assertEquals(out.code, 0, out.stderr);
    assertEquals(out.stderr.match(/ uploaded /g)?.length, names.length, out.stderr);
    const stored = await reported(s3.client, "backups", prefix);
    assertEquals(
      stored.map((o) => o.key).sort(),
      [...names, "nb-1-big-Data.db-listdir.json"].map((n) => keyOf(prefix, n)).sort(),
    );
    const dataDb = stored.find((o) => o.key.endsWith("-Data.db"))!;
    assert(dataDb.etag.endsWith("-2"), `Data.db went multipart: ${dataDb.etag}`);
    const target = `${dir.path}/restored-${prefix.slice(0, -1)}`;
    const slurp = await runCli(
      ["slurp", "--prefix", prefix, "-n", HOST, "backups", table, target],
      {
        env: s3.env,
      },
    );
    assertEquals(slurp.code, 0, slurp.stderr);
    for (const name of names) {
      assertEquals(
        md5(await Deno.readFile(`${target}/${name}`)),
        md5(await Deno.readFile(`${table}/${name}`)),
        `${prefix}${name}`,
      );
    }
    return stored;
  };

  await t.step(
    "--storage-class STANDARD_IA --sse AES256: the class kept, no SSE reported",
    async () => {
      const stored = await backUpAndRestore("ia-aes/", [
        "--storage-class",
        "STANDARD_IA",
        "--sse",
        "AES256",
      ]);
      for (const o of stored) {
        const big = o.key.endsWith("-Data.db");
        assertEquals(
          o.classes,
          big ? ["STANDARD_IA", "STANDARD_IA"] : ["STANDARD", "STANDARD"],
          o.key,
        );
        // RGW 16.2 has no SSE-S3: it takes the header, stores the bytes as sent, reports nothing.
        assertEquals(o.sse, [undefined, undefined], o.key);
      }
    },
  );

  await t.step("--sse aws:kms --sse-kms-key-id: every object under the key", async () => {
    const stored = await backUpAndRestore("kms/", [
      "--sse",
      "aws:kms",
      "--sse-kms-key-id",
      KMS_KEY,
    ]);
    for (const o of stored) {
      assertEquals(o.classes, ["STANDARD", "STANDARD"], o.key);
      assertEquals(o.sse, ["aws:kms", KMS_KEY], o.key);
    }
  });

  await t.step("a class the placement lacks: the file is reported not uploaded", async () => {
    const out = await runCli(
      [...WATCH, "--prefix", "onezone/", "--storage-class", "ONEZONE_IA", "backups", data],
      { env: s3.env },
    );
    assertEquals(out.code, 1, out.stderr);
    // RGW answers 400 InvalidArgument with an empty message; tablesnap names the class.
    const failed = out.stderr.split("\n").filter((l) => l.includes("upload failed"));
    assertEquals(failed.length, 1, out.stderr);
    assertStringIncludes(failed[0]!, "nb-1-big-Data.db");
    assertStringIncludes(
      failed[0]!,
      "InvalidArgument: s3:PutObject on '" + keyOf("onezone/", "nb-1-big-Data.db") +
        "' refused (HTTP 400): the server may not offer storage class ONEZONE_IA",
    );
    assertStringIncludes(out.stderr, `not uploaded path=${table}/nb-1-big-Data.db`);
    assert(!/\n\s+at /.test(out.stderr), out.stderr);
  });
});
