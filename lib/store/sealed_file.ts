/**
 * An encrypted upload's body, made from the plaintext file on demand: the
 * age header and payload nonce, then the sealed chunks. Any byte range can
 * be made again (a part, a retried request, a resumed upload), so nothing is
 * ever written to disk and memory stays at one read buffer per range.
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { Crc32, crc32Base64, md5Hex, newMd5 } from "../common/digest.ts";
import { PartDigests } from "../common/part_digests.ts";
import {
  CHUNK_BYTES,
  PAYLOAD_NONCE_BYTES,
  payloadKey,
  sealAll,
  SEALED_CHUNK_BYTES,
  sealedSize,
  sealFileChunks,
} from "./age_payload.ts";
import {
  type BodyCheck,
  type BodySource,
  type ByteRange,
  DigestMismatchError,
  type FileUpload,
} from "./store.ts";

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
  /** The plaintext file's MD5 (its `md5sum`). */
  fileMd5: string;
  /** The body's MD5: empty for a multipart upload or one checked by `crc32`. */
  md5: string;
  /** The body's CRC-32 (base64), when asked for instead of its MD5. */
  crc32?: string;
  partMd5s: string[];
}

/** What `SealedFile.digests` computes. */
export interface DigestRequest {
  /** The plaintext's MD5 the caller computed: checked; empty: computed here. */
  fileMd5: string;
  /** Set for a multipart upload: part MD5s. */
  partSize: number | undefined;
  /** A single-part upload's digest: the server's check (`Store.bodyCheck`). */
  check: BodyCheck;
}

/** Checks whose body is sent with nothing computed before it: no ciphertext pass. */
function streams(check: BodyCheck): check is "signed-chunks" | "none" {
  return check === "signed-chunks" || check === "none";
}

export class SealedFile implements BodySource {
  readonly size: number;
  readonly #file: { path: string; size: number };
  readonly #prefix: Uint8Array;
  readonly #key: Uint8Array;
  /** The plaintext's CRC-32 as the digests' pass read it, when the body carries no digest. */
  #plaintextCrc: string | undefined;

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
    const whole = range.offset === 0 && end === this.size;
    const check = whole ? this.#unchangedCheck() : undefined;
    for await (const sealed of sealFileChunks(this.#file, this.#key, first, count, check)) {
      const lo = Math.max(0, from - chunkStart);
      const hi = Math.min(sealed.byteLength, to - chunkStart);
      yield lo === 0 && hi === sealed.byteLength ? sealed : sealed.subarray(lo, hi);
      chunkStart += sealed.byteLength;
    }
  }

  /**
   * When the body carries no digest the server checks against the digests'
   * pass (signed frames, none): the check that the plaintext sent is the
   * one that pass read, by its CRC-32. It throws on the last plaintext read,
   * before the sealed chunks of it are sent, so the request ends short of
   * its length and no object is made of a file that changed in between.
   */
  #unchangedCheck(): ((plaintext: Uint8Array) => void) | undefined {
    const expected = this.#plaintextCrc;
    if (expected === undefined) return undefined;
    const crc = new Crc32();
    let read = 0;
    return (plaintext) => {
      crc.update(plaintext);
      read += plaintext.byteLength;
      if (read === this.#file.size && crc.base64() !== expected) {
        throw new DigestMismatchError(
          `Content of '${this.#file.path}' changed during upload (CRC-32 ${crc.base64()}, expected ${expected})`,
        );
      }
    };
  }

  /**
   * Seals the whole file once for its digests, and hashes the plaintext on
   * the way: the file's MD5, or the check that it is still what the caller
   * digested (a file that changed since fails here, as it would fail the
   * store's check of the body). The ciphertext is hashed once more: the
   * parts' MD5s for a multipart upload (S3 never sees the whole's), else
   * the whole's MD5 or CRC-32 (some thirty times cheaper: where the server
   * verifies it, or verifies nothing).
   */
  async digests(request: DigestRequest): Promise<SealedDigests> {
    const { partSize } = request;
    if (partSize === undefined && streams(request.check)) {
      return await this.#plaintextDigests(request);
    }
    const plain = newMd5();
    const md5 = partSize === undefined && request.check === "md5" ? newMd5() : undefined;
    const crc = partSize === undefined && request.check === "crc32" ? new Crc32() : undefined;
    const parts = new PartDigests(partSize);
    for (const whole of [md5, crc, parts]) whole?.update(this.#prefix);
    const chunks = Math.ceil(this.#file.size / CHUNK_BYTES) || 1;
    const sealedChunks = sealFileChunks(this.#file, this.#key, 0, chunks, (plaintext) => {
      plain.update(plaintext);
    });
    for await (const sealed of sealedChunks) {
      md5?.update(sealed);
      crc?.update(sealed);
      parts.update(sealed);
    }
    const fileMd5 = plain.digest("hex");
    if (request.fileMd5 && fileMd5 !== request.fileMd5) {
      throw new DigestMismatchError(
        `Content of '${this.#file.path}' changed during upload (MD5 ${fileMd5}, expected ${request.fileMd5})`,
      );
    }
    const digests: SealedDigests = {
      fileMd5,
      md5: md5?.digest("hex") ?? "",
      partMd5s: parts.finish(),
    };
    if (crc) digests.crc32 = crc.base64();
    return digests;
  }

  /**
   * The digests of a body sent with no digest before it: the plaintext's
   * MD5 (or its check) and its CRC-32, for `read` to check the file did not
   * change since; no ciphertext is made here.
   */
  async #plaintextDigests(request: DigestRequest): Promise<SealedDigests> {
    const { path, size } = this.#file;
    const plain = newMd5();
    const crc = new Crc32();
    using file = await Deno.open(path, { read: true });
    const buffer = new Uint8Array(Math.max(1, Math.min(READ_BYTES, size)));
    for (let read = 0; read < size;) {
      const n = await file.read(buffer.subarray(0, Math.min(buffer.byteLength, size - read)));
      if (n === null) throw new DigestMismatchError(`'${path}' became shorter while being read`);
      const bytes = buffer.subarray(0, n);
      plain.update(bytes);
      crc.update(bytes);
      read += n;
    }
    const fileMd5 = plain.digest("hex");
    if (request.fileMd5 && fileMd5 !== request.fileMd5) {
      throw new DigestMismatchError(
        `Content of '${path}' changed during upload (MD5 ${fileMd5}, expected ${request.fileMd5})`,
      );
    }
    this.#plaintextCrc = crc.base64();
    return { fileMd5, md5: "", partMd5s: [] };
  }
}

/** Plaintext read at a time by the digests' pass when nothing is sealed in it. */
const READ_BYTES = 1024 * 1024;

/** Part MD5s of bytes in memory. */
export function partMd5sOf(bytes: Uint8Array, partSize: number): string[] {
  const md5s: string[] = [];
  for (let start = 0; start < bytes.length; start += partSize) {
    md5s.push(md5Hex(bytes.subarray(start, start + partSize)));
  }
  return md5s;
}

/** S3 refuses more parts than this. */
const MAX_PARTS = 10_000;

/** The caller's part size, raised if the ciphertext would need more than S3's 10,000 parts. */
function partSizeFor(file: FileUpload, ciphertextBytes: number): number | undefined {
  if (!file.parts) return undefined;
  return Math.max(file.parts.partSize, Math.ceil(ciphertextBytes / MAX_PARTS));
}

/**
 * The upload of `file` encrypted with `secret`, and the file's MD5: sealed
 * in memory when the caller holds the bytes (small files), else made from
 * the file as it is sent, after a pass for the digests that must precede
 * it: the plaintext's alone when the body goes as signed frames or with no
 * digest (`check`), else the ciphertext's too, sealed for them.
 */
export async function sealedUpload(
  file: FileUpload,
  secret: SealingSecret,
  check: BodyCheck,
): Promise<{ upload: FileUpload; fileMd5: string }> {
  if (file.body) return { upload: sealInMemory(file, file.body, secret, check), fileMd5: file.md5 };
  const source = new SealedFile(file, secret);
  const partSize = partSizeFor(file, source.size);
  const digests = await source.digests({ fileMd5: file.md5, partSize, check });
  const upload: FileUpload = {
    path: file.path,
    size: source.size,
    md5: digests.md5,
    metadata: {},
    source,
  };
  if (digests.crc32) upload.crc32 = digests.crc32;
  if (partSize !== undefined) upload.parts = { partSize, md5s: digests.partMd5s };
  else if (streams(check)) upload.streamCheck = check;
  return { upload, fileMd5: digests.fileMd5 };
}

/** The upload of a small file the caller holds in memory, encrypted in memory. */
function sealInMemory(
  file: FileUpload,
  plaintext: Uint8Array,
  secret: SealingSecret,
  check: BodyCheck,
): FileUpload {
  const { header, nonce, fileKey } = secret;
  const body = new Uint8Array(header.byteLength + PAYLOAD_NONCE_BYTES + sealedSize(file.size));
  body.set(header);
  body.set(nonce, header.byteLength);
  sealAll(payloadKey(fileKey, nonce), plaintext, body, header.byteLength + nonce.byteLength);
  const size = body.byteLength;
  const partSize = partSizeFor(file, size);
  const single = partSize === undefined;
  const crc32 = single && check === "crc32";
  const upload: FileUpload = {
    path: file.path,
    size,
    md5: crc32 || (single && streams(check)) ? "" : md5Hex(body),
    metadata: {},
    body,
  };
  if (crc32) upload.crc32 = crc32Base64(body);
  if (single && streams(check)) upload.streamCheck = check;
  if (partSize !== undefined) upload.parts = { partSize, md5s: partMd5sOf(body, partSize) };
  return upload;
}
