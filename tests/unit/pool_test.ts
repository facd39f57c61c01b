import { assertEquals } from "../_assert.ts";
import { forEachLimited } from "../../lib/common/pool.ts";

Deno.test("forEachLimited runs every item, in list order, never more than the limit at once", async () => {
  let running = 0;
  let most = 0;
  const started: number[] = [];
  await forEachLimited([...Array(10).keys()], 3, async (item) => {
    started.push(item);
    most = Math.max(most, ++running);
    await new Promise((resolve) => setTimeout(resolve, item % 2 ? 5 : 1));
    running--;
  });
  assertEquals(started, [...Array(10).keys()]);
  assertEquals(most, 3);
  let calls = 0;
  await forEachLimited([], 0, () => Promise.resolve(void calls++));
  assertEquals(calls, 0);
});
