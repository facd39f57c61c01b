/**
 * SigV4 signed frames (lib/store/s3/signed_chunks.ts) against the worked
 * example of AWS's documentation ("Signature Calculations for the
 * Authorization Header: Transferring Payload in Multiple Chunks"), and the
 * framing's length against what is framed.
 */
import { createHmac } from "node:crypto";
import { assertEquals } from "../_assert.ts";
import {
  ChunkSigner,
  FRAME_DATA_BYTES,
  framedLength,
  signedFrames,
} from "../../lib/store/s3/signed_chunks.ts";

Deno.test("ChunkSigner signs the frames of AWS's worked example", () => {
  // SigV4's signing key, derived here as the documentation spells it out.
  let key: Uint8Array = new TextEncoder().encode("AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
  for (const part of ["20130524", "us-east-1", "s3", "aws4_request"]) {
    key = createHmac("sha256", key).update(part).digest();
  }
  const signer = new ChunkSigner(
    "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    "20130524T000000Z",
    "20130524/us-east-1/s3/aws4_request",
    key,
  );
  assertEquals(
    signer.next(new Uint8Array(65536).fill(97)),
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
  );
  assertEquals(
    signer.next(new Uint8Array(1024).fill(97)),
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
  );
  assertEquals(
    signer.next(new Uint8Array(0)),
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
  );
});

Deno.test("signedFrames frames any payload in framedLength bytes, ending on an empty frame", async () => {
  const signer = new ChunkSigner("0".repeat(64), "20260101T000000Z", "s", new Uint8Array(32));
  for (const size of [0, 1, FRAME_DATA_BYTES - 1, FRAME_DATA_BYTES, 3 * FRAME_DATA_BYTES + 5]) {
    const payload = new Uint8Array(size).map((_, i) => i % 251);
    // In uneven pieces, as a body source yields them.
    const pieces = [
      payload.subarray(0, 1000),
      payload.subarray(1000, 70_000),
      payload.subarray(70_000),
    ];
    const frames: Uint8Array<ArrayBuffer>[] = [];
    const data: Uint8Array<ArrayBuffer>[] = [];
    for await (const frame of signedFrames(pieces, size, signer)) {
      frames.push(frame.slice());
      const text = new TextDecoder("latin1").decode(frame);
      const head = /^([0-9a-f]+);chunk-signature=[0-9a-f]{64}\r\n/.exec(text)!;
      const length = parseInt(head[1]!, 16);
      assertEquals(frame.byteLength, head[0].length + length + 2);
      data.push(frame.slice(head[0].length, head[0].length + length));
    }
    assertEquals(frames.reduce((n, f) => n + f.byteLength, 0), framedLength(size));
    assertEquals(new Uint8Array(await new Blob(data).arrayBuffer()), payload);
    assertEquals(new TextDecoder().decode(frames.at(-1)!.subarray(0, 2)), "0;");
    assertEquals(frames.at(-1)!.byteLength, 86);
  }
});
