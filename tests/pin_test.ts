/**
 * `--pin`: compaction deleting SSTables whose uploads are throttled loses
 * nothing with pins (the index cut before the compaction restores them) and
 * does lose files without; pins of a killed run are uploaded at start; the
 * bound; a pin directory on another file system. Real watcher, real files
 * and inotify, s3rver.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import {
  bucketKeys,
  runCli,
  type S3Server,
  spawnWatcher,
  startS3Server,
  tempDir,
  waitFor,
} from "./_helpers.ts";
import { GetObjectCommand } from "@aws-sdk/client-s3";

const PINS = ".tablesnap-pins";
const COMPONENTS = ["Data.db", "Index.db", "Filter.db", "Statistics.db", "Summary.db", "TOC.txt"];

/** Bytes of a component: distinct per name, `size` long. */
function bytesOf(name: string, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = 11;
  for (const c of name) x = (x * 31 + c.charCodeAt(0)) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/**
 * Writes one SSTable generation as Cassandra does (components, then the
 * TOC listing them); returns each file's name and bytes. Components other
 * than the Data.db and the TOC are `otherBytes` long.
 */
async function flush(
  dir: string,
  gen: number,
  dataBytes: number,
  otherBytes = 300,
): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const component of COMPONENTS) {
    const name = `nb-${gen}-big-${component}`;
    const bytes = component === "TOC.txt"
      ? new TextEncoder().encode(COMPONENTS.join("\n") + "\n")
      : bytesOf(name, component === "Data.db" ? dataBytes : otherBytes);
    await Deno.writeFile(`${dir}/${name}`, bytes);
    files.set(name, bytes);
  }
  return files;
}

async function objectBytes(s3: S3Server, key: string): Promise<Uint8Array | null> {
  try {
    const out = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    return await out.Body!.transformToByteArray();
  } catch {
    return null;
  }
}

/** Regular files under `dir`, relative to it (none when it is gone). */
async function filesUnder(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir + rel)) {
      const path = `${rel}/${entry.name}`;
      if (entry.isDirectory) out.push(...await filesUnder(dir, path));
      else out.push(path);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out.sort();
}

/**
 * Generations 1..4 are flushed while uploads crawl, one at a time, at 32 KiB/s; once the
 * watcher has seen them all, a "compaction" writes generation 5 and deletes
 * 1..4, long before their uploads could have finished. Returns what the
 * bucket got, and when the compaction happened.
 */
async function compactWhileThrottled(s3: S3Server, host: string, pin: boolean) {
  await using work = await tempDir();
  const data = `${work.path}/data`;
  const table = `${data}/ks/t-aa`;
  await Deno.mkdir(table, { recursive: true });
  await using watcher = spawnWatcher(
    [
      "-n",
      host,
      "-r",
      "-t",
      "1",
      "--max-bandwidth",
      "32K",
      ...(pin ? ["--pin"] : []),
      s3.bucket,
      data,
    ],
    { env: s3.env },
  );
  await watcher.waitUntilWatching();
  const inputs = new Map<string, Uint8Array>();
  for (let gen = 1; gen <= 4; gen++) {
    for (const [name, bytes] of await flush(table, gen, 24 * 1024)) inputs.set(name, bytes);
  }
  // Every input complete and queued (or uploaded): with --pin, pinned when
  // queued, and each generation's index cut at its TOC's pin. (Not "pinned
  // == 24": the rate limiter's first second of tokens may upload generation 1
  // and release its pins at once.)
  const seen = await watcher.waitForMetrics(
    "every input seen",
    (m) =>
      m.get("tablesnap_pending_files")! + m.get("tablesnap_uploaded_files_total")! >=
        inputs.size,
  );
  if (pin) assert(seen.get("tablesnap_pinned_files")! >= COMPONENTS.length, seen.text);
  const uploadedBefore = seen.get("tablesnap_uploaded_files_total")!;
  // At least a generation's worth still to upload (-t 1: one file in flight).
  assert(uploadedBefore <= inputs.size - COMPONENTS.length, `already uploaded ${uploadedBefore}`);
  const compactedAt = new Date();
  const output = await flush(table, 5, 1024);
  for (const name of inputs.keys()) await Deno.remove(`${table}/${name}`);
  const prefix = `${host}:${table}/`;
  // The compaction's output and its index come last (uploads are in order).
  await waitFor("the output's index", async () => {
    const keys = await bucketKeys(s3, prefix);
    return keys.has(`${prefix}nb-5-big-Data.db-listdir.json`);
  }, 30_000);
  await watcher.waitForMetrics("nothing pending", (m) => m.get("tablesnap_pending_files") === 0);
  const end = await watcher.scrape();
  assertEquals(await watcher.stop(), 0, watcher.stderr());
  return {
    data,
    table,
    inputs,
    output,
    compactedAt,
    prefix,
    keys: await bucketKeys(s3, `${host}:`),
    pinned: end.get("tablesnap_pinned_files"),
    pinFiles: await filesUnder(`${data}/${PINS}`),
  };
}

Deno.test("--pin: compaction deleting throttled uploads loses nothing; the cut before it restores them", async () => {
  await using s3 = await startS3Server();
  const run = await compactWhileThrottled(s3, "pinned", true);
  const { prefix, table } = run;

  // Every input's object, with exact bytes, under the original's key.
  for (const [name, bytes] of run.inputs) {
    assertEquals(await objectBytes(s3, prefix + name), bytes, name);
  }
  for (const name of run.output.keys()) assert(run.keys.has(prefix + name), name);
  // Nothing of the staging directory reached the bucket, and the pins are gone.
  assertEquals([...run.keys.keys()].filter((k) => k.includes(PINS)), []);
  assertEquals(run.pinned, 0);
  assertEquals(run.pinFiles, []);

  // Each input generation's index was cut before the compaction and names
  // every input flushed by then.
  const list = await runCli(["list", "-n", "pinned", "--json", s3.bucket, table], {
    env: s3.env,
  });
  assertEquals(list.code, 0, list.stdout + list.stderr);
  const points = list.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assertEquals(
    points.map((p) => p.index.replace(/.*\//, "")),
    [1, 2, 3, 4, 5].map((g) => `nb-${g}-big-Data.db-listdir.json`),
  );
  for (const [i, p] of points.slice(0, 4).entries()) {
    assert(Date.parse(p.time) < run.compactedAt.getTime(), `${p.index} cut at ${p.time}`);
    assertEquals(p.files, (i + 1) * COMPONENTS.length, JSON.stringify(p));
    assertEquals(p.complete, true);
  }

  // The last restore point before the compaction restores the inputs, chosen
  // by time (--at: it was uploaded long after its cut) or by its index (-f).
  for (const choice of [["--at", run.compactedAt.toISOString()], ["-f", "nb-4-big-Data.db"]]) {
    await using target = await tempDir();
    const out = await runCli(
      ["slurp", "-n", "pinned", ...choice, s3.bucket, table, target.path],
      { env: s3.env },
    );
    assertEquals(out.code, 0, out.stdout + out.stderr);
    assertEquals(
      await filesUnder(target.path),
      [...run.inputs.keys()].map((n) => `/${n}`).sort(),
      choice.join(" "),
    );
    for (const [name, bytes] of run.inputs) {
      assertEquals(await Deno.readFile(`${target.path}/${name}`), bytes, name);
    }
  }
  // The newest point is the compaction's output (with its inputs if cut before they went).
  const newest = points.filter((p) => p.newest);
  assertEquals(newest.map((p) => p.index.replace(/.*\//, "")), ["nb-5-big-Data.db-listdir.json"]);

  // The same workload without --pin loses inputs: the pin is what saves them.
  const bare = await compactWhileThrottled(s3, "bare", false);
  const lost = [...bare.inputs.keys()].filter((name) => !bare.keys.has(bare.prefix + name));
  // At least a generation was still to upload at the compaction, one file of it in flight.
  assert(lost.length >= COMPONENTS.length - 1, `lost only ${lost.join(",") || "nothing"}`);
});

for (const journal of [false, true]) {
  const how = journal ? "with --state-dir" : "without a journal";
  Deno.test(`--pin: pins left by a killed run are uploaded at start and removed (${how})`, async () => {
    await using s3 = await startS3Server();
    await using work = await tempDir();
    const data = `${work.path}/data`;
    const table = `${data}/ks/t-bb`;
    await Deno.mkdir(table, { recursive: true });
    const state = journal ? ["--state-dir", `${work.path}/state`] : [];
    const args = ["-n", "h", "-r", "--pin", ...state, s3.bucket, data];
    await using first = spawnWatcher(["--max-bandwidth", "1K", ...args], { env: s3.env });
    await first.waitUntilWatching();
    // Every file the four upload threads start on is over 1K/s's first
    // second of tokens, so none is stored (and unpinned) for 7 s, whichever
    // of them takes the tokens first (the TOC waits behind them).
    const files = await flush(table, 1, 16 * 1024, 8 * 1024);
    await first.waitForMetrics("the files pinned", (m) => m.get("tablesnap_pinned_files") === 6);
    if (journal) {
      // The journal's batch (written every 100 ms) holds the pending files.
      await waitFor("the pending files in the journal", async () => {
        const text = await Deno.readTextFile(`${work.path}/state/journal.jsonl`).catch(() => "");
        return text.includes(`${table}/nb-1-big-Data.db`);
      });
    }
    await first.stop("SIGKILL");
    // Compacted away while tablesnap was down: only the pins hold them.
    for (const name of files.keys()) await Deno.remove(`${table}/${name}`);
    assertEquals(
      await filesUnder(`${data}/${PINS}`),
      [...files.keys()].map((n) => `/ks/t-bb/${n}`).sort(),
    );
    if (journal) {
      // The journal lists them as pending: their originals are gone, their pins are not.
      const lines = await Deno.readTextFile(`${work.path}/state/journal.jsonl`);
      assertStringIncludes(lines, `${table}/nb-1-big-Data.db`);
    }

    await using second = spawnWatcher(args, { env: s3.env });
    const prefix = `h:${table}/`;
    // (Its metrics are served before the pins are adopted: wait on the bucket first.)
    await waitFor("every file in the bucket", async () => {
      const keys = await bucketKeys(s3, prefix);
      return [...files].every(([name, bytes]) => keys.get(prefix + name) === bytes.length);
    }, 30_000);
    await second.waitForMetrics(
      "the pins released",
      (m) => m.get("tablesnap_pinned_files") === 0 && m.get("tablesnap_pending_files") === 0,
    );
    for (const [name, bytes] of files) {
      assertEquals(await objectBytes(s3, prefix + name), bytes, name);
    }
    assertEquals(await filesUnder(`${data}/${PINS}`), []);
    const keys = await bucketKeys(s3);
    assertEquals([...keys.keys()].filter((k) => k.includes(PINS)), []);
    assertEquals(await second.stop(), 0, second.stderr());
  });
}

Deno.test("--pin: a Statistics.db renamed over while pinned is uploaded in its newest version", async () => {
  await using s3 = await startS3Server();
  await using work = await tempDir();
  const data = `${work.path}/data`;
  await Deno.mkdir(data);
  // One upload at a time, the Data.db first and slow: the rest waits in the
  // queue for (24K - 4K) / 4K/s = 5 s at least, time enough on a loaded
  // machine to see the pins and rewrite the Statistics.db before its turn.
  await using watcher = spawnWatcher(
    ["-n", "h", "-t", "1", "--pin", "--max-bandwidth", "4K", s3.bucket, data],
    { env: s3.env },
  );
  await watcher.waitUntilWatching();
  const files = await flush(data, 1, 24 * 1024);
  await watcher.waitForMetrics("the files pinned", (m) => m.get("tablesnap_pinned_files") === 6);
  // Repair rewrites it as Cassandra does: a .tmp renamed over, same size.
  const name = "nb-1-big-Statistics.db";
  const rewritten = bytesOf("repaired", 300);
  await Deno.writeFile(`${data}/${name}.tmp`, rewritten);
  await Deno.rename(`${data}/${name}.tmp`, `${data}/${name}`);
  files.set(name, rewritten);
  await waitFor("the new version pinned", async () => {
    const pin = await Deno.readFile(`${data}/${PINS}/${name}`).catch(() => null);
    return pin !== null && pin.every((b, i) => b === rewritten[i]);
  });
  // Still queued behind the Data.db when it was rewritten.
  assert(!(await bucketKeys(s3)).has(`h:${data}/${name}`), "Statistics.db was uploaded already");
  // Then compaction deletes the generation before any of it is uploaded.
  for (const file of files.keys()) await Deno.remove(`${data}/${file}`);
  await watcher.waitForMetrics("the pins released", (m) => m.get("tablesnap_pinned_files") === 0);
  for (const [file, bytes] of files) {
    assertEquals(await objectBytes(s3, `h:${data}/${file}`), bytes, file);
  }
  assertEquals(await watcher.stop(), 0);
});

Deno.test("--pin-max-bytes: no file is pinned past the bound, and the metric says so", async () => {
  await using s3 = await startS3Server();
  await using work = await tempDir();
  const data = `${work.path}/data`;
  await Deno.mkdir(data);
  await using watcher = spawnWatcher(
    // 2K/s: the limiter's first second of tokens is less than the Data.db,
    // so nothing is uploaded (and no pin released) before every file is seen.
    ["-n", "h", "--pin", "--pin-max-bytes", "4K", "--max-bandwidth", "2K", s3.bucket, data],
    { env: s3.env },
  );
  await watcher.waitUntilWatching();
  const files = await flush(data, 1, 3 * 1024);
  let most = 0;
  const done = await watcher.waitForMetrics("every file uploaded", (m) => {
    most = Math.max(most, m.get("tablesnap_pinned_bytes")!);
    return m.get("tablesnap_uploaded_files_total") === files.size;
  });
  assert(most <= 4096, `pinned ${most} bytes`);
  assert(most > 0, "nothing was pinned");
  assert(done.get("tablesnap_pins_refused_total", { reason: "limit" })! >= 1, done.text);
  await watcher.waitForMetrics("the pins released", (m) => m.get("tablesnap_pinned_bytes") === 0);
  for (const [name, bytes] of files) {
    assertEquals(await objectBytes(s3, `h:${data}/${name}`), bytes, name);
  }
  assertEquals(await watcher.stop(), 0);
  // One warning for the episode, not one per refused file.
  assertEquals(watcher.stderr().split("pin limit reached").length - 1, 1, watcher.stderr());
});

Deno.test("--pin with -B --once and --delete-on-backup: everything lands, nothing stays pinned", async () => {
  await using s3 = await startS3Server();
  await using work = await tempDir();
  const data = `${work.path}/data`;
  const table = `${data}/ks/t-cc`;
  await Deno.mkdir(table, { recursive: true });
  const files = new Map([...await flush(table, 1, 2048), ...await flush(table, 2, 2048)]);
  const out = await runCli(
    ["-n", "h", "-r", "-B", "--once", "--pin", "--delete-on-backup", s3.bucket, data],
    { env: s3.env },
  );
  assertEquals(out.code, 0, out.stderr);
  for (const [name, bytes] of files) {
    assertEquals(await objectBytes(s3, `h:${table}/${name}`), bytes, name);
  }
  const keys = await bucketKeys(s3);
  assert(keys.has(`h:${table}/nb-2-big-Data.db-listdir.json`));
  assertEquals([...keys.keys()].filter((k) => k.includes(PINS)), []);
  assertEquals(await filesUnder(table), [], "--delete-on-backup left files");
  assertEquals(await filesUnder(`${data}/${PINS}`), []);
});

Deno.test("--pin: a pin directory on another file system is one warning, and pinning is off", async () => {
  await using s3 = await startS3Server();
  await using work = await tempDir();
  // /dev/shm is a tmpfs, the temp dir on the disk. The watcher creates it;
  // the test may not touch /dev without --allow-all: rm removes it.
  const other = `/dev/shm/tablesnap-pins-${crypto.randomUUID()}`;
  try {
    await using watcher = spawnWatcher(
      ["-n", "h", "--pin", "--pin-dir", other, s3.bucket, work.path],
      { env: s3.env },
    );
    await watcher.waitUntilWatching();
    await Deno.writeTextFile(`${work.path}/nb-1-big-Filter.db`, "filter");
    const m = await watcher.waitForMetrics(
      "the file uploaded",
      (m) => m.get("tablesnap_uploaded_files_total") === 1,
    );
    assertEquals(m.get("tablesnap_pinned_files"), 0);
    assert(m.get("tablesnap_pins_refused_total", { reason: "unavailable" })! >= 1, m.text);
    assertEquals(await watcher.stop(), 0);
    const warnings = watcher.stderr().split("\n").filter((l) => l.includes("pinning is off"));
    assertEquals(warnings.length, 1, watcher.stderr());
    // With the binary's permissions Deno refuses /dev outright (only
    // --allow-all reaches it), before any link could fail with EXDEV.
    assertMatch(warnings[0]!, /EXDEV|NotCapable: Requires all access to \\?"\/dev\/shm\//);
  } finally {
    await new Deno.Command("rm", { args: ["-rf", other] }).output();
  }
});

Deno.test("--pin options: mistakes are one-line usage errors", async () => {
  await using work = await tempDir();
  const cases: [string[], string][] = [
    [["--pin-dir", work.path], "Option '--pin-dir' needs '--pin'"],
    [["--pin-max-bytes", "1G"], "Option '--pin-max-bytes' needs '--pin'"],
    [["--pin", "--pin-max-bytes", "lots"], "Option '--pin-max-bytes' needs a size"],
    [["--pin", "--pin-dir", "/"], "Option '--pin-dir' must not contain a watched path"],
  ];
  for (const [args, message] of cases) {
    const out = await runCli([...args, "file:///nonexistent", work.path]);
    assertEquals(out.code, 2, `${args.join(" ")}: ${out.stderr}`);
    const [first, ...rest] = out.stderr.trim().split("\n");
    assertStringIncludes(first!, message);
    assertEquals(rest, ["Run 'tablesnap --help' for usage."], out.stderr);
  }
});
