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
