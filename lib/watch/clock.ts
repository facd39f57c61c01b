/**
 * Time as the watcher's state machines see it: the wall clock and the
 * timers, in one injectable object, so that tests move time by hand
 * (tests/unit/_fake_clock.ts) instead of sleeping.
 */

/** A timer's handle: whatever the clock that made it gives. */
export type TimerId = unknown;

type SystemTimer = ReturnType<typeof setTimeout>;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerId;
  clearTimeout(id: TimerId): void;
  setInterval(fn: () => void, ms: number): TimerId;
  clearInterval(id: TimerId): void;
}

/** The real clock and timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id as SystemTimer | undefined),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (id) => clearInterval(id as SystemTimer | undefined),
};

/** Resolves after `ms` on `clock`, or at once when `signal` is aborted (never rejects). */
export function sleepOn(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clock.clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = clock.setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
