/**
 * The IAM policies of packaging/iam/, enforced: moto checks every request's
 * signature and evaluates the caller's IAM policy, so each job is run with
 * the credentials of a user holding exactly one shipped policy (its BUCKET
 * and PREFIX filled in). Each job must work with its own policy, and a job
 * run with a policy that lacks what it needs must fail with one line that
 * names the refused action and key, with no trace and no secret.
 *
 * moto 5.2.1 set-up: the server starts without authentication (buckets,
 * users, policies and keys are made then, through boto3), and
 * `/moto-api/reset-auth` turns it on before the first tablesnap request.
 *
 * What moto does not check: `StringLike` conditions (the agent's `s3:prefix`
 * scoping of s3:ListBucket; its object statements, scoped by resource, are
 * checked), and the KMS actions S3 needs for SSE-KMS objects (moto's S3 asks
 * nothing of its KMS): the policies' KMS statements are checked as text, and
 * moto checks they are well-formed.
 */
import {
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { type CliResult, REPO, runCli, spawnWatcher, tempDir, waitFor } from "./_helpers.ts";
import { spawnMoto } from "./_moto.ts";
import { MOTO_AS_SENT } from "./_moto_iam.ts";

const HOST = "cass1.example.com";
const PREFIX = `${HOST}:`;
const ROLES = ["agent", "restore", "retention"] as const;
/** The key the policies' KMS_KEY_ARN is filled with (moto's S3 does not look it up). */
const KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/0b2e4a47-8c1d-4e0f-9a6b-3f5d7c9e1a2b";
type Role = typeof ROLES[number] | "admin" | "agent-without-upload-listing";

/** Buckets, then one user per policy (each with an access key); prints the keys as JSON. */
const SETUP = `
import boto3, json, sys
endpoint, buckets, policies = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="setup", aws_secret_access_key="setup")
s3 = boto3.client("s3", **kw)
for name, versioned in buckets.items():
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=versioned)
iam = boto3.client("iam", **kw)
keys = {}
for user, policy in policies.items():
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=policy)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    keys[user] = [key["AccessKeyId"], key["SecretAccessKey"]]
print(json.dumps(keys))
`;

/** A shipped policy with its placeholders filled in. */
async function policy(role: typeof ROLES[number], bucket: string): Promise<string> {
  const text = await Deno.readTextFile(`${REPO}packaging/iam/${role}.json`);
  return text.replaceAll("BUCKET", bucket).replaceAll("PREFIX", PREFIX)
    .replaceAll("KMS_KEY_ARN", KMS_KEY);
}

interface Moto extends AsyncDisposable {
  endpoint: string;
  /** Environment for a tablesnap child process acting as `role` for `bucket` (default: the first). */
  env(role: Role, bucket?: string): Record<string, string>;
  secrets: string[];
  /** A client of the test's own, with every right. */
  admin: S3Client;
}

async function startMoto(buckets: Record<string, boolean>): Promise<Moto> {
  const moto = await spawnMoto({ script: MOTO_AS_SENT });
  const { endpoint } = moto;
  const stop = () => moto.stop();
  try {
    const bucket = Object.keys(buckets)[0]!;
    const policies: Record<string, string> = {
      admin: JSON.stringify({
        Version: "2012-10-17",
        Statement: [{ Effect: "Allow", Action: "s3:*", Resource: "*" }],
      }),
    };
    // One user per role and bucket, so that each policy names its bucket.
    for (const name of Object.keys(buckets)) {
      for (const role of ROLES) policies[`${role}-${name}`] = await policy(role, name);
      // The agent's policy as it was before it listed multipart uploads.
      const agent = JSON.parse(policies[`agent-${name}`]!);
      agent.Statement = agent.Statement.filter((s: { Sid: string }) =>
        s.Sid !== "FindUnfinishedUploads"
      );
      policies[`agent-without-upload-listing-${name}`] = JSON.stringify(agent);
    }
    const setup = await new Deno.Command("python3", {
      args: ["-c", SETUP, endpoint, JSON.stringify(buckets), JSON.stringify(policies)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(setup.success, new TextDecoder().decode(setup.stderr));
    const keys: Record<string, [string, string]> = JSON.parse(
      new TextDecoder().decode(setup.stdout),
    );
    const on = await fetch(`${endpoint}/moto-api/reset-auth`, { method: "POST", body: "0" });
    assert(on.ok, await on.text());
    const [adminKey, adminSecret] = keys["admin"]!;
    const admin = new S3Client({
      region: "us-east-1",
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: adminKey, secretAccessKey: adminSecret },
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
    return {
      endpoint,
      env: (role, forBucket = bucket) => {
        const [id, secret] = keys[role === "admin" ? role : `${role}-${forBucket}`]!;
        return {
          AWS_ACCESS_KEY_ID: id,
          AWS_SECRET_ACCESS_KEY: secret,
          AWS_ENDPOINT_URL_S3: endpoint,
          AWS_REGION: "us-east-1",
        };
      },
      secrets: Object.values(keys).map(([, secret]) => secret),
      admin,
      [Symbol.asyncDispose]: async () => {
        admin.destroy();
        await stop();
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Writes one SSTable generation into `table`, its Data.db `dataBytes` long. */
async function writeGeneration(table: string, n: number, dataBytes: number): Promise<string[]> {
  await Deno.mkdir(table, { recursive: true });
  const names = ["Data.db", "Index.db", "Filter.db", "TOC.txt"].map((c) => `nb-${n}-big-${c}`);
  for (const name of names) {
    const bytes = name.endsWith("TOC.txt")
      ? new TextEncoder().encode("Data.db\nIndex.db\nFilter.db\nTOC.txt\n")
      : new Uint8Array(name.endsWith("Data.db") ? dataBytes : 1000 + n).map((_, i) =>
        (i * 31 + n + name.length) % 251
      );
    await Deno.writeFile(`${table}/${name}`, bytes);
  }
  return names;
}

/** The one line a failed job prints, checked for its words, a trace and the secrets. */
function assertOneLineFailure(out: CliResult, includes: string[], secrets: string[]): void {
  assertEquals(out.code, 1, out.stderr);
  const errors = out.stderr.split("\n").filter((l) => l.startsWith("error: "));
  assertEquals(errors.length, 1, out.stderr);
  for (const text of includes) assertStringIncludes(errors[0]!, text, out.stderr);
  assert(!/\n\s+at /.test(out.stderr), `no stack trace:\n${out.stderr}`);
  for (const secret of secrets) {
    assert(!out.stderr.includes(secret) && !out.stdout.includes(secret), "a secret was printed");
  }
}

async function objectKeys(s3: S3Client, bucket: string): Promise<string[]> {
  const out = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket }));
  return (out.Versions ?? []).filter((v) => v.IsLatest).map((v) => v.Key!).sort();
}

Deno.test("each job works with its own IAM policy and fails, naming the action, without it", async (t) => {
  await using moto = await startMoto({ backups: false, "locked-backups": true });
  await using dir = await tempDir();
  const table = `${dir.path}/data/ks/t-1`;
  const keyOf = (name: string) => `${PREFIX}${table}/${name}`;
  const watch = ["--once", "-B", "-r", "-n", HOST, "--max-upload-size", "5"];
  const watchArgs = [...watch, "--multipart-chunk-size", "5", "--index-wait", "5"];
  const kms = ["--sse", "aws:kms", "--sse-kms-key-id", KMS_KEY, "--storage-class", "STANDARD_IA"];
  const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");
  // A Data.db over 5 MiB: uploaded in two parts of 5 MiB and the rest.
  const gen1 = await writeGeneration(table, 1, 5 * 1024 * 1024 + 4321);

  for (const bucket of ["backups", "locked-backups"]) {
    const env = (role: Role) => moto.env(role, bucket);

    await t.step(
      `${bucket}: the watcher uploads (multipart too, SSE-KMS) with the agent policy`,
      async () => {
        const out = await runCli([...watchArgs, ...kms, bucket, `${dir.path}/data`], {
          env: env("agent"),
        });
        assertEquals(out.code, 0, out.stderr);
        const keys = await objectKeys(moto.admin, bucket);
        assertEquals(keys, [...gen1.map(keyOf), keyOf("nb-1-big-Data.db-listdir.json")].sort());
        const got = await moto.admin.send(
          new GetObjectCommand({ Bucket: bucket, Key: keyOf("nb-1-big-Data.db") }),
        );
        assertEquals(got.ETag?.endsWith('-2"'), true, `multipart: ${got.ETag}`);
        assertEquals([got.ServerSideEncryption, got.SSEKMSKeyId], ["aws:kms", KMS_KEY]);
        const bytes = await got.Body!.transformToByteArray();
        assertEquals(md5(bytes), md5(await Deno.readFile(`${table}/nb-1-big-Data.db`)));
      },
    );

    await t.step(`${bucket}: slurp, verify and list work with the restore policy`, async () => {
      const target = `${dir.path}/restored-${bucket}`;
      const slurp = await runCli(["slurp", "-n", HOST, bucket, table, target], {
        env: env("restore"),
      });
      assertEquals(slurp.code, 0, slurp.stderr);
      for (const name of gen1) {
        assertEquals(
          md5(await Deno.readFile(`${target}/${name}`)),
          md5(await Deno.readFile(`${table}/${name}`)),
          name,
        );
      }
      const verify = await runCli(["verify", "-n", HOST, bucket, `${dir.path}/data`], {
        env: env("restore"),
      });
      assertEquals(verify.code, 0, verify.stderr + verify.stdout);
      const list = await runCli(["list", "-n", HOST, bucket, `${dir.path}/data`], {
        env: env("restore"),
      });
      assertEquals(list.code, 0, list.stderr + list.stdout);
      assertStringIncludes(list.stdout, "nb-1-big-Data.db");
    });
  }

  // A compaction: generation 1 replaced by 2, whose index no longer names 1's files.
  for (const name of gen1) await Deno.remove(`${table}/${name}`);
  const gen2 = await writeGeneration(table, 2, 2000);
  const future = new Date(Date.now() + 30 * 86_400_000).toISOString();
  const chopArgs = (bucket: string) => [
    "chop",
    "-l",
    "--now",
    future,
    "-n",
    HOST,
    bucket,
    `${dir.path}/data`,
    "7",
  ];

  await t.step(
    "the watcher starts with the agent policy (its check lists its own keys)",
    async () => {
      // A HeadBucket, which moto authorizes as an action no policy names and
      // AWS as an s3:ListBucket without the prefix the agent policy requires,
      // would be refused here.
      await using watcher = spawnWatcher(["-r", "-n", HOST, "backups", `${dir.path}/data`], {
        env: moto.env("agent"),
      });
      await watcher.waitForMetrics(
        "the bucket checked and the watches in place",
        (m) => m.get("tablesnap_watching") === 1 && m.get("tablesnap_s3_reachable") === 1,
      );
      assertEquals(await watcher.stop(), 0, watcher.stderr());
    },
  );

  await t.step("the watcher cannot upload with the restore policy", async () => {
    const out = await runCli([...watch, "--without-index", "backups", `${dir.path}/data`], {
      env: moto.env("restore"),
    });
    assertEquals(out.code, 1, out.stderr);
    // Each refusal is one log line naming the action and the key; no trace, no secret.
    assertStringIncludes(
      out.stderr,
      `s3:PutObject on '${keyOf("nb-2-big-Data.db")}' denied (AccessDenied, HTTP 403)`,
    );
    assert(!/\n\s+at /.test(out.stderr), `no stack trace:\n${out.stderr}`);
    for (const secret of moto.secrets) assert(!out.stderr.includes(secret), "a secret was printed");
    assertEquals(
      (await objectKeys(moto.admin, "backups")).includes(keyOf("nb-2-big-Data.db")),
      false,
    );
  });

  await t.step("the agent policy covers this host's keys only", async () => {
    const out = await runCli(
      [...watch, "--without-index", "-n", "cass2.example.com", "backups", `${dir.path}/data`],
      { env: moto.env("agent") },
    );
    assertEquals(out.code, 1, out.stderr);
    assertStringIncludes(out.stderr, `s3:PutObject on 'cass2.example.com:${table}/`);
  });

  for (const bucket of ["backups", "locked-backups"]) {
    const env = (role: Role) => moto.env(role, bucket);
    // The last upload also deletes the local files: that needs no right on the bucket.
    // (Not with --once, which may exit before the deletes after the index are done.)
    const last = bucket === "locked-backups";
    await t.step(
      `${bucket}: the agent uploads generation 2${last ? ", then deletes it locally" : ""}`,
      async () => {
        if (!last) {
          const out = await runCli([...watchArgs, bucket, `${dir.path}/data`], {
            env: env("agent"),
          });
          assertEquals(out.code, 0, out.stderr);
          return;
        }
        const args = watchArgs.filter((a) => a !== "--once");
        await using watcher = spawnWatcher(
          [...args, "--delete-on-backup", bucket, `${dir.path}/data`],
          { env: env("agent") },
        );
        await waitFor("the local files deleted", () => [...Deno.readDirSync(table)].length === 0);
        assertEquals(await watcher.stop(), 0, watcher.stderr());
        assert(!/ ERROR |could not delete/.test(watcher.stderr()), watcher.stderr());
      },
    );
    const before = await objectKeys(moto.admin, bucket);
    const old = [...gen1.map(keyOf), keyOf("nb-1-big-Data.db-listdir.json")].sort();

    for (const role of ["agent", "restore"] as const) {
      await t.step(
        `${bucket}: chop with the ${role} policy deletes nothing, naming the action`,
        async () => {
          const out = await runCli(chopArgs(bucket), { env: env(role) });
          assertOneLineFailure(out, [
            `error: Access to bucket '${bucket}' denied (HTTP 403) for s3:DeleteObject on '${PREFIX}`,
          ], moto.secrets);
          assertEquals(await objectKeys(moto.admin, bucket), before);
        },
      );
    }

    await t.step(`${bucket}: chop deletes generation 1 with the retention policy`, async () => {
      const out = await runCli(chopArgs(bucket), { env: env("retention") });
      assertEquals(out.code, 0, out.stderr);
      const listed = out.stdout.split("\n").filter((l) => l.startsWith("deleted "));
      assertEquals(listed.length, old.length, out.stdout);
      assertEquals(
        await objectKeys(moto.admin, bucket),
        [...gen2.map(keyOf), keyOf("nb-2-big-Data.db-listdir.json")].sort(),
      );
      if (bucket === "locked-backups") {
        // On a versioned bucket the versions themselves go, not only the current ones.
        assertStringIncludes(out.stdout, "(versioned)");
        const versions = await moto.admin.send(
          new ListObjectVersionsCommand({ Bucket: bucket }),
        );
        const keys = [...(versions.Versions ?? []), ...(versions.DeleteMarkers ?? [])]
          .map((v) => v.Key!);
        assertEquals(keys.filter((k) => old.includes(k)), []);
      }
    });
  }

  await t.step("the agent aborts its own stale multipart uploads, and only those", async () => {
    const stale = async (key: string) =>
      (await moto.admin.send(new CreateMultipartUploadCommand({ Bucket: "backups", Key: key })))
        .UploadId!;
    const uploads = async () =>
      ((await moto.admin.send(new ListMultipartUploadsCommand({ Bucket: "backups" }))).Uploads ??
        []).map((u) => u.Key!).sort();
    await stale(keyOf("nb-7-big-Data.db"));
    await stale(`cass2.example.com:${table}/nb-7-big-Data.db`);
    const args = [...watch, "--without-index", "backups", `${dir.path}/data`];
    // Without s3:ListBucketMultipartUploads: one warning, and the backup goes on.
    const limited = await runCli(args, { env: moto.env("agent-without-upload-listing") });
    assertEquals(limited.code, 0, limited.stderr);
    const warnings = limited.stderr.split("\n").filter((l) => l.includes(" WARN "));
    assertEquals(warnings.length, 1, limited.stderr);
    assertStringIncludes(
      warnings[0]!,
      `s3:ListBucketMultipartUploads under '${PREFIX}${dir.path}/data/'`,
    );
    assertEquals((await uploads()).length, 2);
    const out = await runCli(args, { env: moto.env("agent") });
    assertEquals(out.code, 0, out.stderr);
    assertEquals(await uploads(), [`cass2.example.com:${table}/nb-7-big-Data.db`]);
  });
});

Deno.test("each role's policy grants the KMS actions of SSE-KMS objects, and no other", async () => {
  // S3 asks KMS for a data key to write an object (and to finish a multipart
  // upload, kms:Decrypt), and to decrypt one to read it: chop reads indexes.
  const needs: Record<typeof ROLES[number], string[]> = {
    agent: ["kms:Decrypt", "kms:GenerateDataKey"],
    restore: ["kms:Decrypt"],
    retention: ["kms:Decrypt"],
  };
  for (const role of ROLES) {
    const doc = JSON.parse(await policy(role, "b"));
    const kms = doc.Statement.flatMap((s: { Action: string | string[]; Resource: string }) =>
      [s.Action].flat().filter((a) => a.startsWith("kms:")).map((a) => `${a} ${s.Resource}`)
    ).sort();
    assertEquals(kms, needs[role].map((a) => `${a} ${KMS_KEY}`), role);
  }
});
