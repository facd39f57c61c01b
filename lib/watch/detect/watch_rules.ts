/**
 * The watcher's rules, as pure functions: which event says what about a
 * path, when a file counts as complete, and which directories count under
 * the original's `-r` / `-a` flags. file_watcher.ts applies them to real
 * events; tests/unit/watch_rules_test.ts checks every combination.
 */

/** The original's `--listen-events` names. */
export type ListenEvent = "IN_MOVED_TO" | "IN_CLOSE_WRITE" | "IN_CREATE";

export const LISTEN_EVENTS: readonly ListenEvent[] = ["IN_MOVED_TO", "IN_CLOSE_WRITE", "IN_CREATE"];

/** What an event says about its path, before the path is looked at. */
export type ProbeKind = "close-write" | "moved-to" | "moved-dir" | "create";

/**
 * The probe an event asks for, or null when it says nothing: close-after-
 * write (Deno's `access` on Linux) only when IN_CLOSE_WRITE is listened to;
 * a rename always (a directory renamed in must be scanned), but it proves a
 * file complete only with IN_MOVED_TO.
 */
export function probeKindOf(
  kind: Deno.FsEvent["kind"],
  listen: ReadonlySet<ListenEvent>,
): ProbeKind | null {
  switch (kind) {
    case "access":
      return listen.has("IN_CLOSE_WRITE") ? "close-write" : null;
    case "rename":
      return listen.has("IN_MOVED_TO") ? "moved-to" : "moved-dir";
    case "create":
      return "create";
    default:
      return null;
  }
}

/**
 * Two events for one path before it was looked at (create then close-write,
 * or the doubled rename): keep the one that proves most.
 */
export function strongerProbe(queued: ProbeKind, incoming: ProbeKind): ProbeKind {
  return queued === "create" || queued === "moved-dir" ? incoming : queued;
}

/** What a regular file's probe decides. */
export type FileVerdict =
  | { complete: true; how: string }
  /** A plain new file: its close-write should follow; watched as a candidate meanwhile. */
  | { complete: false; candidate: boolean };

/**
 * A file is complete on close-after-write, on a rename into place, as a hard
 * link (a link is whole the moment it appears), or on create when IN_CREATE
 * is listened to. A plain create waits for its close-write, with the
 * candidate list as the safety net should that event be lost.
 */
export function fileVerdict(
  kind: ProbeKind,
  hardLink: boolean,
  listen: ReadonlySet<ListenEvent>,
): FileVerdict {
  if (kind === "close-write" || kind === "moved-to") return { complete: true, how: kind };
  if (hardLink) return { complete: true, how: kind === "create" ? "hard-link" : kind };
  if (kind === "create" && listen.has("IN_CREATE")) return { complete: true, how: kind };
  return { complete: false, candidate: kind === "create" && listen.has("IN_CLOSE_WRITE") };
}

/** The watched trees and the `-r` / `-a` flags. */
export interface WatchScope {
  roots: readonly string[];
  recursive: boolean;
  autoAdd: boolean;
  /** Directories that existed at start (collected only when `recursive !== autoAdd`). */
  startDirs: ReadonlySet<string>;
}

/**
 * Whether events and scans in `dir` count, following the original's flags:
 * the roots always; with -r every directory that existed at start; with -a
 * directories created after start; with both, all.
 */
export function isWatchedDir(dir: string, scope: WatchScope): boolean {
  const root = scope.roots.find((r) => dir === r || dir.startsWith(r + "/"));
  if (root === undefined) return false;
  if (dir === root) return true;
  const { recursive, autoAdd } = scope;
  if (recursive && autoAdd) return true;
  if (recursive) return scope.startDirs.has(dir);
  if (autoAdd) {
    // A new directory anywhere below a root: its top-level ancestor is new too.
    const top = root + "/" + dir.slice(root.length + 1).split("/")[0];
    return !scope.startDirs.has(top);
  }
  return false;
}

/**
 * Without -B, files that were there before we started are not ours to
 * upload. ctime (changed by writes, renames and new links) tells; Deno
 * reports it in whole seconds, so the start second itself counts as after.
 */
export function existedBeforeStart(info: Deno.FileInfo, startedAtMs: number): boolean {
  const ctime = info.ctime?.getTime() ?? info.mtime?.getTime() ?? 0;
  return ctime < Math.floor(startedAtMs / 1000) * 1000;
}

/** What a path that is not a regular file is, for the skip warning and its metric. */
export function nonRegularKind(
  info: Deno.FileInfo,
): "fifo" | "socket" | "device" | "symlink" | null {
  if (info.isFile) return null;
  if (info.isSymlink) return "symlink";
  if (info.isFifo) return "fifo";
  if (info.isSocket) return "socket";
  if (info.isCharDevice || info.isBlockDevice) return "device";
  return null; // a directory
}
