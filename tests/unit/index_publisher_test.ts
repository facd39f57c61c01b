/**
 * The index publisher's waits (lib/watch/index/index_publisher.ts) on a fake
 * clock, with real files and a real local store: the TOC, the quiet period
 * without one, the deadline, and retries of a failed index upload.
 */
import { assert, assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { indexKey } from "../../lib/bucket/keys.ts";
import { ForwardingStore } from "../../lib/store/forwarding_store.ts";
import { LocalStore } from "../../lib/store/local_store.ts";
import type { Store } from "../../lib/store/store.ts";
import { IndexPublisher } from "../../lib/watch/index/index_publisher.ts";
import { Ledger } from "../../lib/watch/ledger.ts";
import { FakeClock } from "./_fake_clock.ts";
import { makePathFilter } from "../../lib/watch/detect/path_filter.ts";

const NAMING = { prefix: "", name: "h", separator: ":" };

/** A publisher over `dir`, with a clock the test moves and a stored set it fills. */
async function setup(dir: string, store: Store, waitMs = 60_000) {
  await Deno.mkdir(`${dir}/t`, { recursive: true });
  const clock = new FakeClock(1_000_000);
  const stored = new Set<string>();
  const publisher = new IndexPublisher({
    store,
    naming: NAMING,
    filter: makePathFilter({}),
    ledger: new Ledger(),
    files: {
      isStored: (path) => stored.has(path),
      isPending: () => false,
      isInFlight: () => false,
    },
    waitMs,
    quietMs: 2_000,
    clock,
  });
  const write = (name: string, text = name) => Deno.writeTextFile(`${dir}/t/${name}`, text);
  const store1 = async (name: string) => {
    stored.add(`${dir}/t/${name}`);
    publisher.fileStored(`${dir}/t/${name}`);
    await publisher.settled();
  };
  const index = async (data: string) => {
    const object = await store.get(indexKey(NAMING, `${dir}/t/${data}`));
    if (!object) return null;
    return JSON.parse(await new Response(object.body).text())[`${dir}/t`] as string[];
  };
  const tick = async (ms: number) => {
    await clock.advance(ms);
    await publisher.checkDue();
  };
  return { publisher, clock, stored, write, store: store1, index, tick };
}

Deno.test("IndexPublisher with a TOC waits for every component it lists, then publishes", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  const t = await setup(data.path, new LocalStore(bucket.path));
  await t.write("nb-1-big-TOC.txt", "Data.db\nIndex.db\nTOC.txt\n");
  await t.write("nb-1-big-Data.db");
  await t.store("nb-1-big-TOC.txt");
  await t.store("nb-1-big-Data.db");
  t.publisher.request(`${data.path}/t/nb-1-big-Data.db`);
  await t.publisher.settled();
  await t.tick(30_000);
  assertEquals(
    await t.index("nb-1-big-Data.db"),
    null,
    "Index.db is named by the TOC: wait for it",
  );
  await t.write("nb-1-big-Index.db");
  await t.store("nb-1-big-Index.db");
  assertEquals(await t.index("nb-1-big-Data.db"), [
    "nb-1-big-Data.db",
    "nb-1-big-Index.db",
    "nb-1-big-TOC.txt",
  ]);
  assertEquals(t.publisher.pendingCount(), 0);
});

Deno.test("IndexPublisher without a TOC publishes once the generation has been quiet", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  const t = await setup(data.path, new LocalStore(bucket.path));
  await t.write("nb-1-big-Data.db");
  await t.store("nb-1-big-Data.db");
  t.publisher.request(`${data.path}/t/nb-1-big-Data.db`);
  await t.publisher.settled();
  await t.tick(1_500);
  await t.write("nb-1-big-Index.db");
  await t.store("nb-1-big-Index.db");
  await t.tick(1_500);
  assertEquals(await t.index("nb-1-big-Data.db"), null, "a new component 1.5 s ago: not quiet yet");
  await t.tick(2_000);
  assertEquals(await t.index("nb-1-big-Data.db"), ["nb-1-big-Data.db", "nb-1-big-Index.db"]);
});

Deno.test("IndexPublisher publishes at the deadline with what is stored, never naming the rest", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  const t = await setup(data.path, new LocalStore(bucket.path), 10_000);
  await t.write("nb-1-big-TOC.txt", "Data.db\nFilter.db\nTOC.txt\n");
  await t.write("nb-1-big-Data.db");
  await t.write("nb-1-big-Filter.db"); // on disk, never uploaded
  await t.store("nb-1-big-TOC.txt");
  await t.store("nb-1-big-Data.db");
  t.publisher.request(`${data.path}/t/nb-1-big-Data.db`);
  await t.publisher.settled();
  await t.tick(9_000);
  assertEquals(await t.index("nb-1-big-Data.db"), null);
  await t.tick(1_000);
  assertEquals(await t.index("nb-1-big-Data.db"), ["nb-1-big-Data.db", "nb-1-big-TOC.txt"]);
});

Deno.test("IndexPublisher counts a component deleted after its upload (--delete-on-backup) as stored", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  const t = await setup(data.path, new LocalStore(bucket.path));
  await t.write("nb-1-big-TOC.txt", "Data.db\nIndex.db\nTOC.txt\n");
  await t.write("nb-1-big-Data.db");
  await t.store("nb-1-big-TOC.txt");
  await t.store("nb-1-big-Data.db");
  t.publisher.request(`${data.path}/t/nb-1-big-Data.db`);
  await t.publisher.settled();
  // Index.db was uploaded and deleted locally before the check saw it.
  t.stored.add(`${data.path}/t/nb-1-big-Index.db`);
  t.publisher.deletedByUs(`${data.path}/t/nb-1-big-Index.db`);
  await t.publisher.settled();
  assertEquals(await t.index("nb-1-big-Data.db"), [
    "nb-1-big-Data.db",
    "nb-1-big-Index.db",
    "nb-1-big-TOC.txt",
  ]);
});

Deno.test("IndexPublisher retries a failed index upload after a doubling wait", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  let failures = 2;
  // The store's other calls stay real; only the index uploads fail, twice.
  class FlakyStore extends LocalStore {
    override putBytes(...args: Parameters<Store["putBytes"]>) {
      if (failures-- > 0) return Promise.reject(new Error("connection reset"));
      return super.putBytes(...args);
    }
  }
  const flaky = new FlakyStore(bucket.path);
  const t = await setup(data.path, flaky);
  await t.write("nb-1-big-TOC.txt", "Data.db\nTOC.txt\n");
  await t.write("nb-1-big-Data.db");
  await t.store("nb-1-big-TOC.txt");
  await t.store("nb-1-big-Data.db");
  t.publisher.request(`${data.path}/t/nb-1-big-Data.db`); // first failure: wait 2 s
  await t.publisher.settled();
  await t.tick(1_900);
  assertEquals(failures, 1, "not retried before its wait");
  await t.tick(200); // second failure: wait 4 s
  assertEquals(failures, 0);
  await t.tick(3_000);
  assertEquals(await t.index("nb-1-big-Data.db"), null);
  await t.tick(2_000);
  assert(await t.index("nb-1-big-Data.db"), "published on the third try");
  assertEquals(t.publisher.published, 1);
});

Deno.test("IndexPublisher names the directory's whole live set, and holds a -B backlog", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  const t = await setup(data.path, new LocalStore(bucket.path));
  for (const gen of [1, 2]) {
    await t.write(`nb-${gen}-big-TOC.txt`, "Data.db\nTOC.txt\n");
    await t.write(`nb-${gen}-big-Data.db`);
  }
  await t.write("nb-3-big-TOC.txt", "Data.db\nIndex.db\nTOC.txt\n"); // still being written
  await t.write("nb-3-big-Data.db");
  t.publisher.beginBacklog();
  await t.store("nb-2-big-TOC.txt");
  await t.store("nb-2-big-Data.db");
  t.publisher.request(`${data.path}/t/nb-2-big-Data.db`);
  await t.publisher.settled();
  await t.tick(120_000);
  assertEquals(await t.index("nb-2-big-Data.db"), null, "held until the backlog is queued");
  // Generation 1 was found by the start-up sweep and is stored last.
  await t.store("nb-1-big-TOC.txt");
  await t.store("nb-1-big-Data.db");
  await t.store("nb-3-big-TOC.txt");
  await t.store("nb-3-big-Data.db");
  t.publisher.endBacklog();
  await t.publisher.settled();
  // Generation 3's TOC names an Index.db that is not there: not whole, not named.
  assertEquals(await t.index("nb-2-big-Data.db"), [
    "nb-1-big-Data.db",
    "nb-1-big-TOC.txt",
    "nb-2-big-Data.db",
    "nb-2-big-TOC.txt",
  ]);
});

Deno.test("IndexPublisher in a -B backlog publishes once the sweep is done with its directory", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  const t = await setup(data.path, new LocalStore(bucket.path));
  await t.write("nb-1-big-TOC.txt", "Data.db\nTOC.txt\n");
  await t.write("nb-1-big-Data.db");
  t.publisher.beginBacklog();
  await t.store("nb-1-big-TOC.txt");
  await t.store("nb-1-big-Data.db");
  t.publisher.request(`${data.path}/t/nb-1-big-Data.db`);
  await t.publisher.settled();
  await t.tick(120_000);
  assertEquals(await t.index("nb-1-big-Data.db"), null, "its directory is not swept yet");
  t.publisher.directorySwept(data.path);
  await t.publisher.settled();
  assertEquals(await t.index("nb-1-big-Data.db"), null, "its parent is not its directory");
  t.publisher.directorySwept(`${data.path}/t`);
  await t.publisher.settled();
  assertEquals(await t.index("nb-1-big-Data.db"), ["nb-1-big-Data.db", "nb-1-big-TOC.txt"]);
  assertEquals(t.publisher.pendingCount(), 0, "published while the backlog goes on");
});

Deno.test("IndexPublisher with --pin freezes its cut once every file is pinned, and keeps it", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  const store = new LocalStore(bucket.path);
  const dir = `${data.path}/t`;
  await Deno.mkdir(dir, { recursive: true });
  const clock = new FakeClock(1_000_000);
  const stored = new Set<string>();
  const pinned = new Set<string>();
  const pending = new Set<string>();
  const publisher = new IndexPublisher({
    store,
    naming: NAMING,
    filter: makePathFilter({}),
    ledger: new Ledger(),
    files: {
      isStored: (path) => stored.has(path),
      isPending: (path) => pending.has(path),
      isInFlight: (path) => pending.has(path),
    },
    isPinned: (path) => pinned.has(path),
    waitMs: 60_000,
    quietMs: 2_000,
    clock,
  });
  const names = ["nb-1-big-Data.db", "nb-1-big-Index.db", "nb-1-big-TOC.txt"];
  // Flushed and pinned, in Cassandra's order: the TOC last.
  for (const name of names) {
    await Deno.writeTextFile(
      `${dir}/${name}`,
      name.endsWith("TOC.txt") ? "Data.db\nIndex.db\nTOC.txt\n" : name,
    );
    pending.add(`${dir}/${name}`);
    pinned.add(`${dir}/${name}`);
    publisher.pinned(`${dir}/${name}`);
    await publisher.settled();
  }
  const cutAt = clock.now();
  // Compaction: a new generation, the old one deleted before any upload.
  await clock.advance(10_000);
  for (const name of names) await Deno.remove(`${dir}/${name}`);
  await Deno.writeTextFile(`${dir}/nb-2-big-Data.db`, "new");
  // Uploads crawl: far past --index-wait, still in flight, so it waits.
  await clock.advance(300_000);
  await publisher.checkDue();
  assertEquals(await store.get(indexKey(NAMING, `${dir}/nb-1-big-Data.db`)), null);
  for (const name of names) {
    stored.add(`${dir}/${name}`);
    pending.delete(`${dir}/${name}`);
    publisher.fileStored(`${dir}/${name}`);
    await publisher.settled();
  }
  const object = await store.get(indexKey(NAMING, `${dir}/nb-1-big-Data.db`));
  assert(object, "the frozen index was not published");
  // The live set and the time of the cut, not of the publication.
  assertEquals(JSON.parse(await new Response(object.body).text())[dir], names);
  assertEquals(object.head.metadata["cut-time"], new Date(cutAt).toISOString());
  assertEquals(publisher.pendingCount(), 0);
});

Deno.test("IndexPublisher with --pin publishes a directory's frozen cuts in their order", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  const store = new LocalStore(bucket.path);
  const dir = `${data.path}/t`;
  await Deno.mkdir(dir, { recursive: true });
  const clock = new FakeClock(1_000_000);
  const stored = new Set<string>();
  const pinned = new Set<string>();
  const publisher = new IndexPublisher({
    store,
    naming: NAMING,
    filter: makePathFilter({}),
    ledger: new Ledger(),
    files: {
      isStored: (path) => stored.has(path),
      isPending: (path) => pinned.has(path) && !stored.has(path),
      isInFlight: (path) => pinned.has(path) && !stored.has(path),
    },
    isPinned: (path) => pinned.has(path),
    waitMs: 60_000,
    clock,
  });
  const generation = (gen: number) =>
    ["Data.db", "TOC.txt"].map((c) => `${dir}/nb-${gen}-big-${c}`);
  for (const gen of [1, 2]) {
    for (const path of generation(gen)) {
      await Deno.writeTextFile(path, path.endsWith("TOC.txt") ? "Data.db\nTOC.txt\n" : "data");
      pinned.add(path);
      publisher.pinned(path);
      await publisher.settled();
    }
    await clock.advance(1_000);
    // Compacted: generation 2's cut does not name generation 1's files.
    if (gen === 1) { for (const path of generation(1)) await Deno.remove(path); }
  }
  const storeAll = async (gen: number) => {
    for (const path of generation(gen)) {
      stored.add(path);
      publisher.fileStored(path);
      await publisher.settled();
    }
  };
  const published = async (gen: number) =>
    await store.head(indexKey(NAMING, `${dir}/nb-${gen}-big-Data.db`)) !== null;
  // The later cut's files arrive first: its index waits for the earlier one.
  await storeAll(2);
  assertEquals([await published(1), await published(2)], [false, false]);
  await storeAll(1);
  await publisher.settled();
  assertEquals([await published(1), await published(2)], [true, true]);
  assertEquals(publisher.pendingCount(), 0);
});

Deno.test("IndexPublisher's own timer, on the clock, publishes at the deadline and settles the ledger", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  const dir = `${data.path}/t`;
  await Deno.mkdir(dir, { recursive: true });
  const clock = new FakeClock(1_000_000);
  const ledger = new Ledger();
  const events: string[] = [];
  ledger.subscribe((e) => {
    if (e.type === "index-settled") events.push(`settled written=${e.written} ${e.complete}`);
  });
  const publisher = new IndexPublisher({
    store: new LocalStore(bucket.path),
    naming: NAMING,
    filter: makePathFilter({}),
    ledger,
    waitMs: 10_000,
    quietMs: 2_000,
    clock,
  });
  // A Data.db uploaded: it asks for its index; its TOC names a file never stored.
  await Deno.writeTextFile(`${dir}/nb-1-big-TOC.txt`, "Data.db\nFilter.db\nTOC.txt\n");
  await Deno.writeTextFile(`${dir}/nb-1-big-Data.db`, "data");
  for (const name of ["nb-1-big-TOC.txt", "nb-1-big-Data.db"]) {
    const record = ledger.getOrCreate(`${dir}/${name}`);
    ledger.move(record, "queued");
    ledger.move(record, "uploading");
    ledger.stored(record, { size: Deno.statSync(`${dir}/${name}`).size, mtimeMs: 1 }, "uploaded");
  }
  await publisher.settled();
  assertEquals(ledger.indexCount(), 1, "the uploaded Data.db asked for its index");
  publisher.start(500);
  await clock.advance(9_500);
  await publisher.settled();
  assertEquals(events, [], "the deadline is not there yet");
  await clock.advance(500);
  await publisher.settled();
  assertEquals(events, ["settled written=true false"], "written at its deadline, incomplete");
  assertEquals(ledger.indexCount(), 0);
  publisher.stop();
  assertEquals(clock.pending, 0, "stop clears the timer");
});

Deno.test("IndexPublisher writes at most 8 indexes at once when many come due together", async () => {
  await using data = await tempDir();
  await using bucket = await tempDir("tablesnap-store-");
  /** Counts putBytes calls in flight; each takes a few milliseconds. */
  class CountingStore extends ForwardingStore {
    inFlight = 0;
    most = 0;
    override async putBytes(...args: Parameters<Store["putBytes"]>): Promise<void> {
      this.most = Math.max(this.most, ++this.inFlight);
      try {
        await new Promise((resolve) => setTimeout(resolve, 5));
        await super.putBytes(...args);
      } finally {
        this.inFlight--;
      }
    }
  }
  const store = new CountingStore(new LocalStore(bucket.path));
  const { publisher, stored } = await setup(data.path, store);
  publisher.beginBacklog();
  const tables = Array.from({ length: 40 }, (_, i) => `${data.path}/t${i}`);
  for (const table of tables) {
    await Deno.mkdir(table);
    await Deno.writeTextFile(`${table}/nb-1-big-TOC.txt`, "Data.db\nTOC.txt\n");
    await Deno.writeTextFile(`${table}/nb-1-big-Data.db`, "data");
    for (const name of ["nb-1-big-TOC.txt", "nb-1-big-Data.db"]) {
      stored.add(`${table}/${name}`);
      publisher.fileStored(`${table}/${name}`);
    }
    publisher.request(`${table}/nb-1-big-Data.db`);
  }
  await publisher.settled();
  assertEquals(publisher.published, 0, "held by the backlog");
  publisher.endBacklog();
  await publisher.settled();
  assertEquals(publisher.published, 40);
  assert(store.most <= 8, `${store.most} index writes were in flight at once`);
  assert(store.most >= 2, "the writes still overlap");
});
