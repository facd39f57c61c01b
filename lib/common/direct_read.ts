/**
 * Byte streams that can also be read without the streams machinery. A
 * restore reads every byte through a BYOB reader, and over TLS Deno hands
 * out one 16 KB record per socket read: 65,000 reads per GB, each of which
 * costs the WHATWG streams' descriptors, promises and buffer transfers on
 * top of the read itself. The stream's source (our HTTP connection)
 * registers a plain `read(view)` beside the stream; `ChunkReader` uses it
 * when there is one. Whoever reads it so is the stream's only reader.
 */

/** Reads into `view`; the number of bytes read, or null at the end. */
export type DirectRead = (view: Uint8Array) => Promise<number | null>;

const readers = new WeakMap<ReadableStream<Uint8Array>, DirectRead>();

/** Registers `read` as the direct form of `stream`; returns the stream. */
export function withDirectRead(
  stream: ReadableStream<Uint8Array>,
  read: DirectRead,
): ReadableStream<Uint8Array> {
  readers.set(stream, read);
  return stream;
}

/** The direct form of `stream`, when its source gave one and nobody reads it yet. */
export function directReadOf(stream: ReadableStream<Uint8Array>): DirectRead | undefined {
  return stream.locked ? undefined : readers.get(stream);
}
