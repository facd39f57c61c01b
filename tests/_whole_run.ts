/**
 * One whole life of a backup, run the way an operator would with the
 * program as shipped (the compile task's flags): the watcher backs up a
 * table (-B, one file large enough to go multipart) and uploads a new flush
 * while watching; then `list`, `slurp` (byte-for-byte), `verify --md5` and
 * `chop -d` (which must delete nothing). Used against servers that differ
 * in what they check (Ceph RGW) or in how they are reached (AWS host names,
 * a CONNECT proxy).
 */
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import {
  bucketKeys,
  headObject,
  runCli,
  type S3Server,
  spawnWatcher,
  waitFor,
} from "./_helpers.ts";

const HOST = "cass1.example.com";
const MiB = 1024 * 1024;

export interface WholeRunOptions {
  /** Arguments before BUCKET for every job (e.g. `--ca-bundle FILE`). */
  args?: string[];
  /** The program's environment (default: the server's `env`). */
  env?: Record<string, string>;
}

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Writes a file the way Cassandra does (a temp name, then a rename). */
async function flush(path: string, body: Uint8Array): Promise<void> {
  await Deno.writeFile(`${path}.tmp`, body);
  await Deno.rename(`${path}.tmp`, path);
}

export async function wholeRun(
  s3: S3Server,
  scratch: string,
  options: WholeRunOptions = {},
): Promise<void> {
  const env = options.env ?? s3.env;
  const args = ["-n", HOST, ...(options.args ?? [])];
  const data = `${scratch}/${s3.bucket}/data`;
  const table = `${data}/ks/users-1b2c`;
  await Deno.mkdir(table, { recursive: true });
  const files = new Map<string, Uint8Array>([
    ["nb-1-big-Data.db", bytes(6 * MiB + 123, 1)], // multipart at --max-upload-size 1
    ["nb-1-big-Index.db", bytes(4096, 2)],
    ["nb-1-big-Statistics.db", bytes(777, 3)],
    ["nb-1-big-TOC.txt", new TextEncoder().encode("Data.db\nIndex.db\nStatistics.db\nTOC.txt\n")],
  ]);
  for (const [name, body] of files) await Deno.writeFile(`${table}/${name}`, body);

  // The watcher: -B uploads what is there, then a flush while it watches.
  {
    await using watcher = spawnWatcher(
      [
        ...args,
        "-r",
        "-B",
        "--max-upload-size",
        "1",
        "--multipart-chunk-size",
        "5",
        s3.bucket,
        data,
      ],
      { env },
    );
    await watcher.waitUntilWatching();
    // A complete SSTable (its TOC.txt last, as Cassandra writes it), so its
    // index need not wait for components (--index-wait).
    const late: [string, Uint8Array][] = [
      ["nb-2-big-Data.db", bytes(50_000, 4)],
      ["nb-2-big-TOC.txt", new TextEncoder().encode("Data.db\nTOC.txt\n")],
    ];
    for (const [name, body] of late) {
      files.set(name, body);
      await flush(`${table}/${name}`, body);
    }
    const done = await watcher.waitForMetrics(
      "every file uploaded",
      (m) =>
        (m.get("tablesnap_uploaded_files_total") ?? 0) >= files.size &&
        m.get("tablesnap_pending_files") === 0,
      60_000,
    );
    assertEquals(done.get("tablesnap_uploaded_files_total"), files.size, done.text);
    // An index beside each Data.db; it may follow the uploads by a moment.
    const indexes = ["nb-1-big-Data.db", "nb-2-big-Data.db"].map((n) =>
      `${HOST}:${table}/${n}-listdir.json`
    );
    await waitFor("both indexes in the bucket", async () => {
      const keys = await bucketKeys(s3);
      return indexes.every((k) => keys.has(k));
    }, 60_000);
    assertEquals(await watcher.stop(), 0, watcher.stderr());
  }
  const keys = await bucketKeys(s3);
  for (const [name, body] of files) assertEquals(keys.get(`${HOST}:${table}/${name}`), body.length);
  const large = await headObject(s3, `${HOST}:${table}/nb-1-big-Data.db`);
  assert(/-2"?$/.test(large?.ETag ?? ""), `a two-part upload, ETag ${large?.ETag}`);

  const list = await runCli(["list", ...args, s3.bucket, data], { env });
  assertEquals(list.code, 0, list.stderr);
  assertStringIncludes(list.stdout, "ks/users-1b2c");

  const target = `${scratch}/${s3.bucket}/restore`;
  const slurp = await runCli(["slurp", ...args, s3.bucket, table, target], { env });
  assertEquals(slurp.code, 0, slurp.stderr);
  for (const [name, body] of files) {
    assertEquals(await Deno.readFile(`${target}/${name}`), body, `restored ${name}`);
  }

  const verify = await runCli(["verify", "--md5", ...args, s3.bucket, data], { env });
  assertEquals(verify.code, 0, `${verify.stdout}${verify.stderr}`);

  const later = new Date(Date.now() + 30 * 86_400_000).toISOString();
  const chop = await runCli(
    ["chop", "-d", "-l", "--now", later, ...args, s3.bucket, data, "1"],
    { env },
  );
  assertEquals(chop.code, 0, chop.stderr);
  assertEquals(await bucketKeys(s3), keys, "chop -d deleted something");
}
