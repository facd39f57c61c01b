/**
 * Request bodies, and how each is written into a socket. A body in memory
 * and a file range can be sent again (a retry, a redirect, a pooled
 * connection found closed); a stream (the SDK's, rarely) only once.
 *
 * A file range is read into two reused buffers: one is refilled from disk
 * while the other is being written, so reading overlaps sending and no
 * garbage is made per chunk. A range with a body source (an encrypted
 * file) is gathered into the same two buffers as the source makes it.
 */
import type { FileRange } from "../file_range.ts";
import { writeAll } from "./http_wire.ts";

/** A stream whose length is known beforehand (the SDK's, with its Content-Length). */
export interface SizedStream {
  chunks: AsyncIterable<Uint8Array>;
  length: number;
}

export type RequestBody = Uint8Array | FileRange | SizedStream | AsyncIterable<Uint8Array>;

/** Bytes read from a file per write: two such buffers per upload, reused. */
const CHUNK_BYTES = 256 * 1024;

export function isFileRange(body: RequestBody): body is FileRange {
  return !(body instanceof Uint8Array) && "path" in body && "length" in body;
}

function isSizedStream(body: RequestBody): body is SizedStream {
  return !(body instanceof Uint8Array) && "chunks" in body && "length" in body;
}

/** Whether the body may be sent again. */
export function replayable(body: RequestBody | undefined): boolean {
  return body === undefined || body instanceof Uint8Array || isFileRange(body);
}

/** The byte count of a body, when known before sending it. */
export function bodyLength(body: RequestBody | undefined): number | undefined {
  if (body === undefined) return 0;
  if (body instanceof Uint8Array) return body.byteLength;
  if (isFileRange(body) || isSizedStream(body)) return body.length;
  return undefined;
}

/**
 * Writes `body` into `conn`; `stopped()` is polled between chunks (an answer
 * came early: stop sending). `wrote()` is told of progress (the idle timer).
 */
export async function writeBody(
  conn: Deno.Conn,
  body: RequestBody,
  chunked: boolean,
  stopped: () => boolean,
  wrote: () => void,
): Promise<void> {
  if (body instanceof Uint8Array) {
    if (body.byteLength > 0) await writeAll(conn, body);
    return wrote();
  }
  if (isFileRange(body)) return await writeFileRange(conn, body, stopped, wrote);
  if (isSizedStream(body)) return await writeSized(conn, body, stopped, wrote);
  for await (const chunk of body) {
    if (stopped()) return;
    if (chunk.byteLength === 0) continue;
    if (chunked) {
      await writeAll(conn, new TextEncoder().encode(`${chunk.byteLength.toString(16)}\r\n`));
    }
    await writeAll(conn, chunk);
    if (chunked) await writeAll(conn, CRLF);
    wrote();
  }
  if (chunked) await writeAll(conn, LAST_CHUNK);
}

/** A stream of announced length, as it comes; more or fewer bytes than announced fail it. */
async function writeSized(
  conn: Deno.Conn,
  body: SizedStream,
  stopped: () => boolean,
  wrote: () => void,
): Promise<void> {
  let sent = 0;
  for await (const chunk of body.chunks) {
    if (stopped()) return;
    sent += chunk.byteLength;
    if (sent > body.length) throw new Error(`A request body exceeds its length ${body.length}`);
    await writeAll(conn, chunk);
    wrote();
  }
  if (sent < body.length) {
    throw new Error(`A request body ended at ${sent} of ${body.length} bytes`);
  }
}

const CRLF = new Uint8Array([13, 10]);
const LAST_CHUNK = new TextEncoder().encode("0\r\n\r\n");

async function writeFileRange(
  conn: Deno.Conn,
  range: FileRange,
  stopped: () => boolean,
  wrote: () => void,
): Promise<void> {
  if (range.source) return await writeMadeRange(conn, range, stopped, wrote);
  using file = await Deno.open(range.path, { read: true });
  await file.seek(range.start, Deno.SeekMode.Start);
  const buffers = [new Uint8Array(CHUNK_BYTES), new Uint8Array(CHUNK_BYTES)];
  // The write of each buffer's previous contents: awaited before it is refilled.
  const flushed: Promise<void>[] = [Promise.resolve(), Promise.resolve()];
  // Writes go out one after the other: each chained on the one before.
  let tail = Promise.resolve();
  let sent = 0;
  try {
    for (let i = 0; sent < range.length; i ^= 1) {
      await flushed[i];
      const buffer = buffers[i]!;
      const want = Math.min(CHUNK_BYTES, range.length - sent);
      let filled = 0;
      while (filled < want) {
        const n = await file.read(buffer.subarray(filled, want));
        if (n === null) throw new Error(`File '${range.path}' became shorter while being sent`);
        filled += n;
      }
      await range.onBytes?.(filled);
      if (stopped()) return;
      sent += filled;
      const chunk = buffer.subarray(0, filled);
      tail = tail.then(() => writeAll(conn, chunk)).then(wrote);
      // Awaited on the buffer's next turn or at the end; never left unhandled.
      tail.catch(() => {});
      flushed[i] = tail;
    }
  } finally {
    await Promise.allSettled(flushed);
  }
  await Promise.all(flushed);
}

/**
 * A range made by its body source (an encrypted file): its pieces (a
 * sealed chunk, then its 16-byte tag) are gathered into the two reused
 * buffers of file ranges and written a buffer at a time, one being filled
 * while the other is written: a write per 256 KiB instead of two per 64
 * KiB (a 16-byte write costs a system call and, over TLS, a record of its
 * own), and no garbage made per piece.
 */
async function writeMadeRange(
  conn: Deno.Conn,
  range: FileRange,
  stopped: () => boolean,
  wrote: () => void,
): Promise<void> {
  const buffers = [new Uint8Array(CHUNK_BYTES), new Uint8Array(CHUNK_BYTES)];
  // The write of each buffer's previous contents: awaited before it is refilled.
  const flushed: Promise<void>[] = [Promise.resolve(), Promise.resolve()];
  let tail = Promise.resolve();
  let turn = 0;
  let buffer: Uint8Array | null = null;
  let filled = 0;
  let sent = 0;
  const flush = () => {
    const chunk = buffer!.subarray(0, filled);
    tail = tail.then(() => writeAll(conn, chunk)).then(wrote);
    tail.catch(() => {});
    flushed[turn] = tail;
    turn ^= 1;
    buffer = null;
    filled = 0;
  };
  try {
    for await (const piece of range.source!.read({ offset: range.start, length: range.length })) {
      await range.onBytes?.(piece.byteLength);
      if (stopped()) return;
      sent += piece.byteLength;
      for (let at = 0; at < piece.byteLength;) {
        if (!buffer) {
          await flushed[turn];
          buffer = buffers[turn]!;
        }
        const take = Math.min(buffer.byteLength - filled, piece.byteLength - at);
        buffer.set(piece.subarray(at, at + take), filled);
        filled += take;
        at += take;
        if (filled === buffer.byteLength) flush();
      }
    }
    if (buffer && filled > 0) flush();
  } finally {
    await Promise.allSettled(flushed);
  }
  await tail;
  if (sent !== range.length) throw new Error(`Body of '${range.path}' shorter than its range`);
}
