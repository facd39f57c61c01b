import { assertEquals } from "../_assert.ts";
import { tempDir } from "../_helpers.ts";
import { collectDirs, filesUnder, walkTree } from "../../lib/common/tree.ts";

async function tree(root: string, files: string[]): Promise<void> {
  for (const file of files) {
    const path = `${root}/${file}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(path, file);
  }
}

Deno.test("walkTree yields each directory before the ones below it, with its files", async () => {
  await using dir = await tempDir();
  await tree(dir.path, ["a.txt", "ks/t1/x-Data.db", "ks/t1/x-Index.db", "ks/t2/y-Data.db"]);
  const seen = new Map<string, string[]>();
  const order: string[] = [];
  for await (const { dir: at, files, dirs, info } of walkTree([dir.path])) {
    assertEquals(info.isDirectory, true);
    order.push(at.slice(dir.path.length) || "/");
    seen.set(at.slice(dir.path.length) || "/", files.map((f) => f.slice(at.length + 1)).sort());
    for (const sub of dirs) assertEquals(sub.startsWith(`${at}/`), true);
  }
  assertEquals([...seen.keys()].sort(), ["/", "/ks", "/ks/t1", "/ks/t2"]);
  assertEquals(order.indexOf("/ks") < order.indexOf("/ks/t1"), true);
  assertEquals(seen.get("/"), ["a.txt"]);
  assertEquals(seen.get("/ks/t1"), ["x-Data.db", "x-Index.db"]);
  assertEquals(seen.get("/ks"), []);
});

Deno.test("walkTree keeps out of what descend refuses and of symlinks below a root", async () => {
  await using dir = await tempDir();
  await tree(dir.path, ["keep/a", "skip/b", "elsewhere/c"]);
  await Deno.symlink(`${dir.path}/elsewhere`, `${dir.path}/keep/link`);
  const files: string[] = [];
  const descend = (path: string) => !path.endsWith("/skip") && !path.endsWith("/elsewhere");
  for await (const listing of walkTree([dir.path], { descend })) files.push(...listing.files);
  assertEquals(files.map((f) => f.slice(dir.path.length)), ["/keep/a"]);
});

Deno.test("walkTree follows a root given as a symlink; a gone root yields nothing", async () => {
  await using dir = await tempDir();
  await tree(dir.path, ["real/a"]);
  await Deno.symlink(`${dir.path}/real`, `${dir.path}/root`);
  const files = await filesUnder(`${dir.path}/root`);
  assertEquals(files, [`${dir.path}/root/a`]);
  assertEquals(await filesUnder(`${dir.path}/gone`), []);
  assertEquals(await filesUnder(`${dir.path}/real/a`), [], "a file is no tree");
});

Deno.test("walkTree skips a directory deleted while the walk is under way", async () => {
  await using dir = await tempDir();
  await tree(dir.path, ["a/x", "b/y", "c/z"]);
  const visited: string[] = [];
  for await (const listing of walkTree([dir.path])) {
    visited.push(listing.dir.slice(dir.path.length) || "/");
    if (listing.dir === dir.path) await Deno.remove(`${dir.path}/b`, { recursive: true });
  }
  assertEquals(visited.sort(), ["/", "/a", "/c"]);
});

Deno.test("collectDirs gathers every directory below a root, not the root", async () => {
  await using dir = await tempDir();
  await tree(dir.path, ["a/b/c/file", "d/file"]);
  const dirs = await collectDirs(dir.path);
  assertEquals([...dirs].map((d) => d.slice(dir.path.length)).sort(), [
    "/a",
    "/a/b",
    "/a/b/c",
    "/d",
  ]);
});
