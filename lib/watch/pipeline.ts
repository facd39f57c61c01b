/**
 * The upload pipeline: takes "this file is complete" facts and makes them
 * objects in the bucket. It owns the bounded pool (`-t` uploads at once),
 * retries with backoff, the skip rules, and memory: files up to 4 MiB are
 * read once within a 16 MiB budget; larger ones are hashed through a 1 MiB
 * buffer and sent by the store through two reused 256 KiB buffers, so memory
 * is about `threads` x 1.5 MiB whatever the file sizes and the part size.
 *
 * One upload of a file:
 *   1. lstat (gone: skipped quietly; not a regular file: skipped);
 *   2. already uploaded by us with this size and mtime: a duplicate, skipped;
 *   3. the bucket already has the key (the startup listing, else one listing
 *      of the key's directory, else HEAD): equal size (and MD5 with
 *      --md5-on-start) means done; another size is left alone with a
 *      warning, as the original did;
 *   4. MD5 of the whole file (and of each part) in one streamed pass;
 *   5. put, with `stat` and `md5sum` metadata (Content-MD5 on every request);
 *   6. lstat again: if the file changed meanwhile, the object is deleted and
 *      the file is tried again later, so no key holds a half-written file.
 */
import type { FileUpload, Store } from "../store/store.ts";
import { type KeyNaming, objectKey } from "../bucket/keys.ts";
import { digestFile, lstatOrNull, OwnerNames, statMetadata } from "../bucket/object_meta.ts";
import { errorMessage } from "../common/errors.ts";
import { createHash } from "node:crypto";
import { log } from "../common/log.ts";
import { keyDirectory } from "../bucket/index_reader.ts";
import type { RateLimiter } from "../store/rate_limit.ts";

/** S3 refuses more parts than this. */
const MAX_PARTS = 10_000;

/** Files up to this size are read into memory once instead of streamed twice. */
const SMALL_FILE_BYTES = 4 * 1024 * 1024;

/** Memory all buffered small files may hold at once; past it, files stream. */
const SMALL_FILE_BUDGET_BYTES = 16 * 1024 * 1024;

/** A count of bytes that callers take and give back, never waiting. */
class ByteBudget {
  #left: number;
  constructor(bytes: number) {
    this.#left = bytes;
  }
  tryTake(bytes: number): boolean {
    if (bytes > this.#left) return false;
    this.#left -= bytes;
    return true;
  }
  give(bytes: number): void {
    this.#left += bytes;
  }
}

/**
 * Reads `size` bytes of a small file; a different length means the file
 * changed. Synchronous like `lstatOrNull`: at most 4 MiB from a local disk,
 * and one call instead of four async file operations per small file.
 */
function readExactly(path: string, size: number): Uint8Array {
  using file = Deno.openSync(path, { read: true });
  const buffer = new Uint8Array(size + 1);
  let filled = 0;
  for (;;) {
    const n = file.readSync(buffer.subarray(filled));
    if (n === null || n === 0) break;
    filled += n;
    if (filled > size) throw new FileChangedError(path);
  }
  if (filled !== size) throw new FileChangedError(path);
  return buffer.subarray(0, size);
}

/** What the pipeline reports, for metrics. `Metrics` implements it. */
export interface UploadObserver {
  fileUploaded(root: string, bytes: number, seconds: number): void;
  uploadFailed(reason: string): void;
  uploadRetried(reason: string): void;
}

export interface UploadPipelineOptions {
  store: Store;
  naming: KeyNaming;
  /** Uploads at once (`-t`). */
  threads: number;
  /** Extra attempts per try-cycle (`--retries`); then the file waits for a later cycle. */
  retries: number;
  /** Files larger than this many bytes go multipart (`--max-upload-size`). */
  multipartThreshold: number;
  /** Part size in bytes (`--multipart-chunk-size`). */
  partSize: number;
  /** Compare MD5s, not only sizes, with objects found in the bucket. */
  md5OnStart: boolean;
  limiter?: RateLimiter;
  observer?: UploadObserver;
  /** Turns an error into a short reason label for logs and metrics. */
  reasonOf?: (err: unknown) => string;
  /** The watched root a path belongs to (a metrics label). */
  rootOf?: (path: string) => string;
  /** Stored files remembered before deleted ones are first pruned (default 10,000). */
  pruneStoredAfter?: number;
  /** Called after a file is confirmed in the bucket (uploaded or found there). */
  onStored?: (path: string, outcome: "uploaded" | "present") => void;
}

/** What the bucket is known to hold for one of our files. */
interface Stored {
  size: number;
  mtimeMs: number;
}

/** A bucket listing taken at startup: absent from it means absent. */
export interface RemoteListing {
  objects: Map<string, RemoteObject>;
  /** Key prefixes the listing covered completely. */
  prefixes: string[];
}

export interface PipelineSummary {
  uploaded: number;
  uploadedBytes: number;
  skipped: number;
  failed: number;
}

export class UploadPipeline {
  readonly #o: UploadPipelineOptions;
  readonly #names = new OwnerNames();
  readonly #smallFileBudget = new ByteBudget(SMALL_FILE_BUDGET_BYTES);
  /** Files waiting for a worker, in order, with the time they became complete. */
  readonly #queue = new Map<string, number>();
  /** Files being uploaded now, with the time they became complete. */
  readonly #active = new Map<string, number>();
  /** Files between failed try-cycles, with the time they became complete. */
  readonly #waiting = new Map<
    string,
    { since: number; timer: ReturnType<typeof setTimeout> }
  >();
  /** Sizes of pending files we have looked at (queued files are not stat'ed yet). */
  readonly #pendingBytes = new Map<string, number>();
  /** Failed try-cycles per file so far: the wait before the next one doubles. */
  readonly #failedCycles = new Map<string, number>();
  /** Files that arrived again while being uploaded: looked at once more after. */
  readonly #again = new Set<string>();
  /**
   * What we know is in the bucket, by local path. Compaction deletes files
   * all day long: entries whose file is gone are dropped each time the map
   * has doubled, so a watcher running for months does not grow without end.
   */
  readonly #stored = new Map<string, Stored>();
  #pruneStoredAt: number;
  #pruning = false;
  /** Keys whose object has another size: warned once, left alone. */
  readonly #conflicts = new Set<string>();
  #listing: RemoteListing | undefined;
  /** Directories of keys listed instead of one HEAD per new file; most recent last. */
  readonly #dirListings = new Map<string, DirListing>();
  /** Directories with more keys than a listing may hold: HEAD per file there. */
  readonly #tooLarge = new Set<string>();
  #abort = new AbortController();
  #accepting = true;
  #idleWaiters: (() => void)[] = [];
  readonly summary: PipelineSummary = { uploaded: 0, uploadedBytes: 0, skipped: 0, failed: 0 };

  constructor(options: UploadPipelineOptions) {
    this.#o = options;
    this.#pruneStoredAt = options.pruneStoredAfter ?? STORED_PRUNE_MIN;
  }

  /** Uses a startup listing instead of one HEAD per file. */
  setListing(listing: RemoteListing | undefined): void {
    this.#listing = listing;
  }

  #remember(path: string, size: number, mtimeMs: number): void {
    this.#stored.set(path, { size, mtimeMs });
    if (this.#stored.size >= this.#pruneStoredAt && !this.#pruning) void this.#pruneStored();
  }

  /** Forgets stored files that no longer exist, a slice at a time (it stats each one). */
  async #pruneStored(): Promise<void> {
    this.#pruning = true;
    try {
      let looked = 0;
      for (const path of [...this.#stored.keys()]) {
        try {
          if (!lstatOrNull(path)) this.#stored.delete(path);
        } catch {
          // unreadable now (permissions): keep it, look again next time
        }
        if (++looked % 1000 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
      }
    } finally {
      this.#pruneStoredAt = Math.max(
        this.#o.pruneStoredAfter ?? STORED_PRUNE_MIN,
        this.#stored.size * 2,
      );
      this.#pruning = false;
    }
  }

  /** How many files are remembered as stored (after pruning). */
  storedCount(): number {
    return this.#stored.size;
  }

  /** True when `path` with this size is known to be in the bucket. */
  isStored(path: string, size?: number): boolean {
    const stored = this.#stored.get(path);
    return stored !== undefined && (size === undefined || stored.size === size);
  }

  /** True when the file is known in the bucket with exactly this size and mtime. */
  isStoredUnchanged(path: string, size: number, mtimeMs: number): boolean {
    const stored = this.#stored.get(path);
    return stored !== undefined && stored.size === size && stored.mtimeMs === mtimeMs;
  }

  /** True when the file is queued, uploading or waiting for a retry. */
  isPending(path: string): boolean {
    return this.#queue.has(path) || this.#active.has(path) || this.#waiting.has(path);
  }

  /**
   * Accepts a complete file. Returns at once; the upload happens in the
   * pool. `since` is when the file became complete (for the RPO metric).
   */
  enqueue(path: string, since = Date.now()): void {
    if (!this.#accepting) return;
    if (this.#active.has(path)) {
      this.#again.add(path);
      return;
    }
    if (this.#queue.has(path)) return;
    const waiting = this.#waiting.get(path);
    if (waiting) {
      // A new fact about a failed file: try now rather than at its timer.
      clearTimeout(waiting.timer);
      this.#waiting.delete(path);
      since = Math.min(since, waiting.since);
    }
    this.#queue.set(path, since);
    this.#pump();
  }

  /** Files and the oldest completion time of everything not yet in the bucket. */
  pending(): { files: number; bytes: number; oldestSince: number | null } {
    let oldest: number | null = null;
    const consider = (since: number) => {
      if (oldest === null || since < oldest) oldest = since;
    };
    for (const since of this.#queue.values()) consider(since);
    for (const since of this.#active.values()) consider(since);
    for (const { since } of this.#waiting.values()) consider(since);
    let bytes = 0;
    for (const size of this.#pendingBytes.values()) bytes += size;
    return {
      files: this.#queue.size + this.#active.size + this.#waiting.size,
      bytes,
      oldestSince: oldest,
    };
  }

  /** Paths between failed try-cycles (what --once reports as failed). */
  failedPaths(): string[] {
    return [...this.#waiting.keys()];
  }

  /** Resolves when nothing is queued or uploading (failed files may wait). */
  idle(): Promise<void> {
    if (this.#queue.size === 0 && this.#active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Stops taking work, lets in-flight uploads finish for up to `graceMs`,
   * then aborts them (the store aborts multipart uploads). Returns the
   * paths that were not uploaded.
   */
  async shutdown(graceMs: number): Promise<string[]> {
    this.#accepting = false;
    const notStarted = [...this.#queue.keys(), ...this.#waiting.keys()];
    this.#queue.clear();
    for (const { timer } of this.#waiting.values()) clearTimeout(timer);
    this.#waiting.clear();
    const inFlight = [...this.#active.keys()];
    if (this.#active.size > 0) {
      log.info("waiting for uploads in progress", {
        files: this.#active.size,
        grace: graceMs / 1000,
      });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, graceMs));
      await Promise.race([this.idle(), timeout]);
      clearTimeout(timer);
      if (this.#active.size > 0) {
        log.warn("aborting uploads still in progress", { files: this.#active.size });
        this.#abort.abort(new Error("shutting down"));
        await this.idle();
      }
    }
    const unfinished = inFlight.filter((p) => !this.isStored(p));
    return [...notStarted, ...unfinished];
  }

  #pump(): void {
    while (this.#active.size < this.#o.threads && this.#queue.size > 0) {
      const [path, since] = this.#queue.entries().next().value!;
      this.#queue.delete(path);
      this.#active.set(path, since);
      this.#runCycle(path, since).finally(() => {
        this.#active.delete(path);
        if (!this.#waiting.has(path)) this.#pendingBytes.delete(path);
        if (this.#again.delete(path) && this.#accepting) this.#queue.set(path, since);
        this.#pump();
        if (this.#queue.size === 0 && this.#active.size === 0) {
          for (const resolve of this.#idleWaiters.splice(0)) resolve();
        }
      });
    }
  }

  /** One try-cycle: up to 1 + retries attempts, with backoff between them. */
  async #runCycle(path: string, since: number): Promise<void> {
    const cycle = this.#failedCycles.get(path) ?? 0;
    const attempts = 1 + this.#o.retries;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      try {
        await this.#uploadOnce(path);
        this.#failedCycles.delete(path);
        return;
      } catch (err) {
        if (this.#abort.signal.aborted) return;
        const reason = this.#o.reasonOf?.(err) ?? "other";
        const key = objectKey(this.#o.naming, path);
        if (attempt < attempts) {
          this.#o.observer?.uploadRetried(reason);
          const ms = backoffMs(attempt);
          log.warn("upload failed, retrying", {
            key,
            reason,
            error: errorMessage(err),
            attempt,
            retry_in: Math.round(ms) / 1000,
          });
          await sleep(ms);
          continue;
        }
        this.#o.observer?.uploadFailed(reason);
        this.summary.failed++;
        const wait = jitter(Math.min(300_000, 5_000 * 2 ** cycle));
        log.error("upload failed, will try again", {
          key,
          reason,
          error: errorMessage(err),
          attempts,
          retry_in: Math.round(wait) / 1000,
        });
        if (this.#accepting) {
          const timer = setTimeout(() => {
            this.#waiting.delete(path);
            this.enqueue(path, since);
          }, wait);
          this.#waiting.set(path, { since, timer });
          this.#failedCycles.set(path, cycle + 1);
        }
        return;
      }
    }
  }

  async #uploadOnce(path: string): Promise<void> {
    const o = this.#o;
    const info = lstatOrNull(path);
    if (!info) {
      log.debug("skipped: file vanished before upload", { path });
      return;
    }
    if (!info.isFile) {
      log.debug("skipped: not a regular file", { path });
      return;
    }
    const mtimeMs = info.mtime?.getTime() ?? 0;
    this.#pendingBytes.set(path, info.size);
    if (this.isStoredUnchanged(path, info.size, mtimeMs)) {
      log.debug("skipped: already uploaded", { path });
      return;
    }
    const key = objectKey(o.naming, path);
    if (await this.#alreadyInBucket(key, path, info, mtimeMs)) return;

    const started = performance.now();
    const multipart = info.size > o.multipartThreshold;
    const partSize = multipart ? Math.max(o.partSize, Math.ceil(info.size / MAX_PARTS)) : undefined;
    // Small files are read once into memory (within a global budget) and
    // hashed and sent from there; the rest are hashed and sent as streams.
    const buffered = !multipart && info.size <= SMALL_FILE_BYTES &&
      this.#smallFileBudget.tryTake(info.size);
    const limiter = o.limiter;
    let md5 = "";
    try {
      let body: Uint8Array | undefined;
      let digests: { md5: string; size: number; partMd5s?: string[] };
      if (buffered) {
        body = readExactly(path, info.size);
        digests = { md5: createHash("md5").update(body).digest("hex"), size: body.byteLength };
      } else {
        digests = await digestFile(path, info.size, partSize);
      }
      if (digests.size !== info.size) throw new FileChangedError(path);
      md5 = digests.md5;
      const upload: FileUpload = {
        path,
        size: info.size,
        md5: digests.md5,
        metadata: { stat: statMetadata(info, this.#names), md5sum: digests.md5 },
        ...(partSize ? { parts: { partSize, md5s: digests.partMd5s! } } : {}),
        ...(body ? { body } : {}),
      };
      await o.store.putFile(key, upload, {
        signal: this.#abort.signal,
        ...(limiter ? { onBytes: (n: number) => limiter.take(n) } : {}),
      });
    } catch (err) {
      if (!lstatOrNull(path)) {
        log.debug("skipped: file vanished during upload", { path });
        return;
      }
      throw err;
    } finally {
      if (buffered) this.#smallFileBudget.give(info.size);
    }
    const after = lstatOrNull(path);
    if (!after) {
      // Deleted after we read it whole: the object is complete and correct.
      log.debug("file vanished after upload", { path });
    } else if (after.size !== info.size || after.mtime?.getTime() !== mtimeMs) {
      await o.store.deleteMany([key]);
      this.#updateListing(key, null);
      throw new FileChangedError(path);
    }
    const seconds = (performance.now() - started) / 1000;
    this.#remember(path, info.size, mtimeMs);
    this.#updateListing(key, { size: info.size, etag: md5, md5sum: md5 });
    this.summary.uploaded++;
    this.summary.uploadedBytes += info.size;
    o.observer?.fileUploaded(o.rootOf?.(path) ?? path, info.size, seconds);
    log.info("uploaded", {
      key,
      bytes: info.size,
      seconds: Math.round(seconds * 1000) / 1000,
      ...(partSize ? { parts: Math.ceil(info.size / partSize) } : {}),
    });
    o.onStored?.(path, "uploaded");
  }

  /**
   * What a listing of the key's "directory" says of it, like the -B listing
   * (null: absent), or undefined when the directory has too many keys to
   * keep (ask with a HEAD). A new file would otherwise cost a HEAD, a round
   * trip before every upload and most of the close->visible latency; one
   * listing answers for all the files of a directory. Trusted like the -B
   * listing: this host's keys are written only by this host's tablesnap,
   * and our own uploads and deletes are applied to it.
   */
  async #fromDirectoryListing(
    key: string,
  ): Promise<RemoteObject | null | undefined> {
    const directory = dirPrefixOf(key);
    if (this.#tooLarge.has(directory)) return undefined;
    let entry = this.#dirListings.get(directory);
    if (entry) {
      this.#dirListings.delete(directory); // most recently used goes last
    } else {
      const created: DirListing = { ready: this.#listDirectory(directory) };
      created.ready.catch(() => {
        // A failed listing is not kept (the upload fails and is retried).
        if (this.#dirListings.get(directory) === created) this.#dirListings.delete(directory);
      });
      entry = created;
    }
    this.#dirListings.set(directory, entry);
    for (const [old] of this.#dirListings) {
      if (this.#dirListings.size <= DIR_LISTINGS_KEPT) break;
      this.#dirListings.delete(old);
    }
    const objects = await entry.ready;
    if (!objects) return undefined;
    return objects.get(key) ?? null;
  }

  /**
   * Applies our own upload (or delete) to the key's directory listing, after
   * the listing has loaded, so it is never lost to one still in flight.
   */
  #updateListing(key: string, object: RemoteObject | null): void {
    this.#dirListings.get(dirPrefixOf(key))?.ready.then((objects) => {
      if (object) objects?.set(key, object);
      else objects?.delete(key);
    }, () => {});
  }

  /** The objects of one key directory, or null when it has too many to keep. */
  async #listDirectory(directory: string): Promise<DirObjects | null> {
    const objects: DirObjects = new Map();
    for await (const item of this.#o.store.list(directory, { delimiter: "/" })) {
      if (objects.size >= DIR_LISTING_MAX_KEYS) {
        this.#tooLarge.add(directory);
        return null;
      }
      objects.set(item.key, { size: item.size, etag: item.etag });
    }
    return objects;
  }

  /** Step 3: is the object already there? Marks it stored when it is. */
  async #alreadyInBucket(
    key: string,
    path: string,
    info: Deno.FileInfo,
    mtimeMs: number,
  ): Promise<boolean> {
    if (this.#conflicts.has(key)) return true;
    let remote: RemoteObject | null;
    const listing = this.#listing;
    if (listing && listing.prefixes.some((p) => key.startsWith(p))) {
      remote = listing.objects.get(key) ?? null;
    } else {
      const listed = await this.#fromDirectoryListing(key);
      if (listed !== undefined) {
        remote = listed;
      } else {
        const head = await this.#o.store.head(key);
        remote = head && { size: head.size, etag: head.etag, md5sum: head.metadata["md5sum"] };
      }
    }
    if (!remote) return false;
    if (remote.size !== info.size) {
      this.#conflicts.add(key);
      log.warn("skipped: object exists with a different size; local file left alone", {
        key,
        local_bytes: info.size,
        remote_bytes: remote.size,
      });
      this.summary.skipped++;
      return true;
    }
    if (this.#o.md5OnStart) {
      let remoteMd5 = remote.md5sum;
      if (remoteMd5 === undefined && remote.etag.includes("-")) {
        remoteMd5 = (await this.#o.store.head(key))?.metadata["md5sum"];
      }
      remoteMd5 ??= remote.etag;
      const local = await digestFile(path, info.size);
      if (local.md5 !== remoteMd5) {
        log.warn("object exists with the same size but another MD5: uploading again", { key });
        return false;
      }
    }
    this.#remember(path, info.size, mtimeMs);
    this.summary.skipped++;
    log.debug("skipped: already in bucket", { key });
    this.#o.onStored?.(path, "present");
    return true;
  }
}

/** What the bucket holds under a key, as far as a skip decision needs. */
interface RemoteObject {
  size: number;
  etag: string;
  /** The `md5sum` metadata, when known (HEAD, or our own upload). */
  md5sum?: string;
}

/** What a listing of one key directory found, by key. */
type DirObjects = Map<string, RemoteObject>;

/** A listing of one key directory: null when it had too many keys to keep. */
interface DirListing {
  ready: Promise<DirObjects | null>;
}

/** The key's "directory" as a listing prefix (ending in "/"). */
function dirPrefixOf(key: string): string {
  return `${keyDirectory(key)}/`;
}

/** Remembered stored files before the first pruning of deleted ones. */
const STORED_PRUNE_MIN = 10_000;

/** Directory listings kept at once, and the most keys one may hold (else HEAD per file). */
const DIR_LISTINGS_KEPT = 16;
const DIR_LISTING_MAX_KEYS = 5_000;

/** The file's size or mtime moved during the upload. */
export class FileChangedError extends Error {
  override name = "FileChangedError";
  constructor(path: string) {
    super(`File '${path}' changed while it was being uploaded`);
  }
}

/** Exponential backoff with full jitter: 0.5 s, 1 s, 2 s ... capped at 30 s. */
function backoffMs(attempt: number): number {
  return jitter(Math.min(30_000, 500 * 2 ** (attempt - 1)));
}

function jitter(ms: number): number {
  return ms / 2 + Math.random() * (ms / 2);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
