/**
 * A clock the test moves (lib/watch/clock.ts): timers fire in time order
 * when `advance` passes them, each followed by the microtasks and I/O it
 * started getting a turn, so that state machines run as they would.
 */
import type { Clock, TimerId } from "../../lib/watch/clock.ts";

interface Timer {
  id: number;
  at: number;
  fn: () => void;
  every: number | undefined;
}

export class FakeClock implements Clock {
  #now: number;
  #next = 1;
  readonly #timers = new Map<unknown, Timer>();

  constructor(start = Date.now()) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    const id = this.#next++;
    this.#timers.set(id, { id, at: this.#now + Math.max(0, ms), fn, every: undefined });
    return id;
  }

  clearTimeout(id: TimerId): void {
    this.#timers.delete(id);
  }

  setInterval(fn: () => void, ms: number): TimerId {
    const id = this.#next++;
    this.#timers.set(id, { id, at: this.#now + Math.max(1, ms), fn, every: Math.max(1, ms) });
    return id;
  }

  clearInterval(id: TimerId): void {
    this.clearTimeout(id);
  }

  /** Timers waiting to fire. */
  get pending(): number {
    return this.#timers.size;
  }

  /** When the next timer fires (undefined: none). */
  nextAt(): number | undefined {
    let at: number | undefined;
    for (const timer of this.#timers.values()) if (at === undefined || timer.at < at) at = timer.at;
    return at;
  }

  /** Moves time forward by `ms`, firing every timer due on the way, in order. */
  async advance(ms: number): Promise<void> {
    const end = this.#now + ms;
    for (;;) {
      await settle();
      const due = [...this.#timers.values()].filter((t) => t.at <= end)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.#now = Math.max(this.#now, due.at);
      if (due.every === undefined) this.#timers.delete(due.id);
      else due.at += due.every;
      due.fn();
    }
    this.#now = end;
    await settle();
  }
}

/** Lets pending promise callbacks and quick I/O (a local file, a local store) run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setTimeout(resolve, 0));
}
