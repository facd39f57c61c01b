/**
 * A restore's plan sends its requests several at once: each is a round trip
 * (20-30 ms to a loaded RGW), and one after another they were a quarter of
 * a restore of the bench tree. Observed as the most store calls in flight
 * at once while `slurp --plan -r` resolves several tables.
 */
import { assert, assertEquals } from "../_assert.ts";
import { generation, localStore, localWriter, NAMING, putTable } from "../_bucket_fixture.ts";
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
