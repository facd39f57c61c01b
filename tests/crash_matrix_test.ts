/**
 * The SIGKILL matrix (tests/_crash_matrix.ts) at a few points, without and
 * with `--pin`; the full twenty-point run is `deno task bench --only crash`
 * (`--crash-pin` for pinning). The seed is printed:
 * `TABLESNAP_CRASH_SEED=N` replays a run.
 */
import { assertEquals } from "./_assert.ts";
import { describeFigures, runCrashMatrix } from "./_crash_matrix.ts";

async function crashAtThreePoints(pin: boolean): Promise<void> {
  const seed = Number(Deno.env.get("TABLESNAP_CRASH_SEED") ?? Math.floor(Math.random() * 1e9));
  const what = pin ? "crash matrix (--pin)" : "crash matrix";
  console.log(`${what} seed ${seed} (TABLESNAP_CRASH_SEED=${seed} replays it)`);
  const verbose = Deno.env.get("TABLESNAP_CRASH_VERBOSE") === "1";
  const figures = await runCrashMatrix({
    seed,
    kills: 3,
    steps: 8,
    bigFiles: 1,
    pin,
    verbose,
    log: (line) => verbose && console.log(line),
  });
  console.log(describeFigures(figures));
  assertEquals(figures.mismatches, [], describeFigures(figures));
  assertEquals(figures.incompleteUploads, 0);
  assertEquals(figures.pinsLeft, 0, "pins left once idle");
  assertEquals(figures.files > 10, true, `files: ${figures.files}`);
}

Deno.test("SIGKILL at random points with restarts without -B: every file lands exact, no upload left", async () => {
  await crashAtThreePoints(false);
});

Deno.test("the SIGKILL matrix with --pin: every file lands exact, no upload or pin left", async () => {
  await crashAtThreePoints(true);
});
