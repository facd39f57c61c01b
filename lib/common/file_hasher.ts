/**
 * MD5s of files, computed on a worker thread (md5_thread.ts) beside the
 * main thread's I/O. Restores check the MD5 of every byte and the watcher
 * sends it as `md5sum`: on one thread that MD5 took 34-41% of the main
 * thread, which bounded both (Deno runs a job's I/O on that one thread). The
 * worker reads the file back itself, so nothing but a path crosses between
 * the threads, and the main thread holds no buffer for it.
 *
 * The worker starts at the first job and stops at `close()`: it costs about
 * 13-17 MB of RSS (a V8 isolate and node:crypto), so a job that must stay
 * small (a decrypting restore, already near its memory bound) hashes on the
 * main thread instead (`offThread: false`), through the same interface.
 */
import { digestFile, type FileDigests, newMd5 } from "./digest.ts";
import { NotRegularFileError } from "./fs.ts";
import { log } from "./log.ts";

/** A job for the worker: hash `size` bytes of `path` from `start`. */
export interface HashJob {
  id: number;
  /** The file to read; none to only finish a stream. */
  path?: string;
  start?: number;
  size: number;
  partSize?: number;
  /** A running hash over several jobs (ranges of one file, in order). */
  stream?: number;
  /** Give the digest (and end the stream). */
  finish: boolean;
}

/** The worker's answer to a job. */
export interface HashAnswer {
  id: number;
  /** Bytes read by this job. */
  size: number;
  md5?: string;
  partMd5s?: string[];
  error?: { name: string; message: string };
}

/** The MD5 of a file being written, in order or in ranges, hashed in order. */
export interface FileMd5 {
  /**
   * A chunk just written at `offset`: hashed from memory if it is next in
   * order and the hashing is on this thread, else left to `update`.
   */
  offer(offset: number, chunk: Uint8Array): void;
  /** Bytes up to `end` of `path` are on disk: hashes those not hashed yet, in order. */
  update(path: string, end: number): Promise<void>;
  /** The MD5 of the file up to the last `end`. */
  digest(): Promise<string>;
  /** `update` then `digest`. */
  finish(path: string, end: number): Promise<string>;
}

export class FileHasher {
  #offThread: boolean;
  readonly #workerUrl: URL;
  #worker: Worker | undefined;
  /** Why the worker died: its jobs failed with this, later ones hash on this thread. */
  #failed: Error | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, PromiseWithResolvers<HashAnswer>>();

  /** `workerUrl`: the worker's module (tests give one that fails). */
  constructor(options: { offThread: boolean; workerUrl?: URL }) {
    this.#offThread = options.offThread;
    this.#workerUrl = options.workerUrl ?? new URL("./md5_thread.ts", import.meta.url);
  }

  /** The file's MD5 (and each part's, with `partSize`), reading at most `size` bytes. */
  async digestFile(path: string, size: number, partSize?: number): Promise<FileDigests> {
    if (!this.#offThread) return await digestFile(path, size, partSize);
    const answer = await this.#send({
      path,
      size,
      finish: true,
      ...(partSize ? { partSize } : {}),
    });
    const digests: FileDigests = { md5: answer.md5!, size: answer.size };
    if (partSize) digests.partMd5s = answer.partMd5s ?? [];
    return digests;
  }

  /** The MD5 of a file about to be written (`readBytes`: the read-back buffer on this thread). */
  fileMd5(readBytes: number): FileMd5 {
    if (!this.#offThread) return new InThreadFileMd5(readBytes);
    const stream = this.#nextId++;
    let position = 0;
    return {
      offer: () => {},
      update: async (path, end) => {
        if (end <= position) return;
        const start = position;
        position = end;
        const { size } = await this.#send({
          path,
          start,
          size: end - start,
          stream,
          finish: false,
        });
        if (size !== end - start) {
          throw new Error(`Partial file '${path}' is shorter than expected`);
        }
      },
      digest: async () => (await this.#send({ size: 0, stream, finish: true })).md5!,
      finish: async (path, end) => {
        const start = Math.min(position, end);
        position = end;
        const answer = await this.#send({ path, start, size: end - start, stream, finish: true });
        if (answer.size !== end - start) {
          throw new Error(`Partial file '${path}' is shorter than expected`);
        }
        return answer.md5!;
      },
    };
  }

  /** Stops the worker; jobs still waiting fail. */
  close(): void {
    this.#worker?.terminate();
    this.#worker = undefined;
    this.#failAll(new Error("The hashing thread was stopped"));
  }

  #send(job: Omit<HashJob, "id">): Promise<HashAnswer> {
    // A stream begun on the dead worker cannot go on here: its job fails (and is retried).
    if (this.#failed) return Promise.reject(this.#failed);
    const id = this.#nextId++;
    const pending = Promise.withResolvers<HashAnswer>();
    this.#pending.set(id, pending);
    this.#start().postMessage({ id, ...job } satisfies HashJob);
    return pending.promise.then((answer) => {
      if (answer.error) throw errorOf(answer.error);
      return answer;
    });
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(this.#workerUrl.href, { type: "module" });
    worker.onmessage = (event: MessageEvent<HashAnswer>) => {
      const answer = event.data;
      this.#pending.get(answer.id)?.resolve(answer);
      this.#pending.delete(answer.id);
    };
    worker.onerror = (event) => {
      // Not one error per file, nor a new worker per job failing the same
      // way: the jobs in flight fail with the cause, the rest hash here.
      event.preventDefault();
      this.#failed = new Error(`The hashing thread failed: ${event.message}`);
      this.#offThread = false;
      log.warn("hashing on the main thread from now on", { error: this.#failed.message });
      this.#worker?.terminate();
      this.#worker = undefined;
      this.#failAll(this.#failed);
    };
    this.#worker = worker;
    return worker;
  }

  #failAll(err: Error): void {
    for (const pending of this.#pending.values()) pending.reject(err);
    this.#pending.clear();
  }
}

/** The worker's error as the one the main thread's own hashing would have thrown. */
function errorOf(error: { name: string; message: string }): Error {
  if (error.name === "NotRegularFileError") return new NotRegularFileError(error.message);
  const known = (Deno.errors as Record<string, (new (message: string) => Error) | undefined>)[
    error.name
  ];
  return known ? new known(error.message) : new Error(error.message);
}

/**
 * `FileMd5` on the main thread: a chunk written where the hash has got to
 * is hashed from memory as it arrives (the range in order streams so); the
 * rest is read back from the file once its range is done.
 */
class InThreadFileMd5 implements FileMd5 {
  readonly #hash = newMd5();
  /** Bytes hashed so far, from the start of the file. */
  #position = 0;
  /** A read-back in flight: live chunks wait, or they would be hashed twice. */
  #reading = false;
  #buffer: Uint8Array | undefined;
  readonly #readBytes: number;

  constructor(readBytes: number) {
    this.#readBytes = readBytes;
  }

  offer(offset: number, chunk: Uint8Array): void {
    if (this.#reading || offset !== this.#position) return;
    this.#hash.update(chunk);
    this.#position += chunk.byteLength;
  }

  async update(path: string, end: number): Promise<void> {
    if (this.#position >= end) return;
    this.#buffer ??= new Uint8Array(this.#readBytes);
    this.#reading = true;
    try {
      using file = await Deno.open(path, { read: true });
      await file.seek(this.#position, Deno.SeekMode.Start);
      while (this.#position < end) {
        const want = Math.min(this.#buffer.byteLength, end - this.#position);
        const n = await file.read(this.#buffer.subarray(0, want));
        if (n === null) throw new Error(`Partial file '${path}' is shorter than expected`);
        this.#hash.update(this.#buffer.subarray(0, n));
        this.#position += n;
      }
    } finally {
      this.#reading = false;
    }
  }

  digest(): Promise<string> {
    return Promise.resolve(this.#hash.digest("hex"));
  }

  async finish(path: string, end: number): Promise<string> {
    await this.update(path, end);
    return this.#hash.digest("hex");
  }
}
