/**
 * Bad input gets one line naming the problem and a non-zero exit (2 for
 * usage mistakes), never a stack trace. These run the real CLI.
 */
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { runCli, startS3Server, tempDir, trustEnv } from "./_helpers.ts";
import { parseWatchArgs } from "../lib/cli/watch.ts";
import { WATCH_OPTIONS } from "../lib/cli/watch_options.ts";
import { parseSlurpArgs } from "../lib/cli/slurp.ts";
import { VERSION } from "../lib/common/version.ts";

function assertOneLineError(stderr: string, includes: string) {
  const lines = stderr.trim().split("\n");
  assert(lines.length <= 2, `at most an error and a hint, got:\n${stderr}`);
  assertStringIncludes(lines[0]!, includes);
  assert(!/\n\s+at /.test(stderr), `no stack trace:\n${stderr}`);
}

Deno.test("usage mistakes exit 2 with one line naming the problem", async () => {
  await using dir = await tempDir();
  const cases: [string[], string][] = [
    [["--no-such-flag", "b", dir.path], "Unknown option '--no-such-flag'"],
    [["-e", "(unclosed", "b", dir.path], "Invalid regular expression for '--exclude': '(unclosed'"],
    [["-e", "a", "-i", "b", "b", dir.path], "cannot be used together"],
    [["b", `${dir.path}/missing`], `Path '${dir.path}/missing' does not exist`],
    [["-t", "four", "b", dir.path], "Option '--threads' needs a whole number, got 'four'"],
    [
      ["--max-upload-size", "1.5G", "b", dir.path],
      "Option '--max-upload-size' needs a whole number",
    ],
    [
      ["--multipart-chunk-size", "x", "b", dir.path],
      "Option '--multipart-chunk-size' needs a whole number",
    ],
    [
      ["--listen-events", "IN_DELETE", "b", dir.path],
      "takes IN_MOVED_TO, IN_CLOSE_WRITE, IN_CREATE",
    ],
    [["b"], "Missing PATH argument"],
    [[], "Missing BUCKET"],
    [["--once", "b", dir.path], "needs '-B/--backup'"],
    [["--max-bandwidth", "fast", "b", dir.path], "Option '--max-bandwidth' needs a rate"],
    [["-k", "AKIA", "b", dir.path], "go together"],
    [["-t"], "Option '-t, --threads' needs a value"],
  ];
  for (const [args, message] of cases) {
    const { code, stderr } = await runCli(["-n", "h", ...args]);
    assertEquals(code, 2, `${args.join(" ")}: ${stderr}`);
    assertOneLineError(stderr, message);
  }
});

Deno.test("a missing bucket exits 1 with one line, and secrets never reach the output", async () => {
  await using s3 = await startS3Server();
  await using dir = await tempDir();
  const secret = "SuperSecretValue123";
  // Without -B the start-up check (a listing of our prefix) finds it; with -B the startup listing.
  for (const flags of [[], ["-B"], ["-B", "--once"]]) {
    const { code, stderr, stdout } = await runCli(
      ["-n", "h", ...flags, "-k", "S3RVER", "-s", secret, "no-such-bucket", dir.path],
      { env: { ...trustEnv(s3.tls!.caFile), AWS_ENDPOINT_URL_S3: s3.endpoint, TDEBUG: "1" } },
    );
    assertEquals(code, 1, `${flags}: ${stderr}`);
    assertStringIncludes(stderr, "error: Bucket 'no-such-bucket' does not exist");
    assert(!stderr.includes(secret) && !stdout.includes(secret), "the secret was printed");
  }
});

Deno.test("rejected credentials exit 1 with one line (moto checks signatures)", async () => {
  await using s3 = await startS3Server("test-bucket", { server: "moto", auth: true });
  await using dir = await tempDir();
  const { code, stderr } = await runCli(["-n", "h", s3.bucket, dir.path], {
    env: {
      ...s3.env,
      AWS_ACCESS_KEY_ID: "AKIAWRONGWRONGWRONG1",
      AWS_SECRET_ACCESS_KEY: "wrong-secret",
    },
  });
  assertEquals(code, 1, stderr);
  assertOneLineError(stderr, "error: Access to bucket 'test-bucket' denied (HTTP 403)");
  assert(!stderr.includes("wrong-secret"));
});

Deno.test("a missing local store directory exits 1 with one line", async () => {
  await using dir = await tempDir();
  for (const flags of [[], ["-B", "--once"]]) {
    const { code, stderr } = await runCli([
      "-n",
      "h",
      ...flags,
      `file://${dir.path}/nope`,
      dir.path,
    ]);
    assertEquals(code, 1, stderr);
    assertStringIncludes(stderr, `Local store directory '${dir.path}/nope' does not exist`);
  }
  // Never created behind the operator's back.
  await Deno.stat(`${dir.path}/nope`).then(
    () => {
      throw new Error("the missing store directory was created");
    },
    (err) => assert(err instanceof Deno.errors.NotFound),
  );
});

Deno.test("--help and --version print to stdout and exit 0", async () => {
  const help = await runCli(["--help"]);
  assertEquals(help.code, 0);
  // Every option the parser takes is documented: derived from the parser's
  // own table, so a new option cannot be left out of --help unnoticed.
  for (const name of Object.keys(WATCH_OPTIONS)) {
    assertStringIncludes(help.stdout, `--${name}`);
  }
  const version = await runCli(["--version"]);
  assertEquals(version.code, 0);
  assertEquals(version.stdout.trim(), `tablesnap ${VERSION}`);
});

Deno.test("slurp has its own default connections; -t still sets them", () => {
  const defaults = parseSlurpArgs(["-n", "h", "file:///tmp", "/d", "/t"]);
  const four = parseSlurpArgs(["-n", "h", "-t", "4", "file:///tmp", "/d", "/t"]);
  if (defaults === "help" || four === "help") throw new Error("unexpected");
  assertEquals([defaults.threads, four.threads], [16, 4]);
});

Deno.test("parseWatchArgs() keeps the original defaults", async () => {
  await using dir = await tempDir();
  const o = parseWatchArgs(["-n", "h", "file:///tmp", dir.path + "/"]);
  if (typeof o === "string") throw new Error("unexpected");
  assertEquals(o.threads, 4);
  assertEquals(o.retries, 0);
  assertEquals(o.multipartThreshold, 5120 * 1024 * 1024);
  assertEquals(o.partSize, 256 * 1024 * 1024);
  assertEquals([...o.listen].sort(), ["IN_CLOSE_WRITE", "IN_MOVED_TO"]);
  assertEquals(o.naming, { prefix: "", name: "h", separator: ":" });
  assertEquals(o.roots, [dir.path]);
  assertEquals(o.recursive || o.autoAdd || o.backup || o.withoutIndex || o.deleteOnBackup, false);
  assertEquals(o.bucket, "file:///tmp");
  assertEquals(o.maxBandwidth, undefined);
  assertEquals([o.sweepIntervalMs, o.settleMs, o.indexWaitMs, o.shutdownGraceMs], [
    300_000,
    10_000,
    60_000,
    30_000,
  ]);
});
