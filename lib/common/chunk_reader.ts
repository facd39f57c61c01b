/**
 * Reads a byte stream in large chunks into one reused buffer. A restore
 * hashes and writes what it downloads: in chunks of a mebibyte that is one
 * hash call and one write call per MiB, instead of one per socket read
 * (about 64 KiB) with a new buffer each. Byte streams (S3 bodies, files)
 * are read with a BYOB reader, straight into the buffer, or through their
 * source's direct read when it has one (direct_read.ts); other streams are
 * copied into it.
 */
import { type DirectRead, directReadOf } from "./direct_read.ts";

export class ChunkReader {
  #buffer: Uint8Array;
  readonly #stream: ReadableStream<Uint8Array>;
  readonly #direct: DirectRead | undefined;
  readonly #byob: ReadableStreamBYOBReader | null;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array> | null;
  /** Bytes of a default reader's chunk not yet handed out. */
  #pending: Uint8Array | null = null;
  #done = false;

  /** Reads into `buffer`, or a new buffer of `buffer` bytes. */
  constructor(stream: ReadableStream<Uint8Array>, buffer: number | Uint8Array) {
    this.#buffer = typeof buffer === "number" ? new Uint8Array(Math.max(1, buffer)) : buffer;
    this.#stream = stream;
    this.#direct = directReadOf(stream);
    let byob: ReadableStreamBYOBReader | null = null;
    if (this.#direct) {
      this.#byob = null;
      this.#reader = null;
      return;
    }
    try {
      byob = stream.getReader({ mode: "byob" });
    } catch (err) {
      // Not a byte stream: a TypeError, and the stream is still unlocked.
      if (!(err instanceof TypeError)) throw err;
    }
    this.#byob = byob;
    this.#reader = byob ? null : stream.getReader();
  }

  /**
   * The next chunk: a view of the reused buffer, full except at the end of
   * the stream; valid until the next call. Null at the end.
   */
  async next(): Promise<Uint8Array | null> {
    let filled = 0;
    const size = this.#buffer.byteLength;
    while (filled < size && !this.#done) {
      if (this.#direct) {
        const n = await this.#direct(this.#buffer.subarray(filled));
        if (n === null) this.#done = true;
        else filled += n;
        continue;
      }
      if (this.#byob) {
        const { value, done } = await this.#byob.read(
          new Uint8Array(this.#buffer.buffer, filled, size - filled),
        );
        // The buffer came back (transferred) as `value`'s.
        if (value) this.#buffer = new Uint8Array(value.buffer, 0, size);
        if (done) this.#done = true;
        else filled += value.byteLength;
        continue;
      }
      let chunk = this.#pending;
      if (!chunk) {
        const { value, done } = await this.#reader!.read();
        if (done) {
          this.#done = true;
          break;
        }
        chunk = value;
      }
      const n = Math.min(chunk.byteLength, size - filled);
      this.#buffer.set(chunk.subarray(0, n), filled);
      filled += n;
      this.#pending = n < chunk.byteLength ? chunk.subarray(n) : null;
    }
    return filled > 0 ? this.#buffer.subarray(0, filled) : null;
  }

  /** The buffer, once the stream is read to its end (a BYOB reader hands it back anew). */
  get buffer(): Uint8Array {
    return this.#buffer;
  }

  /** Gives up the rest of the stream (closing its connection or file). */
  async cancel(): Promise<void> {
    this.#done = true;
    const reader = this.#byob ?? this.#reader;
    await (reader ? reader.cancel() : this.#stream.cancel()).catch(() => {});
  }
}

/** Where `writeAll` writes: a file or a connection (one write may take fewer bytes). */
export interface ByteSink {
  write(bytes: Uint8Array): Promise<number>;
}

/** Writes all of `bytes`, however many calls the sink takes. */
export async function writeAll(sink: ByteSink, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.byteLength;) at += await sink.write(bytes.subarray(at));
}

/**
 * Chunk buffers reused from one download to the next, instead of a new one
 * per file left to the garbage collector: at most `keep` are kept.
 */
export class BufferPool {
  readonly bytes: number;
  readonly #keep: number;
  readonly #free: Uint8Array[] = [];

  constructor(bytes: number, keep: number) {
    this.bytes = bytes;
    this.#keep = keep;
  }

  /** A buffer of `bytes` bytes, or a new one of `smaller` bytes when given and less. */
  take(smaller?: number): Uint8Array {
    if (smaller !== undefined && smaller < this.bytes) return new Uint8Array(Math.max(1, smaller));
    return this.#free.pop() ?? new Uint8Array(this.bytes);
  }

  /** Back into the pool (a buffer of another size is left to the garbage collector). */
  give(buffer: Uint8Array): void {
    if (buffer.buffer.byteLength === this.bytes && this.#free.length < this.#keep) {
      this.#free.push(new Uint8Array(buffer.buffer, 0, this.bytes));
    }
  }
}
