/**
 * `--max-bandwidth`: a backup must never saturate the database host's
 * network. `RateLimitedStore` wraps any store and holds every byte its file
 * uploads send to one shared token bucket.
 */
import { sleep as realSleep } from "../common/retry.ts";
import { ForwardingStore } from "./forwarding_store.ts";
import type { ByteCounter, FileUpload, PutFileOptions, Store } from "./store.ts";

/**
 * A token bucket. Tokens are bytes; the bucket holds at most one second's
 * worth, so bursts stay short. Callers are served in order.
 */
export class RateLimiter {
  readonly bytesPerSecond: number;
  #tokens = 0;
  #last: number;
  #queue: Promise<void> = Promise.resolve();
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;

  constructor(
    bytesPerSecond: number,
    clock: { now?: () => number; sleep?: (ms: number) => Promise<void> } = {},
  ) {
    this.bytesPerSecond = bytesPerSecond;
    this.#now = clock.now ?? (() => performance.now());
    this.#sleep = clock.sleep ?? realSleep;
    this.#last = this.#now();
  }

  /** Resolves once `bytes` may be sent. */
  take(bytes: number): Promise<void> {
    const turn = this.#queue.then(() => this.#wait(bytes));
    this.#queue = turn;
    return turn;
  }

  async #wait(bytes: number): Promise<void> {
    const now = this.#now();
    const elapsed = (now - this.#last) / 1000;
    this.#last = now;
    this.#tokens = Math.min(this.bytesPerSecond, this.#tokens + elapsed * this.bytesPerSecond);
    this.#tokens -= bytes;
    if (this.#tokens < 0) await this.#sleep((-this.#tokens / this.bytesPerSecond) * 1000);
  }
}

/** A store whose file uploads share one `RateLimiter`; everything else passes through. */
export class RateLimitedStore extends ForwardingStore {
  readonly #limiter: RateLimiter;

  constructor(inner: Store, limiter: RateLimiter) {
    super(inner);
    this.#limiter = limiter;
  }

  override putFile(key: string, file: FileUpload, options: PutFileOptions = {}): Promise<void> {
    const outer = options.onBytes;
    const onBytes: ByteCounter = async (bytes) => {
      await this.#limiter.take(bytes);
      await outer?.(bytes);
    };
    return this.inner.putFile(key, file, { ...options, onBytes });
  }
}
