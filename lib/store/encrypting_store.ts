/**
 * Client-side encryption: `EncryptingStore` wraps any store (S3 or local)
 * and encrypts file bodies with age (https://age-encryption.org/v1, the
 * `age-encryption` library) before they leave the host, so that neither the
 * bucket's owner nor anyone who steals the host's credentials can read them.
 * The format is standard: `age -d -i key.txt` decrypts a downloaded object.
 *
 * What is encrypted, and what is not (docs/bucket-format.md):
 * - `putFile` bodies (SSTable components, commit logs: every file the
 *   watcher uploads) are encrypted to every recipient. Their `stat` and
 *   `md5sum` metadata stay those of the plaintext; `tablesnap-encryption:
 *   age-v1` marks them and `tablesnap-plaintext-size` records the file's size.
 * - `putBytes` bodies (the `-listdir.json` indexes, the only ones written
 *   that way) stay plaintext, so `list`, `chop` and the Python tools still
 *   read the file names; with recipients they are marked
 *   `tablesnap-file-encryption: age-v1`, so a restore knows before it
 *   downloads anything that it will need an identity.
 *
 * Reading: `get` decrypts a marked object as a stream when an identity is
 * configured, and refuses it in one line (naming the key) otherwise, or when
 * the identity does not match or the bytes were tampered with. `head` and
 * `get` present an encrypted object as the file it holds: its plaintext size,
 * and as ETag its `md5sum`. Ranged reads fetch the whole sealed chunks that
 * hold the range (opened_object.ts).
 *
 * The header is `age-encryption`'s (age_header.ts); the payload is sealed
 * and opened on the platform's cipher (age_payload.ts). Uploads send no
 * copy from disk: the ciphertext is sealed as the inner store sends it,
 * range by range, and beforehand once more only when a digest of it must
 * precede the body (the server checks one, or a multipart upload's parts:
 * sealed_file.ts, `Store.bodyCheck`).
 *
 * Listings cannot carry metadata, so `list` (for a store with recipients)
 * gives each object's plaintext size as computed from its ciphertext size
 * for the header this store writes (one X25519 stanza per recipient):
 * exact for every object written with the same number of recipients. The
 * store's traits say so (listed sizes not exact, listed ETags not the
 * file's MD5): the watcher confirms any other size with a HEAD before acting
 * on it, which `head` answers exactly.
 */
import { digestFile, isMd5Hex } from "../common/digest.ts";
import { errorMessage } from "../common/errors.ts";
import { FileKeyUnwrapper, newHeader } from "./age_header.ts";
import type { AgeIdentities } from "./age_keys.ts";
import { openedSize, PAYLOAD_NONCE_BYTES } from "./age_payload.ts";
import {
  AGE_V1,
  DecryptionError,
  ENCRYPTION_METADATA,
  FILE_ENCRYPTION_METADATA,
  isEncrypted,
  PLAINTEXT_SIZE_METADATA,
} from "./encryption_metadata.ts";
import { ForwardingStore } from "./forwarding_store.ts";
import {
  HeaderCache,
  HeaderError,
  openedBody,
  type OpenedHeader,
  openHeader,
  openRange,
  sealedRange,
  SourceReader,
} from "./opened_object.ts";
import { sealedUpload, type SealingSecret, secretOf, secretText } from "./sealed_file.ts";
import {
  type ByteRange,
  DigestMismatchError,
  type FileUpload,
  type GetOptions,
  type ObjectHead,
  type ObjectInfo,
  type PutFileOptions,
  type Store,
  type StoreTraits,
} from "./store.ts";

/** The first bytes of an object read for its header before ranged reads (ours: ~200 bytes). */
const HEADER_PROBE_BYTES = 64 * 1024;

type Got = { head: ObjectHead; body: ReadableStream<Uint8Array> } | null;

export interface EncryptionOptions {
  /** X25519 recipients (`age1...`, checked): file bodies are encrypted to all of them. */
  recipients?: string[] | undefined;
  /** Identities that decrypt what `get` reads. */
  identities?: AgeIdentities | undefined;
  /** File bodies stored plaintext all the same (the watcher's: TOC.txt, names only). */
  plaintext?: ((key: string) => boolean) | undefined;
}

export class EncryptingStore extends ForwardingStore {
  readonly #recipients: string[];
  readonly #identities: string[];
  readonly #unwrapper: FileKeyUnwrapper;
  readonly #identityFile: string | undefined;
  readonly #plaintext: (key: string) => boolean;
  readonly #traits: StoreTraits;
  readonly #headers = new HeaderCache();
  /** Header plus payload nonce, in bytes, for this store's recipients. */
  #prefixBytes: Promise<number> | undefined;

  constructor(inner: Store, options: EncryptionOptions) {
    super(inner);
    this.#recipients = options.recipients ?? [];
    this.#identities = options.identities?.identities ?? [];
    this.#unwrapper = new FileKeyUnwrapper(this.#identities);
    this.#identityFile = options.identities?.file;
    this.#plaintext = options.plaintext ?? (() => false);
    const writes = this.#recipients.length > 0;
    this.#traits = {
      ...inner.traits,
      // Listings show ciphertext: sizes computed for today's recipients, ETags of ciphertext.
      exactListedSizes: inner.traits.exactListedSizes && !writes,
      listedEtagIsFileMd5: inner.traits.listedEtagIsFileMd5 && !writes,
      readsEncrypted: this.#identities.length > 0,
      // TOC.txt stays plaintext, but its parts never matter: it is small.
      bodyIsFile: inner.traits.bodyIsFile && !writes,
    };
  }

  override get traits(): StoreTraits {
    return this.#traits;
  }

  override async *list(
    prefix: string,
    options?: { delimiter?: string },
  ): AsyncIterable<ObjectInfo> {
    if (this.#recipients.length === 0) {
      yield* this.inner.list(prefix, options);
      return;
    }
    const prefixBytes = await this.#prefixSize();
    for await (const info of this.inner.list(prefix, options)) {
      const size = this.#plaintext(info.key) ? null : openedSize(info.size - prefixBytes);
      yield size === null ? info : { ...info, size };
    }
  }

  override async head(key: string): Promise<ObjectHead | null> {
    const head = await this.inner.head(key);
    if (head && isEncrypted(head.metadata)) this.#headers.markEncrypted(key);
    return head && plaintextView(head);
  }

  override putBytes(
    key: string,
    body: Uint8Array,
    options: { metadata?: Record<string, string>; contentType?: string },
  ): Promise<void> {
    if (this.#recipients.length === 0) return this.inner.putBytes(key, body, options);
    return this.inner.putBytes(key, body, {
      ...options,
      metadata: { ...options.metadata, [FILE_ENCRYPTION_METADATA]: AGE_V1 },
    });
  }

  override async putFile(
    key: string,
    file: FileUpload,
    options: PutFileOptions = {},
  ): Promise<void> {
    if (this.#recipients.length === 0 || this.#plaintext(key)) {
      return await this.inner.putFile(key, await plaintextUpload(file, options), options);
    }
    const { secret, forwarded } = await this.#sealingFor(key, options);
    // A single part is checked by what the server verifies; parts by their MD5s (resumes).
    const check = file.parts ? "md5" : await this.inner.bodyCheck?.(key) ?? "md5";
    const { upload, fileMd5 } = await sealedUpload(file, secret, check);
    options.onFileMd5?.(fileMd5);
    upload.metadata = {
      ...file.metadata,
      md5sum: fileMd5,
      [ENCRYPTION_METADATA]: AGE_V1,
      [PLAINTEXT_SIZE_METADATA]: String(file.size),
    };
    if (file.contentType) upload.contentType = file.contentType;
    await this.inner.putFile(key, upload, forwarded);
  }

  /**
   * The secret to seal a file with: a resumed upload's own (so that the
   * parts already stored are the same bytes), else a new one, which a
   * multipart upload hands back with its id for a later resume.
   */
  async #sealingFor(
    key: string,
    options: PutFileOptions,
  ): Promise<{ secret: SealingSecret; forwarded: PutFileOptions }> {
    const { resume, onUploadStarted, ...rest } = options;
    const kept = resume?.remake === undefined ? null : secretOf(resume.remake, this.#recipients);
    const forwarded: PutFileOptions = { ...rest };
    let secret: SealingSecret;
    if (resume && kept) {
      secret = kept;
      forwarded.resume = resume;
    } else {
      // Made for other recipients (or by an older version): start afresh.
      if (resume) await this.inner.abortUpload?.(key, resume.uploadId).catch(() => {});
      const { header, fileKey } = await newHeader(this.#recipients);
      secret = { header, fileKey, nonce: crypto.getRandomValues(new Uint8Array(16)) };
    }
    // Also when the upload to resume is gone and the store starts another.
    const remake = secretText(secret, this.#recipients);
    if (onUploadStarted) forwarded.onUploadStarted = (id) => onUploadStarted(id, remake);
    return { secret, forwarded };
  }

  override async get(key: string, options: GetOptions = {}): Promise<Got> {
    if (options.range) return await this.#getRange(key, options.range, options.signal);
    const object = await this.inner.get(key, options);
    if (!object || !isEncrypted(object.head.metadata)) return object;
    await this.#refuseWithoutIdentity(key, object.body);
    const source = new SourceReader(object.body);
    let opened;
    try {
      opened = await openHeader(this.#unwrapper, object.head, source);
    } catch (err) {
      throw source.failed ? source.error : this.#decryptionError(key, err, true);
    }
    const { header, rest } = opened;
    return {
      head: { ...plaintextView(object.head), size: header.size },
      body: openedBody(
        source,
        rest,
        header.chunkKey,
        { first: 0, skip: 0, keep: header.size },
        (err) => source.failed ? source.error : this.#decryptionError(key, err, false),
      ),
    };
  }

  /** A plaintext range: the whole sealed chunks that hold it, opened alone. */
  async #getRange(key: string, range: ByteRange, signal: AbortSignal | undefined): Promise<Got> {
    if (!this.#headers.knowsEncrypted(key)) {
      // Most objects are not encrypted: the range asked for is the one to fetch.
      const object = await this.inner.get(key, { range, signal });
      if (!object || !isEncrypted(object.head.metadata)) return object;
      await object.body.cancel().catch(() => {});
    }
    const header = await this.#headers.get(key, () => this.#readHeader(key, signal));
    if (header === null) return null;
    const where = sealedRange(header, range);
    const object = await this.inner.get(key, { range: where.range, signal });
    if (!object) return null;
    if (object.head.etag !== header.etag) {
      // Replaced since its header was read: read it again on the next try.
      this.#headers.forget(key);
      await object.body.cancel().catch(() => {});
      throw new Error(`Object '${key}' changed while it was being read`);
    }
    const source = new SourceReader(object.body);
    return {
      head: { ...plaintextView(object.head), size: header.size },
      body: openRange(
        header,
        source,
        where,
        (err) => source.failed ? source.error : this.#decryptionError(key, err, false),
      ),
    };
  }

  /** The header of encrypted object `key`, for ranged reads. */
  async #readHeader(key: string, signal: AbortSignal | undefined): Promise<OpenedHeader | null> {
    const range = { offset: 0, length: HEADER_PROBE_BYTES };
    const object = await this.inner.get(key, { range, signal });
    if (!object) return null;
    if (!isEncrypted(object.head.metadata)) {
      await object.body.cancel().catch(() => {});
      throw new Error(`Object '${key}' changed while it was being read`);
    }
    await this.#refuseWithoutIdentity(key, object.body);
    const source = new SourceReader(object.body);
    try {
      const { header } = await openHeader(this.#unwrapper, object.head, source);
      await source.cancel().catch(() => {});
      return header;
    } catch (err) {
      throw source.failed ? source.error : this.#decryptionError(key, err, true);
    }
  }

  async #refuseWithoutIdentity(key: string, body: ReadableStream<Uint8Array>): Promise<void> {
    if (this.#identities.length > 0) return;
    await body.cancel().catch(() => {});
    throw new DecryptionError(
      `Object '${key}' is encrypted with age: give --identity FILE to read it`,
    );
  }

  #decryptionError(key: string, err: unknown, inHeader: boolean): DecryptionError {
    const message = errorMessage(err);
    const identity = this.#identityFile ? ` with the identity in '${this.#identityFile}'` : "";
    const reason = /no identity matched/.test(message)
      ? `the identity does not match any of its recipients`
      : err instanceof HeaderError
      ? message
      : inHeader
      ? `its header is damaged or was tampered with (${message})`
      : `its content is damaged or was tampered with (${message})`;
    return new DecryptionError(`Cannot decrypt '${key}'${identity}: ${reason}`);
  }

  /** age's header and payload nonce for this store's recipients, measured once. */
  #prefixSize(): Promise<number> {
    this.#prefixBytes ??= newHeader(this.#recipients).then(({ header }) =>
      header.byteLength + PAYLOAD_NONCE_BYTES
    );
    return this.#prefixBytes;
  }
}

/**
 * An encrypted object as the file it holds: the plaintext's size, and as
 * ETag the plaintext's MD5 recorded at upload (`md5sum`; the stored ETag is
 * the ciphertext's, which says nothing about the file).
 */
function plaintextView(head: ObjectHead): ObjectHead {
  if (!isEncrypted(head.metadata)) return head;
  const size = Number(head.metadata[PLAINTEXT_SIZE_METADATA]);
  const md5 = head.metadata["md5sum"]?.trim().toLowerCase() ?? "";
  return {
    ...head,
    ...(Number.isSafeInteger(size) && size >= 0 ? { size } : {}),
    etag: isMd5Hex(md5) ? md5 : "",
  };
}

/**
 * A file stored as it is (TOC.txt): hashed here when the caller left that
 * to this store (`onFileMd5`), as the inner store takes only hashed files.
 */
async function plaintextUpload(file: FileUpload, options: PutFileOptions): Promise<FileUpload> {
  if (file.md5 || file.body) return file;
  const digests = await digestFile(file.path, file.size, file.parts?.partSize);
  if (digests.size !== file.size) {
    throw new DigestMismatchError(`Content of '${file.path}' changed during upload`);
  }
  options.onFileMd5?.(digests.md5);
  const upload = { ...file, md5: digests.md5, metadata: { ...file.metadata, md5sum: digests.md5 } };
  if (file.parts) upload.parts = { ...file.parts, md5s: digests.partMd5s ?? [] };
  return upload;
}
