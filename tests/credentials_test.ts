/**
 * Credentials that expire and rotate, from each provider a host may have:
 * an instance role (IMDSv2, `AWS_EC2_METADATA_SERVICE_ENDPOINT`), container
 * credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI`) and web identity
 * (`AWS_WEB_IDENTITY_TOKEN_FILE` against moto's STS). The watcher, run with
 * the compile task's flags over HTTPS, keeps uploading while the keys
 * change under it; the S3 front refuses a key once it has expired (as S3
 * does once IAM dropped it), so a request signed with a stale key fails
 * the test.
 */
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { assert, assertEquals } from "./_assert.ts";
import { type S3Server, startS3Server, tempDir, waitFor } from "./_helpers.ts";
import { type FaultServer, startFaultServer } from "./_fault_server.ts";
import { AWS_S3_NAMES, makeAuthority, spawnProgram } from "./_network.ts";

const HOST = "db1.example.com";
const SYSTEM_BUNDLE = Deno.env.get("NODE_EXTRA_CA_CERTS") ?? "/etc/ssl/certs/ca-certificates.crt";
/** How long each issued key lives past the SDK's five-minute refresh window. */
const LIFE_MS = 3_000;
const SDK_WINDOW_MS = 300_000;

/** Keys handed out, and until when S3 accepts each. */
class KeyIssuer {
  readonly issued = new Map<string, number>();
  next(): { AccessKeyId: string; SecretAccessKey: string; Token: string; Expiration: string } {
    const id = `ASIATEST${String(this.issued.size + 1).padStart(4, "0")}`;
    const now = Date.now();
    // Accepted a little past its end: a request signed just before it may be in flight.
    this.issued.set(id, now + LIFE_MS + 1_500);
    return {
      AccessKeyId: id,
      SecretAccessKey: `secret-${id}`,
      Token: `token-${id}`,
      Expiration: new Date(now + SDK_WINDOW_MS + LIFE_MS).toISOString(),
    };
  }
  valid(id: string): boolean {
    return (this.issued.get(id) ?? 0) > Date.now();
  }
}

/** A local HTTP server answering by `handler`; stopped on dispose. */
function serve(handler: (req: Request) => Response | Promise<Response>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** An IMDSv2 endpoint with one role whose credentials rotate on every fetch. */
function fakeImds(keys: KeyIssuer) {
  return serve((req) => {
    const path = new URL(req.url).pathname;
    if (req.method === "PUT" && path === "/latest/api/token") return new Response("imds-token");
    if (req.headers.get("x-aws-ec2-metadata-token") !== "imds-token") {
      return new Response("", { status: 401 });
    }
    if (path === "/latest/meta-data/iam/security-credentials/") return new Response("backup-role");
    if (path === "/latest/meta-data/iam/security-credentials/backup-role") {
      return Response.json({ Code: "Success", Type: "AWS-HMAC", ...keys.next() });
    }
    return new Response("", { status: 404 });
  });
}

/** Writes one more table generation every little while; the watcher must upload each. */
async function keepWriting(dir: string, s3: S3Server, rounds: number, program: () => string) {
  const table = `${dir}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  for (let g = 1; g <= rounds; g++) {
    const name = `nb-${g}-big-Data.db`;
    await Deno.writeFile(`${table}/${name}`, new Uint8Array(50_000).fill(g));
    await waitFor(`generation ${g} in the bucket`, async () => {
      const out = await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
      return (out.Contents ?? []).some((o) => o.Key === `${HOST}:${table}/${name}`) || undefined;
    }, 30_000).catch((err) => {
      throw new Error(`${(err as Error).message}\n${program()}`);
    });
    // Past the key's life: the next upload needs a fresh one.
    await new Promise((resolve) => setTimeout(resolve, LIFE_MS + 500));
  }
}

async function watchThrough(
  front: FaultServer,
  s3: S3Server,
  env: Record<string, string>,
  rounds: number,
): Promise<string[]> {
  await using work = await tempDir();
  await Deno.mkdir(`${work.path}/data`);
  await using watcher = await spawnProgram(
    ["-B", "-r", "-n", HOST, s3.bucket, `${work.path}/data`],
    env,
  );
  await keepWriting(`${work.path}/data`, s3, rounds, watcher.stderr);
  const refused = front.faults.filter((f) => f.includes("InvalidAccessKeyId"));
  assertEquals(refused, [], watcher.stderr());
  return [...new Set(front.seen.map((r) => r.accessKey))];
}

async function setUp(keys?: KeyIssuer) {
  const ca = await makeAuthority(AWS_S3_NAMES);
  const s3 = await startS3Server("tablesnap-creds", { server: "moto", tls: false });
  const front = await startFaultServer(ca, s3.endpoint, {
    fault: (r) =>
      keys && !keys.valid(r.accessKey) ? { status: 403, code: "InvalidAccessKeyId" } : undefined,
  });
  const home = await tempDir();
  return {
    ca,
    s3,
    front,
    env: {
      HOME: home.path,
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      AWS_REGION: "us-east-1",
      NODE_EXTRA_CA_CERTS: SYSTEM_BUNDLE,
      AWS_CA_BUNDLE: ca.caFile,
      AWS_ENDPOINT_URL_S3: `https://localhost:${front.port}`,
    },
    [Symbol.asyncDispose]: async () => {
      await front[Symbol.asyncDispose]();
      await s3.stop();
      await home[Symbol.asyncDispose]();
      await ca[Symbol.asyncDispose]();
    },
  };
}

Deno.test("an instance role's rotating credentials are fetched anew before they expire", async () => {
  const keys = new KeyIssuer();
  await using s = await setUp(keys);
  await using imds = fakeImds(keys);
  const used = await watchThrough(s.front, s.s3, {
    ...s.env,
    AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.url,
    // A proxy that answers nothing: S3 is exempt by NO_PROXY, the metadata
    // service must never be asked through it.
    HTTP_PROXY: "http://127.0.0.1:9",
    HTTPS_PROXY: "http://127.0.0.1:9",
    NO_PROXY: "localhost",
  }, 3);
  assert(used.length >= 3, `keys used: ${used.join(" ")}`);
  assert(used.every((k) => k.startsWith("ASIATEST")), used.join(" "));
});

Deno.test("container credentials rotate the same way", async () => {
  const keys = new KeyIssuer();
  await using s = await setUp(keys);
  await using endpoint = serve((req) =>
    req.headers.get("authorization") === "container-secret"
      ? Response.json(keys.next())
      : new Response("", { status: 403 })
  );
  const used = await watchThrough(s.front, s.s3, {
    ...s.env,
    AWS_CONTAINER_CREDENTIALS_FULL_URI: `${endpoint.url}/v2/credentials`,
    AWS_CONTAINER_AUTHORIZATION_TOKEN: "container-secret",
  }, 3);
  assert(used.length >= 3, `keys used: ${used.join(" ")}`);
});

Deno.test("web identity credentials come from STS (moto) through the same transport", async () => {
  await using s = await setUp();
  const tokenFile = `${s.env.HOME}/web-identity-token`;
  await Deno.writeTextFile(tokenFile, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.");
  const used = await watchThrough(s.front, s.s3, {
    ...s.env,
    AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile,
    AWS_ROLE_ARN: "arn:aws:iam::123456789012:role/backup",
    AWS_ROLE_SESSION_NAME: "tablesnap-test",
    AWS_ENDPOINT_URL_STS: s.s3.endpoint,
  }, 1);
  // moto's STS issues ASIA... keys; nothing else could have signed.
  assert(used.length >= 1 && used.every((k) => k.startsWith("ASIA")), used.join(" "));
});
