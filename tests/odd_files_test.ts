/**
 * What the watcher finds in its tree never stalls it: a FIFO (which Deno's
 * own watcher thread would wait on forever), a socket, a symlink loop, a
 * directory named like a component, names that are not UTF-8 or hold
 * control characters. Each is skipped unread with one warning and counted;
 * the regular files written after them are uploaded; SIGTERM stops the
 * watcher within --shutdown-grace; no control byte reaches the log.
 */
import { assert, assertEquals } from "./_assert.ts";
import { localStore } from "./_bucket_fixture.ts";
import { type RunningWatcher, spawnWatcher, tempDir, waitFor } from "./_helpers.ts";

// deno-lint-ignore no-control-regex
const FORBIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
const GRACE_SECONDS = 5;

/** Runs Python for what Deno cannot do: FIFOs, sockets and names that are not UTF-8. */
async function python(code: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("python3", { args: ["-c", code, ...args] }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
}

/** Keys in a local store (every data file's path below `data/`). */
async function storedKeys(root: string): Promise<string[]> {
  const keys: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) await walk(`${dir}/${e.name}`, `${rel}${e.name}/`);
      else keys.push(`${rel}${e.name}`);
    }
  };
  await walk(`${root}/data`, "");
  return keys;
}

/** Stops with SIGTERM; asserts a clean exit within the grace period (plus start-up slack). */
async function stopInTime(watcher: RunningWatcher): Promise<void> {
  const started = performance.now();
  const code = await watcher.stop("SIGTERM");
  const seconds = (performance.now() - started) / 1000;
  assertEquals(code, 0, watcher.stderr());
  assert(seconds < GRACE_SECONDS + 3, `stopped in ${seconds.toFixed(1)} s`);
}

function assertCleanLog(stderr: string): void {
  const at = stderr.search(FORBIDDEN);
  assert(at < 0, `control byte 0x${stderr.charCodeAt(at).toString(16)} in: ${stderr}`);
}

function watcherArgs(bucket: string, data: string): string[] {
  return ["-r", "-a", "-n", "h", "--shutdown-grace", String(GRACE_SECONDS), bucket, data];
}

Deno.test("a FIFO in a watched -r -a tree stops neither the uploads nor SIGTERM", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const data = `${dir.path}/data`;
  await Deno.mkdir(`${data}/d`, { recursive: true });
  await using watcher = spawnWatcher(watcherArgs(`file://${store.root}`, data));
  await watcher.waitUntilWatching();
  await python("import os, sys; os.mkfifo(sys.argv[1])", `${data}/d/somepipe`);
  for (const n of [1, 2, 3]) await Deno.writeTextFile(`${data}/d/f${n}`, `file ${n}`);
  await waitFor("the three files written after the FIFO", async () => {
    const keys = await storedKeys(store.root);
    return [1, 2, 3].every((n) => keys.includes(`h:${data}/d/f${n}`));
  }, 20_000).catch((err) => {
    throw new Error(`${err.message}\n${watcher.stderr()}`);
  });
  await watcher.waitForMetrics(
    "the FIFO counted",
    (m) => m.get("tablesnap_skipped_paths_total", { reason: "fifo" }) === 1,
  );
  await stopInTime(watcher);
  const log = watcher.stderr();
  assertCleanLog(log);
  assertEquals(log.split("\n").filter((l) => l.includes("somepipe")).length, 1, log);
});

Deno.test("sockets, symlink loops, odd names and a FIFO no one can name are skipped, once each", async () => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const data = `${dir.path}/data`;
  await Deno.mkdir(`${data}/d`, { recursive: true });
  await using watcher = spawnWatcher(watcherArgs(`file://${store.root}`, data));
  await watcher.waitUntilWatching();
  const d = `${data}/d`;
  await python(
    `
import os, socket, sys
d = sys.argv[1].encode()
s = socket.socket(socket.AF_UNIX); s.bind(d + b"/sock")
os.symlink(b"loop-b", d + b"/loop-a"); os.symlink(b"loop-a", d + b"/loop-b")
for name in [b"esc-\\x1b]0;PWNED\\x07-Data.db", b"nl-\\nforged.db", b"del-\\x7f.db",
             b"c1-\\xc2\\x9b2J.db", b"bad-\\xff\\xfe.db"]:
    open(d + b"/" + name, "wb").write(b"x")
os.mkfifo(d + b"/bad-\\xff-fifo")
`,
    d,
  );
  // A directory named like a component is a directory: its files upload.
  await Deno.mkdir(`${d}/nb-1-big-Data.db`);
  await Deno.writeTextFile(`${d}/nb-1-big-Data.db/inside`, "inside");
  for (const n of [1, 2, 3]) await Deno.writeTextFile(`${d}/f${n}`, `file ${n}`);
  const wanted = [...[1, 2, 3].map((n) => `f${n}`), "nb-1-big-Data.db/inside"];
  // The FIFO named in bytes that are not UTF-8 cannot be opened from Deno:
  // the watch stays stuck on it and the guard falls back to sweeps (every
  // 30 s), so these may take that long.
  await waitFor("the regular files", async () => {
    const keys = await storedKeys(store.root);
    return wanted.every((n) => keys.includes(`h:${d}/${n}`));
  }, 60_000).catch((err) => {
    throw new Error(`${err.message}\n${watcher.stderr()}`);
  });
  const m = await watcher.waitForMetrics(
    "every odd path counted",
    (m) =>
      m.get("tablesnap_skipped_paths_total", { reason: "socket" }) === 1 &&
      m.get("tablesnap_skipped_paths_total", { reason: "symlink" }) === 2 &&
      (m.get("tablesnap_skipped_paths_total", { reason: "bad_name" }) ?? 0) >= 5,
    20_000,
  );
  assertEquals(m.get("tablesnap_skipped_paths_total", { reason: "fifo" }), 0);
  await stopInTime(watcher);
  const log = watcher.stderr();
  assertCleanLog(log);
  for (const name of ["sock", "loop-a", "loop-b", "esc-\\u001b]0;PWNED\\u0007-Data.db"]) {
    const lines = log.split("\n").filter((l) => l.includes(`/d/${name}`));
    assertEquals(lines.length, 1, `one warning for ${name}:\n${log}`);
  }
  const keys = await storedKeys(store.root);
  assert(keys.every((k) => !FORBIDDEN.test(k) && !k.includes("\ufffd")), keys.join("\n"));
});
