/**
 * Step 8, a real multi-threaded S3 server: Ceph's RADOS Gateway on a
 * one-node cluster on 127.0.0.1 over HTTPS (tests/_rgw.ts, started and
 * stopped here; the Debian packages installed when missing, as .ci/run
 * does). The bulk tree backed up with `--once -B -r` and restored with
 * `slurp -r`, at the defaults, each against `aws s3 sync`, alternating; the
 * server's CPU is that of its ceph-mon, ceph-osd and radosgw processes. With
 * `--profile DIR`, one more run of each tablesnap job under `--cpu-prof`
 * says where its CPU goes (`_rgw_profile.ts`).
 */
import { DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { type RgwCluster, startRgw } from "../tests/_rgw.ts";
import type { S3Server } from "../tests/_helpers.ts";
import { bulk, type ToolRun } from "./_bulk.ts";
import type { Config } from "./_config.ts";
import { BUCKET, commandOutput, log, MB, NAME } from "./_context.ts";
import { fmt, peakRssRow } from "./_report.ts";
import {
  alternateRestores,
  awsSyncDown,
  measureSlurp,
  type RestoreRun,
  restoreTable,
  upload,
  versusAwsRows,
} from "./_restore.ts";
import { type CpuProfileSummary, profileRuns, profileTable } from "./_rgw_profile.ts";
import type { Server } from "./_servers.ts";
import { generateTree, planTree, seeded, type Tree } from "./_tree.ts";

export interface RgwResult {
  version: string;
  files: number;
  bytes: number;
  backup: ToolRun[];
  restore: RestoreRun[];
  profiles: CpuProfileSummary[];
}

/** Each tool the cluster needs, and the Debian package it comes from. */
const CEPH_TOOLS: [string, string][] = [
  ["ceph-mon", "ceph-mon"],
  ["ceph-osd", "ceph-osd"],
  ["radosgw", "radosgw"],
  ["radosgw-admin", "radosgw"],
  ["ceph", "ceph-common"],
  ["ceph-authtool", "ceph-common"],
  ["monmaptool", "ceph-base"],
  ["uuidgen", "uuid-runtime"],
];

/** Installs the Ceph packages whose tools are missing (apt-get, as .ci/run does). */
async function ensureCeph(): Promise<void> {
  const missing = new Set<string>();
  for (const [tool, pkg] of CEPH_TOOLS) {
    const found = await new Deno.Command("sh", {
      args: ["-c", 'command -v "$1"', "sh", tool],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!found.success) missing.add(pkg);
  }
  if (missing.size === 0) return;
  log(`rgw: installing ${[...missing].join(" ")}`);
  const install = await new Deno.Command("sh", {
    args: [
      "-c",
      'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"',
      "sh",
      ...missing,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!install.success) {
    const why = new TextDecoder().decode(install.stderr).trim().split("\n").at(-1);
    throw new Error(`could not install ${[...missing].join(" ")}: ${why}`);
  }
}

/** CPU seconds of the cluster's daemons (ceph-mon, ceph-osd, radosgw), from /proc. */
async function clusterCpu(dir: string): Promise<number> {
  // One shell for the whole scan: the bench reads /proc through children (see _proc.ts).
  const script = 'for p in /proc/[0-9]*; do case "$(cat "$p/comm" 2>/dev/null)" in ' +
    "ceph-mon|ceph-osd|radosgw) " +
    'tr "\\0" " " < "$p/cmdline" 2>/dev/null | grep -qF "$1/ceph.conf" && cat "$p/stat";; ' +
    "esac; done";
  const out = await new Deno.Command("sh", {
    args: ["-c", script, "sh", dir],
    stdout: "piped",
    stderr: "null",
  }).output();
  let ticks = 0;
  for (const line of new TextDecoder().decode(out.stdout).split("\n").filter(Boolean)) {
    const fields = line.slice(line.lastIndexOf(")") + 2).split(" ");
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / 100;
}

/** Every key under `prefix`, page by page. */
async function* keysUnder(client: S3Client, bucket: string, prefix: string) {
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) if (o.Key) yield o.Key;
    token = page.NextContinuationToken;
  } while (token);
}

/**
 * The bucket as the other steps see a server. Dropping a prefix deletes
 * its objects and runs RGW's garbage collection at once, so that the
 * memstore OSD gets the space back before the next run.
 */
function rgwServer(s3: S3Server): Server {
  const { client, bucket, dir } = s3;
  return {
    kind: "rgw",
    endpoint: s3.endpoint,
    bucket,
    dir,
    // The AWS CLI's default CRC trailer in an aws-chunked body gets RGW
    // 16.2's 411 MissingContentLength; tablesnap sends Content-MD5.
    env: {
      ...s3.env,
      AWS_REQUEST_CHECKSUM_CALCULATION: "when_required",
      AWS_RESPONSE_CHECKSUM_VALIDATION: "when_required",
    },
    cpu: () => clusterCpu(dir),
    objects: async (prefix) => {
      let n = 0;
      for await (const _ of keysUnder(client, bucket, prefix)) n++;
      return n;
    },
    drop: async (prefix) => {
      let batch: { Key: string }[] = [];
      const flush = async () => {
        if (batch.length === 0) return;
        await client.send(
          new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch, Quiet: true } }),
        );
        batch = [];
      };
      for await (const key of keysUnder(client, bucket, prefix)) {
        batch.push({ Key: key });
        if (batch.length === 1000) await flush();
      }
      await flush();
      await new Deno.Command("radosgw-admin", {
        args: ["-c", `${dir}/ceph.conf`, "gc", "process", "--include-all"],
        stdout: "null",
        stderr: "null",
      }).output();
    },
    stop: () => s3.stop(),
    [Symbol.asyncDispose]: async () => {},
  };
}

/** Runs the whole step; see the module comment. */
export async function rgwStep(cfg: Config, aws: string | undefined, work: string) {
  await ensureCeph();
  const tree = await generateTree(`${work}/rgw-tree`, planTree(cfg.size, seeded(1)));
  log(`rgw: tree of ${tree.files.length} files, ${fmt(tree.bytes / MB)} MB`);
  const started = performance.now();
  // Room for one copy of the tree and its indexes, and the next run's.
  const memstoreBytes = Math.max(2 ** 31, Math.ceil(2.5 * tree.bytes));
  await using cluster: RgwCluster = await startRgw({ memstoreBytes });
  const server = rgwServer(await cluster.bucket(BUCKET));
  log(`rgw: cluster up in ${fmt((performance.now() - started) / 1000)} s at ${server.endpoint}`);
  const version = await commandOutput("radosgw", ["--version"]);
  const backup = await bulk(cfg, server, tree, aws);
  const restore = await restoreRuns(cfg, server, tree, aws);
  const profiles = cfg.profile ? await profileRuns(cfg, server, tree, cfg.profile) : [];
  await Deno.remove(tree.root, { recursive: true });
  return {
    version: version.replace(/ \([0-9a-f]{40}\)/, ""),
    files: tree.files.length,
    bytes: tree.bytes,
    backup,
    restore,
    profiles,
  };
}

/** The tree uploaded once by tablesnap, restored by both tools in turn. */
async function restoreRuns(cfg: Config, server: Server, tree: Tree, aws: string | undefined) {
  const prefix = "restore/";
  await upload(cfg, server, prefix, tree.root);
  const data = `${tree.root}/data`;
  const runs = await alternateRestores(
    cfg,
    server,
    aws,
    "rgw restore",
    tree.bytes,
    data,
    (tool, target) =>
      tool === "aws"
        ? awsSyncDown(cfg, server, aws!, `${prefix}${NAME}:${data}/`, target)
        : measureSlurp(cfg, server, prefix, ["-r", server.bucket, data, target]),
  );
  await server.drop(prefix);
  return runs;
}

/** The summary rows of step 8: issue #21's targets on RGW. */
export function rgwSummaryRows(x: RgwResult): string[][] {
  const rss = Math.max(
    ...[...x.backup, ...x.restore].filter((run) => run.tool === "tablesnap").map((run) =>
      run.stats.peakRssMB
    ),
  );
  return [
    ...versusAwsRows("8. RGW backup `--once -B -r`", x.backup, x.bytes, 1.2),
    ...versusAwsRows("8. RGW restore `slurp -r`", x.restore, x.bytes, 1.25),
    peakRssRow("8. RGW: peak RSS of tablesnap (backup, restore)", rss),
  ];
}

/** The detail of step 8. */
export function rgwReport(x: RgwResult, cfg: Config): string[] {
  return [
    `**8. Ceph RGW** (${x.version || "radosgw"}, one node: one monitor, one memstore OSD, ` +
    `radosgw's beast frontend over HTTPS, on 127.0.0.1, sharing the cores with the clients): ` +
    `the ${x.files}-file, ${fmt(x.bytes / MB, 0)} MB bulk tree, ${cfg.runs} alternating run(s) ` +
    "of each tool, defaults (tablesnap `--once -B -r`, `slurp -r`; `aws s3 sync " +
    "--only-show-errors`); every restore compared byte for byte. Server CPU: its ceph-mon, " +
    "ceph-osd and radosgw processes. Medians:",
    "",
    "Backup:",
    "",
    restoreTable(x.backup, x.bytes, {
      tablesnap: "tablesnap `--once -B -r`",
      aws: "aws s3 sync",
      encrypted: "tablesnap, encrypted",
    }),
    "",
    "Restore:",
    "",
    restoreTable(x.restore, x.bytes, {
      tablesnap: "tablesnap `slurp -r`",
      aws: "aws s3 sync",
      encrypted: "tablesnap `slurp -r`, encrypted",
    }),
    "",
    ...(x.profiles.length > 0 ? profileTable(x.profiles, x.bytes) : []),
  ];
}
