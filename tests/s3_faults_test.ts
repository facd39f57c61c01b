/**
 * What real S3 answers and local servers never do, injected by a front
 * (tests/_fault_server.ts) between the program and moto, reached through a
 * CONNECT proxy under AWS's own host names (no --endpoint-url), the program
 * run with the compile task's flags: a bucket in another region (followed
 * once, said once), a 307, a clock two hours off, throttling, server errors
 * and cut connections (retried with the same bytes).
 */
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { assert, assertEquals } from "./_assert.ts";
import { startS3Server, tempDir } from "./_helpers.ts";
import { type FaultOptions, type FaultServer, startFaultServer } from "./_fault_server.ts";
import {
  type Authority,
  AWS_S3_NAMES,
  type CliResult,
  makeAuthority,
  runProgram,
  startConnectProxy,
} from "./_network.ts";

const HOST = "db1.example.com";
const SYSTEM_BUNDLE = Deno.env.get("NODE_EXTRA_CA_CERTS") ?? "/etc/ssl/certs/ca-certificates.crt";

interface Setup extends AsyncDisposable {
  front: FaultServer;
  tunnels: string[];
  env: Record<string, string>;
  /** The objects moto holds, by key. */
  object(key: string): Promise<Uint8Array | null>;
  keys(): Promise<string[]>;
}

/** moto behind a fault front behind a CONNECT proxy; one bucket. */
async function setUp(ca: Authority, bucket: string, options: FaultOptions): Promise<Setup> {
  // Plain HTTP behind the fault front, which serves the TLS.
  const moto = await startS3Server(bucket, { server: "moto", tls: false });
  const front = await startFaultServer(ca, moto.endpoint, options);
  const proxy = startConnectProxy((host) =>
    host.endsWith(".amazonaws.com") ? { hostname: "127.0.0.1", port: front.port } : undefined
  );
  const home = await tempDir();
  return {
    front,
    tunnels: proxy.tunnels,
    env: {
      HOME: home.path,
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      AWS_ACCESS_KEY_ID: "AKIDTEST",
      AWS_SECRET_ACCESS_KEY: "secret",
      AWS_REGION: "us-east-1",
      AWS_EC2_METADATA_DISABLED: "true",
      NODE_EXTRA_CA_CERTS: SYSTEM_BUNDLE,
      AWS_CA_BUNDLE: ca.caFile,
      HTTPS_PROXY: `http://127.0.0.1:${proxy.port}`,
    },
    object: async (key) => {
      try {
        const out = await moto.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return await out.Body!.transformToByteArray();
      } catch (err) {
        if ((err as Error).name === "NoSuchKey") return null;
        throw err;
      }
    },
    keys: async () => {
      const text = await (await fetch(`${moto.endpoint}/${bucket}?list-type=2`)).text();
      return [...text.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]!);
    },
    [Symbol.asyncDispose]: async () => {
      await proxy[Symbol.asyncDispose]();
      await front[Symbol.asyncDispose]();
      await moto.stop();
      await home[Symbol.asyncDispose]();
    },
  };
}

/** A table of three files (one of 6 MiB, sent in parts with --multipart-chunk-size 5). */
async function tableDir(root: string) {
  const table = `${root}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  const files = new Map<string, Uint8Array>([
    ["nb-1-big-Data.db", new Uint8Array(6 * 1024 * 1024 + 5).map((_, i) => (i * 31) % 251)],
    ["nb-1-big-Index.db", new Uint8Array(70_000).map((_, i) => i % 7)],
    ["nb-1-big-TOC.txt", new TextEncoder().encode("Data.db\nIndex.db\nTOC.txt\n")],
  ]);
  for (const [name, bytes] of files) await Deno.writeFile(`${table}/${name}`, bytes);
  return { table, files };
}

/** Backup, list, slurp: each must succeed, the restored bytes the same. */
async function roundTrip(s: Setup, bucket: string, root: string): Promise<CliResult[]> {
  const { table, files } = await tableDir(`${root}/data`);
  const results: CliResult[] = [];
  const run = async (args: string[]) => {
    const out = await runProgram(args, s.env);
    assertEquals(out.code, 0, `${args[0]}: ${out.stderr}`);
    results.push(out);
  };
  await run([
    "-B",
    "--once",
    "-r",
    "-n",
    HOST,
    "--max-upload-size",
    "5",
    "--multipart-chunk-size",
    "5",
    bucket,
    `${root}/data`,
  ]);
  for (const [name, bytes] of files) {
    assertSame(await s.object(`${HOST}:${table}/${name}`), bytes, `${name} in the bucket`);
  }
  await run(["list", "-n", HOST, bucket, table]);
  await run(["slurp", "-n", HOST, bucket, table, `${root}/restored`]);
  for (const [name, bytes] of files) {
    assertEquals(await Deno.readFile(`${root}/restored/${name}`), bytes);
  }
  return results;
}

/** Byte equality, said in one line (a diff of megabytes would not help). */
function assertSame(got: Uint8Array | null, want: Uint8Array, what: string): void {
  const same = got !== null && got.byteLength === want.byteLength &&
    got.every((b, i) => b === want[i]);
  assert(same, `${what}: ${got === null ? "missing" : `${got.byteLength} bytes differ`}`);
}

function switches(out: CliResult): number {
  return out.stderr.split("\n").filter((l) => l.includes("another region")).length;
}

for (const as of ["301", "400"] as const) {
  Deno.test(`a bucket in another region (${as}) is followed once per run and said once`, async () => {
    await using ca = await makeAuthority(AWS_S3_NAMES);
    const bucket = "tablesnap-eu";
    await using s = await setUp(ca, bucket, { bucketRegion: { region: "eu-west-1", as } });
    await using work = await tempDir();
    const results = await roundTrip(s, bucket, work.path);
    for (const out of results) assertEquals(switches(out), 1, out.stderr);
    // One refused request per run at most (the first), everything else in eu-west-1.
    const wrong = s.front.seen.filter((r) => r.region !== "eu-west-1");
    assert(wrong.length <= results.length, JSON.stringify(wrong));
    assert(s.front.seen.length > 10);
    assert(
      s.tunnels.some((t) => t === `${bucket}.s3.eu-west-1.amazonaws.com:443`),
      s.tunnels.join(),
    );
  });
}

Deno.test("a 307 is followed to its Location", async () => {
  await using ca = await makeAuthority(AWS_S3_NAMES);
  const bucket = "tablesnap-new";
  const moved = `${bucket}.s3.eu-west-1.amazonaws.com`;
  await using s = await setUp(ca, bucket, {
    fault: (r) =>
      r.host.startsWith(`${bucket}.s3.us-east-1.`)
        ? { status: 307, code: "TemporaryRedirect", headers: { location: `https://${moved}/` } }
        : undefined,
  });
  await using work = await tempDir();
  await roundTrip(s, bucket, work.path);
  assert(s.front.faults.length > 0);
  assert(s.front.seen.some((r) => r.host === moved && r.method === "PUT"));
  assert(s.front.seen.some((r) => r.host === moved && r.method === "GET"));
});

Deno.test("S3's clock two hours ahead: requests are signed with its time after one refusal", async () => {
  await using ca = await makeAuthority(AWS_S3_NAMES);
  const bucket = "tablesnap-skew";
  await using s = await setUp(ca, bucket, { clockOffsetMs: 2 * 3600_000 });
  await using work = await tempDir();
  const results = await roundTrip(s, bucket, work.path);
  const refused = s.front.faults.filter((f) => f === "RequestTimeTooSkewed").length;
  assert(refused >= results.length && refused <= 3 * results.length, String(refused));
  const accepted = s.front.seen.filter((r) =>
    Math.abs(r.signedAt - Date.now() - 2 * 3600_000) < 900_000
  );
  assert(accepted.length > 10, String(accepted.length));
});

Deno.test("throttling, server errors and cut answers are retried with the same bytes", async () => {
  await using ca = await makeAuthority(AWS_S3_NAMES);
  const bucket = "tablesnap-flaky";
  // Each kind of fault once, on the first request of each kind that comes along.
  const plan: [(r: { method: string; path: string }) => boolean, string][] = [
    [(r) => r.method === "PUT" && !r.path.includes("uploadId"), "503 SlowDown"],
    [(r) => r.method === "PUT" && r.path.includes("partNumber=2"), "500 InternalError"],
    [(r) => r.method === "POST" && r.path.includes("uploadId"), "502 BadGateway"],
    [(r) => r.method === "GET" && r.path.includes("list-type"), "504 GatewayTimeout"],
    [(r) => r.method === "PUT" && r.path.endsWith("TOC.txt"), "400 RequestTimeout"],
    [(r) => r.method === "GET" && r.path.includes("Data.db") && !r.path.includes("json"), "cut"],
  ];
  const done = new Set<string>();
  await using s = await setUp(ca, bucket, {
    fault: (r) => {
      for (const [match, what] of plan) {
        if (done.has(what) || !match(r)) continue;
        done.add(what);
        if (what === "cut") return { cut: true };
        const [status, code] = what.split(" ");
        return { status: Number(status), code: code! };
      }
      return undefined;
    },
  });
  await using work = await tempDir();
  await roundTrip(s, bucket, work.path);
  assertEquals(new Set(s.front.faults), new Set(plan.map(([, what]) => what)));
});

Deno.test("S3's clock jumping mid-upload: the direct PUTs correct it themselves", async () => {
  await using ca = await makeAuthority(AWS_S3_NAMES);
  const bucket = "tablesnap-jump";
  // Our time until the first PUT arrives, then S3 is an hour ahead: a direct request meets it first.
  let jumped = false;
  await using s = await setUp(ca, bucket, {
    clockOffsetMs: (_, last) => {
      if (last?.method === "PUT") jumped = true;
      return jumped ? 3600_000 : 0;
    },
  });
  await using work = await tempDir();
  const [backup] = await roundTrip(s, bucket, work.path);
  // Corrected by the request itself: no upload failed and was retried later.
  assert(!/ WARN | ERROR /.test(backup!.stderr), backup!.stderr);
  assert(s.front.faults.includes("RequestTimeTooSkewed"));
});
