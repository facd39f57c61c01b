/**
 * Bucket bytes never reach an operator's terminal raw. A bucket any agent
 * host can write to holds an index entry, a TOC.txt, metadata and a key
 * carrying terminal escapes (`ESC ] 0 ; ... BEL` retitles the window,
 * `ESC [ 2 J` and the one-byte CSI 0x9b clear the screen, DEL); every job's
 * human output, `--json` output and log lines are grepped for those bytes.
 */
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { localStore, localWriter, NAMING, putFile, putIndex, statJson } from "./_bucket_fixture.ts";
import { type CliResult, runCli, tempDir } from "./_helpers.ts";

/** Bytes 0x00-0x1f but newline and tab, 0x7f, and C1 controls (0x9b among them). */
// deno-lint-ignore no-control-regex
const FORBIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

const TITLE = "\x1b]0;PWNED\x07";
const CLEAR = "\x1b[2J";
const CSI = "\u009b2J";

function assertClean(what: string, out: CliResult): void {
  for (const [stream, text] of [["stdout", out.stdout], ["stderr", out.stderr]]) {
    const at = text!.search(FORBIDDEN);
    assert(
      at < 0,
      `${what} ${stream}: control byte 0x${text!.charCodeAt(at).toString(16)} at ${at}: ${
        JSON.stringify(text)
      }`,
    );
  }
}

Deno.test("slurp, slurp --plan, list, list --json, verify and chop print bucket text escaped", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const writer = localWriter(store);
  const table = "/data/ks/t-1";
  const names = [
    "nb-1-big-Data.db",
    "nb-1-big-TOC.txt",
    `nb-1-big-${TITLE}Index.db`,
    `nb-1-big-Filter${CLEAR}.db`, // named by the index, missing from the bucket
  ];
  const toc = ["Data.db", "TOC.txt", `${TITLE}Index.db`, `Summary${CSI}.db`, "Stats\x7f.db"];
  const hostileStat = statJson(0o100644, 999, 999, `u${CLEAR}`);
  for (const name of names.slice(0, 3)) {
    const body = name.endsWith("TOC.txt")
      ? new TextEncoder().encode(toc.join("\n") + "\n")
      : new TextEncoder().encode(`bytes of ${name}`);
    await putFile(writer, `${table}/${name}`, body, { stat: hostileStat });
  }
  await putIndex(writer, `${table}/nb-1-big-Data.db`, names);
  // A key of another host's, with an escape in the directory part.
  await putFile(writer, `/data/ks/t${CLEAR}-2/nb-2-big-Data.db`, new Uint8Array(3));
  await putIndex(writer, `/data/ks/t${CLEAR}-2/nb-2-big-Data.db`, ["nb-2-big-Data.db"]);

  const bucket = `file://${store.root}`;
  const host = ["-n", NAMING.name];
  const runs: [string, string[]][] = [
    ["slurp --plan", ["slurp", "--plan", ...host, bucket, table, `${dir.path}/plan`]],
    ["slurp", ["slurp", ...host, bucket, table, `${dir.path}/restored`]],
    ["slurp -r", ["slurp", "-r", ...host, bucket, "/data/ks", `${dir.path}/restored-r`]],
    ["list", ["list", ...host, bucket, "/data/ks"]],
    ["list --json", ["list", "--json", ...host, bucket, "/data/ks"]],
    ["verify", ["verify", ...host, bucket, "/data/ks"]],
    ["verify --json", ["verify", "--json", ...host, bucket, "/data/ks"]],
    ["chop -d -l", ["chop", "-d", "-l", ...host, bucket, "/data/ks", "0"]],
  ];
  let printed = 0;
  for (const [what, args] of runs) {
    const out = await runCli(args);
    assertClean(what, out);
    printed += out.stdout.length + out.stderr.length;
    if (what === "slurp --plan") {
      // The index entry is shown, escaped; the TOC, which lists no component names, is
      // said to be unreadable (its generation unchecked).
      assertStringIncludes(out.stdout, "\\x1b]0;PWNED\\x07Index.db");
      assertStringIncludes(out.stderr, "TOC.txt unreadable");
    }
    if (what === "list --json" || what === "verify --json") {
      for (const line of out.stdout.trim().split("\n")) JSON.parse(line); // still JSON
      assertStringIncludes(out.stdout, "\\u001b[2J");
    }
  }
  assert(printed > 500, `the jobs printed ${printed} characters`);
});

Deno.test("an error text quoting a hostile key is one escaped line", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const table = `/data/ks/t${CLEAR}-1`;
  await putIndex(localWriter(store), `${table}/nb-1-big-Data.db`, `{"${table}": [1, 2]}`);
  const out = await runCli(["slurp", "-n", NAMING.name, `file://${store.root}`, table, dir.path]);
  assertEquals(out.code, 1);
  assertClean("slurp of a malformed index", out);
  assertEquals(out.stderr.trim().split("\n").length, 1, out.stderr);
  assertStringIncludes(out.stderr, "\\x1b[2J");
});

Deno.test("the watcher's plain and JSON logs name odd files escaped", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const data = `${dir.path}/data`;
  await Deno.mkdir(data);
  for (const name of [`a${TITLE}`, `b${CLEAR}`, `c${CSI}`, "d\x7f", "e\nINFO forged", "ok"]) {
    await Deno.writeTextFile(`${data}/${name}`, "x");
  }
  for (const format of ["plain", "json"]) {
    const out = await runCli(
      ["-B", "--once", "--log-format", format, "-n", "h", `file://${store.root}`, data],
      { env: { TDEBUG: "1" } },
    );
    assertEquals(out.code, 0, out.stderr);
    assertClean(`watcher --log-format ${format}`, out);
    const lines = out.stderr.trim().split("\n");
    assertEquals(lines.filter((l) => l.includes("skipped, never read")).length, 5, out.stderr);
    assert(!lines.some((l) => /^\S* ?INFO forged/.test(l)), "no forged line");
    if (format === "json") { for (const line of lines) JSON.parse(line); }
  }
});
