/**
 * Reconciliation at start and the checkpoint scans that follow
 * (lib/watch/durable/durable_state.ts) on a fake clock: the first checkpoint
 * is the start; each scan queues what changed and moves the checkpoint to
 * when it began, unless a file still being written holds it back.
 */
import { assert, assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { LocalStore } from "../../lib/store/local_store.ts";
import { FileWatcher } from "../../lib/watch/detect/file_watcher.ts";
import { makePathFilter } from "../../lib/watch/detect/path_filter.ts";
import { LISTEN_EVENTS } from "../../lib/watch/detect/watch_rules.ts";
import { DurableState } from "../../lib/watch/durable/durable_state.ts";
import { Ledger } from "../../lib/watch/ledger.ts";
import { TEST_NAMING, testPipeline } from "../_pipeline.ts";
import { FakeClock } from "./_fake_clock.ts";

const SETTLE_MS = 120_000;
const SCAN_EVERY_MS = 60_000;

Deno.test("checkpoint scans queue what changed and hold the checkpoint for files being written", async () => {
  await using root = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  await using stateDir = await tempDir("tablesnap-state-");
  const clock = new FakeClock();
  const started = clock.now();
  const filter = makePathFilter({});
  const store = new LocalStore(bucket.path);
  const ledger = new Ledger();
  const state = await DurableState.open(stateDir.path, clock);
  state.journal.follow(ledger);
  const pipeline = testPipeline(store, { ledger, journal: state.journal, clock });
  const options = {
    roots: [root.path],
    recursive: true,
    autoAdd: true,
    filter,
    settleMs: SETTLE_MS,
  };
  const watcher = new FileWatcher({
    ...options,
    listen: new Set(LISTEN_EVENTS),
    onComplete: (path) => pipeline.enqueue(path),
    isHandled: (path, info) => ledger.handles(path, info.size, info.mtime?.getTime() ?? 0),
    includeExisting: true,
    sweepIntervalMs: 0,
    clock,
  });
  /** Writes `name`, last modified `agoMs` before the fake now. */
  const write = async (name: string, agoMs = 0) => {
    const path = `${root.path}/${name}`;
    await Deno.writeTextFile(path, name);
    const mtime = new Date(clock.now() - agoMs);
    await Deno.utime(path, mtime, mtime);
    return path;
  };
  const old = await write("nb-1-big-Data.db", 3_600_000);
  await watcher.prepare();
  await state.reconcile({
    ...options,
    store,
    naming: TEST_NAMING,
    once: false,
    pipeline,
    ledger,
    indexing: false,
    watcher,
    backup: false,
    sweepIntervalMs: SCAN_EVERY_MS,
    threads: 2,
  });
  await pipeline.idle();
  assert(ledger.isStored(old), "a fresh journal reconciles the whole tree");
  assertEquals(state.journal.checkpointTime, started, "the first checkpoint is the start");

  // Written after the start (its ctime), settled by the next scan.
  const settled = await write("nb-1-big-Index.db", SETTLE_MS);
  await clock.advance(SCAN_EVERY_MS);
  await state.checkpointScan();
  await pipeline.idle();
  assert(ledger.isStored(settled), "the scan queued the changed file");
  assertEquals(state.journal.checkpointTime, started + SCAN_EVERY_MS, "moved to the scan's start");

  // Still being written at the next scan: neither queued nor covered.
  const writing = await write("nb-1-big-Summary.db");
  await clock.advance(SCAN_EVERY_MS);
  await state.checkpointScan();
  assert(!ledger.isPending(writing) && !ledger.isStored(writing), "not settled: not queued");
  assertEquals(state.journal.checkpointTime, started + SCAN_EVERY_MS, "held back by it");

  // Settled by the one after: queued, and the checkpoint moves on.
  await clock.advance(SCAN_EVERY_MS);
  await state.checkpointScan();
  await pipeline.idle();
  assert(ledger.isStored(writing));
  assertEquals(state.journal.checkpointTime, started + 3 * SCAN_EVERY_MS);

  await state.stop();
  await watcher.close();
  await pipeline.shutdown(0);
  await state.close();
  assertEquals(clock.pending, 0, "no scan timer left after stop");
});
