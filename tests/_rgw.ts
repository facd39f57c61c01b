/**
 * A real S3 implementation for the tests: Ceph's RADOS Gateway on a
 * one-node cluster (one monitor, one OSD on memstore, no manager) on
 * 127.0.0.1, in a temp directory, on free ports, beast serving HTTPS with a
 * CA made for it, and one S3 user. Modelled on Ceph's src/vstart.sh. It
 * starts in about 5-10 s; `stop()` (or `await using`) kills every daemon and
 * removes the directory, also when the start fails half way.
 *
 * Needs the Debian packages ceph-mon ceph-osd radosgw ceph-common ceph-base
 * uuid-runtime (.ci/run installs them when missing).
 */
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { delay, freePort, type S3Server } from "./_helpers.ts";
import { caAgent, caFetchClient, makeTestTls, type TestTls } from "./_tls.ts";

export const RGW_ACCESS_KEY = "TABLESNAPRGWTESTKEY0";
export const RGW_SECRET_KEY = "tablesnap-rgw-test-secret-key-0000000000";

export interface RgwCluster extends AsyncDisposable {
  /** `https://127.0.0.1:PORT`. */
  endpoint: string;
  port: number;
  tls: TestTls;
  /** Creates a bucket and returns it in the shape of the other test servers. */
  bucket(name: string): Promise<S3Server>;
  stop(): Promise<void>;
}

/** Additions to the default cluster; store_contract_test uses none. */
export interface RgwOptions {
  /** Lines appended to radosgw's `[client.rgw]` section (e.g. `rgw crypt ...` settings). */
  rgwConf?: string[];
  /**
   * Storage classes added to the default placement (zonegroup and zone)
   * before radosgw starts; RGW refuses any other than STANDARD otherwise.
   */
  storageClasses?: string[];
  /** The memstore OSD's capacity (default 2 GiB; the bench's trees need more). */
  memstoreBytes?: number;
}

const PACKAGES = "ceph-mon ceph-osd radosgw ceph-common ceph-base uuid-runtime";

async function run(program: string, args: string[], dir: string): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(program, {
      args,
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(`${program} not found: install it with 'apt-get install -y ${PACKAGES}'`);
    }
    throw err;
  }
  const d = new TextDecoder();
  if (!out.success) {
    throw new Error(`${program} ${args.join(" ")} failed: ${d.decode(out.stderr).slice(-2000)}`);
  }
  return d.decode(out.stdout).trim();
}

function cephConf(
  dir: string,
  fsid: string,
  monPort: number,
  rgwPort: number,
  tls: TestTls,
  rgwConf: string[],
  memstoreBytes: number,
) {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
public addr = 127.0.0.1
ms bind msgr1 = false
keyring = ${dir}/keyring
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
pid file = ${dir}/run/$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
; a monitor commit every 0.1 s instead of 1 s: most of the start-up time
paxos propose interval = 0.1
[mon.a]
mon data = ${dir}/mon.a
[osd.0]
osd data = ${dir}/osd.0
osd objectstore = memstore
memstore device bytes = ${memstoreBytes}
; tablesnap keys are long (host:/var/lib/cassandra/data/...)
osd max object name len = 460
osd max object namespace len = 64
[client.rgw]
rgw frontends = beast ssl_endpoint=127.0.0.1:${rgwPort} ssl_certificate=${tls.certFile} ssl_private_key=${tls.keyFile}
rgw data = ${dir}/rgw
${rgwConf.join("\n")}
`;
}

/** Starts the cluster; resolves once RGW answers S3 requests as the test user. */
export async function startRgw(options: RgwOptions = {}): Promise<RgwCluster> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "tablesnap-rgw-" }));
  const daemons: Deno.ChildProcess[] = [];
  const clients: { close(): void }[] = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const c of clients) c.close();
    // A throw-away cluster: nothing to flush, so no orderly shutdown.
    for (const d of daemons) {
      try {
        d.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
    await Promise.all(daemons.map((d) => d.status));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const daemon = (program: string, args: string[]) => {
    daemons.push(
      new Deno.Command(program, {
        args: [...args, "-f", "-c", `${dir}/ceph.conf`],
        cwd: dir,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn(),
    );
  };
  try {
    for (const sub of ["mon.a", "osd.0", "run", "log", "rgw", "tls"]) {
      await Deno.mkdir(`${dir}/${sub}`);
    }
    const [fsid, osdUuid] = [crypto.randomUUID(), crypto.randomUUID()];
    const [monPort, rgwPort] = [freePort(), freePort()];
    const tls = await makeTestTls(`${dir}/tls`);
    await Deno.writeTextFile(
      `${dir}/ceph.conf`,
      cephConf(
        dir,
        fsid,
        monPort,
        rgwPort,
        tls,
        options.rgwConf ?? [],
        options.memstoreBytes ?? 2 ** 31,
      ),
    );
    const conf = ["-c", `${dir}/ceph.conf`];
    // Every key in one keyring, imported by the monitor at mkfs.
    const keys: [string, string[]][] = [
      ["mon.", ["mon", "allow *"]],
      ["client.admin", ["mon", "allow *", "osd", "allow *", "mgr", "allow *"]],
      ["osd.0", ["mon", "allow profile osd", "osd", "allow *", "mgr", "allow profile osd"]],
      ["client.rgw", ["mon", "allow rw", "osd", "allow rwx", "mgr", "allow rw"]],
    ];
    for (const [i, [name, caps]] of keys.entries()) {
      const capArgs = caps.flatMap((c, j) => j % 2 === 0 ? ["--cap", c] : [c]);
      await run("ceph-authtool", [
        ...(i === 0 ? ["--create-keyring"] : []),
        "--gen-key",
        "-n",
        name,
        ...capArgs,
        `${dir}/keyring`,
      ], dir);
    }
    await run("monmaptool", [
      "--create",
      "--clobber",
      "--fsid",
      fsid,
      "--addv",
      "a",
      `[v2:127.0.0.1:${monPort}]`,
      `${dir}/monmap`,
    ], dir);
    await run("ceph-mon", [
      "--mkfs",
      "-i",
      "a",
      ...conf,
      "--monmap",
      `${dir}/monmap`,
      "--keyring",
      `${dir}/keyring`,
    ], dir);
    daemon("ceph-mon", ["-i", "a"]);
    const id = await run("ceph", [...conf, "osd", "new", osdUuid, "0"], dir);
    if (id !== "0") throw new Error(`ceph osd new gave id '${id}'`);
    await run("ceph-osd", ["-i", "0", ...conf, "--mkfs", "--osd-uuid", osdUuid], dir);
    daemon("ceph-osd", ["-i", "0"]);
    daemon("radosgw", ["-n", "client.rgw"]);
    await run("radosgw-admin", [
      ...conf,
      "user",
      "create",
      "--uid",
      "tablesnap",
      "--display-name",
      "tablesnap tests",
      "--access-key",
      RGW_ACCESS_KEY,
      "--secret",
      RGW_SECRET_KEY,
    ], dir);
    const endpoint = `https://127.0.0.1:${rgwPort}`;
    const httpClient = caFetchClient(tls.caPem);
    clients.push(httpClient);
    await waitForRgw(endpoint, httpClient, daemons);
    if (options.storageClasses?.length) {
      // radosgw made the default zonegroup and zone at its first start; it
      // reads their placement only when it starts. SIGTERM, not SIGKILL: a
      // killed radosgw leaves its watches on the control objects, and the
      // next one's cache notifications (CreateBucket's) wait 30 s for them.
      await addStorageClasses(options.storageClasses, conf, dir);
      const first = daemons.pop()!;
      first.kill("SIGTERM");
      await first.status;
      daemon("radosgw", ["-n", "client.rgw"]);
      await waitForRgw(endpoint, httpClient, daemons);
    }
    const bucket = async (name: string): Promise<S3Server> => {
      const client = new S3Client({
        region: "us-east-1",
        endpoint,
        forcePathStyle: true,
        credentials: { accessKeyId: RGW_ACCESS_KEY, secretAccessKey: RGW_SECRET_KEY },
        requestChecksumCalculation: "WHEN_REQUIRED",
        responseChecksumValidation: "WHEN_REQUIRED",
        requestHandler: { httpsAgent: caAgent(tls.caPem) },
      });
      clients.push({ close: () => client.destroy() });
      await client.send(new CreateBucketCommand({ Bucket: name }));
      return {
        endpoint,
        port: rgwPort,
        dir,
        bucket: name,
        tls,
        client,
        fetch: (path, init = {}) => fetch(`${endpoint}${path}`, { ...init, client: httpClient }),
        env: {
          AWS_ACCESS_KEY_ID: RGW_ACCESS_KEY,
          AWS_SECRET_ACCESS_KEY: RGW_SECRET_KEY,
          AWS_ENDPOINT_URL_S3: endpoint,
          AWS_REGION: "us-east-1",
          AWS_CA_BUNDLE: tls.caFile,
        },
        stop, // the cluster's: one bucket's owner does not stop it
        [Symbol.asyncDispose]: async () => {},
      };
    };
    return { endpoint, port: rgwPort, tls, bucket, stop, [Symbol.asyncDispose]: stop };
  } catch (err) {
    const logs = await logTails(dir);
    await stop();
    throw new Error(`Ceph RGW did not start: ${(err as Error).message}\n${logs}`);
  }
}

/**
 * Adds the storage classes to the default placement of the default
 * zonegroup and zone (no realm: no period to commit), the data in the
 * STANDARD class's pool.
 */
async function addStorageClasses(storageClasses: string[], conf: string[], dir: string) {
  const admin = (...args: string[]) => run("radosgw-admin", [...conf, ...args], dir);
  const [zonegroup, zone] = [["--rgw-zonegroup", "default"], ["--rgw-zone", "default"]];
  for (const storageClass of storageClasses) {
    const placement = ["--placement-id", "default-placement", "--storage-class", storageClass];
    await admin("zonegroup", "placement", "add", ...zonegroup, ...placement);
    await admin(
      "zone",
      "placement",
      "add",
      ...zone,
      ...placement,
      "--data-pool",
      "default.rgw.buckets.data",
    );
  }
}

/** Polls until RGW answers (an anonymous ListBuckets); at most 60 s. */
async function waitForRgw(
  endpoint: string,
  client: Deno.HttpClient,
  daemons: Deno.ChildProcess[],
): Promise<void> {
  const exited: number[] = [];
  daemons.forEach((d, i) => d.status.then(() => exited.push(i)));
  const deadline = Date.now() + 60_000;
  let last = "no answer";
  for (;;) {
    if (exited.length) throw new Error(`a daemon exited (#${exited.join(", #")})`);
    try {
      const res = await fetch(`${endpoint}/`, { client });
      await res.body?.cancel();
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`RGW did not answer within 60 s (last: ${last})`);
    await delay(100);
  }
}

async function logTails(dir: string): Promise<string> {
  const parts: string[] = [];
  try {
    for await (const e of Deno.readDir(`${dir}/log`)) {
      const text = await Deno.readTextFile(`${dir}/log/${e.name}`).catch(() => "");
      parts.push(`--- ${e.name}\n${text.split("\n").slice(-15).join("\n")}`);
    }
  } catch {
    // no logs yet
  }
  return parts.join("\n");
}
