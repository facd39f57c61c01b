/**
 * Trust, proxies and addressing as a user meets them: the program run with
 * exactly the compile task's permissions, against moto over HTTPS with a
 * certificate from a CA made for the run, `NODE_EXTRA_CA_CERTS` set as on
 * every host here. The private CA comes from `AWS_CA_BUNDLE`, `--ca-bundle`,
 * the profile's `ca_bundle` or `NODE_EXTRA_CA_CERTS`; through a CONNECT
 * proxy, AWS's own host names (no `--endpoint-url`) reach moto while
 * nothing is reachable directly.
 */
import { assert, assertEquals } from "./_assert.ts";
import { startS3Server, tempDir } from "./_helpers.ts";
import {
  AWS_S3_NAMES,
  makeAuthority,
  runProgram,
  startConnectProxy,
  startHttpsMoto,
} from "./_network.ts";

const HOST = "db1.example.com";
const SYSTEM_BUNDLE = Deno.env.get("NODE_EXTRA_CA_CERTS") ?? "/etc/ssl/certs/ca-certificates.crt";

/** A table directory with two files; returns their names and bytes. */
async function tableDir(root: string): Promise<{ table: string; files: Map<string, Uint8Array> }> {
  const table = `${root}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  const files = new Map<string, Uint8Array>([
    ["nb-1-big-Data.db", new Uint8Array(300_000).map((_, i) => (i * 7) % 256)],
    ["nb-1-big-TOC.txt", new TextEncoder().encode("Data.db\nTOC.txt\n")],
  ]);
  for (const [name, bytes] of files) await Deno.writeFile(`${table}/${name}`, bytes);
  return { table, files };
}

/** Backs the tree up (-B --once), lists it and restores it; asserts every step. */
async function backupListRestore(
  root: string,
  bucket: string,
  env: Record<string, string>,
  extra: string[] = [],
): Promise<void> {
  const { table, files } = await tableDir(`${root}/data`);
  const up = await runProgram(
    ["-B", "--once", "-r", "-n", HOST, ...extra, bucket, `${root}/data`],
    env,
  );
  assertEquals(up.code, 0, up.stderr);
  const list = await runProgram(["list", "-n", HOST, ...extra, bucket, table], env);
  assertEquals(list.code, 0, list.stderr);
  assert(list.stdout.includes("newest"), list.stdout);
  const target = `${root}/restored`;
  const down = await runProgram(["slurp", "-n", HOST, ...extra, bucket, table, target], env);
  assertEquals(down.code, 0, down.stderr);
  for (const [name, bytes] of files) assertEquals(await Deno.readFile(`${target}/${name}`), bytes);
}

function baseEnv(home: string): Record<string, string> {
  return {
    HOME: home,
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    AWS_ACCESS_KEY_ID: "AKIDTEST",
    AWS_SECRET_ACCESS_KEY: "secret",
    AWS_REGION: "us-east-1",
    AWS_EC2_METADATA_DISABLED: "true",
    NODE_EXTRA_CA_CERTS: SYSTEM_BUNDLE,
  };
}

Deno.test("a private CA is trusted from AWS_CA_BUNDLE, --ca-bundle, the profile and NODE_EXTRA_CA_CERTS", async (t) => {
  await using ca = await makeAuthority(AWS_S3_NAMES);
  await using moto = await startHttpsMoto(ca);
  await using home = await tempDir();
  const endpoint = ["--endpoint-url", moto.endpoint];
  const base = baseEnv(home.path);

  await t.step("without it: one line naming the host and the reason, no retries", async () => {
    await moto.createBucket("untrusted");
    const started = performance.now();
    const out = await runProgram(["list", "-n", HOST, ...endpoint, "untrusted", "/x"], base);
    assertEquals(out.code, 1, out.stderr);
    const lines = out.stderr.trim().split("\n");
    assertEquals(lines.length, 1, out.stderr);
    assert(lines[0]!.includes(`localhost:${moto.port}`), out.stderr);
    assert(/certificate|UnknownIssuer/i.test(lines[0]!), out.stderr);
    // Retried with backoff, three tries would take seconds more than one.
    assert(performance.now() - started < 20_000);
  });

  await t.step("AWS_CA_BUNDLE: backup, list and slurp", async () => {
    await moto.createBucket("by-env");
    await using work = await tempDir();
    await backupListRestore(work.path, "by-env", { ...base, AWS_CA_BUNDLE: ca.caFile }, endpoint);
  });

  await t.step("--ca-bundle, the profile's ca_bundle, NODE_EXTRA_CA_CERTS", async () => {
    await moto.createBucket("by-flag");
    const flag = await runProgram(
      ["list", "-n", HOST, ...endpoint, "--ca-bundle", ca.caFile, "by-flag", "/x"],
      base,
    );
    assertEquals(flag.code, 0, flag.stderr);
    const config = `${home.path}/aws-config`;
    await Deno.writeTextFile(
      config,
      `[profile backup]\nregion = us-east-1\nca_bundle = ${ca.caFile}\n`,
    );
    const profile = await runProgram(
      ["list", "-n", HOST, ...endpoint, "by-flag", "/x"],
      { ...base, AWS_CONFIG_FILE: config, AWS_PROFILE: "backup" },
    );
    assertEquals(profile.code, 0, profile.stderr);
    const node = await runProgram(
      ["list", "-n", HOST, ...endpoint, "by-flag", "/x"],
      { ...base, NODE_EXTRA_CA_CERTS: ca.caFile },
    );
    assertEquals(node.code, 0, node.stderr);
  });

  await t.step("a CA bundle that cannot be read is a one-line error naming it", async () => {
    const out = await runProgram(
      ["list", "-n", HOST, ...endpoint, "by-flag", "/x"],
      { ...base, AWS_CA_BUNDLE: `${home.path}/missing.pem` },
    );
    assertEquals(out.code, 1, out.stderr);
    assertEquals(out.stderr.trim().split("\n").length, 1, out.stderr);
    assert(out.stderr.includes("missing.pem") && out.stderr.includes("AWS_CA_BUNDLE"), out.stderr);
  });
});

Deno.test("through a CONNECT proxy, AWS host names reach S3 virtual-hosted and path style", async (t) => {
  await using ca = await makeAuthority(AWS_S3_NAMES);
  await using moto = await startHttpsMoto(ca);
  await using home = await tempDir();
  // Every *.amazonaws.com name reaches moto through the proxy; nothing else does.
  await using proxy = startConnectProxy(
    (host) =>
      host.endsWith(".amazonaws.com") ? { hostname: "127.0.0.1", port: moto.port } : undefined,
    { user: "backup", password: "s3cr:t pass" },
  );
  const env = {
    ...baseEnv(home.path),
    AWS_CA_BUNDLE: ca.caFile,
    HTTPS_PROXY: `http://backup:${encodeURIComponent("s3cr:t pass")}@127.0.0.1:${proxy.port}`,
  };

  await t.step("a plain bucket name, virtual-hosted; credentials from a profile file", async () => {
    await moto.createBucket("tablesnap-plain");
    await using work = await tempDir();
    await Deno.mkdir(`${home.path}/.aws`, { recursive: true });
    await Deno.writeTextFile(
      `${home.path}/.aws/credentials`,
      "[backup]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n",
    );
    const profileEnv: Record<string, string> = { ...env, AWS_PROFILE: "backup" };
    delete profileEnv.AWS_ACCESS_KEY_ID;
    delete profileEnv.AWS_SECRET_ACCESS_KEY;
    await backupListRestore(work.path, "tablesnap-plain", profileEnv);
    const table = `${work.path}/data/ks/t1`;
    const verify = await runProgram(["verify", "-n", HOST, "tablesnap-plain", table], profileEnv);
    assertEquals(verify.code, 0, verify.stderr);
    const chop = await runProgram(
      ["chop", "-d", "-n", HOST, "tablesnap-plain", table, "1"],
      profileEnv,
    );
    assertEquals(chop.code, 0, chop.stderr);
    assert(proxy.tunnels.length > 0);
    assert(
      proxy.tunnels.every((t) => t === "tablesnap-plain.s3.us-east-1.amazonaws.com:443"),
      proxy.tunnels.join(" "),
    );
    assertEquals(await moto.keys("tablesnap-plain").then((k) => k.length), 3);
  });

  await t.step("a dotted bucket name, path style", async () => {
    proxy.tunnels.length = 0;
    await moto.createBucket("tablesnap.dotted");
    await using work = await tempDir();
    await backupListRestore(work.path, "tablesnap.dotted", env);
    assert(proxy.tunnels.length > 0);
    assert(
      proxy.tunnels.every((t) => t === "s3.us-east-1.amazonaws.com:443"),
      proxy.tunnels.join(" "),
    );
  });

  await t.step("--force-path-style and AWS_S3_FORCE_PATH_STYLE", async () => {
    proxy.tunnels.length = 0;
    const flag = await runProgram([
      "list",
      "-n",
      HOST,
      "--force-path-style",
      "tablesnap-plain",
      "/x",
    ], env);
    assertEquals(flag.code, 0, flag.stderr);
    const variable = await runProgram(["list", "-n", HOST, "tablesnap-plain", "/x"], {
      ...env,
      AWS_S3_FORCE_PATH_STYLE: "true",
    });
    assertEquals(variable.code, 0, variable.stderr);
    assert(proxy.tunnels.length >= 2);
    assert(
      proxy.tunnels.every((t) => t === "s3.us-east-1.amazonaws.com:443"),
      proxy.tunnels.join(" "),
    );
  });

  await t.step("the proxy's password is never logged; a refused tunnel is one line", async () => {
    const out = await runProgram(["list", "-n", HOST, "tablesnap-plain", "/x"], {
      ...env,
      HTTPS_PROXY: `http://backup:wrong@127.0.0.1:${proxy.port}`,
    });
    assertEquals(out.code, 1, out.stderr);
    assertEquals(out.stderr.trim().split("\n").length, 1, out.stderr);
    assert(out.stderr.includes("407"), out.stderr);
    assert(!out.stderr.includes("wrong") && !out.stderr.includes("s3cr"), out.stderr);
  });

  await t.step("NO_PROXY sends the request directly (and so it fails here)", async () => {
    const tunnels = proxy.tunnels.length;
    const out = await runProgram(["list", "-n", HOST, "tablesnap-plain", "/x"], {
      ...env,
      no_proxy: ".amazonaws.com",
      // Any direct attempt must fail fast rather than reach the internet.
      AWS_ENDPOINT_URL_S3: "https://s3.us-east-1.amazonaws.com:1",
    });
    assertEquals(out.code, 1, out.stderr);
    assertEquals(proxy.tunnels.length, tunnels);
  });
});

Deno.test("HTTP_PROXY carries plain-HTTP requests with the absolute URL, credentials and all", async () => {
  // moto over plain HTTP, named by a port where nothing listens: only the proxy reaches it.
  const moto = await startS3Server("tablesnap-http", { server: "moto", tls: false });
  try {
    await using home = await tempDir();
    await using proxy = startConnectProxy(
      (host) => host === "localhost" ? { hostname: "127.0.0.1", port: moto.port } : undefined,
      { user: "backup", password: "pw" },
    );
    await using work = await tempDir();
    await backupListRestore(work.path, "tablesnap-http", {
      ...baseEnv(home.path),
      http_proxy: `http://backup:pw@127.0.0.1:${proxy.port}`,
    }, ["--endpoint-url", "http://localhost:9"]);
    assert(proxy.forwarded.length > 0 && proxy.tunnels.length === 0);
    assert(proxy.forwarded.every((f) => f === "localhost:9"), proxy.forwarded.join());
  } finally {
    await moto.stop();
  }
});
