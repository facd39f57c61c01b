/**
 * An encrypted upload's body, made from the plaintext file on demand: the
 * age header and payload nonce, then the sealed chunks. Any byte range can
 * be made again (a part, a retried request, a resumed upload), so nothing is
 * ever written to disk and memory stays at one read buffer per range.
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { md5Hex, newMd5, PartDigests } from "../common/digest.ts";
import {
  CHUNK_BYTES,
  PAYLOAD_NONCE_BYTES,
  payloadKey,
  SEALED_CHUNK_BYTES,
  sealedSize,
  sealFileChunks,
} from "./age_payload.ts";
import { type BodySource, type ByteRange, DigestMismatchError } from "./store.ts";

/** What makes an encrypted object's bytes again: its header, payload nonce and file key. */
export interface SealingSecret {
  header: Uint8Array;
  nonce: Uint8Array;
  fileKey: Uint8Array;
}

const SECRET_TAG = "age-v1";
const FILE_KEY_BYTES = 16;

/**
 * A secret as text, for a resumed upload to seal the same bytes: tagged
 * with the recipients it was made for, since a header for others must not
 * be resumed.
 */
export function secretText(secret: SealingSecret, recipients: readonly string[]): string {
  const bytes = Buffer.concat([secret.header, secret.nonce, secret.fileKey]);
  return `${SECRET_TAG}:${recipientsTag(recipients)}:${bytes.toString("base64")}`;
}

/** The secret of `secretText`, or null when it is not one for these recipients. */
export function secretOf(text: string, recipients: readonly string[]): SealingSecret | null {
  const [tag, forWhom, encoded, ...rest] = text.split(":");
  if (tag !== SECRET_TAG || forWhom !== recipientsTag(recipients) || rest.length > 0) return null;
  const bytes = new Uint8Array(Buffer.from(encoded ?? "", "base64"));
  const headerBytes = bytes.byteLength - PAYLOAD_NONCE_BYTES - FILE_KEY_BYTES;
  if (headerBytes <= 0) return null;
  return {
    header: bytes.slice(0, headerBytes),
    nonce: bytes.slice(headerBytes, headerBytes + PAYLOAD_NONCE_BYTES),
    fileKey: bytes.slice(headerBytes + PAYLOAD_NONCE_BYTES),
  };
}

function recipientsTag(recipients: readonly string[]): string {
  const hash = createHash("sha256").update([...recipients].sort().join("\n"));
  return hash.digest("hex").slice(0, 16);
}

/** The digests an upload needs before it starts: of each part, else of the whole body. */
export interface SealedDigests {
  /** Empty for a multipart upload, whose parts are checked instead. */
  md5: string;
  partMd5s: string[];
}

export class SealedFile implements BodySource {
  readonly size: number;
  readonly #file: { path: string; size: number };
  readonly #prefix: Uint8Array;
  readonly #key: Uint8Array;

  constructor(file: { path: string; size: number }, secret: SealingSecret) {
    this.#file = { path: file.path, size: file.size };
    this.#prefix = new Uint8Array(secret.header.byteLength + PAYLOAD_NONCE_BYTES);
    this.#prefix.set(secret.header);
    this.#prefix.set(secret.nonce, secret.header.byteLength);
    this.#key = payloadKey(secret.fileKey, secret.nonce);
    this.size = this.#prefix.byteLength + sealedSize(file.size);
  }

  /** The body's bytes in `range`, sealed again from the file. */
  async *read(range: ByteRange): AsyncIterable<Uint8Array> {
    const end = Math.min(range.offset + range.length, this.size);
    let at = range.offset;
    if (at < this.#prefix.byteLength) {
      yield this.#prefix.subarray(at, Math.min(end, this.#prefix.byteLength));
      at = this.#prefix.byteLength;
    }
    if (at >= end) return;
    const from = at - this.#prefix.byteLength;
    const to = end - this.#prefix.byteLength;
    const first = Math.floor(from / SEALED_CHUNK_BYTES);
    const count = Math.ceil(to / SEALED_CHUNK_BYTES) - first;
    let chunkStart = first * SEALED_CHUNK_BYTES;
    for await (const sealed of sealFileChunks(this.#file, this.#key, first, count)) {
      const lo = Math.max(0, from - chunkStart);
      const hi = Math.min(sealed.byteLength, to - chunkStart);
      yield lo === 0 && hi === sealed.byteLength ? sealed : sealed.subarray(lo, hi);
      chunkStart += sealed.byteLength;
    }
  }

  /**
   * Seals the whole file once for its digests, checking on the way that the
   * plaintext is still what the caller digested (`md5`): a file that changed
   * since fails here, as it would fail the store's Content-MD5 check.
   */
  async digests(plaintextMd5: string, partSize: number | undefined): Promise<SealedDigests> {
    // Each byte hashed once more: the parts' MD5s for a multipart upload
    // (S3 never sees the whole's), else the whole's.
    const plain = newMd5();
    const whole = partSize === undefined ? newMd5() : undefined;
    const parts = new PartDigests(partSize);
    whole?.update(this.#prefix);
    parts.update(this.#prefix);
    const chunks = Math.ceil(this.#file.size / CHUNK_BYTES) || 1;
    const sealedChunks = sealFileChunks(this.#file, this.#key, 0, chunks, (plaintext) => {
      plain.update(plaintext);
    });
    for await (const sealed of sealedChunks) {
      whole?.update(sealed);
      parts.update(sealed);
    }
    const md5 = plain.digest("hex");
    if (md5 !== plaintextMd5) {
      throw new DigestMismatchError(
        `Content of '${this.#file.path}' changed during upload (MD5 ${md5}, expected ${plaintextMd5})`,
      );
    }
    return { md5: whole?.digest("hex") ?? "", partMd5s: parts.finish() };
  }
}

/** Part MD5s of bytes in memory. */
export function partMd5sOf(bytes: Uint8Array, partSize: number): string[] {
  const md5s: string[] = [];
  for (let start = 0; start < bytes.length; start += partSize) {
    md5s.push(md5Hex(bytes.subarray(start, start + partSize)));
  }
  return md5s;
}
