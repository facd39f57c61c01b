/**
 * One upload of one file, the steps in order:
 *   1. lstat (gone: skipped quietly; not a regular file: skipped);
 *   2. already uploaded by us with this size and mtime: a duplicate, skipped;
 *   3. the bucket already has the key (see BucketView): for most files equal
 *      size (and MD5 with --md5-on-start) means done, and another size is
 *      left alone with a warning, as the original did; a mutable component
 *      is compared by content and replaced when it differs (see
 *      `#mutableDiffers`);
 *   4. MD5 of the whole file (and of each part) in one streamed pass (left
 *      to the store when it stores a body made from the file, encrypted:
 *      it hashes the file in the pass it makes anyway, `onFileMd5`);
 *   5. put, with `stat`, `md5sum` and `mtime` metadata (Content-MD5 on every
 *      request, so bytes that changed during the send are refused by the
 *      store and never become an object);
 *   (with `--state-dir`, a multipart upload a crash interrupted is resumed
 *   or aborted: multipart_resume.ts)
 *   6. lstat again: if the file changed meanwhile, the upload fails (the
 *      pipeline tries again later) and the retry overwrites the object,
 *      which holds the complete version that was read. Nothing is deleted:
 *      the watcher needs no s3:DeleteObject.
 *
 * Memory: files up to 4 MiB are read once within a 16 MiB budget shared by
 * all uploads; larger ones are hashed through a 1 MiB buffer and sent by the
 * store through two reused 256 KiB buffers, so memory is about
 * `threads` x 1.5 MiB whatever the file sizes and the part size.
 */
import { Accounts } from "../../common/accounts.ts";
import { type FileDigests, isMd5Hex, md5Hex, multipartEtag } from "../../common/digest.ts";
import type { FileHasher } from "../../common/file_hasher.ts";
import { lstatOrNull } from "../../common/fs.ts";
import { log } from "../../common/log.ts";
import { type KeyNaming, objectKey } from "../../bucket/keys.ts";
import { MTIME_METADATA, mtimeMetadata, statMetadata } from "../../bucket/object_meta.ts";
import { isMutableComponent } from "../../bucket/sstable.ts";
import { keepSuperseded } from "../../bucket/superseded.ts";
import type { FileUpload, PutFileOptions, Store } from "../../store/store.ts";
import type { BucketView, RemoteObject } from "./bucket_view.ts";
import type { StoredVersion } from "../ledger.ts";
import { ByteBudget, FileChangedError, readExactly } from "./file_bytes.ts";
import { MultipartResume, type UploadJournal } from "./multipart_resume.ts";

/** S3 refuses more parts than this. */
const MAX_PARTS = 10_000;

/** Files up to this size are read into memory once instead of streamed twice. */
const SMALL_FILE_BYTES = 4 * 1024 * 1024;

/** Memory all buffered small files may hold at once; past it, files stream. */
const SMALL_FILE_BUDGET_BYTES = 16 * 1024 * 1024;

export interface UploaderOptions {
  store: Store;
  naming: KeyNaming;
  bucket: BucketView;
  /** Files larger than this many bytes go multipart (`--max-upload-size`). */
  multipartThreshold: number;
  /** Part size in bytes (`--multipart-chunk-size`). */
  partSize: number;
  /** Compare MD5s, not only sizes, with objects found in the bucket. */
  md5OnStart: boolean;
  /** Aborts every upload in flight (shutdown past its grace period). */
  signal: AbortSignal;
  /** `--state-dir`: multipart uploads are journaled, and resumed after a crash. */
  journal?: UploadJournal | undefined;
  /** Hashes the files read from disk (on its own thread). */
  hasher: FileHasher;
}

/** What one upload found or did. */
export type UploadOutcome =
  | {
    kind: "uploaded";
    version: StoredVersion;
    seconds: number;
    parts: number | undefined;
    /**
     * The key held another version of the file, now overwritten: a mutable
     * component Cassandra rewrote, or the retry after the file changed
     * during an earlier attempt. (The index publisher may want a new index
     * for the first; nothing uses it yet.)
     */
    replaced: boolean;
  }
  /**
   * The bucket already has it (same size, and MD5 with --md5-on-start; for
   * a mutable component, the same content).
   */
  | { kind: "present"; version: StoredVersion }
  /** The bucket has another size under its key: left alone, with a warning. */
  | { kind: "conflict" }
  /** Nothing to do: gone, not a regular file, or uploaded by us unchanged. */
  | { kind: "skipped" };

export class FileUploader {
  readonly #o: UploaderOptions;
  readonly #accounts = new Accounts();
  readonly #smallFileBudget = new ByteBudget(SMALL_FILE_BUDGET_BYTES);
  /** Keys whose object has another size: warned once, left alone. */
  readonly #conflicts = new Set<string>();
  /**
   * Keys we put while their file changed: the object is a version that was
   * superseded before its upload completed, so the retry overwrites it
   * whatever its size. Only this process knows; dropped once replaced.
   */
  readonly #superseded = new Set<string>();

  readonly #resume: MultipartResume | undefined;

  constructor(options: UploaderOptions) {
    this.#o = options;
    this.#resume = options.journal
      ? new MultipartResume(options.store, options.journal)
      : undefined;
  }

  /**
   * Uploads `path` unless the bucket has it. `stored` is what the bucket is
   * known to hold for it; `onSized` learns the size as soon as it is known.
   * `keyPath` names the object when `path` is another link to the file (a
   * pin, see pins.ts). Throws when the upload failed (the file is then worth
   * another try).
   */
  async upload(
    path: string,
    stored: StoredVersion | undefined,
    onSized: (bytes: number) => void,
    keyPath = path,
  ): Promise<UploadOutcome> {
    try {
      return await this.#upload(path, stored, onSized, keyPath);
    } finally {
      // Skipped, found in the bucket, failed: no journaled upload outlives
      // the attempt, but the one shutdown interrupts (resumed next start).
      // Journaled under the original's path (keyPath), whatever link is read.
      await this.#resume?.afterAttempt(keyPath, this.#o.signal.aborted);
    }
  }

  async #upload(
    path: string,
    stored: StoredVersion | undefined,
    onSized: (bytes: number) => void,
    keyPath: string,
  ): Promise<UploadOutcome> {
    const o = this.#o;
    const info = lstatOrNull(path);
    if (!info) {
      log.debug("skipped: file vanished before upload", { path });
      return { kind: "skipped" };
    }
    if (!info.isFile) {
      log.debug("skipped: not a regular file", { path });
      return { kind: "skipped" };
    }
    const version = { size: info.size, mtimeMs: info.mtime?.getTime() ?? 0 };
    onSized(info.size);
    if (stored && stored.size === version.size && stored.mtimeMs === version.mtimeMs) {
      log.debug("skipped: already uploaded", { path });
      return { kind: "skipped" };
    }
    const key = objectKey(o.naming, keyPath);
    let existing: InBucket;
    try {
      existing = await this.#inBucket(key, path, version);
    } catch (err) {
      // Comparing contents reads the file: compaction may delete it first.
      if (!lstatOrNull(path)) {
        log.debug("skipped: file vanished before upload", { path });
        return { kind: "skipped" };
      }
      throw err;
    }
    if (existing === "present") return { kind: existing, version };
    if (existing === "conflict") return { kind: existing };

    const started = performance.now();
    const multipart = info.size > o.multipartThreshold;
    const partSize = multipart ? Math.max(o.partSize, Math.ceil(info.size / MAX_PARTS)) : undefined;
    let sent: { md5: string; etag: string };
    try {
      sent = await this.#send(key, path, keyPath, info, version.mtimeMs, partSize);
    } catch (err) {
      if (!lstatOrNull(path)) {
        log.debug("skipped: file vanished during upload", { path });
        this.#superseded.delete(key);
        return { kind: "skipped" };
      }
      throw err;
    }
    // Each part's MD5 fits the bytes read: the object is whole, of the file
    // as it was read. Our own, so the directory listing learns of it.
    o.bucket.record(key, {
      size: info.size,
      etag: sent.etag,
      md5sum: sent.md5,
      mtimeMs: version.mtimeMs,
    });
    const after = lstatOrNull(path);
    if (!after) {
      // Deleted after we read it whole: the object is complete and correct.
      log.debug("file vanished after upload", { path });
    } else if (after.size !== version.size || after.mtime?.getTime() !== version.mtimeMs) {
      // Not deleted (no s3:DeleteObject needed): the retry puts the new
      // version over it, and no index names it before then.
      this.#superseded.add(key);
      throw new FileChangedError(path);
    }
    this.#superseded.delete(key);
    const seconds = (performance.now() - started) / 1000;
    const parts = partSize ? Math.ceil(info.size / partSize) : undefined;
    return { kind: "uploaded", version, seconds, parts, replaced: existing === "replace" };
  }

  /** Digests and puts the file; returns its MD5 and the object's ETag. */
  async #send(
    key: string,
    path: string,
    keyPath: string,
    info: Deno.FileInfo,
    mtimeMs: number,
    partSize: number | undefined,
  ): Promise<{ md5: string; etag: string }> {
    // Small files are read once into memory (within a global budget) and
    // hashed and sent from there; the rest are hashed and sent as streams.
    const buffered = partSize === undefined && info.size <= SMALL_FILE_BYTES &&
      this.#smallFileBudget.tryTake(info.size);
    try {
      const bodyIsFile = this.#o.store.traits.bodyIsFile;
      let body: Uint8Array | undefined;
      let digests: FileDigests;
      if (buffered) {
        body = readExactly(path, info.size);
        digests = { md5: md5Hex(body), size: body.byteLength };
      } else if (bodyIsFile) {
        digests = await this.#o.hasher.digestFile(path, info.size, partSize);
      } else {
        // The store reads the file anyway (to encrypt it): it hashes it there.
        digests = { md5: "", size: info.size };
      }
      if (digests.size !== info.size) throw new FileChangedError(path);
      const upload: FileUpload = {
        path,
        size: info.size,
        md5: digests.md5,
        metadata: {
          stat: statMetadata(info, this.#accounts),
          ...(digests.md5 ? { md5sum: digests.md5 } : {}),
          [MTIME_METADATA]: mtimeMetadata(mtimeMs),
        },
      };
      let options: PutFileOptions = { signal: this.#o.signal };
      if (!digests.md5) options.onFileMd5 = (md5) => digests.md5 = md5;
      if (partSize) {
        upload.parts = { partSize, md5s: digests.partMd5s ?? [] };
        const file = { path: keyPath, key, size: info.size, mtimeMs, partSize };
        if (this.#resume) options = { ...options, ...await this.#resume.optionsFor(file) };
      }
      if (body) upload.body = body;
      await this.#o.store.putFile(key, upload, options);
      if (partSize) this.#resume?.completed(keyPath);
      if (!isMd5Hex(digests.md5)) throw new Error(`The store did not hash '${path}'`);
      // A body made from the file (encrypted) has an ETag of its own: unknown here.
      const etag = !bodyIsFile ? "" : partSize ? multipartEtag(digests.partMd5s!) : digests.md5;
      return { md5: digests.md5, etag };
    } finally {
      if (buffered) this.#smallFileBudget.give(info.size);
    }
  }

  /**
   * Step 3: does the bucket already hold the key? "replace": it holds
   * another version, which this upload may overwrite.
   */
  async #inBucket(
    key: string,
    path: string,
    version: StoredVersion,
  ): Promise<InBucket> {
    if (this.#superseded.has(key)) return "replace";
    const mutable = isMutableComponent(path);
    if (!mutable && this.#conflicts.has(key)) return "conflict";
    let remote = await this.#o.bucket.lookup(key);
    if (!remote) return "absent";
    const size = version.size;
    const traits = this.#o.store.traits;
    if (!traits.exactListedSizes && remote.size !== size && remote.md5sum === undefined) {
      // A listed size may be computed (encrypted bodies, for today's number
      // of recipients): the HEAD's exact size decides (after a rotation, say).
      remote = await this.#o.bucket.headOf(key);
      if (!remote) return "absent";
    }
    if (mutable) {
      if (!await this.#mutableDiffers(key, path, version, remote)) {
        log.debug("skipped: already in bucket", { key });
        return "present";
      }
      log.info("component rewritten by Cassandra: uploading it again over its key", {
        key,
        local_bytes: size,
        remote_bytes: remote.size,
      });
      // Points cut before this rewrite still restore the bytes of their time.
      await keepSuperseded(this.#o.store, key, version.mtimeMs, remote.size);
      return "replace";
    }
    if (remote.size !== size) {
      this.#conflicts.add(key);
      log.warn("skipped: object exists with a different size; local file left alone", {
        key,
        local_bytes: size,
        remote_bytes: remote.size,
      });
      return "conflict";
    }
    if (this.#o.md5OnStart) {
      let remoteMd5 = remote.md5sum;
      const local = await this.#o.hasher.digestFile(path, size);
      // The ETag is not always the file's MD5 (multipart, --encrypt-to, SSE-KMS,
      // which a listing does not show): when it differs, the md5sum decides.
      if (remoteMd5 === undefined && local.md5 !== remote.etag) {
        remoteMd5 = (await this.#o.bucket.headOf(key))?.md5sum;
      }
      remoteMd5 ??= remote.etag;
      if (local.md5 !== remoteMd5) {
        log.warn("object exists with the same size but another MD5: uploading again", { key });
        return "absent";
      }
    }
    log.debug("skipped: already in bucket", { key });
    return "present";
  }

  /**
   * Whether a mutable component (Statistics.db, Summary.db, TOC.txt) differs
   * from its object, at the fewest requests: Cassandra replaces these, often
   * with the same size, so size alone cannot tell.
   *
   * - Another size: it differs.
   * - The object's `mtime` metadata is known (a HEAD was made anyway: large
   *   directories, or our own upload) and equals the file's: it is the same.
   * - Else the local file's MD5 (these files are small) against the object's:
   *   its `md5sum` when known, else the listing's ETag, which is the MD5 of a
   *   single-part object. Equal: the same, so the -B start-up costs no
   *   request per component. Unequal, or a multipart ETag: a HEAD reads the
   *   `md5sum` metadata before deciding, because the ETag is not always an
   *   MD5 (SSE-KMS, SSE-C): at one HEAD per changed component, rather than
   *   a needless PUT of every component at every start on such a bucket.
   *   An object with neither is treated as different.
   */
  async #mutableDiffers(
    key: string,
    path: string,
    version: StoredVersion,
    remote: RemoteObject,
  ): Promise<boolean> {
    if (remote.size !== version.size) return true;
    if (remote.mtimeMs !== undefined && remote.mtimeMs === version.mtimeMs) return false;
    const local = (await this.#o.hasher.digestFile(path, version.size)).md5;
    const known = normalMd5(remote.md5sum);
    if (known !== undefined) return known !== local;
    if (normalMd5(remote.etag) === local) return false;
    const head = await this.#o.bucket.headOf(key);
    if (!head) return true;
    return (normalMd5(head.md5sum) ?? normalMd5(head.etag)) !== local;
  }
}

/**
 * What the bucket holds under a file's key: nothing, the same file, another
 * size left alone, or another version this upload may overwrite.
 */
type InBucket = "absent" | "present" | "conflict" | "replace";

/** A lowercase MD5 hex from metadata or an ETag; undefined when it is not one (multipart ETag). */
function normalMd5(text: string | undefined): string | undefined {
  const md5 = text?.trim().toLowerCase();
  return md5 !== undefined && isMd5Hex(md5) ? md5 : undefined;
}
