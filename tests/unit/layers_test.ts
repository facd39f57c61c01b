/**
 * The house rules of lib/: dependencies run one way,
 * cli -> watch | restore | maintenance -> bucket -> store -> common,
 * no job's folder imports another job's, no file takes part in an import
 * circle (inside a folder too), and no job reaches for a store wrapper: jobs
 * see the one `Store` interface and what it declares, whatever wraps it.
 */
import { assertEquals } from "../_assert.ts";
import { REPO } from "../_helpers.ts";

const RANK: Record<string, number> = {
  common: 0,
  store: 1,
  bucket: 2,
  watch: 3,
  restore: 3,
  maintenance: 3,
  cli: 4,
};

/**
 * The folders above the store, and the store wrappers they may not import:
 * they get a `Store` and what it declares, whatever wraps it.
 */
const JOBS = new Set(["cli", "watch", "restore", "maintenance", "bucket"]);
const WRAPPERS = new Set([
  "store/encrypting_store.ts",
  "store/rate_limit.ts",
  "store/forwarding_store.ts",
]);

const LIB = `${REPO}lib/`;

/** Every .ts file under lib/ (relative to it) with the lib/ files it imports. */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  async function read(dir: string): Promise<void> {
    for await (const entry of Deno.readDir(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) await read(path);
      else if (entry.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(path);
        const targets = [...text.matchAll(/from "(\.[^"]+)"/g)]
          .map(([, specifier]) => new URL(specifier!, `file://${path}`).pathname)
          .filter((target) => target.startsWith(LIB))
          .map((target) => target.slice(LIB.length));
        graph.set(path.slice(LIB.length), targets);
      }
    }
  }
  await read(LIB.slice(0, -1));
  return graph;
}

const folderOf = (file: string) => file.split("/")[0]!;

/** The strongly connected components with more than one file (Tarjan). */
function circles(graph: Map<string, string[]>): string[][] {
  const order = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const found: string[][] = [];
  const visit = (file: string) => {
    order.set(file, order.size);
    low.set(file, order.get(file)!);
    stack.push(file);
    for (const target of graph.get(file) ?? []) {
      if (!graph.has(target)) continue;
      if (!order.has(target)) {
        visit(target);
        low.set(file, Math.min(low.get(file)!, low.get(target)!));
      } else if (stack.includes(target)) {
        low.set(file, Math.min(low.get(file)!, order.get(target)!));
      }
    }
    if (low.get(file) !== order.get(file)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      component.push(member);
    } while (member !== file);
    const selfImport = graph.get(file)?.includes(file) ?? false;
    if (component.length > 1 || selfImport) found.push(component.sort());
  };
  for (const file of graph.keys()) if (!order.has(file)) visit(file);
  return found;
}

Deno.test("lib/ folders import only folders below them", async () => {
  const graph = await importGraph();
  const wrong: string[] = [];
  for (const [file, targets] of graph) {
    const folder = folderOf(file);
    const rank = RANK[folder];
    if (rank === undefined) {
      wrong.push(`${file}: folder '${folder}' has no place in the layering`);
      continue;
    }
    for (const target of targets) {
      const targetFolder = folderOf(target);
      if (targetFolder !== folder && (RANK[targetFolder] ?? 99) >= rank) {
        wrong.push(`${file} imports ${target}`);
      }
    }
  }
  assertEquals(wrong, []);
  assertEquals(graph.size > 40, true, `read ${graph.size} files`);
});

Deno.test("no import circles in lib/, inside a folder or across folders", async () => {
  const found = circles(await importGraph()).map((component) => component.join(" "));
  assertEquals(found, []);
});

Deno.test("the circle finder sees a circle inside a folder and a self-import", () => {
  const graph = new Map([
    ["watch/a.ts", ["watch/b.ts", "common/log.ts"]],
    ["watch/b.ts", ["watch/c.ts"]],
    ["watch/c.ts", ["watch/a.ts"]],
    ["common/log.ts", []],
    ["store/x.ts", ["store/x.ts"]],
  ]);
  assertEquals(circles(graph).map((component) => component.join(" ")).sort(), [
    "store/x.ts",
    "watch/a.ts watch/b.ts watch/c.ts",
  ]);
});

Deno.test("jobs do not import store wrappers", async () => {
  const found: string[] = [];
  for (const [file, targets] of await importGraph()) {
    if (!JOBS.has(folderOf(file))) continue;
    for (const target of targets) {
      if (WRAPPERS.has(target)) found.push(`${file} imports ${target}`);
    }
  }
  assertEquals(found, []);
});

/**
 * Inside lib/watch the stages depend one way too: the ledger, its records
 * and the clock at the bottom; detect, upload and metrics on them; index,
 * durable and keepers on those; run_watch.ts (and what it alone uses) on top.
 */
const WATCH_RANK: Record<string, number> = {
  "ledger.ts": 0,
  "records.ts": 0,
  "clock.ts": 0,
  detect: 1,
  upload: 1,
  metrics: 1,
  index: 2,
  durable: 2,
  keepers: 2,
};
/** Files at the top of lib/watch not named above: the job's assembly. */
const WATCH_TOP = 3;

Deno.test("lib/watch stages import only stages below them", async () => {
  const inWatch = (file: string) => file.startsWith("watch/");
  const rankOf = (file: string) => WATCH_RANK[file.split("/")[1]!] ?? WATCH_TOP;
  const dirOf = (file: string) => file.slice(0, file.lastIndexOf("/"));
  const wrong: string[] = [];
  for (const [file, targets] of await importGraph()) {
    if (!inWatch(file)) continue;
    for (const target of targets.filter(inWatch)) {
      // Within one folder anything goes, but for lib/watch's own files, ranked one by one.
      if (dirOf(target) === dirOf(file) && rankOf(target) === rankOf(file)) continue;
      if (rankOf(target) >= rankOf(file)) wrong.push(`${file} imports ${target}`);
    }
  }
  assertEquals(wrong, []);
});
