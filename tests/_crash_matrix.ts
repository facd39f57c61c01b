/**
 * The SIGKILL matrix: a workload written into a watched tree (SSTable
 * generations written in place and renamed in from `-tmp` names, a few
 * multipart Data.db files, Statistics.db rewritten through `.tmp`) while a
 * watcher with `--state-dir` is killed with SIGKILL at seeded random points
 * and restarted without -B each time. At the end every file must be in the
 * bucket with its bytes and metadata exact, and no incomplete multipart
 * upload may remain. Against moto (it lists multipart uploads), through a
 * counting proxy, so the bytes sent can be set against the bytes written.
 *
 * Used by tests/crash_matrix_test.ts (a few points) and by
 * `deno task bench --only crash` (twenty).
 */
import { GetObjectCommand, ListMultipartUploadsCommand } from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { startCountingProxy } from "./_counting_proxy.ts";
import {
  delay,
  headObject,
  type S3Server,
  spawnWatcher,
  startS3Server,
  tempDir,
  waitFor,
} from "./_helpers.ts";

export interface CrashMatrixOptions {
  seed: number;
  kills: number;
  /** Multipart Data.db files in the workload (each 11-16 MiB, 5 MiB parts). */
  bigFiles: number;
  /** Workload steps in all (SSTable generations and Statistics.db rewrites, besides the big files). */
  steps: number;
  /** A watcher is killed this long after its start (uniform, ms). */
  killAfterMs?: [number, number];
  /** `--max-bandwidth` of the killed watchers, so that kills land mid-upload. */
  maxBandwidth?: string;
  /** Run every watcher with `--pin` (pins under `<root>/.tablesnap-pins`). */
  pin?: boolean;
  log?: (line: string) => void;
  /** Log every watcher's stderr too. */
  verbose?: boolean;
}

export interface CrashMatrixFigures {
  seed: number;
  kills: number;
  /** Files in the tree at the end, and their bytes. */
  files: number;
  fileBytes: number;
  /** Bytes of every version ever written (Statistics.db rewrites included). */
  writtenBytes: number;
  /** Request body bytes the watchers sent for files (indexes apart). */
  sentFileBytes: number;
  sentIndexBytes: number;
  /** Multipart uploads completed after resuming one a kill interrupted (from the watchers' logs). */
  resumed: number;
  /** Uploads the starts aborted as stale (created too shortly before a kill to be journaled). */
  staleAborted: number;
  /** Incomplete multipart uploads left under the host's prefix once idle. */
  incompleteUploads: number;
  /** Pins left under `<root>/.tablesnap-pins` once idle (`pin` only). */
  pinsLeft: number;
  /** Everything in the bucket as on disk (bytes, `md5sum`, `stat`, `mtime`). */
  mismatches: string[];
  seconds: number;
}

const HOST = "crashhost";
const MiB = 1024 * 1024;

/** mulberry32: small, seedable, good enough to pick kill points. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bytesOf(size: number, rand: () => number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = Math.floor(rand() * 2 ** 32) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1664525 + 1013904223) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

type Step = () => Promise<number>;

/** The workload as steps, each returning the bytes it wrote. */
function workload(root: string, o: CrashMatrixOptions, rand: () => number): Step[] {
  const modern = `${root}/ks/t1-5a1c`; // nb-N-big-*, written in place
  const legacy = `${root}/ks/t2-7b3d`; // ks-t2-ka-N-*, renamed in from ks-t2-tmp-ka-N-*
  const statistics: string[] = [];
  let generation = 0;
  const components = ["Data.db", "Index.db", "Filter.db", "Summary.db", "Statistics.db"];

  const inPlace = (dataBytes: number): Step => async () => {
    const n = ++generation;
    await Deno.mkdir(modern, { recursive: true });
    let written = 0;
    for (const c of components) {
      const size = c === "Data.db" ? dataBytes : 200 + Math.floor(rand() * 4000);
      await Deno.writeFile(`${modern}/nb-${n}-big-${c}`, bytesOf(size, rand));
      written += size;
    }
    const toc = new TextEncoder().encode(components.join("\n") + "\nTOC.txt\n");
    await Deno.writeFile(`${modern}/nb-${n}-big-TOC.txt`, toc);
    statistics.push(`${modern}/nb-${n}-big-Statistics.db`);
    return written + toc.length;
  };
  const renamedIn = (): Step => async () => {
    const n = ++generation;
    await Deno.mkdir(legacy, { recursive: true });
    let written = 0;
    for (const c of components) {
      const size = c === "Data.db"
        ? 1000 + Math.floor(rand() * 300_000)
        : 100 + Math.floor(rand() * 2000);
      const tmp = `${legacy}/ks-t2-tmp-ka-${n}-${c}`;
      await Deno.writeFile(tmp, bytesOf(size, rand));
      await Deno.rename(tmp, `${legacy}/ks-t2-ka-${n}-${c}`);
      written += size;
    }
    statistics.push(`${legacy}/ks-t2-ka-${n}-Statistics.db`);
    return written;
  };
  const rewriteStatistics = (): Step => async () => {
    const path = statistics[Math.floor(rand() * statistics.length)];
    if (!path) return 0;
    // Often the same size, as after a repair: only the content differs.
    const size = rand() < 0.5 ? (await Deno.lstat(path)).size : 200 + Math.floor(rand() * 4000);
    await Deno.writeFile(`${path}.tmp`, bytesOf(size, rand));
    await Deno.rename(`${path}.tmp`, path);
    return size;
  };

  const steps: Step[] = [];
  for (let i = 0; i < o.steps; i++) {
    const r = rand();
    steps.push(
      r < 0.45
        ? inPlace(500 + Math.floor(rand() * 200_000))
        : r < 0.75
        ? renamedIn()
        : rewriteStatistics(),
    );
  }
  // The big files at random places, but not last: they should meet a kill.
  for (let i = 0; i < o.bigFiles; i++) {
    const at = Math.floor(rand() * Math.max(1, steps.length - 1));
    steps.splice(at, 0, inPlace(11 * MiB + Math.floor(rand() * 5 * MiB)));
  }
  return steps;
}

async function md5OfFile(path: string): Promise<string> {
  return createHash("md5").update(await Deno.readFile(path)).digest("hex");
}

/** Every regular file under `dir`, but those the watcher skips by default. */
async function treeFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    // Pins are links to the tree's own files, not files of their own.
    if (entry.isDirectory && entry.name === ".tablesnap-pins") continue;
    if (entry.isDirectory) out.push(...await treeFiles(path));
    else if (entry.isFile && !path.includes("-tmp") && !entry.name.endsWith(".tmp")) out.push(path);
  }
  return out;
}

async function pinsLeft(pinDir: string): Promise<number> {
  let count = 0;
  const walk = async (dir: string) => {
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (entry.isDirectory) await walk(`${dir}/${entry.name}`);
        else count++;
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  };
  await walk(pinDir);
  return count;
}

async function incompleteUploads(s3: S3Server, prefix: string): Promise<number> {
  const out = await s3.client.send(
    new ListMultipartUploadsCommand({ Bucket: s3.bucket, Prefix: prefix }),
  );
  return out.Uploads?.length ?? 0;
}

/** Runs the matrix; throws only when something could not run, never for a wrong result. */
export async function runCrashMatrix(o: CrashMatrixOptions): Promise<CrashMatrixFigures> {
  const started = performance.now();
  const log = o.log ?? (() => {});
  const rand = random(o.seed);
  const [killMin, killMax] = o.killAfterMs ?? [300, 2500];
  await using s3 = await startS3Server("crash-bucket", { server: "moto", tls: false });
  const indexRequest = /^PUT \S*-listdir\.json/;
  await using proxy = startCountingProxy(s3.port, { classify: [indexRequest] });
  await using dir = await tempDir("tablesnap-crash-");
  const root = `${dir.path}/data`;
  await Deno.mkdir(root, { recursive: true });
  const env = { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint };
  const args = (...extra: string[]) => [
    "-r",
    "-a",
    "-n",
    HOST,
    "--state-dir",
    `${dir.path}/state`,
    "--max-upload-size",
    "5",
    "--multipart-chunk-size",
    "5",
    "--settle-seconds",
    "1",
    "--sweep-interval",
    "2",
    "--index-wait",
    "2",
    ...(o.pin ? ["--pin"] : []),
    ...extra,
    s3.bucket,
    root,
  ];
  const steps = workload(root, o, rand);
  let writtenBytes = 0;
  let resumed = 0;
  let staleAborted = 0;
  const countResumes = (stderr: string) => {
    for (const line of stderr.split("\n")) {
      if (line.includes("resumed a multipart upload")) resumed++;
      const stale = /aborted unfinished multipart uploads .* uploads=(\d+)/.exec(line);
      if (stale) staleAborted += Number(stale[1]);
    }
  };

  let next = 0;
  const perCycle = steps.length / (o.kills + 1);
  for (let kill = 0; kill < o.kills; kill++) {
    const watcher = spawnWatcher(args("--max-bandwidth", o.maxBandwidth ?? "8M"), { env });
    const killAt = performance.now() + killMin + rand() * (killMax - killMin);
    // Steps while it runs, spread until the kill.
    const upSteps = Math.round(perCycle * (0.5 + rand()));
    for (let i = 0; i < upSteps && next < steps.length && performance.now() < killAt; i++) {
      writtenBytes += await steps[next++]!();
      await delay(Math.min(Math.max(0, killAt - performance.now()), rand() * 300));
    }
    await delay(Math.max(0, killAt - performance.now()));
    await watcher.stop("SIGKILL");
    countResumes(watcher.stderr());
    if (o.verbose) log(watcher.stderr());
    // Sometimes a file is written while it is down.
    if (rand() < 0.4 && next < steps.length) writtenBytes += await steps[next++]!();
    log(
      `kill ${kill + 1}/${o.kills} at ${
        Math.round(killAt - started)
      } ms: ${next}/${steps.length} steps`,
    );
  }
  while (next < steps.length) writtenBytes += await steps[next++]!();

  // The last start, unthrottled: everything must land.
  const files = await treeFiles(root);
  const want = new Map<string, string>();
  let fileBytes = 0;
  for (const path of files) {
    want.set(path, await md5OfFile(path));
    fileBytes += (await Deno.lstat(path)).size;
  }
  const prefix = `${HOST}:`;
  await using last = spawnWatcher(args(), { env });
  try {
    await waitFor("every file in the bucket", async () => {
      for (const [path, md5] of want) {
        if ((await headObject(s3, prefix + path))?.Metadata?.md5sum !== md5) return false;
      }
      return true;
    }, 120_000);
    await waitFor(
      "no incomplete upload",
      async () => await incompleteUploads(s3, prefix) === 0,
      30_000,
    );
    // A Data.db's pin goes once its index is written too (an --index-wait later).
    if (o.pin) {
      await waitFor(
        "no pin left",
        async () => await pinsLeft(`${root}/.tablesnap-pins`) === 0,
        30_000,
      );
    }
  } catch (err) {
    log(`${(err as Error).message}\n--- last watcher ---\n${last.stderr()}`);
  }
  await last.stop("SIGTERM");
  countResumes(last.stderr());
  if (o.verbose) log(last.stderr());

  const mismatches: string[] = [];
  for (const [path, md5] of want) {
    const key = prefix + path;
    const info = await Deno.lstat(path);
    const head = await headObject(s3, key);
    if (!head) {
      mismatches.push(`${path}: not in the bucket`);
      continue;
    }
    const got = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    const bytes = await got.Body!.transformToByteArray();
    const stat = JSON.parse(head.Metadata?.stat ?? "{}");
    const problems = [
      createHash("md5").update(bytes).digest("hex") !== md5 ? "bytes" : "",
      head.Metadata?.md5sum !== md5 ? "md5sum" : "",
      stat.mode !== info.mode || stat.uid !== info.uid || stat.gid !== info.gid ? "stat" : "",
      head.Metadata?.mtime !== info.mtime?.toISOString() ? "mtime" : "",
    ].filter((p) => p !== "");
    if (problems.length > 0) mismatches.push(`${path}: ${problems.join(", ")} differ`);
  }
  const figures: CrashMatrixFigures = {
    seed: o.seed,
    kills: o.kills,
    files: want.size,
    fileBytes,
    writtenBytes,
    sentFileBytes: proxy.bodyBytes() - proxy.bodyBytes(indexRequest),
    sentIndexBytes: proxy.bodyBytes(indexRequest),
    resumed,
    staleAborted,
    incompleteUploads: await incompleteUploads(s3, prefix),
    pinsLeft: await pinsLeft(`${root}/.tablesnap-pins`),
    mismatches,
    seconds: (performance.now() - started) / 1000,
  };
  return figures;
}

/** The figures in one line, for logs and docs. */
export function describeFigures(f: CrashMatrixFigures): string {
  const mb = (n: number) => (n / MiB).toFixed(1);
  return `seed ${f.seed}: ${f.kills} kills, ${f.files} files (${mb(f.fileBytes)} MiB; ` +
    `${mb(f.writtenBytes)} MiB written with rewrites), ${mb(f.sentFileBytes)} MiB of file bodies ` +
    `sent (${mb(f.sentFileBytes - f.fileBytes)} MiB more than the files), ` +
    `${f.resumed} multipart uploads resumed, ${f.staleAborted} aborted as stale, ` +
    `${f.incompleteUploads} incomplete uploads left, ${f.pinsLeft} pins left, ` +
    `${f.mismatches.length} mismatches, ${f.seconds.toFixed(0)} s`;
}
