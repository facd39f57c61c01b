/** The one retry policy (lib/common/retry.ts), with a recorded sleep instead of real waits. */
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { backoffMs, retry, sleep } from "../../lib/common/retry.ts";

Deno.test("backoffMs() doubles from firstMs up to maxMs, then applies its jitter", () => {
  const b = { firstMs: 500, maxMs: 4_000, jitter: "none" } as const;
  assertEquals([1, 2, 3, 4, 5, 9].map((n) => backoffMs(b, n)), [500, 1000, 2000, 4000, 4000, 4000]);
  const half = { ...b, jitter: "half" } as const;
  assertEquals(backoffMs(half, 3, () => 0), 1000);
  assertEquals(backoffMs(half, 3, () => 1), 2000);
  const full = { ...b, jitter: "full" } as const;
  assertEquals(backoffMs(full, 2, () => 0), 0);
  assertEquals(backoffMs(full, 2, () => 0.5), 500);
});

Deno.test("retry() retries retryable errors with growing waits, then throws the last", async () => {
  const waits: number[] = [];
  let calls = 0;
  const err = await assertRejects(() =>
    retry(() => {
      calls++;
      return Promise.reject(new Error(`failure ${calls}`));
    }, {
      attempts: 4,
      backoff: { firstMs: 100, maxMs: 1_000, jitter: "none" },
      sleep: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
    })
  );
  assertEquals(calls, 4);
  assertEquals(waits, [100, 200, 400]);
  assertEquals(err.message, "failure 4");
});

Deno.test("retry() returns the first success and tells onRetry of each failure", async () => {
  const told: [string, number, number][] = [];
  const value = await retry((attempt) => {
    if (attempt < 3) return Promise.reject(new Error(`no ${attempt}`));
    return Promise.resolve(attempt * 10);
  }, {
    attempts: 5,
    backoff: { firstMs: 10, maxMs: 10, jitter: "none" },
    sleep: () => Promise.resolve(),
    onRetry: (err, attempt, ms) => told.push([(err as Error).message, attempt, ms]),
  });
  assertEquals(value, 30);
  assertEquals(told, [["no 1", 1, 10], ["no 2", 2, 10]]);
});

Deno.test("retry() does not retry what isRetryable refuses, nor after the signal is aborted", async () => {
  let calls = 0;
  const noWait = { sleep: () => Promise.resolve() };
  await assertRejects(() =>
    retry(() => {
      calls++;
      return Promise.reject(new TypeError("permanent"));
    }, {
      attempts: 5,
      backoff: { firstMs: 1, maxMs: 1, jitter: "none" },
      isRetryable: (err) => !(err instanceof TypeError),
      ...noWait,
    })
  );
  assertEquals(calls, 1);

  const abort = new AbortController();
  calls = 0;
  await assertRejects(() =>
    retry(() => {
      calls++;
      abort.abort();
      return Promise.reject(new Error("during shutdown"));
    }, {
      attempts: 5,
      backoff: { firstMs: 1, maxMs: 1, jitter: "none" },
      signal: abort.signal,
      ...noWait,
    })
  );
  assertEquals(calls, 1);
});

Deno.test("sleep() ends early when its signal is aborted", async () => {
  const abort = new AbortController();
  const started = performance.now();
  const waiting = sleep(10_000, abort.signal);
  abort.abort();
  await waiting;
  assert(performance.now() - started < 1_000);
});
