import { DeleteObjectCommand } from "@aws-sdk/client-s3";
import { FatalError } from "../lib/common/errors.ts";
import { slurp } from "../lib/restore/slurp.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
} from "./_assert.ts";
import {
  contentOf,
  DAY,
  generation,
  key,
  localStore,
  localWriter,
  NAMING,
  putFile,
  putIndex,
  putTable,
  s3Writer,
  statJson,
} from "./_bucket_fixture.ts";
import { runCli, startS3Server, tempDir } from "./_helpers.ts";

const TABLE = "/var/lib/cassandra/data/ks/users-1b2c";
const HOST = NAMING.name;

async function readDir(path: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(path))).map((e) => e.name).sort();
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** One `error: ...` line (and perhaps the usage hint), no trace. */
function assertOneLine(stderr: string, includes: string): void {
  const lines = stderr.trim().split("\n").filter((l) => l.startsWith("error: "));
  assertEquals(lines.length, 1, stderr);
  assertStringIncludes(lines[0]!, includes);
  assertEquals(/\n\s+at /.test(stderr), false, `no stack trace:\n${stderr}`);
}

async function assertRestored(dir: string, names: string[]): Promise<void> {
  assertEquals(await readDir(dir), [...names].sort());
  for (const name of names) {
    assertEquals(await Deno.readFile(`${dir}/${name}`), contentOf(name), name);
  }
}

Deno.test("slurp restores a Python-written S3 bucket: --plan, default, resume, -f, missing objects", async (t) => {
  await using s3 = await startS3Server();
  await using work = await tempDir();
  const w = s3Writer(s3);
  const written = new Set<string>();
  // One file without md5sum metadata (the ETag is then the digest), one with mode 0640.
  await putFile(w, `${TABLE}/nb-1-big-TOC.txt`, contentOf("nb-1-big-TOC.txt"), { md5sum: false });
  await putFile(w, `${TABLE}/nb-1-big-Index.db`, contentOf("nb-1-big-Index.db"), {
    stat: statJson(0o100640),
  });
  written.add(`${TABLE}/nb-1-big-TOC.txt`).add(`${TABLE}/nb-1-big-Index.db`);
  await putTable(w, TABLE, generation(1), { written });
  await putTable(w, TABLE, [...generation(2), ...generation(1)].reverse(), { written });
  const all = [...generation(1), ...generation(2)];
  const env = s3.env;
  const common = ["-n", HOST, s3.bucket, TABLE];

  await t.step("--plan lists the newest file set without downloading", async () => {
    const target = `${work.path}/plan`;
    const out = await runCli(["slurp", "--plan", ...common, target], { env });
    assertEquals(out.code, 0, out.stderr);
    // The plan names the newest index and the objects of its file set, and no other key.
    const named = new Set(
      out.stdout.split(/\s+/).filter((word) => word.startsWith(key(NAMING, `${TABLE}/`))),
    );
    assertEquals(
      named,
      new Set([
        key(NAMING, `${TABLE}/nb-2-big-Data.db-listdir.json`),
        ...all.map((name) => key(NAMING, `${TABLE}/${name}`)),
      ]),
      out.stdout,
    );
    assertEquals(await exists(target), false);
  });

  const target = `${work.path}/restore`;
  await t.step("restores the newest index byte for byte, with modes", async () => {
    const out = await runCli(["slurp", ...common, target], { env });
    assertEquals(out.code, 0, out.stderr);
    await assertRestored(target, all);
    assertEquals((await Deno.stat(`${target}/nb-1-big-Index.db`)).mode! & 0o777, 0o640);
    assertEquals((await Deno.stat(`${target}/nb-2-big-Data.db`)).mode! & 0o777, 0o644);
  });

  await t.step("a re-run resumes: only missing or damaged files are fetched", async () => {
    await Deno.remove(`${target}/nb-2-big-Data.db`);
    await Deno.writeTextFile(`${target}/.nb-2-big-Data.db.tablesnap-partial`, "half a file");
    const damaged = contentOf("nb-1-big-Filter.db");
    damaged[3] = damaged[3]! ^ 0xff;
    await Deno.writeFile(`${target}/nb-1-big-Filter.db`, damaged);
    const refetch = ["nb-2-big-Data.db", "nb-1-big-Filter.db"];
    // A fetched file is renamed into place (a new inode); one left alone keeps its inode.
    const inode = async (name: string) => (await Deno.stat(`${target}/${name}`)).ino;
    const before = new Map<string, number | null>();
    for (const name of all.filter((n) => !refetch.includes(n))) before.set(name, await inode(name));
    const damagedInode = await inode("nb-1-big-Filter.db");
    const out = await runCli(["slurp", ...common, target], { env });
    assertEquals(out.code, 0, out.stderr);
    await assertRestored(target, all);
    for (const [name, ino] of before) assertEquals(await inode(name), ino, `${name} fetched again`);
    assertNotEquals(await inode("nb-1-big-Filter.db"), damagedInode, "damaged file not replaced");
  });

  await t.step("-f restores the file set of one file's index", async () => {
    const one = `${work.path}/one`;
    const out = await runCli(["slurp", "-f", "nb-1-big-Data.db", ...common, one], { env });
    assertEquals(out.code, 0, out.stderr);
    await assertRestored(one, generation(1));
    const bad = await runCli(["slurp", "-f", "nb-9-big-Data.db", ...common, one], { env });
    assertEquals(bad.code, 1);
    assertStringIncludes(bad.stderr, "No index 'cass1.example.com:");
  });

  await t.step("a generation missing a component is refused whole, nothing written", async () => {
    await s3.client.send(
      new DeleteObjectCommand({
        Bucket: s3.bucket,
        Key: key(NAMING, `${TABLE}/nb-2-big-Index.db`),
      }),
    );
    const plan = await runCli(["slurp", "--plan", ...common, `${work.path}/x`], { env });
    assertEquals(plan.code, 1);
    assertStringIncludes(
      plan.stdout,
      `Missing from the bucket (1):\n  ${HOST}:${TABLE}/nb-2-big-Index.db`,
    );
    assertStringIncludes(plan.stdout, "generation 'nb-2-big-' in '" + TABLE + "' lacks Index.db");
    const lost = `${work.path}/lost`;
    const out = await runCli(["slurp", ...common, lost], { env });
    assertEquals(out.code, 1);
    assertOneLine(out.stderr, "generation 'nb-2-big-' in '" + TABLE + "' lacks Index.db");
    assertEquals(await exists(lost), false, "nothing written");
    // --allow-incomplete restores the rest, and still fails naming what is missing.
    const loud = await runCli(["slurp", "--allow-incomplete", ...common, lost], { env });
    assertEquals(loud.code, 1);
    assertStringIncludes(
      loud.stdout,
      `${lost}/nb-2-big-Index.db: Object '${HOST}:${TABLE}/nb-2-big-Index.db' is missing`,
    );
    assertStringIncludes(loud.stderr, "restoring an incomplete SSTable");
    await assertRestored(lost, all.filter((n) => n !== "nb-2-big-Index.db"));
  });

  await t.step(
    "end to end: the watcher uploads (multipart too), slurp -r restores the same bytes",
    async () => {
      const data = `${work.path}/data`;
      const table = `${data}/ks1/tbl-abc`;
      await Deno.mkdir(table, { recursive: true });
      const files: Record<string, Uint8Array> = {};
      for (const name of generation(1)) {
        files[name] = contentOf(
          name,
          name.endsWith("Data.db") ? 6 << 20 : 300,
        );
      }
      // A real TOC: the watcher waits for every component it lists.
      files["nb-1-big-TOC.txt"] = new TextEncoder().encode(
        generation(1).map((n) => n.replace("nb-1-big-", "")).join("\n") + "\n",
      );
      for (const [name, bytes] of Object.entries(files)) {
        await Deno.writeFile(
          `${table}/${name}`,
          bytes,
        );
      }
      const up = await runCli([
        "-B",
        "--once",
        "-r",
        "-n",
        "watcherhost",
        "--max-upload-size",
        "1",
        "--multipart-chunk-size",
        "5",
        s3.bucket,
        data,
      ], { env });
      assertEquals(up.code, 0, up.stderr);
      const restored = `${work.path}/e2e`;
      const out = await runCli(["slurp", "-r", "-n", "watcherhost", s3.bucket, data, restored], {
        env,
      });
      assertEquals(out.code, 0, out.stderr);
      assertEquals(await readDir(`${restored}/ks1/tbl-abc`), Object.keys(files).sort());
      for (const [name, bytes] of Object.entries(files)) {
        assertEquals(await Deno.readFile(`${restored}/ks1/tbl-abc/${name}`), bytes, name);
      }
    },
  );
});

Deno.test("slurp -r restores each table's newest index, and --commitlogs the logs since", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const w = localWriter(store);
  const now = Date.now();
  const ago = (days: number) => new Date(now - days * DAY);
  const data = "/var/lib/cassandra/data";
  const written = new Set<string>();
  await putTable(w, `${data}/ks1/t1`, generation(1), { mtime: ago(3), written });
  await putTable(w, `${data}/ks1/t1`, [...generation(1), ...generation(2)], {
    mtime: ago(1),
    written,
  });
  await putTable(w, `${data}/ks2/t2`, generation(3), { mtime: ago(2), written });
  // An index deeper than keyspace/table (a snapshot) is not a table of its own.
  await putTable(w, `${data}/ks2/t2/snapshots/s1`, generation(3), { mtime: ago(0.5) });
  const logs = "/var/lib/cassandra/commitlog";
  const logName = (days: number) => `CommitLog-7-${now - days * DAY}.log`;
  await putFile(w, `${logs}/${logName(5)}`, contentOf("old"), { mtime: ago(5) });
  await putFile(w, `${logs}/${logName(1)}`, contentOf(logName(1)), { mtime: ago(1) });
  // Created long ago but uploaded recently (still being written then): included.
  await putFile(w, `${logs}/${logName(6)}`, contentOf(logName(6)), { mtime: ago(0.1) });
  await putFile(w, `${logs}/not-a-commitlog.txt`, contentOf("x"), { mtime: ago(0.1) });

  const target = `${dir.path}/target`;
  const out = await runCli([
    "slurp",
    "-r",
    "--commitlogs",
    logs,
    "-n",
    HOST,
    `file://${store.root}`,
    `${data}/`,
    target,
  ]);
  assertEquals(out.code, 0, out.stderr);
  assertEquals(await readDir(target), ["commitlogs", "ks1", "ks2"]);
  await assertRestored(`${target}/ks1/t1`, [...generation(1), ...generation(2)]);
  await assertRestored(`${target}/ks2/t2`, generation(3));
  await assertRestored(`${target}/commitlogs`, [logName(1), logName(6)]);
});

Deno.test("slurp refuses hostile indexes and never writes outside TARGET", async (t) => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const w = localWriter(store);
  const outside = `${dir.path}/outside`;
  await Deno.mkdir(outside);
  const bucket = `file://${store.root}`;

  for (
    const [label, name] of [
      ["a parent reference", "../escape"],
      ["an absolute path", "/etc/passwd"],
      ["a nested path", "sub/file"],
      ["a NUL byte", "a\0b"],
      ["an empty name", ""],
    ] as const
  ) {
    await t.step(`an index naming ${label} is refused before anything is written`, async () => {
      const origin = `/data/ks/${label.replaceAll(" ", "-")}`;
      await putFile(w, `${origin}/nb-1-big-Data.db`, contentOf("nb-1-big-Data.db"));
      await putIndex(w, `${origin}/nb-1-big-Data.db`, ["nb-1-big-Data.db", name]);
      const target = `${outside}/target`;
      const out = await runCli(["slurp", "-n", HOST, bucket, origin, target]);
      assertEquals(out.code, 1);
      assertStringIncludes(out.stderr, "names an unsafe file");
      assertStringIncludes(out.stderr, `${origin}/nb-1-big-Data.db-listdir.json`);
      assertEquals(await readDir(outside), []);
    });
  }

  await t.step("a malformed index is a clear error naming its key", async () => {
    const origin = "/data/ks/broken";
    const indexKey = await putIndex(w, `${origin}/nb-1-big-Data.db`, '{"/data/ks/broken": [1]}');
    const out = await runCli(["slurp", "-n", HOST, bucket, origin, `${outside}/target`]);
    assertEquals(out.code, 1);
    assertStringIncludes(
      out.stderr,
      `Index '${indexKey}' does not map '/data/ks/broken' to a list`,
    );
    assertEquals(await readDir(outside), []);
  });

  await t.step("symlinks already in TARGET are replaced, never followed", async () => {
    const origin = "/data/ks/links";
    await putTable(w, origin, generation(1));
    const target = `${dir.path}/links`;
    await Deno.mkdir(target);
    await Deno.writeTextFile(`${outside}/victim`, "keep me");
    await Deno.symlink(`${outside}/victim`, `${target}/nb-1-big-Data.db`);
    await Deno.symlink(`${outside}/victim`, `${target}/.nb-1-big-Index.db.tablesnap-partial`);
    await Deno.symlink(`${outside}/created`, `${target}/.nb-1-big-TOC.txt.tablesnap-partial`);
    const out = await runCli(["slurp", "-n", HOST, bucket, origin, target]);
    assertEquals(out.code, 0, out.stderr);
    await assertRestored(target, generation(1));
    assertEquals(await Deno.readTextFile(`${outside}/victim`), "keep me");
    assertEquals(await readDir(outside), ["victim"]);
  });

  await t.step("-r refuses a keyspace directory that is a symlink out of TARGET", async () => {
    const data = "/data2";
    await putTable(w, `${data}/ks1/t1`, generation(1));
    const target = `${dir.path}/rlinks`;
    await Deno.mkdir(target);
    await Deno.mkdir(`${outside}/ks1`);
    await Deno.symlink(`${outside}/ks1`, `${target}/ks1`);
    const out = await runCli(["slurp", "-r", "-n", HOST, bucket, data, target]);
    assertEquals(out.code, 1);
    assertStringIncludes(out.stderr, `Refusing to restore into '${target}/ks1': it is a symlink`);
    assertEquals(await readDir(`${outside}/ks1`), []);
  });

  await t.step("-r refuses a '..' keyspace taken from a key", async () => {
    const data = "/data3";
    await putTable(w, `${data}/../t1`, generation(1));
    const err = await assertRejects(
      () =>
        slurp({
          store,
          naming: NAMING,
          origin: data,
          target: `${outside}/t`,
          recursive: true,
          print: () => {},
        }),
      FatalError,
      "unsafe directory name",
    );
    assertStringIncludes(err.message, '".."');
    assertEquals(await readDir(outside), ["ks1", "victim"]);
  });
});

Deno.test("slurp detects a corrupted object by MD5, retries, and leaves no file under its name", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const w = localWriter(store);
  const origin = "/data/ks/t";
  await putTable(w, origin, generation(1));
  // Same size, other bytes: only the MD5 can tell.
  const path = store.dataPath(key(NAMING, `${origin}/nb-1-big-Data.db`));
  const bytes = await Deno.readFile(path);
  bytes[0] = bytes[0]! ^ 1;
  await Deno.writeFile(path, bytes);
  const target = `${dir.path}/target`;
  const lines: string[] = [];
  const result = await slurp({
    store,
    naming: NAMING,
    origin,
    target,
    attempts: 2,
    retryDelayMs: 0,
    progressBar: false,
    print: (line) => lines.push(line),
  });
  assertEquals(result.downloaded, 4);
  assertEquals(result.failed.length, 1);
  assertEquals(result.failed[0]!.path, `${target}/nb-1-big-Data.db`);
  assertMatch(result.failed[0]!.reason, /^MD5 of '.*nb-1-big-Data\.db' is [0-9a-f]{32}, expected/);
  assertEquals(await readDir(target), generation(1).filter((n) => n !== "nb-1-big-Data.db").sort());
  // The report names the file not restored.
  assertStringIncludes(lines.join("\n"), `${target}/nb-1-big-Data.db`);
});

Deno.test({
  name: "slurp -o/-g chown restored files, -p takes owner and group from stat metadata",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    await using dir = await tempDir();
    const store = await localStore(`${dir.path}/bucket`);
    const w = localWriter(store);
    const origin = "/data/ks/t";
    await putTable(w, origin, generation(1), {
      stat: statJson(0o100600, 4242, 4343, "no-such-user-tablesnap"),
    });
    const bucket = `file://${store.root}`;
    const a = `${dir.path}/a`;
    const out = await runCli([
      "slurp",
      "-n",
      HOST,
      "-o",
      "12345",
      "-g",
      "23456",
      bucket,
      origin,
      a,
    ]);
    assertEquals(out.code, 0, out.stderr);
    const info = await Deno.stat(`${a}/nb-1-big-Data.db`);
    assertEquals([info.uid, info.gid, info.mode! & 0o777], [12345, 23456, 0o600]);
    const b = `${dir.path}/b`;
    const preserved = await runCli(["slurp", "-n", HOST, "-p", "-o", "12345", bucket, origin, b]);
    assertEquals(preserved.code, 0, preserved.stderr);
    const info2 = await Deno.stat(`${b}/nb-1-big-TOC.txt`);
    assertEquals([info2.uid, info2.gid], [4242, 4343]);
    const bad = await runCli([
      "slurp",
      "-n",
      HOST,
      "-o",
      "no-such-user-tablesnap",
      bucket,
      origin,
      b,
    ]);
    assertEquals(bad.code, 2);
    assert(bad.stderr.includes("Unknown user 'no-such-user-tablesnap'"), bad.stderr);
  },
});
