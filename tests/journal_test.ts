/**
 * The durable journal (`--state-dir`, lib/watch/durable/journal.ts and the
 * checkpoint rules of lib/watch/durable/durable_state.ts): first the file format and its
 * batching and compaction in-process, then real watchers killed with real
 * signals against a real s3rver, restarted without -B.
 */
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import {
  freePort,
  type S3Server,
  type Scrape,
  spawnCli,
  spawnWatcher,
  startS3Server,
  tempDir,
  waitFor,
} from "./_helpers.ts";
import { FatalError } from "../lib/common/errors.ts";
import { LocalStore } from "../lib/store/local_store.ts";
import { Ledger } from "../lib/watch/ledger.ts";
import { testPipeline } from "./_pipeline.ts";
import { Journal } from "../lib/watch/durable/journal.ts";
import { JOURNAL_FILE, parseJournal } from "../lib/watch/durable/journal_format.ts";
import { CHANGE_MARGIN_MS } from "../lib/watch/durable/reconcile.ts";

const HOST = "testhost";

/**
 * The journal as the docs describe it, read independently of the code
 * under test: pending paths (last `pending` without a `done` after it) and
 * the last checkpoint.
 */
async function readJournal(stateDir: string) {
  const text = await Deno.readTextFile(`${stateDir}/${JOURNAL_FILE}`).catch(() => "");
  const lines = text.split("\n").filter((l) => l !== "");
  const pending = new Set<string>();
  let checkpoint = 0;
  for (const line of lines.slice(1)) {
    const entry = JSON.parse(line);
    if (entry.op === "pending") pending.add(entry.path);
    if (entry.op === "done") pending.delete(entry.path);
    if (entry.op === "checkpoint") checkpoint = entry.at;
  }
  return { lines, pending, checkpoint };
}

/** Waits until the journal holds a checkpoint late enough that nothing written before `t` counts as changed. */
function waitForCheckpointAfter(stateDir: string, t: number, also = () => true) {
  return waitFor(`a checkpoint after ${new Date(t).toISOString()}`, async () => {
    const journal = await readJournal(stateDir);
    return journal.checkpoint > t + CHANGE_MARGIN_MS + 1000 && also() && journal;
  });
}

/**
 * Waits until `ms` have passed since `path`'s ctime on the clock ctimes are
 * read from (that of a file written now): the restart's scans compare the
 * ctimes with their own start.
 */
async function waitForFileClockPast(path: string, ms: number) {
  const since = (await Deno.stat(path)).ctime!.getTime() + ms;
  await using probe = await tempDir("tablesnap-clock-");
  await waitFor("the file clock to move on", async () => {
    await Deno.writeTextFile(`${probe.path}/now`, "");
    return (await Deno.stat(`${probe.path}/now`)).ctime!.getTime() > since;
  }, ms + 15_000);
}

async function bucketContents(s3: S3Server): Promise<Map<string, string>> {
  const page = await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
  const contents = new Map<string, string>();
  for (const object of page.Contents ?? []) {
    const out = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: object.Key! }));
    contents.set(object.Key!, await out.Body!.transformToString());
  }
  return contents;
}

function requests(m: Scrape, operation: string): number {
  return m.get("tablesnap_s3_request_duration_seconds_count", { operation }) ?? 0;
}

/** stderr lines other than the routine ones, for "one line" assertions. */
function linesWith(stderr: string, text: string): string[] {
  return stderr.split("\n").filter((line) => line.includes(text));
}

/**
 * Runs the watcher and expects it to exit by itself; killed after 30 s (a
 * start on a loaded machine can take several), which then fails the test.
 */
async function exitWithin(args: string[]): Promise<{ code: number | "running"; stderr: string }> {
  await using cli = spawnCli(args);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const code = await Promise.race([
    cli.child.status.then((s) => s.code),
    new Promise<"running">((resolve) => timer = setTimeout(() => resolve("running"), 30_000)),
  ]);
  clearTimeout(timer);
  await cli.stop("SIGKILL");
  return { code, stderr: cli.stderr() };
}

function watchArgs(stateDir: string, bucket: string, root: string, ...extra: string[]): string[] {
  return [
    "-r",
    "-a",
    "-n",
    HOST,
    "--without-index",
    "--sweep-interval",
    "1",
    "--settle-seconds",
    "1",
    "--state-dir",
    stateDir,
    ...extra,
    bucket,
    root,
  ];
}

// ------------------------------------------------------------ the file itself

Deno.test("parseJournal reads the documented lines and names every kind of damage", () => {
  const header = `{"journal":"tablesnap","version":1}`;
  const good = [
    header,
    `{"op":"checkpoint","at":1000}`,
    `{"op":"pending","path":"/d/a","since":5}`,
    `{"op":"pending","path":"/d/b","since":6}`,
    `{"op":"done","path":"/d/a"}`,
    `{"op":"checkpoint","at":2000}`,
  ].join("\n") + "\n";
  const ok = parseJournal(good);
  assertEquals(ok.damage, undefined);
  assertEquals([...ok.pending], [["/d/b", 6]]);
  assertEquals(ok.checkpoint, 2000);

  const damaged: [string, RegExp][] = [
    ["", /empty/],
    [good + "garbage\n", /line 7: not JSON/],
    [good + `{"op":"pending","path":"/d/c"`, /line 7 is incomplete/],
    [good + `{"op":"pending","path":"/d/c","since":1}`, /line 7 is incomplete/],
    [good + `{"op":"rename","path":"/d/c"}\n`, /line 7: unknown op "rename"/],
    [good + `{"op":"pending","since":1}\n`, /line 7: pending without a path/],
    [good + `[1]\n`, /line 7: not a JSON object/],
    [good.replace(`"version":1`, `"version":2`), /line 1: unknown version 2/],
    [good.replace(header, `{"op":"done","path":"/d/a"}`), /line 1: not a tablesnap journal/],
  ];
  for (const [text, problem] of damaged) {
    const result = parseJournal(text);
    assertMatch(result.damage ?? "(none)", problem, JSON.stringify(text.slice(-60)));
  }
  // What came before the damage is kept (it is queued again, harmlessly).
  assertEquals([...parseJournal(good + "garbage\n").pending.keys()], ["/d/b"]);
});

Deno.test("Journal batches appends, writes nothing for files done within a batch, compacts past its bound", async () => {
  await using dir = await tempDir("tablesnap-state-");
  const { journal, recovery } = await Journal.open(dir.path, {
    flushDelayMs: 10_000, // flushed by hand below
    compactMinBytes: 4096,
  });
  assertEquals(recovery.fresh, true);
  const file = () => Deno.readTextFileSync(`${dir.path}/${JOURNAL_FILE}`);
  assertEquals(file(), `{"journal":"tablesnap","version":1}\n`);

  journal.pending("/d/quick", 1);
  journal.pending("/d/slow", 2);
  journal.done("/d/quick"); // uploaded before the batch was written
  journal.checkpoint(100);
  await journal.flush();
  // The checkpoint waits for the lines before it to be synced: next batch.
  assertEquals(file().split("\n").slice(1, -1), [`{"op":"pending","path":"/d/slow","since":2}`]);
  await journal.flush();
  assertStringIncludes(file(), `{"op":"checkpoint","at":100}\n`);
  journal.checkpoint(50); // never moves back
  assertEquals(journal.checkpointTime, 100);

  // Many files through: the file grows past 4 x its live lines, then is rewritten.
  for (let i = 0; i < 200; i++) {
    journal.pending(`/d/f${i}`, i);
    await journal.flush();
    journal.done(`/d/f${i}`);
    await journal.flush();
  }
  assert(journal.stats.compactions >= 2, `compactions: ${journal.stats.compactions}`);
  assert(file().length < 4096 + 200, `journal is ${file().length} bytes`);
  const contents = parseJournal(file());
  assertEquals([...contents.pending.keys()], ["/d/slow"]);
  assertEquals(contents.checkpoint, 100);

  // A second holder is refused in one line; after close the lock is free again.
  let refused: unknown;
  await Journal.open(dir.path).catch((err) => refused = err);
  assert(refused instanceof FatalError, String(refused));
  assertMatch(refused.message, /is in use by another tablesnap \(pid \d+\)$/);
  await journal.close();
  assertEquals(file(), parseJournalText(["/d/slow", 2], 100));
  const again = await Journal.open(dir.path);
  assertEquals([...again.recovery.pending], [["/d/slow", 2]]);
  assertEquals(again.recovery.checkpoint, 100);
  await again.journal.close();
});

function parseJournalText(pending: [string, number], checkpoint: number): string {
  return [
    `{"journal":"tablesnap","version":1}`,
    `{"op":"checkpoint","at":${checkpoint}}`,
    `{"op":"pending","path":"${pending[0]}","since":${pending[1]}}`,
  ].join("\n") + "\n";
}

Deno.test("the pipeline keeps exactly the files not in the bucket in the journal, through failures and shutdown", async () => {
  await using state = await tempDir("tablesnap-state-");
  await using bucket = await tempDir("tablesnap-store-");
  await using data = await tempDir();
  let down = true;
  // Listing the key directory is the first request of an upload: an outage.
  class OutageStore extends LocalStore {
    override list(prefix: string, options?: { delimiter?: string }) {
      if (down) throw new Error("connect ECONNREFUSED");
      return super.list(prefix, options);
    }
  }
  const { journal } = await Journal.open(state.path, { flushDelayMs: 10 });
  const ledger = new Ledger();
  journal.follow(ledger);
  const pipeline = testPipeline(new OutageStore(bucket.path), { ledger, journal });
  const path = (name: string) => `${data.path}/${name}`;
  for (const name of ["a", "b"]) {
    await Deno.writeTextFile(path(name), name);
    pipeline.enqueue(path(name), 1000);
  }
  await waitFor("both uploads failed", () => pipeline.failedPaths().length === 2);
  down = false;
  await Deno.writeTextFile(path("c"), "c");
  pipeline.enqueue(path("c"));
  await waitFor("c uploaded", () => pipeline.ledger.isStored(path("c")));
  await Deno.writeTextFile(path("gone"), "soon gone");
  pipeline.enqueue(path("gone"));
  await Deno.remove(path("gone"));
  await pipeline.idle();
  // a and b wait for their next try-cycle; shutdown must not count them done.
  assertEquals((await pipeline.shutdown(1000)).sort(), [path("a"), path("b")]);
  await journal.close();
  const contents = parseJournal(Deno.readTextFileSync(`${state.path}/${JOURNAL_FILE}`));
  assertEquals(contents.damage, undefined);
  assertEquals([...contents.pending].sort(), [[path("a"), 1000], [path("b"), 1000]]);
});

// ------------------------------------------------------------ real processes

Deno.test("pending files survive SIGKILL: a restart without -B uploads every one", async () => {
  await using dir = await tempDir();
  await using state = await tempDir("tablesnap-state-");
  const table = `${dir.path}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  // Nothing listens there: every upload fails and the files stay pending.
  const down = {
    AWS_ACCESS_KEY_ID: "S3RVER",
    AWS_SECRET_ACCESS_KEY: "S3RVER",
    AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${freePort()}`,
    AWS_REGION: "us-east-1",
  };
  const args = watchArgs(state.path, "test-bucket", dir.path);
  const names = ["nb-1-big-Data.db", "nb-1-big-Index.db", "nb-2-big-Data.db"];
  {
    await using first = spawnWatcher(args, { env: down });
    await first.waitUntilWatching();
    for (const name of names) await Deno.writeTextFile(`${table}/${name}`, `body of ${name}`);
    const written = Date.now();
    // The checkpoint moves past the files (they are pending, so covered):
    // after the restart, only the journal can say they are missing.
    const journal = await waitForCheckpointAfter(state.path, written);
    assertEquals([...journal.pending].sort(), names.map((n) => `${table}/${n}`).sort());
    await first.stop("SIGKILL");
  }
  await using s3 = await startS3Server();
  await using second = spawnWatcher(args, { env: s3.env });
  const done = await second.waitForMetrics(
    "the pending files uploaded",
    (m) => m.get("tablesnap_uploaded_files_total") === 3 && m.get("tablesnap_pending_files") === 0,
  );
  assertEquals(requests(done, "PutObject"), 3, done.text);
  assertEquals(
    await bucketContents(s3),
    new Map(names.map((n) => [`${HOST}:${table}/${n}`, `body of ${n}`])),
  );
  assertEquals(await second.stop(), 0, second.stderr());
  const after = await readJournal(state.path);
  assertEquals(after.pending.size, 0, after.lines.join("\n"));
  // Compacted at the clean stop: the header and the checkpoint, nothing else.
  assertEquals(after.lines.length, 2, after.lines.join("\n"));
});

Deno.test("a restart without -B finds the files created while it was down, and uploads nothing twice", async () => {
  await using dir = await tempDir();
  await using state = await tempDir("tablesnap-state-");
  await using s3 = await startS3Server();
  const t1 = `${dir.path}/ks/t1`;
  const t2 = `${dir.path}/ks/t2`;
  for (const table of [t1, t2]) await Deno.mkdir(table, { recursive: true });
  await Deno.writeTextFile(`${t1}/a`, "a");
  await Deno.writeTextFile(`${t1}/b`, "b");
  await Deno.writeTextFile(`${t2}/e`, "e");
  const written = Date.now();
  const args = watchArgs(state.path, s3.bucket, dir.path);
  {
    // A new state directory: the whole tree is reconciled, as with -B.
    await using first = spawnWatcher(args, { env: s3.env });
    await first.waitForMetrics("3 uploads", (m) => m.get("tablesnap_uploaded_files_total") === 3);
    await waitForCheckpointAfter(state.path, written);
    assertEquals(await first.stop(), 0, first.stderr());
  }
  // While it is down: a new file in an old directory, a new directory; then
  // down long enough that the restart's own scans count them as older than
  // it (only the reconciliation of what changed since the checkpoint finds them).
  await Deno.writeTextFile(`${t1}/c`, "c");
  await Deno.mkdir(`${dir.path}/ks/t3`);
  await Deno.writeTextFile(`${dir.path}/ks/t3/f`, "f");
  await waitForFileClockPast(`${dir.path}/ks/t3/f`, CHANGE_MARGIN_MS + 1000);

  await using second = spawnWatcher(args, { env: s3.env });
  const done = await second.waitForMetrics(
    "the two new files uploaded",
    (m) => m.get("tablesnap_uploaded_files_total") === 2 && m.get("tablesnap_pending_files") === 0,
  );
  const contents = await bucketContents(s3);
  assertEquals(
    [...contents].sort(),
    [[`${t1}/a`, "a"], [`${t1}/b`, "b"], [`${t1}/c`, "c"], [`${t2}/e`, "e"], [
      `${dir.path}/ks/t3/f`,
      "f",
    ]].map(([path, body]) => [`${HOST}:${path}`, body]).sort(),
  );
  // a, b and e are not uploaded again...
  assertEquals(requests(done, "PutObject"), 2, done.text);
  // ...and only the changed directories with files are listed (ks/t1 and
  // ks/t3, not ks/t2), besides the start-up check.
  assertEquals(requests(done, "ListObjectsV2"), 3, done.text);
  assertEquals(await second.stop(), 0, second.stderr());
});

Deno.test("a Data.db stays in the journal until its index is written, so a crash in between still gets the index", async () => {
  await using dir = await tempDir();
  await using state = await tempDir("tablesnap-state-");
  await using s3 = await startS3Server();
  const table = `${dir.path}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  const withIndexes = (wait: string) =>
    watchArgs(state.path, s3.bucket, dir.path, "--index-wait", wait)
      .filter((arg) => arg !== "--without-index");
  const data = `${table}/nb-1-big-Data.db`;
  const indexKey = `${HOST}:${data}-listdir.json`;
  {
    await using first = spawnWatcher(withIndexes("60"), { env: s3.env });
    await first.waitUntilWatching();
    // The TOC names an Index.db that never comes: the index waits.
    await Deno.writeTextFile(`${table}/nb-1-big-TOC.txt`, "Data.db\nIndex.db\nTOC.txt\n");
    await Deno.writeTextFile(data, "data");
    const written = Date.now();
    await first.waitForMetrics(
      "both uploaded",
      (m) => m.get("tablesnap_uploaded_files_total") === 2,
    );
    const journal = await waitForCheckpointAfter(state.path, written);
    assertEquals([...journal.pending], [data], "the Data.db waits for its index");
    await first.stop("SIGKILL");
  }
  assertEquals((await bucketContents(s3)).has(indexKey), false);
  await using second = spawnWatcher(withIndexes("1"), { env: s3.env });
  await waitFor("the index", async () => (await bucketContents(s3)).has(indexKey));
  await second.waitForMetrics("nothing pending", (m) => m.get("tablesnap_pending_files") === 0);
  assertEquals(await second.stop(), 0, second.stderr());
  assertEquals((await readJournal(state.path)).pending.size, 0);
});

Deno.test("a damaged journal is reported in one line and rebuilt from a full reconciliation", async () => {
  await using dir = await tempDir();
  await using state = await tempDir("tablesnap-state-");
  await using s3 = await startS3Server();
  const table = `${dir.path}/ks/t1`;
  await Deno.mkdir(table, { recursive: true });
  await Deno.writeTextFile(`${table}/a`, "a");
  await Deno.writeTextFile(`${table}/b`, "b");
  const written = Date.now();
  const args = watchArgs(state.path, s3.bucket, dir.path);
  {
    await using first = spawnWatcher(args, { env: s3.env });
    await first.waitForMetrics("2 uploads", (m) => m.get("tablesnap_uploaded_files_total") === 2);
    await waitForCheckpointAfter(state.path, written);
    assertEquals(await first.stop(), 0, first.stderr());
  }
  const journalPath = `${state.path}/${JOURNAL_FILE}`;
  const damages: [string, (text: string) => string][] = [
    ["a garbage line", (text) => text + "this is not json\n"],
    ["a half-written last line", (text) => text + `{"op":"pending","path":"${table}/x`],
  ];
  for (const [what, damage] of damages) {
    // Gone from the bucket, in a directory unchanged since the checkpoint:
    // only a reconciliation of the whole tree puts it back.
    await s3.client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: `${HOST}:${table}/a` }));
    await Deno.writeTextFile(journalPath, damage(await Deno.readTextFile(journalPath)));
    await using again = spawnWatcher(args, { env: s3.env });
    await again.waitForMetrics(
      `a uploaded again after ${what}`,
      (m) =>
        m.get("tablesnap_uploaded_files_total") === 1 && m.get("tablesnap_pending_files") === 0,
    );
    assertEquals(await again.stop(), 0, again.stderr());
    const stderr = again.stderr();
    const reported = linesWith(stderr, journalPath);
    assertEquals(reported.length, 1, `${what}:\n${stderr}`);
    assertMatch(reported[0]!, / WARN state journal damaged/, what);
    assertEquals(linesWith(stderr, " ERROR ").length, 0, stderr);
    assertEquals((await bucketContents(s3)).get(`${HOST}:${table}/a`), "a", what);
    // Rebuilt: readable again, the damaged copy kept beside it.
    assertEquals(parseJournal(await Deno.readTextFile(journalPath)).damage, undefined, what);
    assert((await Deno.stat(`${journalPath}.damaged`)).isFile);
  }
});

Deno.test("one watcher per state directory; an unusable one is a one-line error, exit 1", async () => {
  await using dir = await tempDir();
  await using bucket = await tempDir("tablesnap-bucket-");
  await using state = await tempDir("tablesnap-state-");
  const local = `file://${bucket.path}`;
  await using first = spawnWatcher(watchArgs(state.path, local, dir.path));
  await first.waitUntilWatching();

  const second = await exitWithin(watchArgs(state.path, local, dir.path));
  assertEquals(second.code, 1, second.stderr);
  assertEquals(second.stderr.trim().split("\n").length, 1, second.stderr);
  assertMatch(
    second.stderr.trim(),
    new RegExp(
      `^error: The state directory '${state.path}' is in use by another tablesnap \\(pid ${first.child.pid}\\)$`,
    ),
  );

  const aFile = `${state.path}/not-a-directory`;
  await Deno.writeTextFile(aFile, "");
  const unusable = await exitWithin(watchArgs(`${aFile}/state`, local, dir.path));
  assertEquals(unusable.code, 1, unusable.stderr);
  assertEquals(unusable.stderr.trim().split("\n").length, 1, unusable.stderr);
  assertMatch(
    unusable.stderr,
    /^error: Cannot use the state directory '.*\/not-a-directory\/state': /,
  );

  const empty = await exitWithin(["--state-dir=", local, dir.path]);
  assertEquals(empty.code, 2, empty.stderr);
  assertMatch(empty.stderr, /^error: Option '--state-dir' needs a directory path\n/);

  assertEquals(await first.stop(), 0, first.stderr());
});
