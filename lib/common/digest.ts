/**
 * MD5, the one digest of the bucket format: the `md5sum` metadata, the
 * Content-MD5 of requests and single-part ETags. node:crypto's is
 * OpenSSL's, the fastest available to Deno. And CRC-32 (node:zlib's, some
 * thirty times MD5's speed), which S3 checks instead of Content-MD5 when
 * asked to (`x-amz-checksum-crc32`): encrypted bodies use it where the
 * server verifies it.
 */
import { createHash, type Hash } from "node:crypto";
import { Buffer } from "node:buffer";
import { crc32 } from "node:zlib";
import { assertRegular } from "./fs.ts";
import { PartDigests } from "./part_digests.ts";

/** A running MD5 (`update()` then `digest("hex")`). */
export function newMd5(): Hash {
  return createHash("md5");
}

/** Lowercase hex MD5 of bytes in memory. */
export function md5Hex(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/** Base64 MD5 of bytes in memory (the Content-MD5 header's form). */
export function md5Base64(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("base64");
}

/** A hex digest in base64 (Content-MD5 from an `md5sum`). */
export function hexToBase64(hex: string): string {
  return Buffer.from(hex, "hex").toString("base64");
}

/** The ETag S3 gives a multipart object: MD5 of the parts' binary MD5s, "-N". */
export function multipartEtag(partMd5s: readonly string[]): string {
  const hash = createHash("md5");
  for (const md5 of partMd5s) hash.update(Buffer.from(md5, "hex"));
  return `${hash.digest("hex")}-${partMd5s.length}`;
}

/** A running CRC-32 (IEEE, as S3's `x-amz-checksum-crc32`). */
export class Crc32 {
  #value = 0;

  update(bytes: Uint8Array): void {
    this.#value = crc32(bytes, this.#value);
  }

  /** Base64 of the 4 big-endian bytes: the header's form. */
  base64(): string {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, this.#value >>> 0);
    return Buffer.from(bytes).toString("base64");
  }
}

/** Base64 CRC-32 of bytes in memory. */
export function crc32Base64(bytes: Uint8Array): string {
  const crc = new Crc32();
  crc.update(bytes);
  return crc.base64();
}

/** True for a 32-digit lowercase hex MD5. */
export function isMd5Hex(text: string): boolean {
  return /^[0-9a-f]{32}$/.test(text);
}

/** Lowercase hex MD5 of a whole file, streamed. */
export async function md5OfFile(path: string): Promise<string> {
  const hash = createHash("md5");
  using file = await Deno.open(path, { read: true });
  assertRegular(file, path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

export interface FileDigests {
  /** Lowercase hex MD5 of the whole file. */
  md5: string;
  /** Bytes read: the size the digests describe. */
  size: number;
  /** With `partSize`: each part's MD5 (hex). */
  partMd5s?: string[];
}

const READ_CHUNK = 1024 * 1024;

/**
 * Streams a file once, computing its MD5 and, when `partSize` is given,
 * every part's MD5 in the same pass. Reads at most `size` bytes (the size
 * stat reported): a file growing meanwhile is caught by the caller's
 * re-stat, not by reading further. Memory: one 1 MiB buffer.
 */
export async function digestFile(
  path: string,
  size: number,
  partSize?: number,
): Promise<FileDigests> {
  using file = await Deno.open(path, { read: true });
  assertRegular(file, path);
  const whole = createHash("md5");
  const parts = new PartDigests(partSize || undefined);
  let total = 0;
  const buffer = new Uint8Array(Math.max(1, Math.min(READ_CHUNK, size)));
  while (total < size) {
    const n = await file.read(buffer.subarray(0, Math.min(READ_CHUNK, size - total)));
    if (n === null) break;
    const chunk = buffer.subarray(0, n);
    whole.update(chunk);
    parts.update(chunk);
    total += n;
  }
  const digests: FileDigests = { md5: whole.digest("hex"), size: total };
  if (partSize) digests.partMd5s = parts.finish();
  return digests;
}
