/**
 * The watcher's event rules (lib/watch/detect/watch_rules.ts), every combination of
 * the original's -r / -a flags and of the event kinds, without inotify.
 */
import { assert, assertEquals } from "../_assert.ts";
import {
  existedBeforeStart,
  fileVerdict,
  isWatchedDir,
  type ListenEvent,
  type ProbeKind,
  probeKindOf,
  strongerProbe,
} from "../../lib/watch/detect/watch_rules.ts";

const DEFAULT_LISTEN = new Set<ListenEvent>(["IN_MOVED_TO", "IN_CLOSE_WRITE"]);

Deno.test("isWatchedDir() follows -r and -a: roots always, old dirs with -r, new dirs with -a", () => {
  const roots = ["/data"];
  const startDirs = new Set(["/data/ks", "/data/ks/t1"]);
  const dirs = {
    root: "/data",
    oldTable: "/data/ks/t1",
    newTableInOldKeyspace: "/data/ks/t2",
    newKeyspace: "/data/ks9",
    newTableInNewKeyspace: "/data/ks9/t1",
    outside: "/other/ks",
    prefixTwin: "/data2/ks",
  };
  // [recursive, autoAdd] -> which of `dirs` count
  const expected: [boolean, boolean, (keyof typeof dirs)[]][] = [
    [false, false, ["root"]],
    [true, false, ["root", "oldTable"]],
    // -a alone: a new directory counts when its top-level ancestor is new.
    [false, true, ["root", "newKeyspace", "newTableInNewKeyspace"]],
    [true, true, [
      "root",
      "oldTable",
      "newTableInOldKeyspace",
      "newKeyspace",
      "newTableInNewKeyspace",
    ]],
  ];
  for (const [recursive, autoAdd, watched] of expected) {
    const scope = { roots, recursive, autoAdd, startDirs };
    for (const [name, dir] of Object.entries(dirs)) {
      assertEquals(
        isWatchedDir(dir, scope),
        watched.includes(name as keyof typeof dirs),
        `-r ${recursive} -a ${autoAdd}: ${name} (${dir})`,
      );
    }
  }
});

Deno.test("probeKindOf() maps Deno's event kinds by --listen-events", () => {
  const all = new Set<ListenEvent>(["IN_MOVED_TO", "IN_CLOSE_WRITE", "IN_CREATE"]);
  const movedOnly = new Set<ListenEvent>(["IN_MOVED_TO"]);
  const closeOnly = new Set<ListenEvent>(["IN_CLOSE_WRITE"]);
  const cases: [Deno.FsEvent["kind"], Set<ListenEvent>, ProbeKind | null][] = [
    ["access", DEFAULT_LISTEN, "close-write"],
    ["access", movedOnly, null],
    ["rename", DEFAULT_LISTEN, "moved-to"],
    // A rename is still looked at without IN_MOVED_TO: a directory renamed in must be scanned.
    ["rename", closeOnly, "moved-dir"],
    ["create", DEFAULT_LISTEN, "create"],
    ["create", all, "create"],
    ["modify", all, null],
    ["remove", all, null],
    ["any", all, null],
    ["other", all, null],
  ];
  for (const [kind, listen, probe] of cases) {
    assertEquals(probeKindOf(kind, listen), probe, `${kind} with ${[...listen]}`);
  }
});

Deno.test("fileVerdict(): complete on close-write, rename and hard links; plain creates wait", () => {
  const createToo = new Set<ListenEvent>([...DEFAULT_LISTEN, "IN_CREATE"]);
  const movedOnly = new Set<ListenEvent>(["IN_MOVED_TO"]);
  const cases: [ProbeKind, boolean, Set<ListenEvent>, string][] = [
    ["close-write", false, DEFAULT_LISTEN, "complete close-write"],
    ["moved-to", false, DEFAULT_LISTEN, "complete moved-to"],
    ["create", true, DEFAULT_LISTEN, "complete hard-link"],
    ["moved-dir", true, movedOnly, "complete moved-dir"],
    ["create", false, createToo, "complete create"],
    // A plain new file: its close-write should follow; a candidate meanwhile.
    ["create", false, DEFAULT_LISTEN, "candidate"],
    // Without IN_CLOSE_WRITE no close will come: only a sweep can find it.
    ["create", false, movedOnly, "ignored"],
    ["moved-dir", false, new Set<ListenEvent>(["IN_CLOSE_WRITE"]), "ignored"],
  ];
  for (const [kind, hardLink, listen, want] of cases) {
    const verdict = fileVerdict(kind, hardLink, listen);
    const got = verdict.complete
      ? `complete ${verdict.how}`
      : verdict.candidate
      ? "candidate"
      : "ignored";
    assertEquals(got, want, `${kind} hardLink=${hardLink} listen=${[...listen]}`);
  }
});

Deno.test("strongerProbe() keeps the event that proves most when a path is seen twice", () => {
  assertEquals(strongerProbe("create", "close-write"), "close-write");
  assertEquals(strongerProbe("moved-dir", "create"), "create");
  assertEquals(strongerProbe("close-write", "create"), "close-write");
  assertEquals(strongerProbe("moved-to", "moved-dir"), "moved-to");
});

Deno.test("existedBeforeStart() uses ctime in whole seconds: the start second counts as after", () => {
  const started = Date.parse("2026-12-01T12:00:00.700Z");
  const file = (ctime: string) => ({ ctime: new Date(ctime), mtime: null }) as Deno.FileInfo;
  assert(existedBeforeStart(file("2026-12-01T11:59:59.000Z"), started));
  assert(!existedBeforeStart(file("2026-12-01T12:00:00.000Z"), started));
  assert(!existedBeforeStart(file("2026-12-01T12:00:01.000Z"), started));
});
