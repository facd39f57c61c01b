/**
 * The store a job works with: the bucket's own (open_store.ts), wrapped as
 * its options ask. Jobs get a `Store` and its traits, never a wrapper.
 */
import { EncryptingStore, type EncryptionOptions } from "./encrypting_store.ts";
import { RateLimitedStore, RateLimiter } from "./rate_limit.ts";
import type { Store } from "./store.ts";

export interface Wrapping {
  /** --max-bandwidth: file uploads share this many bytes per second. */
  maxBandwidth?: number | undefined;
  /**
   * Encryption of file bodies (recipients) and decryption of what is read
   * (identities). Reading jobs always pass it, keys or not: an encrypted
   * object read without an identity is refused in one line naming it, not
   * restored as ciphertext.
   */
  encryption?: EncryptionOptions | undefined;
}

export function wrapStore(store: Store, wrapping: Wrapping): Store {
  const limited = wrapping.maxBandwidth === undefined
    ? store
    : new RateLimitedStore(store, new RateLimiter(wrapping.maxBandwidth));
  // Outermost: the rate limit counts the ciphertext that is really sent.
  return wrapping.encryption ? new EncryptingStore(limited, wrapping.encryption) : limited;
}
