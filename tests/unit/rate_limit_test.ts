/**
 * --max-bandwidth's token bucket and the store wrapper that applies it
 * (lib/store/rate_limit.ts), on a fake clock: time passes only when the
 * limiter sleeps or the test says so.
 */
import { assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { md5Hex } from "../../lib/common/digest.ts";
import { LocalStore } from "../../lib/store/local_store.ts";
import { RateLimitedStore, RateLimiter } from "../../lib/store/rate_limit.ts";

function fakeClock() {
  const clock = {
    now: 0,
    slept: [] as number[],
    read: () => clock.now,
    sleep: (ms: number) => {
      clock.slept.push(ms);
      clock.now += ms;
      return Promise.resolve();
    },
  };
  return clock;
}

Deno.test("RateLimiter holds a stream of takes to its rate, from an empty bucket", async () => {
  const clock = fakeClock();
  const limiter = new RateLimiter(1000, { now: clock.read, sleep: clock.sleep });
  for (let i = 0; i < 10; i++) await limiter.take(500);
  // 5,000 bytes at 1,000 B/s take 5 s however they are cut.
  assertEquals(clock.now, 5_000);
  assertEquals(clock.slept.length, 10);
});

Deno.test("RateLimiter lets idle time refill at most one second's worth", async () => {
  const clock = fakeClock();
  const limiter = new RateLimiter(1000, { now: clock.read, sleep: clock.sleep });
  clock.now += 60_000; // a minute idle banks only 1 s of tokens
  await limiter.take(1000);
  assertEquals(clock.slept, []);
  await limiter.take(1000);
  assertEquals(clock.slept, [1000]);
});

Deno.test("RateLimiter serves callers in order, whoever asks", async () => {
  const clock = fakeClock();
  const limiter = new RateLimiter(100, { now: clock.read, sleep: clock.sleep });
  const done: string[] = [];
  await Promise.all(["a", "b", "c"].map((name) => limiter.take(100).then(() => done.push(name))));
  assertEquals(done, ["a", "b", "c"]);
  assertEquals(clock.now, 3_000);
});

Deno.test("RateLimitedStore counts every byte of file uploads, and only those", async () => {
  await using storeDir = await tempDir("tablesnap-store-");
  await using data = await tempDir();
  const clock = fakeClock();
  const limiter = new RateLimiter(1024, { now: clock.read, sleep: clock.sleep });
  const store = new RateLimitedStore(new LocalStore(storeDir.path), limiter);
  const bytes = new Uint8Array(4096).fill(7);
  await Deno.writeFile(`${data.path}/f`, bytes);
  const md5 = md5Hex(bytes);
  await store.putFile("k/streamed", { path: `${data.path}/f`, size: 4096, md5, metadata: {} });
  assertEquals(clock.now, 4_000, "4 KiB streamed at 1 KiB/s");
  await store.putFile("k/buffered", {
    path: `${data.path}/f`,
    size: 4096,
    md5,
    metadata: {},
    body: bytes,
  });
  assertEquals(clock.now, 8_000, "4 KiB from memory at 1 KiB/s");
  await store.putBytes("k/index", bytes, {});
  assertEquals(clock.now, 8_000, "indexes are not file uploads");
  assertEquals((await store.head("k/streamed"))?.size, 4096);
  store.close();
});
