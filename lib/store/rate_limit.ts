/**
 * `--max-bandwidth`: a backup must never saturate the database host's
 * network. `RateLimitedStore` wraps any store and holds every byte its file
 * uploads send to one shared token bucket.
 */
import { sleep as realSleep } from "../common/retry.ts";
import type {
  ByteCounter,
  CopyOptions,
  FileUpload,
  GetOptions,
  MultipartUploadInfo,
  ObjectHead,
  ObjectInfo,
  PutFileOptions,
  Store,
  UploadedPart,
} from "./store.ts";

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
export class RateLimitedStore implements Store {
  readonly #inner: Store;
  readonly #limiter: RateLimiter;
  // The multipart methods exist exactly when the inner store has them, so
  // that callers can still tell a store without multipart uploads.
  readonly copy?: (from: string, to: string, options?: CopyOptions) => Promise<void>;
  readonly listUploads?: (prefix: string) => AsyncIterable<MultipartUploadInfo>;
  readonly abortUpload?: (key: string, uploadId: string) => Promise<void>;
  readonly listParts?: (key: string, uploadId: string) => Promise<UploadedPart[]>;

  constructor(inner: Store, limiter: RateLimiter) {
    this.#inner = inner;
    this.#limiter = limiter;
    if (inner.copy) this.copy = (from, to, options) => inner.copy!(from, to, options);
    if (inner.listUploads) this.listUploads = (prefix) => inner.listUploads!(prefix);
    if (inner.abortUpload) this.abortUpload = (key, id) => inner.abortUpload!(key, id);
    if (inner.listParts) this.listParts = (key, id) => inner.listParts!(key, id);
  }

  get url(): string {
    return this.#inner.url;
  }

  check(): Promise<void> {
    return this.#inner.check();
  }

  list(prefix: string, options?: { delimiter?: string }): AsyncIterable<ObjectInfo> {
    return this.#inner.list(prefix, options);
  }

  head(key: string): Promise<ObjectHead | null> {
    return this.#inner.head(key);
  }

  putBytes(
    key: string,
    body: Uint8Array,
    options: { metadata?: Record<string, string>; contentType?: string },
  ): Promise<void> {
    return this.#inner.putBytes(key, body, options);
  }

  putFile(key: string, file: FileUpload, options: PutFileOptions = {}): Promise<void> {
    const outer = options.onBytes;
    const onBytes: ByteCounter = async (bytes) => {
      await this.#limiter.take(bytes);
      await outer?.(bytes);
    };
    return this.#inner.putFile(key, file, { ...options, onBytes });
  }

  get(
    key: string,
    options?: GetOptions,
  ): Promise<{ head: ObjectHead; body: ReadableStream<Uint8Array> } | null> {
    return this.#inner.get(key, options);
  }

  deleteMany(keys: string[]): Promise<void> {
    return this.#inner.deleteMany(keys);
  }

  close(): void {
    this.#inner.close();
  }
}
