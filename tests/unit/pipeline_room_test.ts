/**
 * The pipeline's room (lib/watch/upload/pipeline.ts): a sweep waits while
 * 2,000 files are queued, so a tree of any size is never queued all at once.
 */
import { assert, assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { LocalStore } from "../../lib/store/local_store.ts";
import { testPipeline } from "../_pipeline.ts";

/** A local store whose listings wait until `open()`. */
class GatedStore extends LocalStore {
  #gate = Promise.withResolvers<void>();
  open(): void {
    this.#gate.resolve();
  }
  override async *list(prefix: string, options?: { delimiter?: string }) {
    await this.#gate.promise;
    yield* super.list(prefix, options);
  }
}

Deno.test("the pipeline has room until 2,000 files are queued, and again once half are taken", async () => {
  await using bucket = await tempDir("tablesnap-store-");
  await using data = await tempDir();
  const store = new GatedStore(bucket.path);
  const pipeline = testPipeline(store, { threads: 1 });
  // The one upload slot waits on the gated listing; what follows stays queued.
  await Deno.writeTextFile(`${data.path}/first`, "x");
  pipeline.enqueue(`${data.path}/first`);
  for (let i = 0; i < 1999; i++) pipeline.enqueue(`${data.path}/gone-${i}`);
  assertEquals(pipeline.ledger.count("queued"), 1999);
  assertEquals(pipeline.room(), undefined);
  pipeline.enqueue(`${data.path}/gone-1999`);
  const room = pipeline.room();
  assert(room !== undefined, "no room at 2,000 queued");
  let roomy = false;
  room.then(() => roomy = true);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert(!roomy, "room while the queue is still full");
  store.open();
  await room;
  assert(pipeline.ledger.count("queued") <= 1000, `${pipeline.ledger.count("queued")} queued`);
  await pipeline.idle();
  assertEquals(pipeline.room(), undefined);
  await pipeline.shutdown(0);
});

Deno.test("a pipeline that stops taking work lets a waiting sweep go", async () => {
  await using bucket = await tempDir("tablesnap-store-");
  await using data = await tempDir();
  const store = new GatedStore(bucket.path);
  const pipeline = testPipeline(store, { threads: 1 });
  await Deno.writeTextFile(`${data.path}/first`, "x");
  pipeline.enqueue(`${data.path}/first`);
  for (let i = 0; i < 2000; i++) pipeline.enqueue(`${data.path}/gone-${i}`);
  const room = pipeline.room();
  assert(room !== undefined);
  const stopping = pipeline.shutdown(60_000);
  await room; // would wait for the gated upload without the shutdown's wake-up
  assertEquals(pipeline.room(), undefined);
  store.open();
  await stopping;
});
