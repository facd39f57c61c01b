/**
 * Opening sealed chunks whatever the pieces they arrive in (socket reads
 * split chunks anywhere): one byte at a time, odd sizes, several chunks in
 * one piece; and a payload cut or lengthened at a piece boundary fails.
 */
import { assert, assertEquals } from "../_assert.ts";
import {
  ChunkOpener,
  PayloadError,
  sealAll,
  SEALED_CHUNK_BYTES,
} from "../../lib/store/age_payload.ts";

const KEY = new Uint8Array(32).map((_, i) => i * 7 + 1);

function pattern(size: number): Uint8Array {
  return new Uint8Array(size).map((_, i) => (i * 13 + (i >> 9)) % 251);
}

function openInPieces(sealed: Uint8Array, sizes: number[]): Uint8Array {
  const opener = new ChunkOpener(KEY);
  const out: Uint8Array[] = [];
  for (let at = 0, i = 0; at < sealed.byteLength; i++) {
    const size = sizes[i % sizes.length]!;
    // The piece is a copy that is then scribbled over: nothing may keep a view of it.
    const piece = sealed.slice(at, at + size);
    out.push(...opener.push(piece).map((p) => p.slice()));
    piece.fill(0);
    at += size;
  }
  out.push(opener.finish());
  const all = new Uint8Array(out.reduce((n, p) => n + p.byteLength, 0));
  out.reduce((at, p) => (all.set(p, at), at + p.byteLength), 0);
  return all;
}

Deno.test("chunks open whatever pieces they arrive in", () => {
  for (const size of [1, 65_536, 65_537, 3 * 65_536 + 99]) {
    const plain = pattern(size);
    const sealed = sealAll(KEY, plain);
    for (
      const sizes of [[1_000_003], [1], [4_093, 70_001], [SEALED_CHUNK_BYTES], [3 * 65_552 + 1]]
    ) {
      if (sizes[0] === 1 && size > 70_000) continue; // one byte at a time: small payloads only
      assertEquals(openInPieces(sealed, sizes), plain, `${size} bytes in pieces of ${sizes}`);
    }
  }
});

Deno.test("a payload cut at a chunk boundary or lengthened fails", () => {
  const sealed = sealAll(KEY, pattern(3 * 65_536 + 5));
  const cut = sealed.subarray(0, 2 * SEALED_CHUNK_BYTES);
  const longer = new Uint8Array(sealed.byteLength + 17);
  longer.set(sealed);
  for (const [name, bytes] of [["cut", cut], ["longer", longer]] as const) {
    let failed: unknown;
    try {
      openInPieces(bytes, [5_000]);
    } catch (err) {
      failed = err;
    }
    assert(failed instanceof PayloadError, `${name}: ${failed}`);
  }
});
