/**
 * A recurring problem is logged once, then counted: one summary line per
 * period while it recurs, a full line again once it went quiet for a
 * period. Driven by flushing by hand (the period's timer does the same).
 */
import { assertEquals } from "../_assert.ts";
import type { Fields, Level } from "../../lib/common/log.ts";
import { RepeatedLines } from "../../lib/common/log_repeats.ts";

function recorder() {
  const lines: { level: Level; message: string; fields?: Fields }[] = [];
  const repeats = new RepeatedLines(
    (level, message, fields) => lines.push({ level, message, ...(fields ? { fields } : {}) }),
    60_000,
  );
  return { lines, repeats };
}

Deno.test("a problem repeated 3,000 times in a period writes two lines", () => {
  const { lines, repeats } = recorder();
  for (let i = 0; i < 3_000; i++) {
    repeats.report("index check /d/nb-1-big-Data.db", "error", "index check failed", { n: i });
  }
  assertEquals(lines.length, 1);
  assertEquals(lines[0]!.fields, { n: 0 });
  repeats.flush();
  assertEquals(lines.length, 2);
  assertEquals(lines[1]!.message, "index check failed (repeated)");
  assertEquals(lines[1]!.fields, { n: 2_999, repeats: 2_999, in_seconds: 60 });
  assertEquals(repeats.suppressed, 2_999);
  repeats.stop();
});

Deno.test("a problem that recurs for ten periods writes one line per period", () => {
  const { lines, repeats } = recorder();
  for (let period = 0; period < 10; period++) {
    for (let i = 0; i < 100; i++) repeats.report("k", "warn", "upload failed, retrying");
    repeats.flush();
  }
  assertEquals(lines.length, 11); // the first occurrence, then one summary per period
  repeats.stop();
});

Deno.test("a problem quiet for a period is logged in full when it comes back", () => {
  const { lines, repeats } = recorder();
  repeats.report("k", "warn", "m");
  repeats.flush(); // nothing repeated: forgotten
  repeats.report("k", "warn", "m");
  assertEquals(lines.map((l) => l.message), ["m", "m"]);
  repeats.stop();
});

Deno.test("different problems are logged separately, and the memory of them is bounded", () => {
  const { lines, repeats } = recorder();
  for (let i = 0; i < 2_500; i++) repeats.report(`k${i}`, "warn", "m");
  assertEquals(lines.length, 2_500);
  repeats.report("k2499", "warn", "m");
  assertEquals(lines.length, 2_500, "still remembered");
  repeats.flush(true);
  repeats.report("k2499", "warn", "m");
  assertEquals(lines.length, 2_502); // its summary, then itself again
  repeats.stop();
});
