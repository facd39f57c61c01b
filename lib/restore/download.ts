/**
 * One file of a restore: skipped when already present with the right size
 * and MD5; else downloaded to `.<name>.tablesnap-partial` (created with
 * O_EXCL, so an existing symlink is never followed), checked against the
 * object's size and MD5, fsynced, given its mode and owner, and only then
 * renamed into place. A failed attempt is tried again (5 attempts by
 * default); a missing object is not.
 */
import { expectedMd5, parseStatMetadata } from "../bucket/object_meta.ts";
import { isMutableComponent } from "../bucket/sstable.ts";
import { laterThanCut } from "../bucket/superseded.ts";
import { Accounts } from "../common/accounts.ts";
import type { FileHasher } from "../common/file_hasher.ts";
import { errorMessage, FatalError } from "../common/errors.ts";
import { BufferPool, ChunkReader, writeAll } from "../common/chunk_reader.ts";
import { lstatOrNull, removeIfPresent } from "../common/fs.ts";
import type { Semaphore } from "../common/pool.ts";
import type { ObjectHead, Store } from "../store/store.ts";
import { downloadRanges, RANGED_MIN_BYTES, removeRangeState } from "./ranged_download.ts";
import { log } from "../common/log.ts";
import { type Backoff, retry } from "../common/retry.ts";
import type { Progress } from "./progress.ts";
import type { SlurpOptions, Source } from "./types.ts";

const PARTIAL_SUFFIX = ".tablesnap-partial";
/**
 * slurp's connections when `-t` is not given: a restore's own default, not
 * the watcher's 4 (kept from the original for uploads beside a live node).
 * A restore is mostly small files (about 420 of the bench tree's 480), each
 * a round trip; a multi-threaded server (Ceph RGW: 7.56 s at 4, 5.20 s at
 * 16) serves them in parallel, and the buffers stay bounded (`chunkBytes`).
 */
export const DEFAULT_CONNECTIONS = 16;

/**
 * Bytes written at once, per download: 1 MiB (one write call per MiB), less
 * above 4 connections, so that the buffers of a restore stay within 4 MiB
 * whatever `-t`. The hashing thread reads files back with its own buffer;
 * a decrypting restore, which hashes on the main thread, hashes these
 * chunks (256 KiB cost it about 2% more CPU than 1 MiB).
 */
export function chunkBytes(threads: number): number {
  const budget = 4 * 1024 * 1024;
  return Math.max(256 * 1024, Math.min(1024 * 1024, Math.floor(budget / Math.max(1, threads))));
}

/** What every download of one restore shares. */
export interface DownloadContext {
  store: Store;
  /** Download even files already present and verified. */
  force: boolean;
  /** Attempts per file, and the first pause between them (doubling). */
  attempts: number;
  retryDelayMs: number;
  /** Bytes hashed and written at once (see `chunkBytes`). */
  chunkBytes: number;
  /** The chunk buffers of the downloads in flight, reused. */
  buffers: BufferPool;
  /** chown from each object's `stat` metadata, else to `owner`/`group` when given. */
  preserve: boolean;
  owner?: number | undefined;
  group?: number | undefined;
  owners: Accounts;
  progress: Progress;
  /** Bounds connections: whole-file GETs and the ranges of large files alike. */
  connections: Semaphore;
  /** Computes the MD5s that every file is checked against. */
  hasher: FileHasher;
}

/** The download context of a restore with these options. */
export function downloadContext(
  options: SlurpOptions,
  progress: Progress,
  connections: Semaphore,
  hasher: FileHasher,
): DownloadContext {
  const threads = options.threads ?? DEFAULT_CONNECTIONS;
  return {
    store: options.store,
    force: options.force ?? false,
    attempts: Math.max(1, options.attempts ?? 5),
    retryDelayMs: options.retryDelayMs ?? 1000,
    chunkBytes: chunkBytes(threads),
    buffers: new BufferPool(chunkBytes(threads), threads),
    preserve: options.preserve ?? false,
    owner: options.owner,
    group: options.group,
    owners: new Accounts(),
    progress,
    connections,
    hasher,
  };
}

/** One file to restore: where from, the (checked) directory it goes into, its listed size. */
export interface DownloadJob {
  source: Source;
  dir: string;
  size: number;
}

/** Downloads one file into its directory, or skips it when present and verified. */
export async function restoreFile(
  ctx: DownloadContext,
  job: DownloadJob,
): Promise<"downloaded" | "skipped"> {
  const { source } = job;
  const { progress } = ctx;
  const path = `${job.dir}/${source.name}`;
  const existing = lstatOrNull(path);
  if (existing?.isDirectory) throw new FatalError(`'${path}' exists and is a directory`);
  // `size` is the listing's, which for an encrypted object is the
  // ciphertext's: the HEAD's (plaintext) size decides.
  if (existing?.isFile && !ctx.force) {
    const head = await ctx.store.head(source.key);
    const md5 = head && expectedMd5(head);
    if (
      head && head.size === existing.size &&
      (md5 === null || (await ctx.hasher.digestFile(path, existing.size)).md5 === md5)
    ) {
      log.debug("already restored", { path });
      progress.fileDone(existing.size);
      return "skipped";
    }
  }
  const attempts = ctx.attempts;
  const backoff: Backoff = { firstMs: ctx.retryDelayMs, maxMs: 30_000, jitter: "half" };
  await retry(
    () => downloadOnce(ctx, job, path),
    {
      attempts,
      backoff,
      // A missing object will not appear by waiting; anything else (a reset
      // connection, a digest mismatch from a corrupt transfer) may pass next
      // time; an object that cannot be decrypted, an archived or a denied
      // one (`FatalError`s, as a `DecryptionError` is), will not.
      isRetryable: (err) => !(err instanceof MissingObjectError || err instanceof FatalError),
      onRetry: (err, attempt) =>
        log.warn("download failed, retrying", {
          key: source.key,
          attempt,
          of: attempts,
          reason: errorMessage(err),
        }),
    },
  );
  progress.fileDone(0);
  return "downloaded";
}

export class MissingObjectError extends Error {
  override name = "MissingObjectError";
}

/** One download attempt: temp file, hash while writing, check, fsync, mode, owner, rename. */
async function downloadOnce(ctx: DownloadContext, job: DownloadJob, path: string): Promise<void> {
  const { source, size } = job;
  const { progress, connections } = ctx;
  const temp = `${job.dir}/.${source.name}${PARTIAL_SUFFIX}`;
  let counted = 0;
  const onBytes = (n: number) => {
    counted += n;
    progress.addBytes(n);
  };
  // Fetched holding a connection permit; checked and fsynced after it is released.
  let fetched: Fetched;
  try {
    fetched = size >= RANGED_MIN_BYTES
      ? await fetchRanged(ctx, source, temp, onBytes)
      : await connections.use(() => fetchWhole(ctx, source, temp, size, onBytes));
  } catch (err) {
    progress.addBytes(-counted);
    throw err;
  }
  try {
    const { head, bytes, file } = fetched;
    try {
      if (bytes !== head.size) {
        throw new Error(`Got ${bytes} bytes of '${source.key}', expected ${head.size}`);
      }
      const md5 = expectedMd5(head);
      // The fsync need not wait for the hash: a file found wrong is removed.
      const [actual] = await Promise.all([fetched.md5, file.sync()]);
      if (md5 !== null && actual !== md5) {
        throw new Error(`MD5 of '${source.key}' is ${actual}, expected ${md5}`);
      }
    } finally {
      file.close();
    }
    if (source.at !== undefined && isMutableComponent(source.name)) {
      source.later = laterThanCut(head.metadata, source.at) ?? undefined;
    }
    // Synchronous: a local chmod, chown or rename takes microseconds, and
    // the async forms each cost a hop through Deno's blocking-thread pool
    // on the main thread, which a restore's profile showed (see fs.ts).
    const stat = parseStatMetadata(head.metadata["stat"]);
    Deno.chmodSync(temp, stat?.mode !== undefined ? stat.mode & 0o7777 : 0o644);
    const [uid, gid] = ownerOf(ctx, stat, source.key);
    if (uid !== null || gid !== null) Deno.chownSync(temp, uid, gid);
    Deno.renameSync(temp, path);
    if (size >= RANGED_MIN_BYTES) await removeRangeState(temp);
    log.debug("restored", { path, bytes });
  } catch (err) {
    // Checked and found wrong, or not finished: nothing of it can be trusted.
    progress.addBytes(-counted);
    await removeIfPresent(temp).catch(() => {});
    if (size >= RANGED_MIN_BYTES) await removeRangeState(temp).catch(() => {});
    throw err;
  }
}

/** A downloaded partial file, still open, with what it should be and what it is. */
interface Fetched {
  head: ObjectHead;
  /** Its MD5, computed after the connection is released (see file_hasher.ts). */
  md5: Promise<string>;
  bytes: number;
  /** Open for the fsync (the caller closes it). */
  file: Deno.FsFile;
}

/** A whole object in one GET, hashed once it is written. */
async function fetchWhole(
  ctx: DownloadContext,
  source: Source,
  temp: string,
  size: number,
  onBytes: (n: number) => void,
): Promise<Fetched> {
  // Bytes the plan already read are used once; a retry fetches afresh.
  const fetched = source.fetched;
  delete source.fetched;
  // The partial file is created while the request is on its way: a create
  // takes the file system about 0.7 ms, which would hold the connection.
  const creating = createPartial(temp);
  creating.catch(() => {});
  let object: Awaited<ReturnType<Store["get"]>>;
  try {
    object = fetched
      ? { head: fetched.head, body: new Blob([fetched.bytes]).stream() }
      : await ctx.store.get(source.key);
    if (object === null) {
      throw new MissingObjectError(`Object '${source.key}' is missing from ${ctx.store.url}`);
    }
  } catch (err) {
    await creating.then((file) => file.close(), () => {});
    await removeIfPresent(temp).catch(() => {});
    throw err;
  }
  const md5 = ctx.hasher.fileMd5(ctx.chunkBytes);
  let bytes = 0;
  // Chunks no larger than the file: small files need no large buffer.
  const reader = new ChunkReader(object.body, ctx.buffers.take(size + 1));
  let file: Deno.FsFile | undefined;
  try {
    file = await creating;
    for (let chunk = await reader.next(); chunk; chunk = await reader.next()) {
      await writeAll(file, chunk);
      md5.offer(bytes, chunk);
      bytes += chunk.byteLength;
      onBytes(chunk.byteLength);
    }
  } catch (err) {
    file?.close();
    await reader.cancel();
    await removeIfPresent(temp).catch(() => {});
    throw err;
  }
  ctx.buffers.give(reader.buffer);
  // Hashed while the next download uses the connection; awaited by the check.
  const digest = md5.finish(temp, bytes);
  digest.catch(() => {});
  return { head: object.head, md5: digest, bytes, file };
}

/**
 * The partial file, new (O_EXCL: a symlink there is never followed). One
 * left by an interrupted run is removed first; looked for only then, as
 * most restores find none. Asynchronous, unlike the rename (see
 * downloadOnce): a create costs the file system far more than the hop.
 */
async function createPartial(temp: string): Promise<Deno.FsFile> {
  const create = () => Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
  try {
    return await create();
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    await removeIfPresent(temp);
    return await create();
  }
}

/** A large object in parallel ranges, resuming a partial file left by an earlier run. */
async function fetchRanged(
  ctx: DownloadContext,
  source: Source,
  temp: string,
  onBytes: (n: number) => void,
): Promise<Fetched> {
  const { connections } = ctx;
  const head = await connections.use(() => ctx.store.head(source.key));
  if (head === null) {
    throw new MissingObjectError(`Object '${source.key}' is missing from ${ctx.store.url}`);
  }
  // Stores without ranged reads give the object in one streamed GET.
  if (!ctx.store.traits.rangedReads) {
    return await connections.use(() => fetchWhole(ctx, source, temp, head.size, onBytes));
  }
  const md5 = await downloadRanges({
    store: ctx.store,
    key: source.key,
    head,
    temp,
    connections,
    onBytes,
    chunkBytes: ctx.chunkBytes,
    buffers: ctx.buffers,
    hasher: ctx.hasher,
  });
  const file = await Deno.open(temp, { read: true, write: true });
  try {
    return { head, md5: Promise.resolve(md5), bytes: (await file.stat()).size, file };
  } catch (err) {
    file.close();
    throw err;
  }
}

function ownerOf(
  ctx: DownloadContext,
  stat: ReturnType<typeof parseStatMetadata>,
  key: string,
): [number | null, number | null] {
  const { owners } = ctx;
  if (ctx.preserve) {
    if (stat === null) {
      log.warn("no stat metadata, owner not preserved", { key });
      return [null, null];
    }
    const uid = (stat.user !== undefined ? owners.uid(stat.user) : undefined) ?? stat.uid ?? null;
    const gid = (stat.group !== undefined ? owners.gid(stat.group) : undefined) ?? stat.gid ??
      null;
    return [uid, gid];
  }
  return [ctx.owner ?? null, ctx.group ?? null];
}
