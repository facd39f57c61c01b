/**
 * A token bucket shared by every upload, for `--max-bandwidth`: a backup
 * must never saturate the database host's network. Tokens are bytes; the
 * bucket holds at most one second's worth, so bursts stay short.
 */
export class RateLimiter {
  readonly bytesPerSecond: number;
  #tokens: number;
  #last: number;
  #queue: Promise<void> = Promise.resolve();
  readonly #now: () => number;

  constructor(bytesPerSecond: number, now: () => number = () => performance.now()) {
    this.bytesPerSecond = bytesPerSecond;
    this.#now = now;
    this.#tokens = 0;
    this.#last = now();
  }

  /** Resolves once `bytes` may be sent. Callers are served in order. */
  take(bytes: number): Promise<void> {
    const turn = this.#queue.then(() => this.#wait(bytes));
    this.#queue = turn;
    return turn;
  }

  async #wait(bytes: number): Promise<void> {
    this.#refill();
    this.#tokens -= bytes;
    if (this.#tokens < 0) {
      const ms = (-this.#tokens / this.bytesPerSecond) * 1000;
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
  }

  #refill(): void {
    const now = this.#now();
    const elapsed = (now - this.#last) / 1000;
    this.#last = now;
    this.#tokens = Math.min(this.bytesPerSecond, this.#tokens + elapsed * this.bytesPerSecond);
  }
}

/** Parses "500K", "10M", "1.5G", "1048576" (bytes per second, powers of 1024). */
export function parseRate(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?(?:\/s)?\s*$/i.exec(text);
  if (!match) return null;
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[
    match[2]!.toUpperCase() as "" | "K" | "M" | "G" | "T"
  ];
  const rate = Number(match[1]) * unit;
  return rate >= 1 ? Math.floor(rate) : null;
}
