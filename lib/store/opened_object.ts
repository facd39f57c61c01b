/**
 * Reading encrypted objects: a whole object decrypted as it streams in, or
 * any plaintext byte range of one, fetched as the run of whole sealed
 * chunks that holds it and opened alone (chunks are independent). A ranged
 * read needs the object's header first: it is read once per object (a
 * small ranged GET) and its payload key kept for the ranges that follow.
 */
import { type FileKeyUnwrapper, readPrefix } from "./age_header.ts";
import {
  CHUNK_BYTES,
  chunkCount,
  ChunkOpener,
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
 * An object's body read piece by piece, remembering whether it failed by
 * itself (a network error), so that such a failure is not reported as a
 * decryption failure. A reader, not a stream stage: no queue or promise
 * per piece on top of the body's own. A byte stream (S3 and file bodies)
 * is read into one reused buffer, as plaintext restores read it: each
 * piece is valid until the next `read`, and no buffer is made per piece.
 */
export class SourceReader {
  failed = false;
  error: unknown = undefined;
  readonly #byob: ReadableStreamBYOBReader | null;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array> | null;
  #buffer: ArrayBuffer | null = null;

  constructor(body: ReadableStream<Uint8Array>) {
    let byob: ReadableStreamBYOBReader | null = null;
    try {
      byob = body.getReader({ mode: "byob" });
    } catch (err) {
      // Not a byte stream: a TypeError, and the stream is still unlocked.
      if (!(err instanceof TypeError)) throw err;
    }
    this.#byob = byob;
    this.#reader = byob ? null : body.getReader();
  }

  async read(): Promise<ReadableStreamReadResult<Uint8Array>> {
    try {
      if (!this.#byob) return await this.#reader!.read();
      this.#buffer ??= new ArrayBuffer(SOURCE_READ_BYTES);
      const result = await this.#byob.read(new Uint8Array(this.#buffer));
      // The buffer came back (transferred) as the result's.
      if (result.value) this.#buffer = result.value.buffer as ArrayBuffer;
      return result.done ? { done: true } : result;
    } catch (err) {
      this.failed = true;
      this.error = err;
      throw err;
    }
  }

  cancel(reason?: unknown): Promise<void> {
    return (this.#byob ?? this.#reader)!.cancel(reason);
  }
}

/** The most a `SourceReader` takes from a byte stream at once. */
const SOURCE_READ_BYTES = 4 * SEALED_CHUNK_BYTES;

/**
 * Reads the header off the front of an object's (ciphertext) body. Returns
 * the payload key and the bytes read past the header (the first sealed
 * chunks); `source` is left at the next unread piece.
 */
export async function openHeader(
  unwrapper: FileKeyUnwrapper,
  head: ObjectHead,
  source: SourceReader,
): Promise<{ header: OpenedHeader; rest: Uint8Array }> {
  try {
    const prefix = await readPrefix(source);
    const fileKey = await unwrapper.fileKeyOf(prefix.header);
    const prefixBytes = prefix.header.byteLength + PAYLOAD_NONCE_BYTES;
    const size = openedSize(head.size - prefixBytes);
    if (size === null) throw new HeaderError("its size is not that of an age file");
    const chunkKey = payloadKey(fileKey, prefix.nonce);
    return { header: { etag: head.etag, prefixBytes, size, chunkKey }, rest: prefix.rest };
  } catch (err) {
    await source.cancel().catch(() => {});
    throw err;
  }
}

/** Which chunks a body holds, and which plaintext bytes of them to pass. */
export interface ChunkRun {
  first: number;
  /** The payload's last chunk, when the body is a range of it. */
  lastIndex?: number;
  /** Plaintext bytes to drop at the front. */
  skip: number;
  /** Plaintext bytes to pass after them (the rest are opened, then dropped). */
  keep: number;
}

/**
 * The plaintext of the sealed chunks `source` holds after `rest`, in one
 * stream stage: socket pieces gathered into chunks, opened, trimmed to the
 * run's bytes. Any failure is replaced by `mapError(failure)`.
 */
export function openedBody(
  source: SourceReader,
  rest: Uint8Array,
  chunkKey: Uint8Array,
  run: ChunkRun,
  mapError: (err: unknown) => unknown,
): ReadableStream<Uint8Array> {
  const opener = new ChunkOpener(chunkKey, run.first, run.lastIndex);
  let { skip, keep } = run;
  let pending: Uint8Array | null = rest;
  const pass = (plaintext: Uint8Array, controller: ReadableStreamDefaultController) => {
    if (skip >= plaintext.byteLength) {
      skip -= plaintext.byteLength;
      return;
    }
    const take = plaintext.subarray(skip, skip + keep);
    skip = 0;
    keep -= take.byteLength;
    if (take.byteLength > 0) controller.enqueue(take);
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        for (;;) {
          let piece = pending;
          pending = null;
          if (piece === null) {
            const { done, value } = await source.read();
            if (done) {
              pass(opener.finish(), controller);
              controller.close();
              return;
            }
            piece = value;
          }
          const opened = opener.push(piece);
          for (const plaintext of opened) pass(plaintext, controller);
          if (opened.length > 0) return;
        }
      } catch (err) {
        throw mapError(err);
      }
    },
    cancel: (reason) => source.cancel(reason),
  });
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
  source: SourceReader,
  where: ReturnType<typeof sealedRange>,
  mapError: (err: unknown) => unknown,
): ReadableStream<Uint8Array> {
  const run = {
    first: where.first,
    lastIndex: chunkCount(header.size) - 1,
    skip: where.skip,
    keep: where.keep,
  };
  return openedBody(source, new Uint8Array(0), header.chunkKey, run, mapError);
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
