/**
 * The worker thread of `FileHasher` (file_hasher.ts): MD5s of files read
 * back from disk (the page cache, in practice: they were just written or are
 * about to be sent). It imports nothing but node:crypto (part_digests.ts
 * too imports only that) and runs one job at a time, synchronously, with
 * one read buffer: the main thread queues jobs and awaits their answers, so
 * the hashing runs beside its I/O.
 */
/// <reference lib="deno.worker" />
import { createHash, type Hash } from "node:crypto";
import type { HashAnswer, HashJob } from "./file_hasher.ts";
import { PartDigests } from "./part_digests.ts";

/** Read-back chunk: 4,000 reads per GB, a few milliseconds of this thread. */
const READ_CHUNK = 256 * 1024;
let buffer: Uint8Array | undefined;
/** Running hashes of jobs that span several messages (`stream`). */
const streams = new Map<number, Hash>();

self.onmessage = (event: MessageEvent<HashJob>) => {
  const job = event.data;
  let answer: HashAnswer;
  try {
    answer = { id: job.id, ...run(job) };
  } catch (err) {
    if (job.stream !== undefined) streams.delete(job.stream);
    const name = err instanceof Error ? err.name : "Error";
    const message = err instanceof Error ? err.message : `${err}`;
    answer = { id: job.id, size: 0, error: { name, message } };
  }
  self.postMessage(answer);
};

function run(job: HashJob): Omit<HashAnswer, "id"> {
  const stream = job.stream;
  const whole = stream === undefined
    ? createHash("md5")
    : streams.get(stream) ?? streams.set(stream, createHash("md5")).get(stream)!;
  let size = 0;
  let partMd5s: string[] | undefined;
  if (job.path !== undefined) {
    const read = hashFile(job, whole);
    size = read.size;
    partMd5s = read.partMd5s;
  }
  if (!job.finish) return { size };
  if (stream !== undefined) streams.delete(stream);
  return { md5: whole.digest("hex"), size, ...(partMd5s ? { partMd5s } : {}) };
}

/** Reads `job.size` bytes of the file from `job.start` (fewer if it is shorter) into the hashes. */
function hashFile(job: HashJob, whole: Hash): { size: number; partMd5s?: string[] } {
  // Checked before opening too: opening a FIFO blocks, and every job queued behind it.
  if (!Deno.statSync(job.path!).isFile) throw notRegular(job.path!);
  using file = Deno.openSync(job.path!, { read: true });
  if (!file.statSync().isFile) throw notRegular(job.path!);
  if (job.start) file.seekSync(job.start, Deno.SeekMode.Start);
  buffer ??= new Uint8Array(READ_CHUNK);
  const parts = new PartDigests(job.partSize || undefined);
  let total = 0;
  while (total < job.size) {
    const n = file.readSync(buffer.subarray(0, Math.min(READ_CHUNK, job.size - total)));
    if (n === null || n === 0) break;
    const chunk = buffer.subarray(0, n);
    whole.update(chunk);
    parts.update(chunk);
    total += n;
  }
  return job.partSize ? { size: total, partMd5s: parts.finish() } : { size: total };
}

function notRegular(path: string): Error {
  return Object.assign(new Error(path), { name: "NotRegularFileError" });
}
