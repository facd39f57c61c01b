/**
 * Files a scan found still changing (no close event seen for them): each is
 * complete once its size and mtime have held for `settleMs`. Checked on one
 * timer for all of them, at half the settle time (0.1-5 s).
 */
import { lstatOrNull } from "../../common/fs.ts";
import type { Clock, TimerId } from "../clock.ts";

export interface SettlingOptions {
  clock: Clock;
  settleMs: number;
  /** Already in the bucket or on its way: no longer waited on. */
  isHandled: (path: string, info: Deno.FileInfo) => boolean;
  onSettled: (path: string) => void;
}

export class SettlingFiles {
  readonly #o: SettlingOptions;
  readonly #seen = new Map<string, { size: number; mtimeMs: number }>();
  #timer: TimerId | undefined;
  #closed = false;

  constructor(options: SettlingOptions) {
    this.#o = options;
  }

  get size(): number {
    return this.#seen.size;
  }

  delete(path: string): void {
    this.#seen.delete(path);
  }

  /** Completes the file now if it has been still long enough, else waits on it. */
  add(path: string, info: Deno.FileInfo): void {
    const mtimeMs = info.mtime?.getTime() ?? 0;
    if (this.#o.clock.now() - mtimeMs >= this.#o.settleMs) {
      this.#seen.delete(path);
      this.#o.onSettled(path);
      return;
    }
    this.#seen.set(path, { size: info.size, mtimeMs });
    this.#schedule();
  }

  close(): void {
    this.#closed = true;
    this.#o.clock.clearTimeout(this.#timer);
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#timer = undefined;
      for (const [path, seen] of [...this.#seen]) {
        const info = lstatOrNull(path);
        if (!info || !info.isFile || this.#o.isHandled(path, info)) {
          this.#seen.delete(path);
          continue;
        }
        const mtimeMs = info.mtime?.getTime() ?? 0;
        if (info.size !== seen.size || mtimeMs !== seen.mtimeMs) {
          this.#seen.set(path, { size: info.size, mtimeMs });
          continue;
        }
        this.add(path, info);
      }
      if (this.#seen.size > 0) this.#schedule();
    }, Math.max(100, Math.min(this.#o.settleMs / 2, 5_000)));
  }
}
