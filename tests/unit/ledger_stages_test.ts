/**
 * The ledger's stages (lib/watch/ledger.ts) and what follows them: a file
 * rests held while its index is pending and is released when the index
 * settles; the journal writes `done` and pins let go only then, once.
 */
import { assert, assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { Journal } from "../../lib/watch/durable/journal.ts";
import { JOURNAL_FILE, parseJournal } from "../../lib/watch/durable/journal_format.ts";
import { Pins } from "../../lib/watch/keepers/pins.ts";
import { type IndexRecord, Ledger, type LedgerEvent } from "../../lib/watch/ledger.ts";

/** An index record with nothing looked at yet (the publisher fills these in). */
function indexRecord(dataPath: string): IndexRecord {
  const directory = dataPath.slice(0, dataPath.lastIndexOf("/"));
  return {
    dataPath,
    directory,
    prefix: "nb-1-big-",
    backlog: false,
    checkedAt: 0,
    deadline: 0,
    seen: new Set(),
    changedAt: 0,
    failures: 0,
    notBefore: 0,
    awaiting: null,
    frozen: null,
  };
}

/** A ledger whose events are recorded as `type path` strings. */
function recordedLedger(): { ledger: Ledger; events: string[] } {
  const ledger = new Ledger();
  const events: string[] = [];
  const name = (e: LedgerEvent) => "path" in e ? e.path : e.dataPath;
  ledger.subscribe((e) => events.push(`${e.type} ${name(e)}`));
  return { ledger, events };
}

/** Moves a file through one upload that stores it. */
function upload(ledger: Ledger, path: string, outcome: "uploaded" | "present" = "uploaded") {
  const record = ledger.getOrCreate(path);
  ledger.move(record, "queued");
  ledger.move(record, "uploading");
  ledger.stored(record, { size: 1, mtimeMs: 1 }, outcome);
  return record;
}

Deno.test("a file without a pending index is released as it comes to rest", () => {
  const { ledger, events } = recordedLedger();
  const record = upload(ledger, "/d/nb-1-big-Index.db");
  ledger.move(record, "resting");
  assertEquals(events, [
    "pending /d/nb-1-big-Index.db",
    "stored /d/nb-1-big-Index.db",
    "released /d/nb-1-big-Index.db",
  ]);
  assert(!ledger.isHeld("/d/nb-1-big-Index.db"));
});

Deno.test("a Data.db rests held while its index is pending, released once when it settles", () => {
  const { ledger, events } = recordedLedger();
  const data = "/d/nb-1-big-Data.db";
  const record = upload(ledger, data);
  ledger.requestIndex(indexRecord(data));
  ledger.move(record, "resting");
  assert(ledger.isHeld(data));
  assert(ledger.hasIndexIn("/d"));
  ledger.settleIndex(data, { written: true, complete: true });
  ledger.settleIndex(data, { written: true, complete: true }); // a second settle is nothing
  assertEquals(events.slice(2), [
    "index-requested /d/nb-1-big-Data.db",
    "held /d/nb-1-big-Data.db",
    "index-settled /d/nb-1-big-Data.db",
    "released /d/nb-1-big-Data.db",
  ]);
  assert(!ledger.isHeld(data));
  assert(!ledger.hasIndexIn("/d"));
});

Deno.test("an index written before its Data.db rests: the file is released at rest", () => {
  const { ledger, events } = recordedLedger();
  const data = "/d/nb-1-big-Data.db";
  const record = upload(ledger, data);
  ledger.requestIndex(indexRecord(data));
  ledger.settleIndex(data, { written: true, complete: true });
  ledger.move(record, "resting");
  assertEquals(events.slice(-2), [
    "index-settled /d/nb-1-big-Data.db",
    "released /d/nb-1-big-Data.db",
  ]);
});

Deno.test("a held file queued again is pending, not held; shutdown releases nothing", () => {
  const { ledger, events } = recordedLedger();
  const data = "/d/nb-1-big-Data.db";
  const record = upload(ledger, data);
  ledger.requestIndex(indexRecord(data));
  ledger.move(record, "resting");
  ledger.move(record, "queued"); // complete again (a rewrite)
  assert(!ledger.isHeld(data));
  ledger.move(record, "resting", { unfinished: true }); // stopped by shutdown
  ledger.settleIndex(data, { written: true, complete: true });
  assertEquals(events.filter((e) => e.startsWith("released") || e.startsWith("held")), [
    "held /d/nb-1-big-Data.db",
  ]);
});

Deno.test("reconciliation's facts: a Data.db found without its index asks once", () => {
  const ledger = new Ledger();
  ledger.expectIndexes(["/d/nb-1-big-Data.db"]);
  assert(ledger.takeUnindexed("/d/nb-1-big-Data.db"));
  assert(!ledger.takeUnindexed("/d/nb-1-big-Data.db"));
  assert(!ledger.takeUnindexed("/d/nb-2-big-Data.db"));
});

Deno.test("the journal keeps a held Data.db pending and writes done only at release", async () => {
  await using state = await tempDir("tablesnap-state-");
  const { journal } = await Journal.open(state.path, { flushDelayMs: 1 });
  const { ledger } = recordedLedger();
  journal.follow(ledger);
  const data = "/d/nb-1-big-Data.db";
  const other = "/d/nb-1-big-Index.db";
  const record = upload(ledger, data);
  ledger.requestIndex(indexRecord(data));
  ledger.move(record, "resting");
  ledger.move(upload(ledger, other), "resting");
  await journal.flush();
  const pendingNow =
    () => [...parseJournal(Deno.readTextFileSync(`${state.path}/${JOURNAL_FILE}`)).pending.keys()];
  assertEquals(pendingNow(), [data], "the Data.db waits for its index; the other is done");
  ledger.settleIndex(data, { written: true, complete: true });
  await journal.flush();
  assertEquals(pendingNow(), []);
  await journal.close();
});

Deno.test("pins follow the ledger: made when complete, kept while held, gone at release", async () => {
  await using root = await tempDir();
  const { ledger, events } = recordedLedger();
  const pins = Pins.open({ roots: [root.path], maxBytes: 1 << 20 });
  pins.follow(ledger);
  const data = `${root.path}/nb-1-big-Data.db`;
  await Deno.writeTextFile(data, "data");
  const record = ledger.getOrCreate(data);
  ledger.move(record, "queued");
  ledger.complete(data);
  assert(pins.isPinned(data), "pinned once complete");
  assert(events.includes(`pinned ${data}`), "the pin is told to the ledger");
  ledger.move(record, "uploading");
  ledger.stored(record, { size: 4, mtimeMs: 1 }, "uploaded");
  ledger.requestIndex(indexRecord(data));
  ledger.move(record, "resting");
  assert(pins.isPinned(data), "held for its index");
  ledger.settleIndex(data, { written: false, complete: false }); // given up: released too
  assert(!pins.isPinned(data));
  assertEquals(pins.usage(), { files: 0, bytes: 0 });
});
