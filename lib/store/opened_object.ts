/**
 * Reading encrypted objects: a whole object decrypted as it streams in, or
 * any plaintext byte range of one, fetched as the run of whole sealed
 * chunks that holds it and opened alone (chunks are independent). A ranged
 * read needs the object's header first: it is read once per object (a
 * small ranged GET) and its payload key kept for the ranges that follow.
 */
import { fileKeyOf, readPrefix } from "./age_header.ts";
import {
  CHUNK_BYTES,
  chunkCount,
  openChunks,
  openedSize,
  PAYLOAD_NONCE_BYTES,
  payloadKey,
  SEALED_CHUNK_BYTES,
  sealedSize,
} from "./age_payload.ts";
import type { ByteRange, ObjectHead } from "./store.ts";

/** What decrypts an object's chunks, and where they start. */
export interface OpenedHeader {
  /** The stored object's ETag: a range of another version cannot use this key. */
  etag: string;
  /** Header and payload nonce, in bytes. */
  prefixBytes: number;
  /** The plaintext's size. */
  size: number;
  chunkKey: Uint8Array;
}

/** Why a header could not be read: `inHeader` failures are the header's, not the chunks'. */
export class HeaderError extends Error {
  override name = "HeaderError";
}

/**
 * Reads the header off the front of an object's (ciphertext) stream.
 * Returns the payload key and the rest of the stream (sealed chunks).
 */
export async function openHeader(
  identities: readonly string[],
  head: ObjectHead,
  body: ReadableStream<Uint8Array>,
): Promise<{ header: OpenedHeader; chunks: ReadableStream<Uint8Array> }> {
  const reader = body.getReader();
  let header: OpenedHeader;
  let rest: Uint8Array;
  try {
    const prefix = await readPrefix(reader);
    const fileKey = await fileKeyOf(identities, prefix.header);
    const prefixBytes = prefix.header.byteLength + PAYLOAD_NONCE_BYTES;
    const size = openedSize(head.size - prefixBytes);
    if (size === null) throw new HeaderError("its size is not that of an age file");
    header = { etag: head.etag, prefixBytes, size, chunkKey: payloadKey(fileKey, prefix.nonce) };
    rest = prefix.rest;
  } catch (err) {
    await reader.cancel().catch(() => {});
    throw err;
  }
  const chunks = new ReadableStream<Uint8Array>({
    start(controller) {
      if (rest.byteLength > 0) controller.enqueue(rest);
    },
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return { header, chunks };
}

/** The ciphertext range holding the plaintext `range`: whole chunks, and what to trim. */
export function sealedRange(header: OpenedHeader, range: ByteRange) {
  const end = Math.min(range.offset + range.length, header.size);
  const first = Math.floor(range.offset / CHUNK_BYTES);
  const last = Math.max(first, Math.ceil(end / CHUNK_BYTES) - 1);
  const offset = header.prefixBytes + first * SEALED_CHUNK_BYTES;
  const stop = header.prefixBytes + sealedSize(header.size);
  const length = Math.min(header.prefixBytes + (last + 1) * SEALED_CHUNK_BYTES, stop) - offset;
  return {
    range: { offset, length },
    first,
    skip: range.offset - first * CHUNK_BYTES,
    keep: Math.max(0, end - range.offset),
  };
}

/** Opens a fetched run of sealed chunks from `first`, trimmed to the plaintext range. */
export function openRange(
  header: OpenedHeader,
  sealed: ReadableStream<Uint8Array>,
  where: ReturnType<typeof sealedRange>,
): ReadableStream<Uint8Array> {
  const lastIndex = chunkCount(header.size) - 1;
  return sealed
    .pipeThrough(openChunks(header.chunkKey, where.first, lastIndex))
    .pipeThrough(trim(where.skip, where.keep));
}

/** Drops `skip` bytes, passes `keep`, drops the rest. */
function trim(skip: number, keep: number): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream({
    transform(piece, controller) {
      if (skip >= piece.byteLength) {
        skip -= piece.byteLength;
        return;
      }
      const take = piece.subarray(skip, skip + keep);
      skip = 0;
      keep -= take.byteLength;
      if (take.byteLength > 0) controller.enqueue(take);
    },
  });
}

/** Headers read for ranged reads, by key: a few objects at a time are restored. */
export class HeaderCache {
  readonly #entries = new Map<string, Promise<OpenedHeader | null>>();
  /** Keys a HEAD showed encrypted, whose header is not read yet. */
  readonly #encrypted = new Set<string>();
  readonly #max: number;

  constructor(max = 64) {
    this.#max = max;
  }

  /** The cached answer for `key`, or `load()`'s (kept unless it fails). */
  get(key: string, load: () => Promise<OpenedHeader | null>): Promise<OpenedHeader | null> {
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = load();
      entry.catch(() => this.#entries.delete(key));
      this.#entries.set(key, entry);
      if (this.#entries.size > this.#max) {
        this.#entries.delete(this.#entries.keys().next().value!);
      }
    }
    return entry;
  }

  /** Whether `key` is known to be encrypted (its header read, or a HEAD said so). */
  knowsEncrypted(key: string): boolean {
    return this.#entries.has(key) || this.#encrypted.has(key);
  }

  /** A HEAD showed `key` encrypted: its first ranged read reads the header first. */
  markEncrypted(key: string): void {
    this.#encrypted.add(key);
    if (this.#encrypted.size > this.#max) {
      this.#encrypted.delete(this.#encrypted.values().next().value!);
    }
  }

  forget(key: string): void {
    this.#entries.delete(key);
    this.#encrypted.delete(key);
  }
}

/**
 * The stream as it is, remembering whether it failed by itself (a network
 * error), so that such a failure is not reported as a decryption failure.
 */
export function trackErrors(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const tracked = { failed: false, error: undefined as unknown, stream: undefined as unknown };
  tracked.stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result;
      try {
        result = await reader.read();
      } catch (err) {
        tracked.failed = true;
        tracked.error = err;
        throw err;
      }
      if (result.done) controller.close();
      else controller.enqueue(result.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return tracked as { failed: boolean; error: unknown; stream: ReadableStream<Uint8Array> };
}

/** The stream, with any error it fails with replaced by `mapError(error)`. */
export function mapErrors(
  body: ReadableStream<Uint8Array>,
  mapError: (err: unknown) => unknown,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result;
      try {
        result = await reader.read();
      } catch (err) {
        throw mapError(err);
      }
      if (result.done) controller.close();
      else controller.enqueue(result.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
}
