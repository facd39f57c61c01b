/**
 * Keeps a FIFO in the watched tree from stopping the file watch.
 *
 * Deno's watcher thread opens, for reading, every path an event names
 * (`Deno.watchFs` compares it with the watched roots through `same_file`,
 * in runtime/ops/fs_events.rs). Opening a FIFO for reading waits for a
 * writer: one FIFO created anywhere in the tree stopped that thread for
 * good, so no event arrived after it (nothing was uploaded until a sweep),
 * and the stop at SIGTERM hung. JavaScript never sees the FIFO's event, so
 * nothing here can skip it first; and Deno refuses `/proc/self/task` (to
 * see where the thread waits) without --allow-all.
 *
 * So the guard notices the stall itself: a second watch, on a private
 * directory of its own, shares Deno's one watcher thread, and the guard
 * touches a file there every second. When that touch is not reported
 * within a few seconds, the thread is stuck: the guard walks the roots for
 * FIFOs. Each FIFO it finds (or the watcher's scans meet) it opens for
 * reading and writing without blocking and keeps open: the thread's
 * pending open completes (a writer exists now), and its later opens of
 * that FIFO, one per event on it, return at once. Closing it would itself
 * be an event on the FIFO and stop the thread again, so a held FIFO is let
 * go only once it is removed or replaced. Nothing is ever read from or
 * written to it.
 *
 * The cost for anyone using the FIFO (it has no business in a data
 * directory): its readers see no end-of-file, and its writers no broken
 * pipe, while it is held.
 */
import { closeSync, constants, fstatSync, openSync } from "node:fs";
import { errorMessage } from "../../common/errors.ts";
import { lstatOrNull } from "../../common/fs.ts";
import { log } from "../../common/log.ts";

/** How often the canary is touched and the held FIFOs looked at. */
const TICK_MS = 250;
/**
 * A touch not reported for this long means the watcher thread is stuck
 * (events reach JavaScript within 8 ms at p99 when it is not): every
 * directory's events wait that long once when a FIFO appears.
 */
const STALL_MS = 1_000;
/** The private directories' names; one whose canary was not touched for STALE_CANARY_MS was left by a killed process. */
const CANARY_PREFIX = "tablesnap-watch-canary-";
const STALE_CANARY_MS = 60_000;

/** While it stays stuck (a FIFO no walk can open), the tree is walked at most this often. */
const HUNT_EVERY_MS = 30_000;

export class FifoGuard {
  readonly #roots: readonly string[];
  readonly #now: () => number;
  readonly #held = new Map<string, { fd: number; ino: number }>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #canaryDir: string | undefined;
  #canaryWatch: Deno.FsWatcher | undefined;
  /** When the canary was last touched (ms), and whether that touch was reported since. */
  #touchedAt = 0;
  #answered = true;
  #hunting: Promise<void> | undefined;
  #huntedAt = -Infinity;
  /** Stuck past a walk: said once, and the caller sweeps every `HUNT_EVERY_MS`. */
  #dead = false;
  readonly #onStuck: ((stuck: boolean) => void) | undefined;

  /**
   * `onStuck(true)`: the watch stays stuck after a walk (events are being
   * lost: sweep), called again every `HUNT_EVERY_MS`; `onStuck(false)`:
   * it moves again.
   */
  constructor(
    roots: readonly string[],
    options: { onStuck?: (stuck: boolean) => void; now?: () => number } = {},
  ) {
    this.#roots = roots;
    this.#now = options.now ?? Date.now;
    this.#onStuck = options.onStuck;
  }

  /** Starts the canary; call before the tree's own watch exists, so a stuck thread cannot delay it. */
  start(): void {
    if (this.#timer !== undefined) return;
    try {
      const dir = Deno.makeTempDirSync({ prefix: CANARY_PREFIX });
      removeStaleCanaries(dir.slice(0, dir.lastIndexOf("/")));
      this.#canaryDir = dir;
      if (this.#roots.some((root) => dir === root || dir.startsWith(root + "/"))) {
        return; // its events would be the tree's: only the scans guard then
      }
      Deno.writeFileSync(`${dir}/canary`, new Uint8Array());
      this.#canaryWatch = Deno.watchFs(dir, { recursive: false });
    } catch (err) {
      log.warn("cannot start the check for a stuck file watch", { error: errorMessage(err) });
      return;
    }
    const watch = this.#canaryWatch;
    (async () => {
      for await (const _ of watch) this.#answered = true;
    })().catch(() => {});
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Stops the canary. Returns false when the watcher thread is stuck on a
   * FIFO no walk could open (a name that is not UTF-8, which Deno cannot
   * name): closing any watch would then hang on the lock that thread
   * holds, so the caller must leave the watches to the process exit. Held
   * FIFOs stay open until the exit (see above).
   */
  async stop(): Promise<boolean> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#hunting;
    let answers = await this.#answers();
    if (!answers) {
      await this.hunt();
      answers = await this.#answers();
    }
    if (answers) {
      try {
        this.#canaryWatch?.close();
      } catch {
        // already closed
      }
    }
    if (this.#canaryDir) Deno.removeSync(this.#canaryDir, { recursive: true });
    return answers;
  }

  /** True while the canary's last touch is unanswered for longer than `STALL_MS`. */
  get stuck(): boolean {
    return this.#canaryWatch !== undefined && !this.#answered &&
      this.#now() - this.#touchedAt >= STALL_MS;
  }

  /** Touches the canary now and waits (up to `ms`) for the watcher thread to report it. */
  async #answers(ms = 1_000): Promise<boolean> {
    if (this.#canaryWatch === undefined) return true; // cannot tell: as before the guard
    if (!this.#touch()) return true;
    const deadline = performance.now() + ms;
    while (!this.#answered && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return this.#answered;
  }

  #touch(): boolean {
    try {
      const now = new Date();
      Deno.utimeSync(`${this.#canaryDir}/canary`, now, now);
    } catch {
      return false; // removed under us: the scans still hold the FIFOs they meet
    }
    // Touched every tick, stuck or not (its age tells a live process's
    // directory from a killed one's); a stall counts from the first touch
    // left unanswered.
    if (this.#answered) {
      this.#answered = false;
      this.#touchedAt = this.#now();
    }
    return true;
  }

  /** FIFOs held open. */
  held(): number {
    return this.#held.size;
  }

  /**
   * Holds a FIFO open (read and write, never blocking), so that Deno's
   * watcher thread can open it; false if `path` is not a FIFO (any more).
   */
  hold(path: string): boolean {
    const info = lstatOrNull(path);
    if (!info?.isFifo) return false;
    if (this.#held.get(path)?.ino === info.ino) return true;
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK | constants.O_NOFOLLOW);
    } catch {
      return false; // gone, or swapped for a symlink
    }
    const stat = fstatSync(fd);
    if (!stat.isFIFO()) {
      closeSync(fd);
      return false;
    }
    this.#release(path);
    this.#held.set(path, { fd, ino: stat.ino });
    return true;
  }

  /** Walks the roots and holds every FIFO found. */
  hunt(): Promise<void> {
    this.#hunting ??= (async () => {
      let found = 0;
      for (const root of this.#roots) found += await this.#holdFifosUnder(root);
      if (found > 0) log.debug("file watch unblocked from FIFOs", { fifos: found });
    })().finally(() => this.#hunting = undefined);
    return this.#hunting;
  }

  #tick(): void {
    for (const [path, held] of this.#held) {
      const info = lstatOrNull(path);
      if (!info?.isFifo || info.ino !== held.ino) this.#release(path);
    }
    if (this.stuck) this.#onStall();
    else if (this.#dead) {
      this.#dead = false;
      log.info("the file watch is working again");
      this.#onStuck?.(false);
    }
    this.#touch();
  }

  /** The watch is stuck: walk the tree for FIFOs; still stuck after a walk, say so and sweep. */
  #onStall(): void {
    // A walk since this stall began did not free the thread: events are lost.
    const walkedInVain = this.#huntedAt > this.#touchedAt;
    if (walkedInVain && this.#now() - this.#huntedAt < HUNT_EVERY_MS) return;
    this.#huntedAt = this.#now();
    if (walkedInVain) {
      if (!this.#dead) {
        this.#dead = true;
        log.error("the file watch is stuck and no FIFO found explains it; sweeping instead", {
          hint: "look for a FIFO or device whose name is not UTF-8 in the watched tree",
        });
      }
      this.#onStuck?.(true);
    }
    void this.hunt();
  }

  #release(path: string): void {
    const held = this.#held.get(path);
    if (!held) return;
    this.#held.delete(path);
    closeSync(held.fd);
  }

  async #holdFifosUnder(dir: string): Promise<number> {
    let found = 0;
    try {
      for await (const entry of Deno.readDir(dir)) {
        const path = `${dir}/${entry.name}`;
        if (entry.isDirectory) found += await this.#holdFifosUnder(path);
        else if (!entry.isFile && !entry.isSymlink && this.hold(path)) found++;
      }
    } catch {
      // vanished or unreadable: nothing to hold there
    }
    return found;
  }
}

/**
 * Removes the private directories of processes gone (killed: a clean stop
 * removes its own). A live process touches its canary four times a
 * second, stuck or not; Deno refuses /proc/<pid> short of --allow-all, so
 * the age of that touch is what tells.
 */
function removeStaleCanaries(tmp: string): void {
  try {
    for (const entry of Deno.readDirSync(tmp)) {
      if (!entry.isDirectory || !entry.name.startsWith(CANARY_PREFIX)) continue;
      const dir = `${tmp}/${entry.name}`;
      const touched = lstatOrNull(`${dir}/canary`)?.mtime?.getTime() ??
        lstatOrNull(dir)?.mtime?.getTime() ?? Date.now();
      if (Date.now() - touched < STALE_CANARY_MS) continue;
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // another process removed it first, or it is not ours to remove
      }
    }
  } catch {
    // the temporary directory cannot be listed: leave it
  }
}
