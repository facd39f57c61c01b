/**
 * SigV4's signed streaming payload (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`,
 * docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html): the body is
 * sent as `aws-chunked` frames, each carrying the signature of its bytes'
 * SHA-256, chained on the frame before (the first on the request's own
 * signature). A server that verifies them refuses a body as soon as a frame
 * differs from what was signed. Unlike Content-MD5 or a CRC-32 header, the
 * check needs nothing computed before the body is sent: an encrypted body
 * is sealed once, as it goes out, instead of once more beforehand for its
 * digest. SHA-256 costs about a third of MD5 here (the CPU has SHA
 * extensions), and one HMAC per 256 KiB frame next to nothing.
 */
import { createHash, createHmac } from "node:crypto";

export const STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";

/** Payload bytes per frame; AWS asks at least 8 KiB of every frame but the last. */
export const FRAME_DATA_BYTES = 256 * 1024;

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SIGNATURE_FIELD = ";chunk-signature=";
const SIGNATURE_HEX = 64;
const encoder = new TextEncoder();

/** A frame's bytes besides its data: the size line and the CRLF after the data. */
function frameOverhead(dataBytes: number): number {
  return dataBytes.toString(16).length + SIGNATURE_FIELD.length + SIGNATURE_HEX + 2 + 2;
}

/** The framed body's length (its Content-Length) for `decoded` bytes of payload. */
export function framedLength(decoded: number): number {
  const full = Math.floor(decoded / FRAME_DATA_BYTES);
  const rest = decoded % FRAME_DATA_BYTES;
  return decoded + full * frameOverhead(FRAME_DATA_BYTES) + (rest > 0 ? frameOverhead(rest) : 0) +
    frameOverhead(0);
}

/** The headers a framed body of `decoded` payload bytes is sent (and signed) with. */
export function streamingHeaders(decoded: number): Record<string, string> {
  return {
    "x-amz-content-sha256": STREAMING_PAYLOAD,
    "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": String(decoded),
    "content-length": String(framedLength(decoded)),
  };
}

/** The chain of frame signatures of one signed request. */
export class ChunkSigner {
  readonly #key: Uint8Array;
  readonly #prefix: string;
  #previous: string;

  /**
   * `seed`: the request's signature; `longDate` its `x-amz-date`; `scope`
   * its credential scope; `key` the SigV4 signing key of that scope.
   */
  constructor(seed: string, longDate: string, scope: string, key: Uint8Array) {
    this.#previous = seed;
    this.#key = key;
    this.#prefix = `AWS4-HMAC-SHA256-PAYLOAD\n${longDate}\n${scope}\n`;
  }

  /** The signature of the next frame, whose data are `data`. */
  next(data: Uint8Array): string {
    const hash = data.byteLength === 0
      ? EMPTY_SHA256
      : createHash("sha256").update(data).digest("hex");
    const signature = createHmac("sha256", this.#key)
      .update(`${this.#prefix}${this.#previous}\n${EMPTY_SHA256}\n${hash}`)
      .digest("hex");
    this.#previous = signature;
    return signature;
  }
}

/** Room before a frame's data for the longest size line (a full frame's). */
const HEAD_ROOM = frameOverhead(FRAME_DATA_BYTES) - 2;

/**
 * The payload `pieces` (`decoded` bytes in all) as signed frames, the last
 * an empty one. Frames are built in one reused buffer: the consumer must
 * be done with a frame (written it) before it asks for the next, as a
 * request body's writer is. `onBytes` is told of the payload bytes as they
 * are taken. Throws when the pieces add up to other than `decoded` bytes.
 */
export async function* signedFrames(
  pieces: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  decoded: number,
  signer: Pick<ChunkSigner, "next">,
  onBytes?: (bytes: number) => Promise<void> | void,
): AsyncGenerator<Uint8Array> {
  const buffer = new Uint8Array(HEAD_ROOM + FRAME_DATA_BYTES + 2);
  let filled = 0;
  let taken = 0;
  const frame = () => {
    const data = buffer.subarray(HEAD_ROOM, HEAD_ROOM + filled);
    const head = encoder.encode(
      `${filled.toString(16)}${SIGNATURE_FIELD}${signer.next(data)}\r\n`,
    );
    const start = HEAD_ROOM - head.byteLength;
    buffer.set(head, start);
    buffer[HEAD_ROOM + filled] = 13;
    buffer[HEAD_ROOM + filled + 1] = 10;
    const end = HEAD_ROOM + filled + 2;
    filled = 0;
    return buffer.subarray(start, end);
  };
  for await (const piece of pieces) {
    await onBytes?.(piece.byteLength);
    taken += piece.byteLength;
    if (taken > decoded) throw new Error(`A request body exceeds its length ${decoded}`);
    for (let at = 0; at < piece.byteLength;) {
      const take = Math.min(FRAME_DATA_BYTES - filled, piece.byteLength - at);
      buffer.set(piece.subarray(at, at + take), HEAD_ROOM + filled);
      filled += take;
      at += take;
      if (filled === FRAME_DATA_BYTES) yield frame();
    }
  }
  if (taken < decoded) throw new Error(`A request body ended at ${taken} of ${decoded} bytes`);
  if (filled > 0) yield frame();
  yield frame();
}
