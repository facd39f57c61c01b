/**
 * The upload pipeline on its own, with the local-directory store and real
 * files: what it remembers about stored files must not grow without end in
 * a watcher that runs for months while compaction deletes files.
 */
import { assert, assertEquals } from "../_assert.ts";
import { tempDir, waitFor } from "../_helpers.ts";
import { LocalStore } from "../../lib/store/local_store.ts";
import { testPipeline } from "../_pipeline.ts";

Deno.test("stored files that were deleted locally are forgotten as new ones arrive", async () => {
  await using store = await tempDir("tablesnap-store-");
  await using data = await tempDir();
  const pipeline = testPipeline(new LocalStore(store.path), { threads: 4, pruneStoredAfter: 20 });
  const upload = async (from: number, to: number) => {
    for (let i = from; i < to; i++) {
      await Deno.writeTextFile(`${data.path}/f${i}`, `file ${i}`);
      pipeline.enqueue(`${data.path}/f${i}`);
    }
    await pipeline.idle();
  };
  // Compaction: the first 15 files are replaced by newer ones.
  await upload(0, 15);
  for (let i = 0; i < 15; i++) await Deno.remove(`${data.path}/f${i}`);
  await upload(15, 25);
  await waitFor("pruning", () => pipeline.ledger.storedCount() < 25);
  assertEquals(pipeline.ledger.storedCount(), 10, "only the files still on disk are remembered");
  assertEquals(pipeline.summary.uploaded, 25);
  for (let i = 15; i < 25; i++) assert(pipeline.ledger.isStored(`${data.path}/f${i}`), `f${i}`);
  assert(!pipeline.ledger.isStored(`${data.path}/f0`));
});
