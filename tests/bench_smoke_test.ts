/**
 * A smoke run of the benchmark (`bench/bench.ts --quick`): it must produce
 * its report with every section and lose no file. No timing thresholds:
 * the full-size figures and their targets live in bench/results/latest.md.
 */
import { assert_ as assert, assertEquals } from "./_assert.ts";
import { REPO, tempDir } from "./_helpers.ts";
import { BENCH_FLAGS } from "./_run_flags.ts";

const BENCH = new URL("../bench/bench.ts", import.meta.url).pathname;

Deno.test("bench --quick writes a report with every section and no missed file", async () => {
  await using scratch = await tempDir("tablesnap-bench-smoke-");
  const out = `${scratch.path}/report.md`;
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...BENCH_FLAGS, BENCH, "--quick", "--out", out, "--tmp", `${scratch.path}/work`],
    cwd: REPO,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(run.stderr);
  assertEquals(run.code, 0, `bench exited with ${run.code}:\n${stderr}`);
  const report = await Deno.readTextFile(out);
  assertEquals(new TextDecoder().decode(run.stdout).trim(), report.trim());
  for (
    const heading of [
      "| Measure | Result | Target | Verdict |",
      "**1. Bulk backup**",
      "**2. Watch latency**",
      "**3. Memory**",
      "**4. Startup reconciliation**",
      "**5. Server limit**",
    ]
  ) {
    assert(report.includes(heading), `report lacks '${heading}':\n${report}`);
  }
  assert(!report.includes("**Error**"), report);
  assert(/\| 2\. Files missed [^|]*\| 0 \|/.test(report), `files were missed:\n${report}`);
  // Every latency row (steady, baseline, burst) ends with its "missed" count.
  const latencyRows = report.split("\n").filter((l) => /^\| (steady|baseline|burst)/.test(l));
  assertEquals(latencyRows.length, 3, report);
  for (const row of latencyRows) assert(row.endsWith("| 0 |"), `missed files: ${row}`);
});
