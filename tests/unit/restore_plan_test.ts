/**
 * A restore's plan sends its requests several at once: each is a round trip
 * (20-30 ms to a loaded RGW), and one after another they were a quarter of
 * a restore of the bench tree. Observed as the most store calls in flight
 * at once while `slurp --plan -r` resolves several tables. Then the files
 * go largest first, so a large file met late is not the restore's long tail.
 */
import { assert, assertEquals } from "../_assert.ts";
import {
  contentOf,
  generation,
  localStore,
  localWriter,
  NAMING,
  putFile,
  putIndex,
  putTable,
} from "../_bucket_fixture.ts";
import { tempDir } from "../_helpers.ts";
import { slurp } from "../../lib/restore/slurp.ts";
import type { Store } from "../../lib/store/store.ts";

/** `store` with the most index GETs, other GETs and listings in flight at once recorded. */
function countingInFlight(store: Store) {
  const most = { index: 0, get: 0, list: 0 };
  const now = { index: 0, get: 0, list: 0 };
  const enter = (op: keyof typeof most) => {
    now[op]++;
    most[op] = Math.max(most[op], now[op]);
  };
  const wrapped = new Proxy(store, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (name === "get") {
        return async (key: string, ...rest: unknown[]) => {
          const op = key.endsWith("-listdir.json") ? "index" : "get";
          enter(op);
          try {
            return await value.call(target, key, ...rest);
          } finally {
            now[op]--;
          }
        };
      }
      if (name === "list") {
        return async function* (...args: unknown[]) {
          enter("list");
          try {
            yield* value.apply(target, args);
          } finally {
            now.list--;
          }
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { store: wrapped, most };
}

Deno.test("slurp's plan reads several tables' indexes and lists their directories at once", async () => {
  await using dir = await tempDir();
  const local = await localStore(`${dir.path}/bucket`);
  const data = "/var/lib/cassandra/data";
  const tables = ["ks1/a", "ks1/b", "ks2/c", "ks2/d"];
  for (const [i, table] of tables.entries()) {
    await putTable(localWriter(local), `${data}/${table}`, generation(i + 1));
  }
  const { store, most } = countingInFlight(local);
  const result = await slurp({
    store,
    naming: NAMING,
    origin: data,
    target: `${dir.path}/target`,
    recursive: true,
    plan: true,
    print: () => {},
  });
  assertEquals(result.points.length, tables.length);
  assert(most.index > 1, `indexes read one at a time: ${JSON.stringify(most)}`);
  assert(most.get > 1, `TOC.txt files read one at a time: ${JSON.stringify(most)}`);
  assert(most.list > 1, `directory listings one at a time: ${JSON.stringify(most)}`);
});

Deno.test("slurp starts the largest files first, whatever order the index names them in", async () => {
  await using dir = await tempDir();
  const local = await localStore(`${dir.path}/bucket`);
  const table = "/var/lib/cassandra/data/ks1/a";
  // The index names Data.db and Index.db first; Filter.db and Statistics.db are the large ones.
  const sizes: Record<string, number> = {
    "nb-1-big-Data.db": 300,
    "nb-1-big-Index.db": 200,
    "nb-1-big-Filter.db": 60_000,
    "nb-1-big-Statistics.db": 40_000,
  };
  const writer = localWriter(local);
  for (const [name, size] of Object.entries(sizes)) {
    await putFile(writer, `${table}/${name}`, contentOf(name, size));
  }
  await putFile(writer, `${table}/nb-1-big-TOC.txt`, contentOf("nb-1-big-TOC.txt"));
  await putIndex(writer, `${table}/nb-1-big-Data.db`, [...Object.keys(sizes), "nb-1-big-TOC.txt"]);
  const started: string[] = [];
  const store = new Proxy(local, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (name === "get") {
        return (key: string, ...rest: unknown[]) => {
          started.push(key.slice(key.lastIndexOf("/") + 1));
          return value.call(target, key, ...rest);
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const result = await slurp({
    store,
    naming: NAMING,
    origin: "/var/lib/cassandra/data",
    target: `${dir.path}/target`,
    recursive: true,
    threads: 1,
    print: () => {},
  });
  assertEquals(result.downloaded, 5);
  // One connection: two files in flight, so the first two started are the two largest.
  const files = started.filter((name) => name in sizes);
  assertEquals(
    new Set(files.slice(0, 2)),
    new Set(["nb-1-big-Filter.db", "nb-1-big-Statistics.db"]),
  );
});
