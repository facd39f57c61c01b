/**
 * MD5s of the parts of a stream, for multipart uploads' Content-MD5s. Its
 * own module, importing only node:crypto, so that the hashing thread
 * (md5_thread.ts) loads nothing more.
 */
import { createHash } from "node:crypto";

/** MD5s of consecutive `partSize` pieces of a stream (none without a part size). */
export class PartDigests {
  readonly #partSize: number | undefined;
  readonly #md5s: string[] = [];
  #hash = createHash("md5");
  #inPart = 0;

  constructor(partSize: number | undefined) {
    this.#partSize = partSize;
  }

  update(bytes: Uint8Array): void {
    const size = this.#partSize;
    if (size === undefined) return;
    while (bytes.byteLength > 0) {
      const take = Math.min(size - this.#inPart, bytes.byteLength);
      this.#hash.update(bytes.subarray(0, take));
      this.#inPart += take;
      bytes = bytes.subarray(take);
      if (this.#inPart === size) {
        this.#md5s.push(this.#hash.digest("hex"));
        this.#hash = createHash("md5");
        this.#inPart = 0;
      }
    }
  }

  finish(): string[] {
    if (this.#inPart > 0) this.#md5s.push(this.#hash.digest("hex"));
    return this.#md5s;
  }
}
