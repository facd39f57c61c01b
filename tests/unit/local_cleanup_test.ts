/**
 * `--delete-on-backup` (lib/watch/keepers/local_cleanup.ts) following the
 * ledger: a stored file goes at once unless an index of its directory is
 * pending; those wait for a written index (not a given-up one).
 */
import { assert, assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { LocalCleanup } from "../../lib/watch/keepers/local_cleanup.ts";
import { type IndexRecord, Ledger } from "../../lib/watch/ledger.ts";

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

function indexRecord(dataPath: string): IndexRecord {
  return {
    dataPath,
    directory: dataPath.slice(0, dataPath.lastIndexOf("/")),
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

Deno.test("local files go once stored, but not before a pending index of their directory is written", async () => {
  await using dir = await tempDir();
  const ledger = new Ledger();
  const deleted: string[] = [];
  ledger.subscribe((e) => e.type === "deleted" && deleted.push(e.path));
  const cleanup = new LocalCleanup(ledger);
  const store = async (name: string) => {
    const path = `${dir.path}/${name}`;
    await Deno.writeTextFile(path, name);
    const record = ledger.getOrCreate(path);
    ledger.move(record, "queued");
    ledger.move(record, "uploading");
    ledger.stored(record, { size: name.length, mtimeMs: 1 }, "uploaded");
    ledger.move(record, "resting");
    await cleanup.idle();
    return path;
  };
  const alone = await store("other-file");
  assert(!(await exists(alone)), "no index pending: deleted at once");
  const data = `${dir.path}/nb-1-big-Data.db`;
  ledger.requestIndex(indexRecord(data));
  const index = await store("nb-1-big-Index.db");
  const dataPath = await store("nb-1-big-Data.db");
  assert(await exists(index) && await exists(dataPath), "kept while the index is pending");
  ledger.settleIndex(data, { written: true, complete: true });
  await cleanup.idle();
  assert(!(await exists(index)) && !(await exists(dataPath)), "deleted once it is written");
  assertEquals(deleted.sort(), [alone, dataPath, index].sort(), "each told to the ledger");
});

Deno.test("a given-up index deletes nothing", async () => {
  await using dir = await tempDir();
  const ledger = new Ledger();
  const cleanup = new LocalCleanup(ledger);
  const data = `${dir.path}/nb-1-big-Data.db`;
  ledger.requestIndex(indexRecord(data));
  const path = `${dir.path}/nb-1-big-Index.db`;
  await Deno.writeTextFile(path, "x");
  const record = ledger.getOrCreate(path);
  ledger.move(record, "queued");
  ledger.stored(record, { size: 1, mtimeMs: 1 }, "uploaded");
  ledger.settleIndex(data, { written: false, complete: false });
  await cleanup.idle();
  assert(await exists(path), "kept: no index named it");
});
