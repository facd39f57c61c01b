/**
 * The one narrow interface every job uses to reach a bucket. Two stores
 * implement it: `S3Store` (lib/store/s3/s3_store.ts) and `LocalStore`
 * (lib/store/local_store.ts, the embedded default: `file:///some/dir`). Both keep
 * the same keys, bodies and metadata, and pass the same contract tests.
 */

/** What a listing says about one object. */
export interface ObjectInfo {
  key: string;
  size: number;
  /**
   * The ETag without quotes: the MD5 hex of a single-part upload (of the
   * file as `head` and `get` present it; in a listing, see `StoreTraits`).
   */
  etag: string;
  lastModified: Date;
  /** S3's storage class (STANDARD, STANDARD_IA...); absent for stores without classes. */
  storageClass?: string;
}

/** What a HEAD says: the listing facts plus user metadata. */
export interface ObjectHead extends ObjectInfo {
  /** User metadata, lowercase names without `x-amz-meta-` (`stat`, `md5sum`). */
  metadata: Record<string, string>;
  contentType?: string;
  /**
   * S3's server-side encryption (`AES256`, `aws:kms`...), when the answer
   * names one. With `aws:kms` the ETag is not the MD5 of the bytes.
   */
  serverSideEncryption?: string;
}

/** A local file to store, with its digests computed beforehand. */
export interface FileUpload {
  path: string;
  size: number;
  /**
   * Lowercase hex MD5 of the whole file. With `parts`, stores check each
   * part's MD5 instead (a body source may leave this empty then). A store
   * whose traits say `bodyIsFile: false` also takes it empty, as a request
   * to compute it in its own pass (see `PutFileOptions.onFileMd5`).
   */
  md5: string;
  /**
   * The CRC-32 of the whole body (base64 of its 4 big-endian bytes): a
   * single-part upload is checked by it instead of `md5` (which may then be
   * empty). Only for stores whose `bodyCheck` answers "crc32".
   */
  crc32?: string;
  /**
   * A single-part body sent without a digest before it (`md5` empty): as
   * signed frames, or with no check at all. Only for stores whose
   * `bodyCheck` answered the same.
   */
  streamCheck?: "signed-chunks" | "none";
  /** Set for a multipart upload: the part size and each part's MD5 (hex). */
  parts?: { partSize: number; md5s: string[] };
  metadata: Record<string, string>;
  contentType?: string;
  /**
   * The file's bytes when the caller already read them (small files): the
   * store sends these instead of reading `path` again.
   */
  body?: Uint8Array;
  /**
   * A body made from the file rather than its bytes as they are (encrypted):
   * the store reads every range it sends from here instead of `path`, as
   * often as it needs (parts, retries). `size` and the MD5s are its own.
   */
  source?: BodySource;
}

/** A body any range of which can be read on demand, again and again. */
export interface BodySource {
  /** The bytes of `range`, in order; throws when they cannot be made (the file shrank). */
  read(range: ByteRange): AsyncIterable<Uint8Array>;
}

/** Called with the number of bytes just sent, for progress and rate limits. */
export type ByteCounter = (bytes: number) => Promise<void> | void;

/** A part of an object: `length` bytes from `offset`. */
export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * How `putFile` sends a file. The multipart fields matter only to stores
 * that upload large files in parts (S3); others ignore them.
 */
export interface PutFileOptions {
  signal?: AbortSignal | undefined;
  onBytes?: ByteCounter | undefined;
  /**
   * Continue this multipart upload instead of starting one: the parts the
   * store lists for it (ListParts) whose ETag and size match `parts` are
   * not sent again. An upload the store no longer has (expired, aborted) is
   * replaced by a new one, reported through `onUploadStarted`.
   */
  resume?: { uploadId: string; remake?: string | undefined } | undefined;
  /**
   * A multipart upload was created: what a later `resume` needs. `remake`
   * is what a wrapper needs to make the same body again (an encrypting
   * store's header, nonce and file key: a secret, to keep like the state
   * directory); it goes back in `resume`.
   */
  onUploadStarted?: ((uploadId: string, remake?: string) => void) | undefined;
  /** Part `partNumber` (from 1) is stored with this ETag (quoted as S3 gives it). */
  onPartDone?: ((partNumber: number, etag: string) => void) | undefined;
  /**
   * Set by a caller that left `FileUpload.md5` empty, for a store whose
   * body is not the file (`bodyIsFile: false`): the store computes the
   * file's MD5 in the pass it makes over the file anyway, stores it as the
   * `md5sum` metadata, and reports it here before it sends anything, so the
   * file is hashed once instead of twice.
   */
  onFileMd5?: ((md5: string) => void) | undefined;
  /**
   * When `signal` aborts, leave the multipart upload in place (to resume
   * later) rather than abort it. Other failures abort it all the same.
   */
  keepOnAbort?: boolean | undefined;
}

/** A multipart upload the store holds, not yet completed or aborted. */
export interface MultipartUploadInfo {
  key: string;
  uploadId: string;
  initiated: Date;
}

/** One stored part of a multipart upload, as ListParts reports it. */
export interface UploadedPart {
  partNumber: number;
  /** Quoted, as S3 gives it: the part's MD5 hex for unencrypted bodies. */
  etag: string;
  size: number;
}

/** Thrown when a multipart upload is not (or no longer) known to the store. */
export class NoSuchUploadError extends Error {
  override name = "NoSuchUpload";
}

export interface GetOptions {
  signal?: AbortSignal | undefined;
  range?: ByteRange | undefined;
}

/**
 * What a store's answers can be relied on for. Jobs ask these, never what
 * kind of store (or wrapper) they hold; a wrapper that changes an answer
 * declares so (an encrypting store lists ciphertext sizes and ETags).
 */
export interface StoreTraits {
  /**
   * `list` gives each object's exact file size. When false, a listed size
   * may be computed and off (encrypted bodies, recipients changed): `head`
   * has the exact one.
   */
  readonly exactListedSizes: boolean;
  /**
   * A listed single-part ETag is the MD5 of the file. When false it is that
   * of what is stored for it (ciphertext): `head`'s `md5sum` metadata, or
   * its ETag, decides.
   */
  readonly listedEtagIsFileMd5: boolean;
  /** `get` with a range reads those bytes of the file (large restores fetch ranges in parallel). */
  readonly rangedReads: boolean;
  /** `get` reads file bodies stored encrypted (an identity was given). */
  readonly readsEncrypted: boolean;
  /**
   * `putFile` stores the file's bytes as they are. When false it stores a
   * body made from them (encrypted), so the file's part MD5s are not the
   * parts': `FileUpload.parts.md5s` may be left empty, only the part size counts.
   */
  readonly bodyIsFile: boolean;
}

/** The traits of a store that holds files as they are (S3, the local store). */
export const PLAIN_TRAITS: StoreTraits = {
  exactListedSizes: true,
  listedEtagIsFileMd5: true,
  rangedReads: true,
  readsEncrypted: false,
  bodyIsFile: true,
};

export interface Store {
  /** `s3://bucket` or `file:///dir`: for logs and errors. */
  readonly url: string;

  /** What its answers can be relied on for. */
  readonly traits: StoreTraits;

  /**
   * Proves the bucket exists and is reachable with these credentials.
   * Throws `FatalError` with a one-line reason otherwise.
   */
  check(): Promise<void>;

  /**
   * Every object whose key starts with `prefix`, in key order, paginated.
   * With `delimiter`, only the keys with no delimiter after the prefix (one
   * "directory" of keys, not the ones below it).
   */
  list(prefix: string, options?: { delimiter?: string }): AsyncIterable<ObjectInfo>;

  /** The object's facts, or `null` when there is no such key. */
  head(key: string): Promise<ObjectHead | null>;

  /** Stores a small body in one request. */
  putBytes(
    key: string,
    body: Uint8Array,
    options: { metadata?: Record<string, string>; contentType?: string },
  ): Promise<void>;

  /**
   * Streams a file into `key`, never holding more than a read buffer of it in
   * memory. The store verifies the bytes against the given MD5s; if the file
   * changed meanwhile, the put fails and nothing is left under `key`.
   * Aborting `signal` aborts the upload (multipart uploads are aborted too).
   */
  putFile(key: string, file: FileUpload, options?: PutFileOptions): Promise<void>;

  /**
   * The object's body as a stream, and its facts (`head.size` is the whole
   * object's, also for a range). `null` when missing. With `range`, only
   * those bytes (a ranged GET: large restores fetch several at once).
   */
  get(
    key: string,
    options?: GetOptions,
  ): Promise<{ head: ObjectHead; body: ReadableStream<Uint8Array> } | null>;

  /**
   * Copies an object inside the bucket as it is, body and metadata (a
   * server-side copy: an encrypted body stays encrypted, nothing passes
   * through the client), up to 5 GiB. Throws when `from` is missing.
   * `size`, when the caller knows it from a listing, spares a HEAD (S3
   * picks the storage class by size). Stores without it omit it (the
   * watcher then cannot keep the bytes a rewritten component replaces).
   */
  copy?(from: string, to: string, options?: CopyOptions): Promise<void>;

  /**
   * Deletes keys (batched internally); missing keys are not an error. A key
   * the store refuses throws (access denied: a one-line `FatalError` naming
   * the action and a key), unless Object Lock (or a legal hold) protects it
   * and `onLocked` is given: then it is reported there and the delete goes
   * on, so that retention can work around what the lock keeps.
   */
  deleteMany(keys: string[], options?: DeleteOptions): Promise<void>;

  /**
   * Whether the bucket keeps versions (S3 only; a store without it never
   * does). "suspended" buckets may still hold old versions.
   */
  versioning?(): Promise<Versioning>;

  /**
   * Every version and delete marker under `prefix`, in key order and newest
   * first within a key, paginated. Only where `versioning` exists.
   */
  listVersions?(prefix: string): AsyncIterable<ObjectVersion>;

  /**
   * Deletes these versions for good (batched internally); refusals as for
   * `deleteMany`. Only where `versioning` exists.
   */
  deleteVersions?(versions: VersionRef[], options?: DeleteOptions): Promise<void>;

  /**
   * Every multipart upload in progress under `prefix`, paginated. Stores
   * without multipart uploads omit it (and the two below).
   */
  listUploads?(prefix: string): AsyncIterable<MultipartUploadInfo>;

  /** Aborts a multipart upload; one the store no longer has is not an error. */
  abortUpload?(key: string, uploadId: string): Promise<void>;

  /**
   * The parts stored so far for an upload, in part order, paginated.
   * Throws `NoSuchUploadError` when the store does not have the upload.
   */
  listParts?(key: string, uploadId: string): Promise<UploadedPart[]>;

  /**
   * How a single-part upload's body made on the fly (encrypted) is best
   * checked: "signed-chunks" when the server verifies SigV4's signed
   * streaming payload (Ceph RGW; AWS documents it); else "crc32" when it verifies
   * `x-amz-checksum-crc32` (AWS); "md5" when it verifies only Content-MD5;
   * "none" when it verifies none of them (s3rver, moto). Decided once per
   * store by a probe on `key` that leaves no object behind. Absent: "md5".
   */
  bodyCheck?(key: string): Promise<BodyCheck>;

  /** Releases connections. */
  close(): void;
}

/**
 * How the server checks a body on its way in: a digest sent before it
 * (Content-MD5, CRC-32), signatures streamed with it, or not at all.
 */
export type BodyCheck = "md5" | "crc32" | "signed-chunks" | "none";

/** What `copy` may be told of the object it copies. */
export interface CopyOptions {
  /** The object's size as listed. */
  size?: number | undefined;
}

/** Versioning of a bucket, as S3 reports it ("off": never enabled). */
export type Versioning = "enabled" | "suspended" | "off";

/** One version of one key. */
export interface VersionRef {
  key: string;
  versionId: string;
}

/** What a version listing says about one version or delete marker. */
export interface ObjectVersion extends ObjectInfo, VersionRef {
  /** The key's current version (a delete marker when the key reads as deleted). */
  latest: boolean;
  /** A delete marker: no data (size 0), the key reads as missing while it is the latest. */
  deleteMarker: boolean;
}

/** A key (or version) a delete left in place, with the server's reason. */
export interface DeleteRefusal {
  key: string;
  versionId?: string | undefined;
  /** S3's error code (`AccessDenied` for a lock). */
  code: string;
  message: string;
}

/**
 * How a delete reports what Object Lock kept. An option, not a result, so
 * that stores and wrappers written before Object Lock still fit `Store`;
 * without it a locked key throws like any other refusal.
 */
export interface DeleteOptions {
  onLocked?: ((refusal: DeleteRefusal) => void) | undefined;
}

/** Thrown by stores when an object does not match the digest it was sent with. */
export class DigestMismatchError extends Error {
  override name = "DigestMismatchError";
}
