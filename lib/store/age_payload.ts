/**
 * age's payload, "STREAM" (C2SP age spec, https://age-encryption.org/v1), on
 * the platform's ChaCha20-Poly1305 (`node:crypto`, OpenSSL: several times the
 * speed of the pure-JS cipher `age-encryption` is bound to; figures in
 * docs/design.md#client-side-encryption).
 *
 * The payload follows the header: a 16-byte random nonce, then the plaintext
 * in 64 KiB chunks, each sealed with ChaCha20-Poly1305 under the payload key
 * (HKDF-SHA-256 of the file key, salt the nonce, info "payload") and a
 * 12-byte nonce: the chunk's index as an 11-byte big-endian counter, then 1
 * for the last chunk and 0 for the others. The last chunk may be shorter
 * than 64 KiB, and is empty only when the whole plaintext is.
 *
 * Chunks are independent: any range of the ciphertext can be sealed again
 * from the plaintext (uploads regenerate parts instead of spooling them),
 * and any run of whole chunks opened alone (ranged restores).
 */
import { createCipheriv, createDecipheriv, hkdfSync } from "node:crypto";

/** Plaintext bytes per chunk. */
export const CHUNK_BYTES = 64 * 1024;
/** The Poly1305 tag each chunk gains. */
export const TAG_BYTES = 16;
/** A whole sealed chunk. */
export const SEALED_CHUNK_BYTES = CHUNK_BYTES + TAG_BYTES;
/** The payload's random nonce, between header and chunks. */
export const PAYLOAD_NONCE_BYTES = 16;

/** A chunk that does not open: damaged, tampered with, truncated or reordered. */
export class PayloadError extends Error {
  override name = "PayloadError";
}

/** The payload key of a file key and payload nonce. */
export function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", fileKey, nonce, "payload", 32));
}

/** Chunks a plaintext of `plaintext` bytes takes: at least one. */
export function chunkCount(plaintext: number): number {
  return Math.max(1, Math.ceil(plaintext / CHUNK_BYTES));
}

/** The sealed chunks' size (the payload without its nonce) for `plaintext` bytes. */
export function sealedSize(plaintext: number): number {
  return plaintext + chunkCount(plaintext) * TAG_BYTES;
}

/** The plaintext size of `sealed` bytes of chunks, or null when no plaintext has it. */
export function openedSize(sealed: number): number | null {
  if (sealed < TAG_BYTES) return null;
  const plaintext = sealed - Math.ceil(sealed / SEALED_CHUNK_BYTES) * TAG_BYTES;
  return plaintext >= 0 && sealedSize(plaintext) === sealed ? plaintext : null;
}

function chunkNonce(index: number, last: boolean): Uint8Array {
  const nonce = new Uint8Array(12);
  // Indexes stay far below 2^53 (a 2^53-chunk file is 2^69 bytes).
  new DataView(nonce.buffer).setBigUint64(3, BigInt(index));
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** Seals chunk `index` (at most 64 KiB of plaintext): its ciphertext then its tag. */
export function sealChunk(
  key: Uint8Array,
  index: number,
  plaintext: Uint8Array,
  last: boolean,
): Uint8Array {
  const out = new Uint8Array(plaintext.byteLength + TAG_BYTES);
  sealInto(key, index, plaintext, last, out, 0);
  return out;
}

/** Seals chunk `index` into `out` at `at`; returns the offset after it. */
function sealInto(
  key: Uint8Array,
  index: number,
  plaintext: Uint8Array,
  last: boolean,
  out: Uint8Array,
  at: number,
): number {
  const cipher = createCipheriv("chacha20-poly1305", key, chunkNonce(index, last), {
    authTagLength: TAG_BYTES,
  });
  out.set(cipher.update(plaintext), at);
  cipher.final();
  out.set(cipher.getAuthTag(), at + plaintext.byteLength);
  return at + plaintext.byteLength + TAG_BYTES;
}

/** Opens sealed chunk `index`; throws `PayloadError` when it does not authenticate. */
export function openChunk(
  key: Uint8Array,
  index: number,
  sealed: Uint8Array,
  last: boolean,
): Uint8Array {
  if (sealed.byteLength < TAG_BYTES) throw new PayloadError(`chunk ${index} is truncated`);
  if (last && sealed.byteLength === TAG_BYTES && index > 0) {
    throw new PayloadError(`chunk ${index} is an empty last chunk`);
  }
  const decipher = createDecipheriv("chacha20-poly1305", key, chunkNonce(index, last), {
    authTagLength: TAG_BYTES,
  });
  decipher.setAuthTag(sealed.subarray(sealed.byteLength - TAG_BYTES));
  const plaintext = decipher.update(sealed.subarray(0, sealed.byteLength - TAG_BYTES));
  try {
    decipher.final();
  } catch {
    throw new PayloadError(`chunk ${index} does not authenticate`);
  }
  return new Uint8Array(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength);
}

/**
 * Seals a whole plaintext held in memory (small files), into `out` from
 * `at` when given (`sealedSize` bytes), else into a new buffer.
 */
export function sealAll(
  key: Uint8Array,
  plaintext: Uint8Array,
  out = new Uint8Array(sealedSize(plaintext.byteLength)),
  at = 0,
): Uint8Array {
  const chunks = chunkCount(plaintext.byteLength);
  for (let i = 0; i < chunks; i++) {
    const piece = plaintext.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES);
    at = sealInto(key, i, piece, i === chunks - 1, out, at);
  }
  return out;
}

/**
 * Opens sealed chunks as they arrive in pieces of any size, from chunk
 * `firstIndex`: a whole payload (from 0), or a run of whole chunks fetched
 * by range. `lastIndex` is the payload's last chunk when known (a range);
 * otherwise the chunk the input ends with is taken as the last, so a
 * truncated payload fails. Pieces are copied into one reused chunk buffer
 * (or opened in place when a whole chunk lies inside one), so the only
 * allocation per chunk is the cipher's output.
 */
export class ChunkOpener {
  readonly #key: Uint8Array;
  readonly #lastIndex: number | undefined;
  readonly #held = new Uint8Array(SEALED_CHUNK_BYTES);
  #heldBytes = 0;
  #index: number;

  constructor(key: Uint8Array, firstIndex = 0, lastIndex?: number) {
    this.#key = key;
    this.#index = firstIndex;
    this.#lastIndex = lastIndex;
  }

  /** The plaintext of the chunks `piece` completes, but for the latest (it may be the last). */
  push(piece: Uint8Array): Uint8Array[] {
    const opened: Uint8Array[] = [];
    let at = 0;
    while (at < piece.byteLength) {
      // A whole chunk followed by more bytes is not the last one.
      if (this.#heldBytes === SEALED_CHUNK_BYTES) {
        opened.push(this.#open(this.#held, false));
        this.#heldBytes = 0;
      }
      if (this.#heldBytes === 0 && piece.byteLength - at > SEALED_CHUNK_BYTES) {
        opened.push(this.#open(piece.subarray(at, at + SEALED_CHUNK_BYTES), false));
        at += SEALED_CHUNK_BYTES;
        continue;
      }
      const take = Math.min(SEALED_CHUNK_BYTES - this.#heldBytes, piece.byteLength - at);
      this.#held.set(piece.subarray(at, at + take), this.#heldBytes);
      this.#heldBytes += take;
      at += take;
    }
    return opened;
  }

  /** The plaintext of the chunk the input ended with. */
  finish(): Uint8Array {
    // Every chunk but the last waits for a byte after it: some are left.
    if (this.#heldBytes === 0) {
      throw new PayloadError(`the payload ends before chunk ${this.#index}`);
    }
    const lastIndex = this.#lastIndex;
    if (lastIndex !== undefined && this.#index > lastIndex) {
      throw new PayloadError(`data after the last chunk (${lastIndex})`);
    }
    const last = lastIndex === undefined || this.#index === lastIndex;
    // A range that stops short of the last chunk ends on a chunk boundary.
    if (!last && this.#heldBytes !== SEALED_CHUNK_BYTES) {
      throw new PayloadError(`chunk ${this.#index} is truncated`);
    }
    const plaintext = this.#open(this.#held.subarray(0, this.#heldBytes), last);
    this.#heldBytes = 0;
    return plaintext;
  }

  #open(sealed: Uint8Array, last: boolean): Uint8Array {
    if (!last && this.#lastIndex !== undefined && this.#index >= this.#lastIndex) {
      throw new PayloadError(`data after the last chunk (${this.#lastIndex})`);
    }
    // The cipher's output is a new buffer: `sealed` may be reused at once.
    return openChunk(this.#key, this.#index++, sealed, last);
  }
}

/** `ChunkOpener` as a stream stage. */
export function openChunks(
  key: Uint8Array,
  firstIndex = 0,
  lastIndex?: number,
): TransformStream<Uint8Array, Uint8Array> {
  const opener = new ChunkOpener(key, firstIndex, lastIndex);
  return new TransformStream({
    transform(piece, controller) {
      for (const plaintext of opener.push(piece)) controller.enqueue(plaintext);
    },
    flush(controller) {
      controller.enqueue(opener.finish());
    },
  });
}

/** How much plaintext is read and sealed at a time when sealing from a file. */
const READ_CHUNKS = 16;

/**
 * Seals chunks `first` .. `first + count - 1` of a file's plaintext, reading
 * it from the file (`plaintextSize` bytes in all): the payload bytes from
 * `first * SEALED_CHUNK_BYTES` on, each chunk as two pieces, the cipher's
 * output then the tag. The cipher's output is a new buffer whatever is done
 * (`node:crypto` has no in-place update); it is passed on as it is rather
 * than copied into another new buffer, since every buffer made per chunk
 * is garbage off the V8 heap that raises the peak RSS until it is
 * collected. `onPlaintext` sees every plaintext byte read, in order.
 * Throws when the file is shorter than `plaintextSize`.
 */
export async function* sealFileChunks(
  file: { path: string; size: number },
  key: Uint8Array,
  first: number,
  count: number,
  onPlaintext?: (bytes: Uint8Array) => void,
): AsyncGenerator<Uint8Array> {
  const chunks = chunkCount(file.size);
  const end = Math.min(first + count, chunks);
  if (first >= end) return;
  using source = await Deno.open(file.path, { read: true });
  await source.seek(first * CHUNK_BYTES, Deno.SeekMode.Start);
  const buffer = new Uint8Array(READ_CHUNKS * CHUNK_BYTES);
  for (let index = first; index < end;) {
    const batch = Math.min(READ_CHUNKS, end - index);
    const want = Math.min(batch * CHUNK_BYTES, file.size - index * CHUNK_BYTES);
    let filled = 0;
    while (filled < want) {
      const n = await source.read(buffer.subarray(filled, want));
      if (n === null) throw new PayloadError(`'${file.path}' became shorter while being read`);
      filled += n;
    }
    const plaintext = buffer.subarray(0, want);
    onPlaintext?.(plaintext);
    for (let i = 0; i < batch; i++, index++) {
      const piece = plaintext.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES);
      const cipher = createCipheriv(
        "chacha20-poly1305",
        key,
        chunkNonce(index, index === chunks - 1),
        {
          authTagLength: TAG_BYTES,
        },
      );
      const sealed = cipher.update(piece);
      cipher.final();
      if (sealed.byteLength > 0) yield sealed;
      yield cipher.getAuthTag();
    }
  }
}
