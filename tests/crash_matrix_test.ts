/**
 * The SIGKILL matrix (tests/_crash_matrix.ts) at a few points; the full
 * twenty-point run is `deno task bench --only crash`. The seed is printed:
 * `TABLESNAP_CRASH_SEED=N` replays a run.
 */
import { assertEquals } from "./_assert.ts";
import { describeFigures, runCrashMatrix } from "./_crash_matrix.ts";

Deno.test("SIGKILL at random points with restarts without -B: every file lands exact, no upload left", async () => {
  const seed = Number(Deno.env.get("TABLESNAP_CRASH_SEED") ?? Math.floor(Math.random() * 1e9));
  console.log(`crash matrix seed ${seed} (TABLESNAP_CRASH_SEED=${seed} replays it)`);
  const verbose = Deno.env.get("TABLESNAP_CRASH_VERBOSE") === "1";
  const figures = await runCrashMatrix({
    seed,
    kills: 3,
    steps: 8,
    bigFiles: 1,
    verbose,
    log: (line) => verbose && console.log(line),
  });
  console.log(describeFigures(figures));
  assertEquals(figures.mismatches, [], describeFigures(figures));
  assertEquals(figures.incompleteUploads, 0);
  assertEquals(figures.files > 10, true, `files: ${figures.files}`);
});

Deno.test("the SIGKILL matrix with --pin: every file lands exact, no upload or pin left", async () => {
  const seed = Number(Deno.env.get("TABLESNAP_CRASH_SEED") ?? Math.floor(Math.random() * 1e9));
  console.log(`crash matrix (--pin) seed ${seed} (TABLESNAP_CRASH_SEED=${seed} replays it)`);
  const verbose = Deno.env.get("TABLESNAP_CRASH_VERBOSE") === "1";
  const figures = await runCrashMatrix({
    seed,
    kills: 3,
    steps: 8,
    bigFiles: 1,
    pin: true,
    verbose,
    log: (line) => verbose && console.log(line),
  });
  console.log(describeFigures(figures));
  assertEquals(figures.mismatches, [], describeFigures(figures));
  assertEquals(figures.incompleteUploads, 0);
  assertEquals(figures.pinsLeft, 0, "pins left once idle");
  assertEquals(figures.files > 10, true, `files: ${figures.files}`);
});
