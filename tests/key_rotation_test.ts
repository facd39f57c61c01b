/**
 * Static keys rotated by the operator while the watcher runs: the keys live
 * in a profile file (`AWS_SHARED_CREDENTIALS_FILE`); a second key is made,
 * the file rewritten with it, and the first key deleted in IAM. moto, over
 * HTTPS, checks every signature against its IAM users, so a request signed
 * with the deleted key is refused (InvalidAccessKeyId) as S3 would refuse
 * it. Every file written after the rotation must still land, without a
 * refusal left standing and without any key in the output.
 */
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { assert, assertEquals } from "./_assert.ts";
import { spawnWatcher, startS3Server, tempDir, waitFor } from "./_helpers.ts";

const HOST = "db1.example.com";

/** boto3 against moto's IAM (no auth yet, or the admin's keys); prints JSON. */
const IAM = `
import boto3, json, sys
endpoint, ca, action, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
key, secret = args.get("as", ["setup", "setup"])
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", verify=ca,
                   aws_access_key_id=key, aws_secret_access_key=secret)
if action == "user":
    iam.create_user(UserName=args["user"])
    iam.put_user_policy(UserName=args["user"], PolicyName="p", PolicyDocument=args["policy"])
if action in ("user", "key"):
    k = iam.create_access_key(UserName=args["user"])["AccessKey"]
    print(json.dumps([k["AccessKeyId"], k["SecretAccessKey"]]))
if action == "delete":
    iam.delete_access_key(UserName=args["user"], AccessKeyId=args["key"])
    print("[]")
`;

async function iam(
  endpoint: string,
  ca: string,
  action: string,
  args: Record<string, unknown>,
): Promise<string[]> {
  const out = await new Deno.Command("python3", {
    args: ["-c", IAM, endpoint, ca, action, JSON.stringify(args)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

function profileFile([key, secret]: string[]): string {
  return `[default]\naws_access_key_id = ${key}\naws_secret_access_key = ${secret}\n`;
}

for (const path of ["direct requests", "the SDK"]) {
  Deno.test(`static keys rotated in the profile file mid-run: all lands (${path})`, async () => {
    await rotateWhileWatching(path === "the SDK" ? { TABLESNAP_DIRECT_REQUESTS: "0" } : {});
  });
}

/** The watcher uploads with key A; B replaces it; more files, which must all land. */
async function rotateWhileWatching(extraEnv: Record<string, string>): Promise<void> {
  await using s3 = await startS3Server("rotated-keys", { server: "moto", asSent: true });
  const ca = s3.tls!.caFile;
  const policy = (actions: string[]) =>
    JSON.stringify({
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Action: actions, Resource: "*" }],
    });
  const admin = await iam(s3.endpoint, ca, "user", { user: "admin", policy: policy(["*"]) });
  const keyA = await iam(s3.endpoint, ca, "user", {
    user: "agent",
    policy: policy([
      "s3:PutObject",
      "s3:GetObject",
      "s3:ListBucket",
      "s3:ListBucketMultipartUploads",
    ]),
  });
  // The suite's own client lists the bucket as the admin.
  s3.client.config.credentials = () =>
    Promise.resolve({ accessKeyId: admin[0]!, secretAccessKey: admin[1]! });
  const on = await s3.fetch("/moto-api/reset-auth", { method: "POST", body: "0" });
  assert(on.ok, await on.text());

  await using work = await tempDir();
  const credentials = `${work.path}/credentials`;
  await Deno.writeTextFile(credentials, profileFile(keyA));
  const data = `${work.path}/data`;
  const table = `${data}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  await using watcher = spawnWatcher(["-B", "-r", "-n", HOST, s3.bucket, data], {
    env: {
      ...s3.env,
      AWS_ACCESS_KEY_ID: "",
      AWS_SECRET_ACCESS_KEY: "",
      AWS_CONFIG_FILE: `${work.path}/config`,
      AWS_SHARED_CREDENTIALS_FILE: credentials,
      ...extraEnv,
    },
  });
  await watcher.waitUntilWatching();

  const landed = async (names: string[]) => {
    const listing = new Set<string>();
    await waitFor(`${names.join(", ")} in the bucket`, async () => {
      const out = await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
      for (const o of out.Contents ?? []) listing.add(o.Key!);
      return names.every((n) => listing.has(`${HOST}:${table}/${n}`)) || undefined;
    }, 30_000).catch((err) => {
      throw new Error(`${(err as Error).message}\n${watcher.stderr()}`);
    });
  };
  const write = async (from: number, to: number) => {
    const names = [];
    for (let g = from; g <= to; g++) {
      const name = `nb-${g}-big-Data.db`;
      // Renamed into place, as Cassandra does: a file caught half-written
      // fails its first upload with an ERROR line, which this test refuses.
      await Deno.writeFile(`${table}/.${name}.tmp`, new Uint8Array(20_000).fill(g));
      await Deno.rename(`${table}/.${name}.tmp`, `${table}/${name}`);
      names.push(name);
    }
    return names;
  };

  await landed(await write(1, 3));
  // The rotation, as an operator does it: key B made, the file rewritten, key A deleted.
  const keyB = await iam(s3.endpoint, ca, "key", { user: "agent", as: admin });
  await Deno.writeTextFile(`${credentials}.new`, profileFile(keyB));
  await Deno.rename(`${credentials}.new`, credentials);
  await iam(s3.endpoint, ca, "delete", { user: "agent", key: keyA[0], as: admin });
  await landed(await write(4, 8));

  assertEquals(await watcher.stop(), 0, watcher.stderr());
  const log = watcher.stderr();
  assert(!/ (ERROR|WARN) /.test(log), `no refusal left standing:\n${log}`);
  assert(log.includes("S3 refused the credentials: read them again"), log);
  for (const secret of [...keyA, ...keyB, ...admin]) {
    assert(!log.includes(secret), "a key was printed");
  }
}
