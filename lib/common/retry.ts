/**
 * The one retry policy: every wait after a failure (a request, an upload
 * attempt, an upload cycle, an index check, a download) doubles from a first
 * delay up to a cap. What is worth retrying is the caller's question; for S3
 * errors the answer is `isTransient` (lib/store/failure.ts).
 */

/** Waits after the 1st, 2nd, ... failure: `firstMs`, doubling, at most `maxMs`, then jitter. */
export interface Backoff {
  firstMs: number;
  maxMs: number;
  /**
   * "full": anywhere in [0, d], for requests many clients send at once (AWS's
   * advice); "half": in [d/2, d], so a long wait stays long; "none": d.
   */
  jitter: "full" | "half" | "none";
}

/** The wait after `failures` failures in a row (1 for the first). */
export function backoffMs(backoff: Backoff, failures: number, random = Math.random): number {
  const ms = Math.min(backoff.maxMs, backoff.firstMs * 2 ** Math.max(0, failures - 1));
  if (backoff.jitter === "none") return ms;
  if (backoff.jitter === "half") return ms / 2 + random() * (ms / 2);
  return random() * ms;
}

export interface RetryOptions {
  /** Tries in all, the first included. */
  attempts: number;
  backoff: Backoff;
  /** Whether an error is worth another try (default: every error is). */
  isRetryable?: (err: unknown) => boolean;
  /** Told before each wait: for logs and metrics. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Aborted: no further try; the last error is thrown. */
  signal?: AbortSignal;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
}

/**
 * Runs `work` until it succeeds, an error is not retryable, the signal is
 * aborted or `attempts` are spent; then throws the last error.
 */
export async function retry<T>(
  work: (attempt: number) => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const wait = options.sleep ?? sleep;
  for (let attempt = 1;; attempt++) {
    try {
      return await work(attempt);
    } catch (err) {
      const retryable = options.isRetryable?.(err) ?? true;
      if (attempt >= options.attempts || !retryable || options.signal?.aborted) throw err;
      const ms = backoffMs(options.backoff, attempt, options.random);
      options.onRetry?.(err, attempt, ms);
      await wait(ms, options.signal);
      if (options.signal?.aborted) throw err;
    }
  }
}

/** Resolves after `ms`, or at once when `signal` is aborted (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
