/**
 * The house rule of lib/: dependencies run one way,
 * cli -> watch | restore | maintenance -> bucket -> store -> common,
 * and no job's folder imports another job's.
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
