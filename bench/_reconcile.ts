/**
 * Step 4, startup reconciliation: with many files already in the bucket and
 * a few new ones, the requests a `--once -B -r` start makes besides its
 * uploads, counted by a proxy.
 */
import type { Config } from "./_config.ts";
import {
  BUCKET,
  childEnv,
  commandOutput,
  failIfBad,
  log,
  program,
  tablesnapArgs,
} from "./_context.ts";
import { measure, type RunStats } from "./_proc.ts";
import { fmt, markdownTable, verdictAtMost } from "./_report.ts";
import { startCountingProxy, startServer } from "./_servers.ts";
import { makeTables, seeded, sstableFiles, writeRandomFile } from "./_tree.ts";

export interface ReconcileResult {
  server: string;
  localFiles: number;
  objectsPresent: number;
  newFiles: number;
  populate: RunStats;
  run: RunStats;
  counts: Record<string, number>;
  uploads: number;
  other: number;
  allowed: number;
}

const UPLOAD_OPS = [
  "PutObject",
  "UploadPart",
  "CreateMultipartUpload",
  "CompleteMultipartUpload",
];

export async function reconcile(cfg: Config, work: string): Promise<ReconcileResult> {
  const hasMoto = (await commandOutput("sh", ["-c", "command -v moto_server"])) !== "";
  if (!hasMoto && cfg.filesAtStart > 800) {
    throw new Error("moto_server is needed for more than 800 objects (s3rver cannot list >1,000)");
  }
  await using server = await startServer(hasMoto ? "moto" : "s3rver", BUCKET);
  const rand = seeded(9);
  const root = `${work}/reconcile`;
  const tables = await makeTables(root, Math.max(1, Math.ceil(cfg.filesAtStart / 200)), rand);
  const files = sstableFiles(tables, cfg.filesAtStart, () => 256, rand, 1);
  for (const f of files) await writeRandomFile(f.path, f.size, rand);
  const prefix = "rec/";
  const args = (extra: string[]) =>
    tablesnapArgs(server, prefix, ["--once", "-B", "-r", ...extra, server.bucket, root]);
  log(`reconcile: uploading ${files.length} files to ${server.kind}`);
  const populate = await measure(Deno.execPath(), args(["-t", "32"]), {
    env: childEnv(),
    cwd: program().repo,
    forceProc: cfg.forceProc,
  });
  failIfBad("reconcile populate", populate);
  let objectsPresent = 0;
  for (let token = "";;) {
    const res = await fetch(
      `${server.endpoint}/${server.bucket}?list-type=2&prefix=${prefix}${
        token ? `&continuation-token=${encodeURIComponent(token)}` : ""
      }`,
    );
    const xml = await res.text();
    objectsPresent += [...xml.matchAll(/<Key>/g)].length;
    token = /<NextContinuationToken>([^<]*)</.exec(xml)?.[1] ?? "";
    if (!token) break;
  }
  // One new SSTable generation: 8 uploads and its index.
  const fresh = sstableFiles([tables[0]!], 8, () => 256, rand, 1_000_000);
  for (const f of fresh) await writeRandomFile(f.path, f.size, rand);
  await using proxy = startCountingProxy(server.endpoint);
  const run = await measure(
    Deno.execPath(),
    tablesnapArgs(proxy, prefix, ["--once", "-B", "-r", server.bucket, root]),
    { env: childEnv(), cwd: program().repo, forceProc: cfg.forceProc },
  );
  failIfBad("reconcile run", run);
  const counts = { ...proxy.counts };
  const uploads = UPLOAD_OPS.reduce((a, op) => a + (counts[op] ?? 0), 0);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const result: ReconcileResult = {
    server: server.kind,
    localFiles: files.length,
    objectsPresent,
    newFiles: fresh.length,
    populate,
    run,
    counts,
    uploads,
    other: total - uploads,
    allowed: Math.ceil(objectsPresent / 1000),
  };
  log(`reconcile: ${JSON.stringify(counts)} in ${fmt(run.wallS)} s`);
  return result;
}

/** The summary row of step 4. */
export function reconcileSummaryRows(c: ReconcileResult): string[][] {
  return [[
    `4. Startup requests besides uploads, ${
      c.objectsPresent.toLocaleString("en-US")
    } objects present`,
    `${c.other} (+ ${c.uploads} uploads)`,
    `≤ ${c.allowed} (1 per 1,000)`,
    verdictAtMost(c.other, c.allowed),
  ]];
}

/** The detail of step 4. */
export function reconcileReport(c: ReconcileResult): string[] {
  return [
    `**4. Startup reconciliation** (${c.server}, requests counted by a proxy): ` +
    `${c.localFiles.toLocaleString("en-US")} local files already uploaded ` +
    `(${c.objectsPresent.toLocaleString("en-US")} objects with indexes; first upload took ` +
    `${fmt(c.populate.wallS, 1)} s at \`-t 32\`), plus ${c.newFiles} new files; ` +
    `\`--once -B -r\` until idle:`,
    "",
    markdownTable(
      ["wall s", "CPU s", "peak RSS MB", "requests by operation", "uploads", "others", "allowed"],
      [[
        fmt(c.run.wallS, 2),
        fmt(c.run.cpuS, 2),
        fmt(c.run.peakRssMB),
        Object.entries(c.counts).sort().map(([op, n]) => `${op} ${n}`).join(", "),
        String(c.uploads),
        String(c.other),
        String(c.allowed),
      ]],
    ),
    "",
  ];
}
