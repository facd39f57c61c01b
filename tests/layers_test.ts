/**
 * The house rule of lib/: dependencies run one way,
 * cli -> watch | restore | maintenance -> bucket -> store -> common,
 * and no job's folder imports another job's.
 */
import { assertEquals } from "./_assert.ts";
import { REPO } from "./_helpers.ts";

const RANK: Record<string, number> = {
  common: 0,
  store: 1,
  bucket: 2,
  watch: 3,
  restore: 3,
  maintenance: 3,
  cli: 4,
};

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) yield* sources(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

Deno.test("lib/ folders import only folders below them", async () => {
  const lib = `${REPO}lib`;
  const wrong: string[] = [];
  let files = 0;
  for await (const path of sources(lib)) {
    files++;
    const folder = path.slice(lib.length + 1).split("/")[0]!;
    const rank = RANK[folder];
    if (rank === undefined) {
      wrong.push(`${path}: folder '${folder}' has no place in the layering`);
      continue;
    }
    const text = await Deno.readTextFile(path);
    for (const [, specifier] of text.matchAll(/from "(\.[^"]+)"/g)) {
      const target = new URL(specifier!, `file://${path}`).pathname;
      if (!target.startsWith(`${lib}/`)) continue;
      const targetFolder = target.slice(lib.length + 1).split("/")[0]!;
      if (targetFolder !== folder && (RANK[targetFolder] ?? 99) >= rank) {
        wrong.push(`${path.slice(lib.length + 1)} imports ${target.slice(lib.length + 1)}`);
      }
    }
  }
  assertEquals(wrong, []);
  assertEquals(files > 40, true, `read ${files} files`);
});

/** Store wrappers: jobs get a `Store` and its traits (lib/store/wrapped_store.ts builds them). */
const STORE_WRAPPERS = ["encrypting_store.ts", "rate_limit.ts", "forwarding_store.ts"];
const JOBS = ["cli", "watch", "restore", "maintenance", "bucket"];

Deno.test("no job imports a store wrapper", async () => {
  const lib = `${REPO}lib`;
  const wrong: string[] = [];
  for await (const path of sources(lib)) {
    const folder = path.slice(lib.length + 1).split("/")[0]!;
    if (!JOBS.includes(folder)) continue;
    const text = await Deno.readTextFile(path);
    for (const [, specifier] of text.matchAll(/from "(\.[^"]+)"/g)) {
      const target = new URL(specifier!, `file://${path}`).pathname;
      const name = target.slice(target.lastIndexOf("/") + 1);
      if (target.startsWith(`${lib}/store/`) && STORE_WRAPPERS.includes(name)) {
        wrong.push(`${path.slice(lib.length + 1)} imports ${target.slice(lib.length + 1)}`);
      }
    }
  }
  assertEquals(wrong, []);
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
  const watch = `${REPO}lib/watch`;
  const rankOf = (path: string) =>
    WATCH_RANK[path.slice(watch.length + 1).split("/")[0]!] ?? WATCH_TOP;
  const wrong: string[] = [];
  for await (const path of sources(watch)) {
    const text = await Deno.readTextFile(path);
    const folder = dirname(path);
    for (const [, specifier] of text.matchAll(/from "(\.[^"]+)"/g)) {
      const target = new URL(specifier!, `file://${path}`).pathname;
      if (!target.startsWith(`${watch}/`)) continue;
      // Within one folder anything goes, but for lib/watch's own files, ranked one by one.
      if (dirname(target) === folder && rankOf(target) === rankOf(path)) continue;
      if (rankOf(target) >= rankOf(path)) {
        wrong.push(`${path.slice(watch.length + 1)} imports ${target.slice(watch.length + 1)}`);
      }
    }
  }
  assertEquals(wrong, []);
});

function dirname(path: string): string {
  return path.slice(0, path.lastIndexOf("/"));
}
