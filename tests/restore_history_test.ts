/**
 * No restore point is ever lost: a live watcher over two tables, flushes at
 * known moments, a compaction, a Statistics.db rewritten as Cassandra does
 * it (tmp + rename, same size) and a Summary.db rebuilt. Afterwards every
 * point is still listed at its own time, `slurp -r --at` each moment
 * restores that moment's files byte for byte (the rewritten components'
 * earlier bytes included), `verify --all` finds them all, the Python
 * tableslurp's rule restores the newest point, and `chop` counts re-cut
 * indexes like any other. On a plain bucket (s3rver) and a versioned one (moto).
 */
import { DeleteObjectCommand, PutBucketVersioningCommand } from "@aws-sdk/client-s3";
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { contentOf } from "./_bucket_fixture.ts";
import {
  bucketKeys,
  runCli,
  type S3Server,
  spawnWatcher,
  startS3Server,
  tempDir,
  waitFor,
} from "./_helpers.ts";

const COMPONENTS = ["Data.db", "Index.db", "Filter.db", "Statistics.db", "Summary.db", "TOC.txt"];

/** Distinct bytes per name and version, `size` long. */
function bytesOf(name: string, version = 0, size = 300): Uint8Array {
  return contentOf(version === 0 ? name : `${name} version ${version}`, size);
}

/** One SSTable generation, flushed as Cassandra does: components, then the TOC. */
async function flush(dir: string, gen: number): Promise<string[]> {
  const names = COMPONENTS.map((c) => `nb-${gen}-big-${c}`);
  for (const name of names.filter((n) => !n.endsWith("TOC.txt"))) {
    await Deno.writeFile(`${dir}/${name}`, bytesOf(name));
  }
  await Deno.writeTextFile(`${dir}/nb-${gen}-big-TOC.txt`, COMPONENTS.join("\n") + "\n");
  return names;
}

/** Every file under `root`, by path relative to it. */
async function snapshot(root: string, rel = ""): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for await (const entry of Deno.readDir(`${root}${rel}`)) {
    const path = `${rel}/${entry.name}`;
    if (entry.isDirectory) { for (const [p, b] of await snapshot(root, path)) out.set(p, b); }
    else out.set(path, await Deno.readFile(`${root}${path}`));
  }
  return out;
}

function assertSameFiles(got: Map<string, Uint8Array>, want: Map<string, Uint8Array>, at: string) {
  assertEquals([...got.keys()].sort(), [...want.keys()].sort(), `files restored --at ${at}`);
  for (const [path, bytes] of want) assertEquals(got.get(path), bytes, `${path} --at ${at}`);
}

async function indexKeys(s3: S3Server): Promise<string[]> {
  return [...(await bucketKeys(s3)).keys()].filter((k) => k.endsWith("-listdir.json"));
}

/** The superseded copies in the bucket, as `<file name>.superseded-…`. */
async function copies(s3: S3Server): Promise<string[]> {
  return [...(await bucketKeys(s3)).keys()].filter((k) => k.includes(".superseded-")).map((k) =>
    k.replace(/.*\//, "")
  );
}

/**
 * The Python tableslurp's rule for `-r` (its `find_latest_listdirjson_for_every_table`),
 * applied with boto3 (the package itself cannot be installed here): per
 * keyspace/table key directory, the `-listdir.json` keys directly in it
 * (listing order), stably sorted by LastModified, the last one; the names
 * its body lists downloaded from that directory.
 */
const PYTHON_RULE = `
import boto3, json, os, sys
endpoint, bucket, prefix, target = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
tables = {}
for o in objects:
    directory, name = o["Key"].rsplit("/", 1)
    if directory[len(prefix) + 1:].count("/") == 1 and name.endswith("-listdir.json"):
        tables.setdefault(directory, []).append(o)
for directory, keys in tables.items():
    keys.sort(key=lambda o: o["LastModified"])
    body = json.loads(s3.get_object(Bucket=bucket, Key=keys.pop()["Key"])["Body"].read())
    names = next(iter(body.values()))
    local = os.path.join(target, directory[len(prefix) + 1:])
    os.makedirs(local, exist_ok=True)
    for name in names:
        s3.download_file(bucket, directory + "/" + name, os.path.join(local, name))
`;

async function pythonRestore(s3: S3Server, prefix: string, target: string): Promise<void> {
  const out = await new Deno.Command("python3", {
    args: ["-c", PYTHON_RULE, s3.endpoint, s3.bucket, prefix, target],
    env: s3.env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
}

interface Moment {
  what: string;
  at: Date;
  files: Map<string, Uint8Array>;
}

for (const server of ["s3rver", "moto"] as const) {
  const kind = server === "moto" ? "versioned bucket, moto" : "plain bucket, s3rver";
  Deno.test(`every restore point survives rewrites and restores its own bytes (${kind})`, async () => {
    await using s3 = await startS3Server("history", { server });
    if (server === "moto") {
      await s3.client.send(
        new PutBucketVersioningCommand({
          Bucket: s3.bucket,
          VersioningConfiguration: { Status: "Enabled" },
        }),
      );
    }
    await using work = await tempDir();
    const data = `${work.path}/data`;
    const alpha = `${data}/ks1/alpha-aa`;
    const beta = `${data}/ks1/beta-bb`;
    for (const dir of [alpha, beta]) await Deno.mkdir(dir, { recursive: true });
    await using watcher = spawnWatcher(["-n", "h", "-r", s3.bucket, data], { env: s3.env });
    await watcher.waitUntilWatching();

    const moments: Moment[] = [];
    let indexCount = 0;
    /** Waits for `more` new indexes, then notes the moment and the files of then. */
    const settle = async (what: string, more: number) => {
      indexCount += more;
      await waitFor(`${what}: ${indexCount} indexes`, async () => {
        const n = (await indexKeys(s3)).length;
        assert(n <= indexCount, `${n} indexes, expected ${indexCount} (${what})`);
        return n === indexCount;
      }, 30_000).catch((err) => {
        throw new Error(`${err.message}\n--- watcher ---\n${watcher.stderr()}`);
      });
      moments.push({ what, at: new Date(), files: await snapshot(data) });
    };
    const list = async () => {
      const out = await runCli(["list", "-n", "h", "--json", s3.bucket, data], { env: s3.env });
      assertEquals(out.code, 0, out.stderr);
      return out.stdout.trim().split("\n").map((line) => JSON.parse(line));
    };

    await flush(alpha, 1);
    await flush(beta, 1);
    await settle("both tables flushed", 2);
    await flush(alpha, 2);
    await settle("alpha flushed again", 1);
    await flush(beta, 2);
    await settle("beta flushed again", 1);
    // Compaction of beta: the new generation, then its inputs deleted.
    await flush(beta, 3);
    for (const gen of [1, 2]) {
      for (const c of COMPONENTS) await Deno.remove(`${beta}/nb-${gen}-big-${c}`);
    }
    await settle("beta compacted", 1);
    const before = await list();

    // Repair marks alpha's first generation: Statistics.db rewritten through
    // a .tmp and a rename, the same size with other bytes.
    const stats = `${alpha}/nb-1-big-Statistics.db`;
    await Deno.writeFile(`${stats}.tmp`, bytesOf("nb-1-big-Statistics.db", 1));
    await Deno.rename(`${stats}.tmp`, stats);
    await settle("alpha's Statistics.db rewritten", 1);
    // Index summary redistribution rebuilds a Summary.db (another size).
    await Deno.writeFile(`${alpha}/nb-2-big-Summary.db`, bytesOf("nb-2-big-Summary.db", 2, 180));
    await settle("alpha's Summary.db rebuilt", 1);
    assertEquals(await watcher.stop(), 0);

    // Every point listed before the rewrites is still listed, at its own time.
    const after = await list();
    assertEquals(after.length, before.length + 2);
    const timeOf = new Map(after.map((p) => [p.index, p.time]));
    for (const point of before) assertEquals(timeOf.get(point.index), point.time, point.index);
    assert(after.every((p) => p.exact_time && p.complete), JSON.stringify(after));
    const recuts = after.filter((p) => p.index.includes("-recut-")).map((p) => p.index);
    assertEquals(recuts.length, 2, JSON.stringify(after.map((p) => p.index)));
    assert(
      recuts.every((k) => /nb-[12]-big-Data\.db-recut-\d{8}T\d{6}\.\d{3}Z-listdir\.json$/.test(k)),
    );

    // The bucket only gets read from here to the deletion below: the
    // restores, verify and the Python restore run at once.
    await Promise.all([
      // Each moment restores whole, with the bytes of that moment.
      ...moments.map(async (moment, i) => {
        const into = `${work.path}/at-${i}`;
        const at = moment.at.toISOString();
        const out = await runCli(
          ["slurp", "-n", "h", "-r", "--at", at, s3.bucket, data, into],
          { env: s3.env },
        );
        assertEquals(out.code, 0, out.stdout + out.stderr);
        assert(!out.stdout.includes("not restored"), out.stdout);
        assert(!out.stdout.includes("from after their restore point"), out.stdout);
        assertSameFiles(await snapshot(into), moment.files, `${at} (${moment.what})`);
      }),
      // verify checks every point's objects, the superseded copies included.
      (async () => {
        const verified = await runCli(["verify", "-n", "h", "--all", s3.bucket, data], {
          env: s3.env,
        });
        assertEquals(verified.code, 0, verified.stdout + verified.stderr);
        assertStringIncludes(verified.stdout, `Verified ${after.length} indexes`);
      })(),
      // The Python tableslurp's rule finds the newest point of each table.
      (async () => {
        await pythonRestore(s3, `h:${data}`, `${work.path}/python`);
        assertSameFiles(
          await snapshot(`${work.path}/python`),
          moments.at(-1)!.files,
          "newest (Python)",
        );
      })(),
    ]);

    // The bytes the two rewrites replaced, kept for the points cut before them.
    assertEquals((await copies(s3)).map((k) => k.replace(/-\d{8}T.*/, "")).sort(), [
      "nb-1-big-Statistics.db.superseded",
      "nb-2-big-Summary.db.superseded",
    ]);
    // Without a copy (deleted by hand here; the Python tablechop deletes them
    // too), an earlier point's bytes are not in the bucket: verify reports it,
    // and slurp restores the current bytes and says which.
    const statsCopy = [...(await bucketKeys(s3)).keys()].find((k) =>
      k.includes("Statistics.db.superseded-")
    )!;
    await s3.client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: statsCopy }));
    const unverified = await runCli(["verify", "-n", "h", "--all", s3.bucket, data], {
      env: s3.env,
    });
    assertEquals(unverified.code, 1, unverified.stdout + unverified.stderr);
    assertStringIncludes(
      unverified.stdout,
      `PROBLEM h:${alpha}/nb-1-big-Statistics.db: rewritten at`,
    );
    const early = await runCli(
      [
        "slurp",
        "-n",
        "h",
        "-r",
        "--at",
        moments[0]!.at.toISOString(),
        s3.bucket,
        data,
        `${work.path}/e`,
      ],
      { env: s3.env },
    );
    assertEquals(early.code, 0, early.stdout + early.stderr);
    assertStringIncludes(early.stdout, "Restored with bytes from after their restore point (1):");
    assertStringIncludes(
      early.stdout,
      `${work.path}/e/ks1/alpha-aa/nb-1-big-Statistics.db: rewritten at`,
    );

    // chop counts the re-cut indexes like any other and keeps each table's newest.
    const chopped = await runCli(["chop", "-n", "h", s3.bucket, data, "0"], { env: s3.env });
    assertEquals(chopped.code, 0, chopped.stdout + chopped.stderr);
    assertStringIncludes(chopped.stdout, `${after.length} indexes (2 kept)`);
    // The newest points need the current bytes only: the copies went with the older points.
    assertEquals(await copies(s3), []);
    const newest = await runCli(["slurp", "-n", "h", "-r", s3.bucket, data, `${work.path}/n`], {
      env: s3.env,
    });
    assertEquals(newest.code, 0, newest.stdout + newest.stderr);
    assertSameFiles(await snapshot(`${work.path}/n`), moments.at(-1)!.files, "newest after chop");
  });
}
