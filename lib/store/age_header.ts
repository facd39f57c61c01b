/**
 * age's header (C2SP age spec): the recipient stanzas that wrap a random
 * file key, and the header MAC. Written and checked by the `age-encryption`
 * library; only the file key is taken out of it, for the payload STREAM
 * this project seals itself (age_payload.ts).
 */
import { Decrypter, Encrypter, type Recipient } from "age-encryption";
import { PAYLOAD_NONCE_BYTES, TAG_BYTES } from "./age_payload.ts";

/** A new file's header and the file key its stanzas wrap. */
export interface FileKeyed {
  header: Uint8Array;
  fileKey: Uint8Array;
}

/** Headers longer than this are refused unread (ours are a few hundred bytes). */
const MAX_HEADER_BYTES = 1024 * 1024;
/** The MAC line starts with this; no stanza line can. */
const MAC_LINE = new TextEncoder().encode("\n--- ");

/**
 * A new random file key and its header for `recipients`. The library makes
 * both: a recipient of ours that adds no stanza sees the file key, and the
 * library's output for an empty file is the header, the payload nonce and
 * one empty chunk, which are dropped.
 */
export async function newHeader(recipients: readonly string[]): Promise<FileKeyed> {
  let fileKey: Uint8Array | undefined;
  const witness: Recipient = {
    wrapFileKey(key) {
      fileKey = key.slice();
      return [];
    },
  };
  const encrypter = new Encrypter();
  encrypter.addRecipient(witness);
  for (const recipient of recipients) encrypter.addRecipient(recipient);
  const empty = await encrypter.encrypt(new Uint8Array(0));
  const header = empty.slice(0, empty.byteLength - PAYLOAD_NONCE_BYTES - TAG_BYTES);
  return { header, fileKey: fileKey! };
}

/**
 * Unwraps the file keys of headers with a fixed set of identities, for the
 * first that unwraps each; the library checks the MAC, and throws with its
 * reason (no identity matched, bad MAC, bad form). One library `Decrypter`
 * is kept: parsing an identity derives its public key, an X25519
 * multiplication (about 0.3 ms here) that a `Decrypter` made per header
 * repeated for every object read. It is made at the first header, so that
 * a bad identity fails a read, as it did.
 */
export class FileKeyUnwrapper {
  readonly #identities: readonly string[];
  #decrypter: Decrypter | null = null;

  constructor(identities: readonly string[]) {
    this.#identities = identities;
  }

  /** The file key of `header` (the header only, MAC line included). */
  async fileKeyOf(header: Uint8Array): Promise<Uint8Array> {
    if (!this.#decrypter) {
      const decrypter = new Decrypter();
      for (const identity of this.#identities) decrypter.addIdentity(identity);
      this.#decrypter = decrypter;
    }
    return await this.#decrypter.decryptHeader(header);
  }
}

/** The length of the header that `bytes` starts with, or null when it is not complete yet. */
export function headerLength(bytes: Uint8Array): number | null {
  const start = indexOf(bytes, MAC_LINE);
  if (start < 0) return null;
  const end = bytes.indexOf(0x0a, start + MAC_LINE.length);
  return end < 0 ? null : end + 1;
}

function indexOf(bytes: Uint8Array, pattern: Uint8Array): number {
  for (let at = bytes.indexOf(pattern[0]!); at >= 0; at = bytes.indexOf(pattern[0]!, at + 1)) {
    if (at + pattern.length > bytes.length) return -1;
    let i = 1;
    while (i < pattern.length && bytes[at + i] === pattern[i]) i++;
    if (i === pattern.length) return at;
  }
  return -1;
}

/**
 * Reads an age file's header and payload nonce off the front of a stream.
 * Returns them and the bytes read past them (the first sealed chunks);
 * `reader` is left at the next unread piece. Throws when the stream ends
 * first or the header is implausibly long.
 */
export async function readPrefix(
  reader: { read(): Promise<ReadableStreamReadResult<Uint8Array>> },
): Promise<{ header: Uint8Array; nonce: Uint8Array; rest: Uint8Array }> {
  let bytes = new Uint8Array(0);
  let length: number | null = null;
  while (length === null || bytes.byteLength < length + PAYLOAD_NONCE_BYTES) {
    const { done, value } = await reader.read();
    if (done) throw new Error("the file ends inside its header");
    const joined = new Uint8Array(bytes.byteLength + value.byteLength);
    joined.set(bytes);
    joined.set(value, bytes.byteLength);
    bytes = joined;
    length ??= headerLength(bytes);
    if (length === null && bytes.byteLength > MAX_HEADER_BYTES) {
      throw new Error("no age header found (too long)");
    }
  }
  return {
    header: bytes.subarray(0, length),
    nonce: bytes.subarray(length, length + PAYLOAD_NONCE_BYTES),
    rest: bytes.subarray(length + PAYLOAD_NONCE_BYTES),
  };
}
