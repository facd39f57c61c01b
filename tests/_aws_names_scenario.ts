/**
 * Run by tests/aws_names_test.ts inside `unshare --net --mount --pid`: a
 * private network namespace (only `lo`) with its own /etc/hosts, so AWS's
 * S3 host names can be served locally without --endpoint-url. moto listens
 * on 127.0.0.1:443 with a certificate for those names from a CA made here;
 * the program (the compile flags) gets the CA from `AWS_CA_BUNDLE` and its
 * credentials from a profile file, and runs the watcher, `list`, `slurp`,
 * `verify` and `chop -d` (tests/_whole_run.ts):
 *
 * 1. direct, the names mapped to 127.0.0.1: a plain bucket (virtual-hosted)
 *    and a dotted one (path style);
 * 2. through a CONNECT proxy, the names mapped to 127.0.0.9 where nothing
 *    listens, so only the proxy's tunnels reach moto.
 *
 * Prints one line per passed case; any failure throws (exit 1).
 */
import { assert, assertEquals } from "./_assert.ts";
import { runCli, startS3Server } from "./_helpers.ts";
import { startConnectProxy } from "./_network.ts";
import { AWS_S3_NAMES, LOOPBACK_NAMES } from "./_tls.ts";
import { wholeRun } from "./_whole_run.ts";

const PLAIN = "tablesnap-e2e";
const DOTTED = "tablesnap.e2e.dotted";

async function sh(program: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${program} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Points AWS's S3 names (path style and the plain bucket's virtual host) at `address`. */
async function mapAwsNames(dir: string, address: string): Promise<void> {
  const names = ["s3.amazonaws.com", "s3.us-east-1.amazonaws.com"];
  names.push(...names.map((n) => `${PLAIN}.${n}`));
  const file = `${dir}/hosts-${address}`;
  await Deno.writeTextFile(file, `127.0.0.1 localhost\n${address} ${names.join(" ")}\n`);
  // A bind mount over the last one: every lookup reads /etc/hosts afresh.
  await sh("mount", ["--bind", file, "/etc/hosts"]);
}

// The caller's directory: it removes it once the namespace (and the bind
// mounts over /etc/hosts of files in it) is gone.
const workDir = Deno.env.get("TABLESNAP_PRIVATE_NETNS_DIR");
if (!workDir) throw new Error("run by tests/aws_names_test.ts, inside unshare");
const work = { path: workDir };
await sh("ip", ["link", "set", "lo", "up"]);
await mapAwsNames(work.path, "127.0.0.1");
await using s3 = await startS3Server(PLAIN, {
  server: "moto",
  port: 443,
  tlsNames: [...LOOPBACK_NAMES, ...AWS_S3_NAMES],
});
const created = await s3.fetch(`/${DOTTED}`, { method: "PUT" });
await created.body?.cancel();
assert(created.ok, `creating ${DOTTED}: HTTP ${created.status}`);

const credentials = `${work.path}/credentials`;
await Deno.writeTextFile(
  credentials,
  "[default]\naws_access_key_id = AKIAE2EPROFILEKEY000\naws_secret_access_key = e2e-profile-secret\n",
);
await Deno.writeTextFile(`${work.path}/config`, "[default]\nregion = us-east-1\n");
// No endpoint, no keys in the environment: a profile file and the CA bundle.
const env = {
  AWS_SHARED_CREDENTIALS_FILE: credentials,
  AWS_CONFIG_FILE: `${work.path}/config`,
  AWS_CA_BUNDLE: s3.tls!.caFile,
};

for (const bucket of [PLAIN, DOTTED]) {
  await wholeRun({ ...s3, bucket }, `${work.path}/direct`, { env });
  console.log(`direct ${bucket}: ok`);
}

await mapAwsNames(work.path, "127.0.0.9");
const unreachable = await runCli(["list", "-n", "h", PLAIN, "/x"], { env });
assertEquals(unreachable.code, 1, `S3 must not be reachable directly now: ${unreachable.stderr}`);
await using proxy = startConnectProxy((host) =>
  host.endsWith(".amazonaws.com") ? { hostname: "127.0.0.1", port: 443 } : undefined
);
const proxied = { ...env, HTTPS_PROXY: `http://127.0.0.1:${proxy.port}` };
for (const bucket of [PLAIN, DOTTED]) {
  proxy.tunnels.length = 0;
  await wholeRun({ ...s3, bucket }, `${work.path}/proxy`, { env: proxied });
  const host = bucket === PLAIN
    ? `${PLAIN}.s3.us-east-1.amazonaws.com`
    : "s3.us-east-1.amazonaws.com";
  assert(proxy.tunnels.length > 0, "no tunnel through the proxy");
  assert(proxy.tunnels.every((t) => t === `${host}:443`), proxy.tunnels.join(" "));
  console.log(`proxy ${bucket}: ok (${proxy.tunnels.length} tunnels)`);
}
