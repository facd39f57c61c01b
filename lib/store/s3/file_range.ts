/**
 * A byte range of a local file: a whole small file, or one multipart part.
 * Direct requests write it into the socket themselves (direct_requests.ts);
 * the SDK path reads it as a Node stream (`rangeStream`).
 */
import { createReadStream } from "node:fs";
import { Readable, Transform } from "node:stream";
import type { Buffer } from "node:buffer";
import type { BodySource, ByteCounter } from "../store.ts";

export interface FileRange {
  path: string;
  start: number;
  length: number;
  /** Told of every chunk before it is sent (rate limit, progress). */
  onBytes?: ByteCounter;
  /** Where the range's bytes are made when the body is not the file's bytes (encrypted). */
  source?: BodySource;
}

/** The range of `path`, or of `source` when there is one. */
export function fileRange(
  file: { path: string; source?: BodySource | undefined },
  start: number,
  length: number,
  onBytes: ByteCounter | undefined,
): FileRange {
  const range: FileRange = { path: file.path, start, length };
  if (onBytes) range.onBytes = onBytes;
  if (file.source) range.source = file.source;
  return range;
}

/** Read size of the SDK path. */
const READ_CHUNK = 256 * 1024;

/** The range as a Node stream, each chunk counted by `onBytes` before it passes. */
export function rangeStream(range: FileRange) {
  const { path, start, length, onBytes } = range;
  const source: Readable = range.source
    ? Readable.from(range.source.read({ offset: start, length }), { objectMode: false })
    : createReadStream(path, { start, end: start + length - 1, highWaterMark: READ_CHUNK });
  if (!onBytes) return source;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      Promise.resolve(onBytes(chunk.byteLength)).then(() => callback(null, chunk), callback);
    },
  });
  source.on("error", (err) => counter.destroy(err));
  return source.pipe(counter);
}
