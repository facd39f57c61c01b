/**
 * A byte range of a local file: a whole small file, or one multipart part.
 * Direct requests write it into the socket themselves (direct_requests.ts);
 * the SDK path reads it as a Node stream (`rangeStream`).
 */
import { createReadStream } from "node:fs";
import { Transform } from "node:stream";
import type { Buffer } from "node:buffer";
import type { ByteCounter } from "../store.ts";

export interface FileRange {
  path: string;
  start: number;
  length: number;
  /** Told of every chunk before it is sent (rate limit, progress). */
  onBytes?: ByteCounter;
}

/** Read size of the SDK path. */
const READ_CHUNK = 256 * 1024;

/** The range as a Node stream, each chunk counted by `onBytes` before it passes. */
export function rangeStream(range: FileRange) {
  const { path, start, length, onBytes } = range;
  const source = createReadStream(path, {
    start,
    end: start + length - 1,
    highWaterMark: READ_CHUNK,
  });
  if (!onBytes) return source;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      Promise.resolve(onBytes(chunk.byteLength)).then(() => callback(null, chunk), callback);
    },
  });
  source.on("error", (err) => counter.destroy(err));
  return source.pipe(counter);
}
