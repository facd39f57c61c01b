/**
 * What the watcher never reads: only regular files with names a key can
 * hold are uploaded. FIFOs, sockets, devices and symlinks (loops included:
 * never followed) are never opened, and names that are not UTF-8 or hold
 * control characters never become keys. Each such path is skipped with one
 * warning (the log escapes its name) and counted by reason, however many
 * sweeps meet it again.
 */
import { unusableNameReason } from "../../bucket/keys.ts";
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import type { SkipReason } from "../records.ts";
import { nonRegularKind } from "./watch_rules.ts";

/** Skipped paths remembered (each warned about once); more start the memory over. */
const MAX_REMEMBERED_SKIPS = 10_000;

/** Events with paths that are not UTF-8: at most one warning and one sweep this often. */
const UNREADABLE_EVENT_SWEEP_MS = 60_000;

export interface OddPathsOptions {
  /** Counts each path skipped (once per path) and each unreadable event. */
  onSkipped?: (reason: SkipReason) => void;
  /** A FIFO was met: hold it, so that Deno's watcher thread never waits on it. */
  holdFifo?: (path: string) => void;
  now?: () => number;
}

export class OddPaths {
  readonly #o: OddPathsOptions;
  readonly #skipped = new Set<string>();
  #unreadableEventAt = -Infinity;

  constructor(options: OddPathsOptions = {}) {
    this.#o = options;
  }

  /**
   * True for a regular file with a usable name; false (a directory
   * included) to skip it. `info` null: lstat found nothing, which for a
   * name Deno decoded with U+FFFD (not UTF-8) means the name is unusable.
   */
  usable(path: string, info: Deno.FileInfo | null): boolean {
    if (info === null) {
      if (path.includes("\ufffd")) this.#skip(path, "bad_name", "not valid UTF-8");
      return false;
    }
    const kind = nonRegularKind(info);
    if (kind === null && !info.isFile) return false; // a directory: scanned, not uploaded
    const why = kind !== null ? `not a regular file (${kind})` : unusableNameReason(path);
    if (why === null) return true;
    if (kind === "fifo") this.#o.holdFifo?.(path);
    this.#skip(path, kind ?? "bad_name", why);
    return false;
  }

  #skip(path: string, reason: SkipReason, why: string): void {
    if (this.#skipped.has(path)) return;
    if (this.#skipped.size >= MAX_REMEMBERED_SKIPS) this.#skipped.clear();
    this.#skipped.add(path);
    log.warn("skipped, never read", { path, why });
    this.#o.onSkipped?.(reason);
  }

  /**
   * Deno could not give an event to JavaScript: its path is not UTF-8 (a
   * TypeError). That event is lost, not the watch; its file would be
   * skipped anyway, and `sweep` (soon after, at most once a minute) finds
   * what a rename of it may have hidden.
   */
  unreadableEvent(err: TypeError, sweep: () => void): void {
    this.#o.onSkipped?.("bad_name");
    const now = this.#o.now?.() ?? Date.now();
    if (now - this.#unreadableEventAt < UNREADABLE_EVENT_SWEEP_MS) return;
    this.#unreadableEventAt = now;
    log.warn("skipped a file event whose path is not UTF-8; sweeping the tree soon", {
      error: errorMessage(err),
    });
    setTimeout(sweep, 1_000);
  }
}
