/**
 * Storage classes and server-side encryption against moto, which stores
 * the StorageClass and SSE headers of PUT and CreateMultipartUpload and
 * reports them in listings and HEADs. Each run backs up a Cassandra-shaped
 * table with `-B --once`: a multipart Data.db, a single-part Index.db of
 * 200 KiB (both over the 128 KiB threshold) and small components.
 *
 * moto is made to answer as AWS does in one more way: the ETag of a
 * single-part SSE-KMS object is not the MD5 of its bytes (moto's would be).
 * KMS key ids are not checked by moto's S3; the key used is one made
 * through moto's KMS API, so its ARN has the real shape.
 */
import {
  CopyObjectCommand,
  CreateBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectLockConfigurationCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { assert, assertEquals, assertNotEquals, assertStringIncludes } from "./_assert.ts";
import { runCli, tempDir } from "./_helpers.ts";
import { spawnMoto } from "./_moto.ts";

const HOST = "cass1.example.com";
const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

/**
 * moto_server answering as AWS does where tablesnap depends on it: a
 * single-part SSE-KMS object's ETag is not its MD5, and a write with a KMS
 * key the caller may not use (here: any whose id contains "denied") is
 * refused 403 AccessDenied, AWS's message naming the KMS action.
 */
const MOTO_AS_AWS = `
import hashlib, inspect, sys
from moto.s3 import models
from moto.s3.exceptions import S3ClientError
from moto.server import main
plain_etag = models.FakeKey.etag
def etag(self):
    value = plain_etag.fget(self)
    if self.encryption == "aws:kms" and "-" not in value:
        return '"%s"' % hashlib.md5(b"kms:" + value.encode()).hexdigest()
    return value
models.FakeKey.etag = property(etag)
def refusing_denied_keys(write):
    signature = inspect.signature(write)
    def checked(*args, **kwargs):
        key_id = signature.bind(*args, **kwargs).arguments.get("kms_key_id")
        if key_id and "denied" in key_id:
            raise S3ClientError("AccessDenied", "User: arn:aws:iam::123456789012:user/agent is "
                "not authorized to perform: kms:GenerateDataKey on resource: " + key_id +
                " because no identity-based policy allows the kms:GenerateDataKey action")
        return write(*args, **kwargs)
    return checked
for name in ["put_object", "create_multipart_upload"]:
    setattr(models.S3Backend, name, refusing_denied_keys(getattr(models.S3Backend, name)))
main(sys.argv[1:])
`;

/** A KMS key made through moto's KMS API; prints its ARN. */
const CREATE_KEY = `
import boto3, sys
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
print(kms.create_key(Description="tablesnap backups")["KeyMetadata"]["Arn"])
`;

interface Moto extends AsyncDisposable {
  endpoint: string;
  client: S3Client;
  env: Record<string, string>;
  keyArn: string;
}

async function startMoto(buckets: string[]): Promise<Moto> {
  const moto = await spawnMoto({ script: MOTO_AS_AWS });
  const { endpoint } = moto;
  const client = new S3Client({
    region: "us-east-1",
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  const stop = async () => {
    client.destroy();
    await moto.stop();
  };
  try {
    for (const bucket of buckets) {
      await client.send(
        new CreateBucketCommand({
          Bucket: bucket,
          ObjectLockEnabledForBucket: bucket === "locked",
        }),
      );
    }
    const made = await new Deno.Command("python3", {
      args: ["-c", CREATE_KEY, endpoint],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(made.success, new TextDecoder().decode(made.stderr));
    return {
      endpoint,
      client,
      keyArn: new TextDecoder().decode(made.stdout).trim(),
      env: {
        AWS_ACCESS_KEY_ID: "test",
        AWS_SECRET_ACCESS_KEY: "test",
        AWS_ENDPOINT_URL_S3: endpoint,
        AWS_REGION: "us-east-1",
      },
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Cassandra's components of one generation, by name: size in bytes. */
const COMPONENTS: Record<string, number> = {
  "Data.db": 5 * 1024 * 1024 + 4321, // multipart: parts of 5 MiB
  "Index.db": 200 * 1024, // one PUT, over the 128 KiB threshold
  "Filter.db": 1000,
  "Statistics.db": 4000,
  "Summary.db": 300,
  "CompressionInfo.db": 100,
  "Digest.crc32": 10,
  "TOC.txt": 0,
};
const BIG = ["Data.db", "Index.db"];

async function writeTable(table: string): Promise<string[]> {
  await Deno.mkdir(table, { recursive: true });
  const names = Object.keys(COMPONENTS).map((c) => `nb-1-big-${c}`);
  for (const [component, size] of Object.entries(COMPONENTS)) {
    const bytes = component === "TOC.txt"
      ? new TextEncoder().encode(Object.keys(COMPONENTS).join("\n") + "\n")
      : new Uint8Array(size).map((_, i) => (i * 31 + component.length) % 251);
    await Deno.writeFile(`${table}/nb-1-big-${component}`, bytes);
  }
  return names;
}

interface Stored {
  key: string;
  /** From the listing. */
  listedClass: string | undefined;
  /** From a HEAD (STANDARD when S3 names none). */
  headClass: string;
  sse: string | undefined;
  kmsKey: string | undefined;
  etag: string;
}

async function storedUnder(client: S3Client, bucket: string, prefix: string): Promise<Stored[]> {
  const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  const out: Stored[] = [];
  for (const o of listed.Contents ?? []) {
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: o.Key! }));
    out.push({
      key: o.Key!,
      listedClass: o.StorageClass,
      headClass: head.StorageClass ?? "STANDARD",
      sse: head.ServerSideEncryption,
      kmsKey: head.SSEKMSKeyId,
      etag: head.ETag!.replaceAll('"', ""),
    });
  }
  return out;
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
  "--index-wait",
  "5",
];

/** One backup setting: the options, the class big files get, the SSE headers every object gets. */
interface Setting {
  prefix: string;
  args: string[];
  big: string;
  small: string;
  sse?: string;
  kmsKey?: (arn: string) => string | undefined;
  /** Through the SDK rather than the direct requests. */
  sdk?: boolean;
}

Deno.test("storage classes and SSE round-trip on single and multipart uploads; small objects and indexes stay STANDARD", async (t) => {
  await using moto = await startMoto(["backups"]);
  await using dir = await tempDir();
  const data = `${dir.path}/data`;
  const table = `${data}/ks/t-1`;
  const names = await writeTable(table);
  const settings: Setting[] = [
    {
      prefix: "ia-kms-key/",
      args: ["--storage-class", "STANDARD_IA", "--sse", "aws:kms", "--sse-kms-key-id", "ARN"],
      big: "STANDARD_IA",
      small: "STANDARD",
      sse: "aws:kms",
      kmsKey: (arn) => arn,
    },
    {
      prefix: "onezone-kms/",
      args: ["--storage-class", "ONEZONE_IA", "--sse", "aws:kms"],
      big: "ONEZONE_IA",
      small: "STANDARD",
      sse: "aws:kms",
      kmsKey: () => undefined, // moto names no key when none is given; AWS names aws/s3's
      sdk: true,
    },
    {
      prefix: "tiering-aes/",
      args: ["--storage-class", "INTELLIGENT_TIERING", "--sse", "AES256"],
      big: "INTELLIGENT_TIERING",
      small: "STANDARD",
      sse: "AES256",
    },
    {
      prefix: "glacier-ir/",
      args: ["--storage-class", "GLACIER_IR", "--with-sse", "--small-object-class", "ONEZONE_IA"],
      big: "GLACIER_IR",
      small: "ONEZONE_IA",
      sse: "AES256",
      sdk: true,
    },
    {
      prefix: "standard-alias/",
      args: ["--storage-class", "STANDARD", "--sse", "aws:kms", "--sse-kms-key-id", "alias/bk"],
      big: "STANDARD",
      small: "STANDARD",
      sse: "aws:kms",
      kmsKey: () => "alias/bk",
    },
    { prefix: "legacy-r/", args: ["-R"], big: "REDUCED_REDUNDANCY", small: "REDUCED_REDUNDANCY" },
    { prefix: "default/", args: [], big: "STANDARD", small: "STANDARD", sdk: true },
  ];
  const keyOf = (prefix: string, name: string) => `${prefix}${HOST}:${table}/${name}`;

  for (const s of settings) {
    await t.step(`${s.args.join(" ") || "no option"}${s.sdk ? " (SDK)" : ""}`, async () => {
      const args = s.args.map((a) => a === "ARN" ? moto.keyArn : a);
      const env = { ...moto.env, ...(s.sdk ? { TABLESNAP_DIRECT_REQUESTS: "0" } : {}) };
      const out = await runCli([...WATCH, "--prefix", s.prefix, ...args, "backups", data], { env });
      assertEquals(out.code, 0, out.stderr);
      // The settings are in the start-up line.
      const started = out.stderr.split("\n").find((l) => l.includes("tablesnap started")) ?? "";
      if (s.args.some((a) => a === "--storage-class" || a === "-R")) {
        assertStringIncludes(started, ` storage_class=${s.big}`);
      } else assert(!started.includes("storage_class="), started);
      if (s.sse) assertStringIncludes(started, ` sse=${s.sse}`);
      // What the re-run below must not say.
      assertEquals(out.stderr.match(/ uploaded /g)?.length, names.length, out.stderr);
      const stored = await storedUnder(moto.client, "backups", s.prefix);
      assertEquals(
        stored.map((o) => o.key).sort(),
        [...names, "nb-1-big-Data.db-listdir.json"].map((n) => keyOf(s.prefix, n)).sort(),
      );
      for (const o of stored) {
        const big = BIG.some((c) => o.key.endsWith(`-${c}`));
        const expected = big ? s.big : s.small;
        assertEquals([o.listedClass, o.headClass], [expected, expected], o.key);
        assertEquals(o.sse, s.sse, o.key);
        assertEquals(o.kmsKey, s.kmsKey?.(moto.keyArn), o.key);
      }
      const data_ = stored.find((o) => o.key.endsWith("Data.db"))!;
      assert(data_.etag.endsWith("-2"), `Data.db went multipart: ${data_.etag}`);
      const index = stored.find((o) => o.key.endsWith("Index.db"))!;
      const indexMd5 = md5(await Deno.readFile(`${table}/nb-1-big-Index.db`));
      if (s.sse === "aws:kms") assertNotEquals(index.etag, indexMd5, "moto answers as AWS");
      else assertEquals(index.etag, indexMd5);
    });
  }

  await t.step("restores of IA, GLACIER_IR and SSE-KMS objects work; verify agrees", async () => {
    for (const prefix of ["ia-kms-key/", "glacier-ir/", "onezone-kms/"]) {
      const target = `${dir.path}/restored-${prefix.slice(0, -1)}`;
      const slurp = await runCli([
        "slurp",
        "--prefix",
        prefix,
        "-n",
        HOST,
        "backups",
        table,
        target,
      ], {
        env: moto.env,
      });
      assertEquals(slurp.code, 0, slurp.stderr);
      for (const name of names) {
        assertEquals(
          md5(await Deno.readFile(`${target}/${name}`)),
          md5(await Deno.readFile(`${table}/${name}`)),
          `${prefix}${name}`,
        );
      }
      // Without --md5, verify compares md5sum with the ETag, which SSE-KMS makes no MD5.
      for (const md5Flag of [[], ["--md5"]]) {
        const verify = await runCli(
          ["verify", ...md5Flag, "--prefix", prefix, "-n", HOST, "backups", data],
          { env: moto.env },
        );
        assertEquals(verify.code, 0, verify.stdout + verify.stderr);
        assertStringIncludes(verify.stdout, ": 0 problems");
      }
    }
  });

  await t.step("list --json and verify --json show each object's class", async () => {
    const prefix = "ia-kms-key/";
    const list = await runCli(["list", "--json", "--prefix", prefix, "-n", HOST, "backups", data], {
      env: moto.env,
    });
    assertEquals(list.code, 0, list.stderr);
    const point = JSON.parse(list.stdout.trim());
    assertEquals(point.index_storage_class, "STANDARD");
    assertEquals(
      point.storage_classes,
      Object.fromEntries(
        names.map((n) => [n, BIG.some((c) => n.endsWith(c)) ? "STANDARD_IA" : "STANDARD"]),
      ),
    );
    const verify = await runCli(
      ["verify", "--json", "--prefix", prefix, "-n", HOST, "backups", data],
      { env: moto.env },
    );
    assertEquals(verify.code, 0, verify.stderr + verify.stdout);
    const lines = verify.stdout.trim().split("\n").map((l) => JSON.parse(l));
    const objects = lines.filter((l) => l.kind === "object");
    assertEquals(objects.length, names.length);
    for (const o of objects) {
      const big = BIG.some((c) => o.key.endsWith(c));
      assertEquals(o.storage_class, big ? "STANDARD_IA" : "STANDARD", o.key);
      assertEquals(o.server_side_encryption, "aws:kms", o.key);
    }
    assertEquals(lines.at(-1), {
      kind: "summary",
      indexes: 1,
      files: names.length,
      bytes: Object.values(COMPONENTS).reduce((a, b) => a + b, 0) +
        (await Deno.readFile(`${table}/nb-1-big-TOC.txt`)).length,
      problems: 0,
    });
  });

  await t.step(
    "-B compares content, not class: another --storage-class uploads nothing",
    async () => {
      for (const [prefix, more] of [["ia-kms-key/", []], ["onezone-kms/", ["--md5-on-start"]]]) {
        const before = await storedUnder(moto.client, "backups", prefix as string);
        const out = await runCli(
          [
            ...WATCH,
            ...more as string[],
            "--prefix",
            prefix as string,
            "--storage-class",
            "GLACIER_IR",
            "--sse",
            "AES256",
            "backups",
            data,
          ],
          { env: moto.env },
        );
        assertEquals(out.code, 0, out.stderr);
        assert(!/ uploaded /.test(out.stderr), out.stderr);
        assertEquals(await storedUnder(moto.client, "backups", prefix as string), before);
      }
    },
  );
});

Deno.test("an archived object, or a KMS key the role may not use, is named in one line", async (t) => {
  await using moto = await startMoto(["backups"]);
  await using dir = await tempDir();
  const data = `${dir.path}/data`;
  const table = `${data}/ks/t-1`;
  await writeTable(table);

  await t.step("a write refused the KMS key names the KMS action", async () => {
    const denied = moto.keyArn.replace(/key\/.*/, "key/denied-0000");
    const out = await runCli(
      [...WATCH, "--sse", "aws:kms", "--sse-kms-key-id", denied, "backups", data],
      { env: moto.env },
    );
    assertEquals(out.code, 1, out.stderr);
    assertStringIncludes(
      out.stderr,
      `s3:PutObject on '${HOST}:${table}/nb-1-big-Data.db' denied (AccessDenied, HTTP 403): ` +
        "kms:GenerateDataKey on the object's KMS key is not allowed",
    );
    assert(!/\n\s+at /.test(out.stderr), out.stderr);
  });

  await t.step("slurp of an object a lifecycle rule moved to GLACIER says so, once", async () => {
    const out = await runCli([...WATCH, "backups", data], { env: moto.env });
    assertEquals(out.code, 0, out.stderr);
    const key = `${HOST}:${table}/nb-1-big-Index.db`;
    await moto.client.send(
      new CopyObjectCommand({
        Bucket: "backups",
        Key: key,
        CopySource: `backups/${encodeURIComponent(key)}`,
        StorageClass: "GLACIER",
        MetadataDirective: "COPY",
      }),
    );
    const slurp = await runCli(
      ["slurp", "-n", HOST, "backups", table, `${dir.path}/restored`],
      { env: moto.env },
    );
    assertEquals(slurp.code, 1, slurp.stderr);
    assertStringIncludes(
      slurp.stdout + slurp.stderr,
      `'${key}' is in an archive storage class: S3 serves it only after a restore request`,
    );
    assert(!slurp.stderr.includes("retrying"), slurp.stderr);
    assert(!/denied/.test(slurp.stdout + slurp.stderr), slurp.stderr);
  });
});

Deno.test("an archive class is refused with one line saying why", async () => {
  for (const args of [["--storage-class", "GLACIER"], ["--small-object-class", "DEEP_ARCHIVE"]]) {
    const out = await runCli([...args, "backups", "/nonexistent"]);
    assertEquals(out.code, 2, out.stderr);
    const errors = out.stderr.split("\n").filter((l) => l.startsWith("error: "));
    assertEquals(errors.length, 1, out.stderr);
    assertStringIncludes(errors[0]!, "need a restore request (hours) before any GET");
  }
});

Deno.test("an Object Lock bucket accepts uploads with a storage class and SSE-KMS", async () => {
  await using moto = await startMoto(["locked"]);
  await using dir = await tempDir();
  await moto.client.send(
    new PutObjectLockConfigurationCommand({
      Bucket: "locked",
      ObjectLockConfiguration: {
        ObjectLockEnabled: "Enabled",
        Rule: { DefaultRetention: { Mode: "GOVERNANCE", Days: 1 } },
      },
    }),
  );
  const data = `${dir.path}/data`;
  const table = `${data}/ks/t-1`;
  const names = await writeTable(table);
  for (const sdk of [false, true]) {
    const prefix = sdk ? "sdk/" : "direct/";
    const out = await runCli([
      ...WATCH,
      "--prefix",
      prefix,
      "--storage-class",
      "STANDARD_IA",
      "--sse",
      "aws:kms",
      "--sse-kms-key-id",
      moto.keyArn,
      "--object-lock-mode",
      "GOVERNANCE",
      "--object-lock-days",
      "2",
      "locked",
      data,
    ], { env: { ...moto.env, ...(sdk ? { TABLESNAP_DIRECT_REQUESTS: "0" } : {}) } });
    assertEquals(out.code, 0, out.stderr);
    const stored = await storedUnder(moto.client, "locked", prefix);
    assertEquals(stored.length, names.length + 1, prefix);
    for (const o of stored) {
      const big = BIG.some((c) => o.key.endsWith(c));
      assertEquals(o.headClass, big ? "STANDARD_IA" : "STANDARD", o.key);
      assertEquals([o.sse, o.kmsKey], ["aws:kms", moto.keyArn], o.key);
    }
  }
});
