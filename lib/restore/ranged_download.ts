/**
 * Large objects come down as parallel ranged GETs written in place into the
 * partial file, and an interrupted download resumes where it stopped.
 *
 * - The object is cut into `RANGE_BYTES` ranges; up to
 *   `CONNECTIONS_PER_FILE` of them are fetched at once, each holding one of
 *   the restore's connection permits (`-t` bounds them all together).
 * - Each finished range is recorded in a small state file beside the
 *   partial file (`.<name>.tablesnap-partial.ranges`, with the object's
 *   ETag and size): a re-run after SIGKILL or a network loss fetches only
 *   the missing ranges, if the object is still the same.
 * - The whole file's MD5 (what `md5sum` promises) is computed in order, a
 *   range at a time as soon as it and those before it are done: on the
 *   hashing thread, which reads them back (from the page cache, in
 *   practice), or on this one, from memory for the range the hash has
 *   reached and read back for those that came ahead of it (file_hasher.ts).
 *   No range is fetched twice and the file is not read again at the end.
 *
 * Memory: a `chunkBytes` buffer per range in flight and one for the
 * hasher, whatever the file size.
 */
import type { ObjectHead, Store } from "../store/store.ts";
import type { FileHasher, FileMd5 } from "../common/file_hasher.ts";
import { errorMessage } from "../common/errors.ts";
import { type BufferPool, ChunkReader, writeAll } from "../common/chunk_reader.ts";
import { lstatOrNull, removeIfPresent } from "../common/fs.ts";
import { log } from "../common/log.ts";
import type { Semaphore } from "../common/pool.ts";
import { type Backoff, retry } from "../common/retry.ts";

/** Objects at least this large are fetched in ranges. */
export const RANGED_MIN_BYTES = 64 * 1024 * 1024;
/** The size of one range: large enough to amortize a request, small enough to resume cheaply. */
export const RANGE_BYTES = 16 * 1024 * 1024;
/** Ranges of one file fetched at once. */
export const CONNECTIONS_PER_FILE = 4;

const RANGE_ATTEMPTS = 5;
const RANGE_BACKOFF: Backoff = { firstMs: 500, maxMs: 15_000, jitter: "half" };

/** What the state file beside a partial file records. */
interface RangeState {
  etag: string;
  size: number;
  rangeBytes: number;
  done: number[];
}

export interface RangedDownload {
  store: Store;
  key: string;
  /** The object's head (size, ETag) as the GET of its first range or a HEAD gave it. */
  head: ObjectHead;
  /** The partial file, written in place (created if missing). */
  temp: string;
  connections: Semaphore;
  /** Told of every byte written (progress). */
  onBytes: (n: number) => void;
  /** Bytes written and hashed at once (one buffer per range in flight). */
  chunkBytes: number;
  /** Where the ranges' chunk buffers come from (and go back to). */
  buffers: BufferPool;
  /** Computes the whole file's MD5 as its ranges complete. */
  hasher: FileHasher;
}

/** The state file of a partial file. */
export function rangeStatePath(temp: string): string {
  return `${temp}.ranges`;
}

/**
 * Downloads the object into `temp` (resuming it when a matching state file
 * is there); returns the MD5 of the whole file. Throws when a range could
 * not be fetched; the partial file and its state stay for a re-run.
 */
export async function downloadRanges(d: RangedDownload): Promise<string> {
  const { head } = d;
  const count = Math.ceil(head.size / RANGE_BYTES);
  const statePath = rangeStatePath(d.temp);
  const state = await resumableState(d.temp, statePath, head);
  const done = new Set(state.done);
  if (done.size > 0) {
    log.info("resuming a partial download", { key: d.key, ranges: `${done.size}/${count}` });
    for (const i of done) d.onBytes(rangeLength(i, head.size));
  } else {
    // A fresh partial file (never following a symlink), sized up front.
    await removeIfPresent(d.temp);
    using file = await Deno.open(d.temp, { write: true, createNew: true, mode: 0o600 });
    await file.truncate(head.size);
    await writeState(statePath, state);
  }

  // Ranges finished, in any order; the hasher waits for each one in turn.
  const finished: PromiseWithResolvers<void>[] = Array.from(
    { length: count },
    () => Promise.withResolvers<void>(),
  );
  // Marked handled: the hasher meets a failure when it reaches that range.
  for (const f of finished) f.promise.catch(() => {});
  for (const i of done) finished[i]!.resolve();
  let failure: unknown;
  const md5 = d.hasher.fileMd5(d.chunkBytes);
  const hashing = hashInOrder(md5, d.temp, head.size, finished);
  hashing.catch(() => {});

  // One state write at a time, in order, each replacing the last.
  let saving = Promise.resolve();
  const save = () => {
    state.done = [...done].sort((a, b) => a - b);
    const snapshot = { ...state };
    saving = saving.then(() => writeState(statePath, snapshot));
    return saving;
  };
  let next = 0;
  const worker = async () => {
    for (;;) {
      while (next < count && done.has(next)) next++;
      if (next >= count || failure !== undefined) return;
      const i = next++;
      try {
        await fetchRange(d, i, md5);
        done.add(i);
        await save();
        finished[i]!.resolve();
      } catch (err) {
        failure ??= err;
        finished[i]!.reject(err);
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONNECTIONS_PER_FILE, count) }, worker));
  if (failure !== undefined) {
    // The hasher stops at the failed range; the others stay recorded for a re-run.
    for (const f of finished) f.reject(failure);
    throw failure;
  }
  return await hashing;
}

/** Removes a partial file's state (after the file is complete, or found corrupt). */
export async function removeRangeState(temp: string): Promise<void> {
  await removeIfPresent(rangeStatePath(temp));
}

function rangeLength(i: number, size: number): number {
  return Math.min(RANGE_BYTES, size - i * RANGE_BYTES);
}

/** One range into the partial file at its offset, retried on its own. */
async function fetchRange(d: RangedDownload, i: number, md5: FileMd5): Promise<void> {
  const offset = i * RANGE_BYTES;
  const length = rangeLength(i, d.head.size);
  await retry(() =>
    d.connections.use(async () => {
      const object = await d.store.get(d.key, { range: { offset, length } });
      if (object === null) throw new Error(`Object '${d.key}' disappeared during the restore`);
      if (object.head.etag !== d.head.etag || object.head.size !== d.head.size) {
        await object.body.cancel().catch(() => {});
        throw new Error(`Object '${d.key}' changed during the restore`);
      }
      using file = await Deno.open(d.temp, { write: true });
      await file.seek(offset, Deno.SeekMode.Start);
      const reader = new ChunkReader(object.body, d.buffers.take());
      let written = 0;
      try {
        for (let chunk = await reader.next(); chunk; chunk = await reader.next()) {
          if (written + chunk.byteLength > length) throw new Error("range longer than asked");
          await writeAll(file, chunk);
          md5.offer(offset + written, chunk);
          written += chunk.byteLength;
          d.onBytes(chunk.byteLength);
        }
        if (written !== length) {
          throw new Error(`Got ${written} bytes of range ${i} of '${d.key}', expected ${length}`);
        }
      } catch (err) {
        await reader.cancel();
        d.onBytes(-written);
        throw err;
      }
      d.buffers.give(reader.buffer);
    }), {
    attempts: RANGE_ATTEMPTS,
    backoff: RANGE_BACKOFF,
    onRetry: (err, attempt) =>
      log.warn("range download failed, retrying", {
        key: d.key,
        range: i,
        attempt,
        reason: errorMessage(err),
      }),
  });
}

/** The whole file's MD5, fed each range once it and all before it are done. */
async function hashInOrder(
  md5: FileMd5,
  temp: string,
  size: number,
  finished: PromiseWithResolvers<void>[],
): Promise<string> {
  for (const [i, range] of finished.entries()) {
    await range.promise;
    await md5.update(temp, Math.min(size, (i + 1) * RANGE_BYTES));
  }
  return await md5.digest();
}

/** The recorded state when it matches this object and its partial file, else a fresh one. */
async function resumableState(
  temp: string,
  statePath: string,
  head: ObjectHead,
): Promise<RangeState> {
  const fresh: RangeState = { etag: head.etag, size: head.size, rangeBytes: RANGE_BYTES, done: [] };
  const partial = lstatOrNull(temp);
  if (!partial?.isFile || partial.size !== head.size) return fresh;
  let saved: unknown;
  try {
    saved = JSON.parse(await Deno.readTextFile(statePath));
  } catch {
    return fresh; // none, or unreadable: start over
  }
  const s = saved as Partial<RangeState>;
  const count = Math.ceil(head.size / RANGE_BYTES);
  const valid = s.etag === head.etag && s.size === head.size && s.rangeBytes === RANGE_BYTES &&
    Array.isArray(s.done) &&
    s.done.every((i) => Number.isInteger(i) && i >= 0 && i < count);
  return valid ? { ...fresh, done: [...new Set(s.done as number[])] } : fresh;
}

/** Replaces the state file atomically: a crash leaves the old one or the new one. */
async function writeState(statePath: string, state: RangeState): Promise<void> {
  const tmp = `${statePath}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(state));
  await Deno.rename(tmp, statePath);
}
