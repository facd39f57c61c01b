/**
 * The upload pipeline's cycles (lib/watch/upload/pipeline.ts) on a fake
 * clock: 1 + --retries attempts a cycle, a failed file waits (5 s doubling,
 * half jitter) and is tried again, never dropped; a new fact about it tries
 * at once. Real files, a local store that is down until the test says.
 */
import { assert, assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { LocalStore } from "../../lib/store/local_store.ts";
import { Ledger } from "../../lib/watch/ledger.ts";
import { testPipeline } from "../_pipeline.ts";
import { FakeClock, settle } from "./_fake_clock.ts";

/** A local store whose first request of each upload (the listing) fails while `down`. */
class FlakyStore extends LocalStore {
  down = true;
  attempts = 0;
  override list(prefix: string, options?: { delimiter?: string }) {
    this.attempts++;
    if (this.down) throw new Error("connect ECONNREFUSED");
    return super.list(prefix, options);
  }
}

async function setup(retries: number) {
  const bucket = await tempDir("tablesnap-store-");
  const data = await tempDir();
  const clock = new FakeClock();
  const store = new FlakyStore(bucket.path);
  const ledger = new Ledger();
  const pipeline = testPipeline(store, { retries, ledger, clock });
  const path = `${data.path}/nb-1-big-Index.db`;
  await Deno.writeTextFile(path, "index");
  return {
    clock,
    store,
    ledger,
    pipeline,
    path,
    async [Symbol.asyncDispose]() {
      await pipeline.shutdown(0);
      await data[Symbol.asyncDispose]();
      await bucket[Symbol.asyncDispose]();
    },
  };
}

Deno.test("a failing file waits between cycles, doubling, and lands once the store is back", async () => {
  await using t = await setup(1);
  /** The wait until the next timer, checked to lie in [min, max]. */
  const nextWait = (what: string, min: number, max: number) => {
    const wait = t.clock.nextAt()! - t.clock.now();
    assert(wait >= min && wait <= max, `${what}: ${wait} ms not in [${min}, ${max}]`);
    return wait;
  };
  /** Moves to just before the next timer (nothing happens), then onto it. */
  const passWait = async (what: string, min: number, max: number) => {
    const wait = nextWait(what, min, max);
    const before = t.store.attempts;
    await t.clock.advance(wait - 1);
    assertEquals(t.store.attempts, before, `${what}: no attempt before the wait is over`);
    await t.clock.advance(1);
  };
  t.pipeline.enqueue(t.path);
  await settle();
  assertEquals(t.store.attempts, 1, "the first attempt");
  await passWait("the attempt backoff", 250, 500);
  assertEquals(t.store.attempts, 2, "the cycle's second attempt");
  assertEquals(t.pipeline.failedPaths(), [t.path]);
  assertEquals(t.ledger.get(t.path)?.state, "retrying");
  // Never dropped, never early: 2.5-5 s, then the cycle's two attempts again.
  await passWait("the first cycle wait", 2_500, 5_000);
  assertEquals(t.store.attempts, 3);
  await passWait("the attempt backoff", 250, 500);
  assertEquals(t.store.attempts, 4, "the second cycle, both attempts");
  assertEquals(t.ledger.get(t.path)?.failedCycles, 2);
  // Doubled: 5-10 s.
  const wait = nextWait("the doubled cycle wait", 5_000, 10_000);
  await t.clock.advance(wait - 1);
  assertEquals(t.store.attempts, 4, "the doubled wait holds");
  t.store.down = false;
  await t.clock.advance(1);
  await t.pipeline.idle();
  assert(t.ledger.isStored(t.path), "uploaded once the store is back");
  assertEquals(t.pipeline.failedPaths(), []);
  assertEquals(t.ledger.get(t.path)?.failedCycles, 0);
  assertEquals(t.clock.pending, 0, "no timer left behind");
});

Deno.test("a new fact about a retrying file tries it at once, and cancels its timer", async () => {
  await using t = await setup(0);
  t.pipeline.enqueue(t.path);
  await settle();
  assertEquals(t.pipeline.failedPaths(), [t.path]);
  assertEquals(t.clock.pending, 1, "the next cycle's timer");
  t.store.down = false;
  t.pipeline.enqueue(t.path); // complete again (a sweep, an event)
  await t.pipeline.idle();
  assert(t.ledger.isStored(t.path));
  assertEquals(t.store.attempts, 2);
  assertEquals(t.clock.pending, 0, "the overtaken timer is cleared");
  await t.clock.advance(600_000);
  assertEquals(t.store.attempts, 2, "and never fires");
});

Deno.test("shutdown keeps a retrying file pending and waits out the grace on the clock", async () => {
  await using t = await setup(0);
  const events: string[] = [];
  t.ledger.subscribe((e) => events.push(e.type));
  t.pipeline.enqueue(t.path);
  await settle();
  assertEquals(await t.pipeline.shutdown(10_000), [t.path]);
  assert(!events.includes("released"), "not released: the journal keeps it for the next start");
  assertEquals(t.clock.pending, 0);
});
