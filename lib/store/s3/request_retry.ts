/**
 * The one retry policy of S3 requests, for the SDK's and ours alike: three
 * tries, 200 ms doubling with full jitter (as the SDK's standard mode), on
 * the failures `isTransient` names (network, throttling, 5xx,
 * RequestTimeout) and after a clock-skew correction. Direct requests run it
 * through `retry()` (lib/common/retry.ts); the SDK through the strategy
 * below, which its retry middleware asks before each new try.
 */
import { type Backoff, backoffMs } from "../../common/retry.ts";
import { isTransient } from "../failure.ts";

export const ATTEMPTS = 3;
export const REQUEST_BACKOFF: Backoff = { firstMs: 200, maxMs: 20_000, jitter: "full" };

interface RetryToken {
  getRetryCount(): number;
  getRetryDelay(): number;
}

/** Whether an SDK error is worth another try. */
export function sdkRetryable(error: unknown): boolean {
  const metadata = (error as { $metadata?: { clockSkewCorrected?: boolean } }).$metadata;
  return isTransient(error) || metadata?.clockSkewCorrected === true;
}

/** The SDK's `RetryStrategyV2`, over our policy. */
export class SdkRetryStrategy {
  readonly mode = "tablesnap";

  acquireInitialRetryToken(): Promise<RetryToken> {
    return Promise.resolve(token(0, 0));
  }

  /** The next try's token, or a rejection: the SDK then throws the request's error. */
  refreshRetryTokenForRetry(previous: RetryToken, info: { error?: unknown }): Promise<RetryToken> {
    const failures = previous.getRetryCount() + 1;
    if (failures >= ATTEMPTS || !sdkRetryable(info.error)) return Promise.reject(info.error);
    return Promise.resolve(token(failures, backoffMs(REQUEST_BACKOFF, failures)));
  }

  recordSuccess(): void {}
}

function token(count: number, delayMs: number): RetryToken {
  return { getRetryCount: () => count, getRetryDelay: () => delayMs };
}
