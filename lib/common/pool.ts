/**
 * Runs `work` on every item with at most `limit` at once, in order of the
 * list. The one bounded pool of the restore, retention and verify jobs (the
 * watcher's upload pool also owns retries and memory: lib/watch/pipeline.ts).
 */
export async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

/**
 * At most `permits` holders at once, served in order: the restore's bound
 * on connections, shared by whole-file downloads and the ranges of large
 * files.
 */
export class Semaphore {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(permits: number) {
    this.#free = Math.max(1, permits);
  }

  /** Runs `work` holding one permit. */
  async use<T>(work: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await work();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    }
  }
}
