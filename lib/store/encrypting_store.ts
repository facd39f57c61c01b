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
 * the identity does not match or the bytes were tampered with. `head` gives
 * the plaintext size.
 *
 * The header is `age-encryption`'s (age_header.ts); the payload is sealed
 * and opened on the platform's cipher (age_payload.ts). Uploads send no
 * copy from disk: the ciphertext is sealed once for its MD5s, then again,
 * range by range, as the inner store sends it (sealed_file.ts).
 *
 * Listings cannot carry metadata, so `list` (for a store with recipients)
 * gives each object's plaintext size as computed from its ciphertext size
 * for the header this store writes (one X25519 stanza per recipient):
 * exact for every object written with the same number of recipients. The
 * watcher confirms any other size with a HEAD before acting on it
 * (lib/watch/upload_file.ts), which `head` answers exactly.
 */
import { md5Hex } from "../common/digest.ts";
import { errorMessage, FatalError } from "../common/errors.ts";
import { fileKeyOf, newHeader, readPrefix } from "./age_header.ts";
import type { AgeIdentities } from "./age_keys.ts";
import {
  openChunks,
  openedSize,
  PAYLOAD_NONCE_BYTES,
  payloadKey,
  sealAll,
  sealedSize,
} from "./age_payload.ts";
import { partMd5sOf, SealedFile, type SealingSecret } from "./sealed_file.ts";
import type {
  DeleteOptions,
  FileUpload,
  GetOptions,
  ObjectHead,
  ObjectInfo,
  ObjectVersion,
  PutFileOptions,
  Store,
  Versioning,
  VersionRef,
} from "./store.ts";

/** Metadata marking an encrypted object, and its value for the format written. */
export const ENCRYPTION_METADATA = "tablesnap-encryption";
export const AGE_V1 = "age-v1";
/** Metadata giving an encrypted object's plaintext size in bytes. */
export const PLAINTEXT_SIZE_METADATA = "tablesnap-plaintext-size";
/** Metadata of an index written by an encrypting watcher: the files it names are encrypted. */
export const FILE_ENCRYPTION_METADATA = "tablesnap-file-encryption";

/** S3 refuses more parts than this. */
const MAX_PARTS = 10_000;

/** Whether an object's metadata marks it encrypted. */
export function isEncrypted(metadata: Record<string, string>): boolean {
  return metadata[ENCRYPTION_METADATA] !== undefined;
}

/** Whether an index's metadata says the files it names were uploaded encrypted. */
export function namesEncryptedFiles(metadata: Record<string, string>): boolean {
  return metadata[FILE_ENCRYPTION_METADATA] !== undefined;
}

/** A decryption refused: no identity, not ours, or damaged. Retrying will not help. */
export class DecryptionError extends FatalError {
  override name = "DecryptionError";
}

/**
 * Whether `store` encrypts what it writes (an `EncryptingStore` with
 * recipients): its listings then give computed sizes, and its ETags are
 * those of ciphertext.
 */
export function encrypts(store: Store): boolean {
  return store instanceof EncryptingStore && store.hasRecipients;
}

/** Whether `store` can decrypt encrypted objects (an `EncryptingStore` with an identity). */
export function decrypts(store: Store): boolean {
  return store instanceof EncryptingStore && store.hasIdentity;
}

export interface EncryptionOptions {
  /** X25519 recipients (`age1...`, checked): file bodies are encrypted to all of them. */
  recipients?: string[] | undefined;
  /** Identities that decrypt what `get` reads. */
  identities?: AgeIdentities | undefined;
  /** File bodies stored plaintext all the same (the watcher's: TOC.txt, names only). */
  plaintext?: ((key: string) => boolean) | undefined;
}

/** The optional methods of `Store` (present or not as in the wrapped store), delegated. */
const OPTIONAL_METHODS = [
  "versioning",
  "listVersions",
  "deleteVersions",
  "listUploads",
  "abortUpload",
  "listParts",
] as const;

export class EncryptingStore implements Store {
  readonly #inner: Store;
  readonly #recipients: string[];
  readonly #identities: string[];
  readonly #identityFile: string | undefined;
  readonly #plaintext: (key: string) => boolean;
  /** Header plus payload nonce, in bytes, for this store's recipients. */
  #prefixBytes: Promise<number> | undefined;

  versioning?: () => Promise<Versioning>;
  listVersions?: (prefix: string) => AsyncIterable<ObjectVersion>;
  deleteVersions?: (versions: VersionRef[], options?: DeleteOptions) => Promise<void>;

  constructor(inner: Store, options: EncryptionOptions) {
    this.#inner = inner;
    this.#recipients = options.recipients ?? [];
    this.#identities = options.identities?.identities ?? [];
    this.#identityFile = options.identities?.file;
    this.#plaintext = options.plaintext ?? (() => false);
    // Present exactly when the inner store has them: callers test for them.
    const self = this as unknown as Record<string, unknown>;
    const source = inner as unknown as Record<string, unknown>;
    for (const name of OPTIONAL_METHODS) {
      const method = source[name];
      if (typeof method === "function") self[name] = method.bind(inner);
    }
  }

  get url(): string {
    return this.#inner.url;
  }

  /** Whether file bodies are encrypted (recipients were given). */
  get hasRecipients(): boolean {
    return this.#recipients.length > 0;
  }

  /** Whether `get` can decrypt (an identity was given). */
  get hasIdentity(): boolean {
    return this.#identities.length > 0;
  }

  check(): Promise<void> {
    return this.#inner.check();
  }

  async *list(prefix: string, options?: { delimiter?: string }): AsyncIterable<ObjectInfo> {
    if (!this.hasRecipients) {
      yield* this.#inner.list(prefix, options);
      return;
    }
    const prefixBytes = await this.#prefixSize();
    for await (const info of this.#inner.list(prefix, options)) {
      const size = openedSize(info.size - prefixBytes);
      yield size === null ? info : { ...info, size };
    }
  }

  async head(key: string): Promise<ObjectHead | null> {
    const head = await this.#inner.head(key);
    if (!head || !isEncrypted(head.metadata)) return head;
    const size = Number(head.metadata[PLAINTEXT_SIZE_METADATA]);
    return Number.isSafeInteger(size) && size >= 0 ? { ...head, size } : head;
  }

  putBytes(
    key: string,
    body: Uint8Array,
    options: { metadata?: Record<string, string>; contentType?: string },
  ): Promise<void> {
    if (!this.hasRecipients) return this.#inner.putBytes(key, body, options);
    return this.#inner.putBytes(key, body, {
      ...options,
      metadata: { ...options.metadata, [FILE_ENCRYPTION_METADATA]: AGE_V1 },
    });
  }

  async putFile(key: string, file: FileUpload, options: PutFileOptions = {}): Promise<void> {
    if (!this.hasRecipients || this.#plaintext(key)) {
      return await this.#inner.putFile(key, file, options);
    }
    // A resumed upload would need this upload's file key: it starts over.
    const { resume: _resume, onUploadStarted: _started, onPartDone: _done, ...forwarded } = options;
    const { header, fileKey } = await newHeader(this.#recipients);
    const secret = { header, fileKey, nonce: crypto.getRandomValues(new Uint8Array(16)) };
    const metadata = {
      ...file.metadata,
      [ENCRYPTION_METADATA]: AGE_V1,
      [PLAINTEXT_SIZE_METADATA]: String(file.size),
    };
    const upload = file.body
      ? sealInMemory(file, file.body, secret)
      : await sealFromFile(file, secret);
    upload.metadata = metadata;
    if (file.contentType) upload.contentType = file.contentType;
    await this.#inner.putFile(key, upload, forwarded);
  }

  async get(
    key: string,
    options: GetOptions = {},
  ): Promise<{ head: ObjectHead; body: ReadableStream<Uint8Array> } | null> {
    const object = await this.#inner.get(key, options);
    if (!object || !isEncrypted(object.head.metadata)) return object;
    if (options.range) {
      await object.body.cancel().catch(() => {});
      throw new DecryptionError(`Object '${key}' is encrypted: it cannot be read by byte range`);
    }
    if (!this.hasIdentity) {
      await object.body.cancel().catch(() => {});
      throw new DecryptionError(
        `Object '${key}' is encrypted with age: give --identity FILE to read it`,
      );
    }
    const source = trackErrors(object.body);
    const reader = source.stream.getReader();
    let chunkKey: Uint8Array;
    let prefixBytes: number;
    let rest: Uint8Array;
    try {
      const prefix = await readPrefix(reader);
      const fileKey = await fileKeyOf(this.#identities, prefix.header);
      chunkKey = payloadKey(fileKey, prefix.nonce);
      prefixBytes = prefix.header.byteLength + PAYLOAD_NONCE_BYTES;
      rest = prefix.rest;
    } catch (err) {
      await reader.cancel().catch(() => {});
      if (source.failed) throw source.error;
      throw this.#decryptionError(key, err, true);
    }
    const size = openedSize(object.head.size - prefixBytes);
    if (size === null) {
      await reader.cancel().catch(() => {});
      throw new DecryptionError(`Cannot decrypt '${key}': its size is not that of an age file`);
    }
    const sealed = new ReadableStream<Uint8Array>({
      start: (controller) => {
        if (rest.byteLength > 0) controller.enqueue(rest);
      },
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      },
      cancel: (reason) => reader.cancel(reason),
    });
    return {
      head: { ...object.head, size },
      body: mapErrors(
        sealed.pipeThrough(openChunks(chunkKey)),
        (err) => source.failed ? source.error : this.#decryptionError(key, err, false),
      ),
    };
  }

  deleteMany(keys: string[], options?: DeleteOptions): Promise<void> {
    return this.#inner.deleteMany(keys, options);
  }

  close(): void {
    this.#inner.close();
  }

  #decryptionError(key: string, err: unknown, inHeader: boolean): DecryptionError {
    const message = errorMessage(err);
    const identity = this.#identityFile ? ` with the identity in '${this.#identityFile}'` : "";
    const reason = /no identity matched/.test(message)
      ? `the identity does not match any of its recipients`
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

/** The caller's part size, raised if the ciphertext would need more than S3's 10,000 parts. */
function partSizeFor(file: FileUpload, ciphertextBytes: number): number | undefined {
  if (!file.parts) return undefined;
  return Math.max(file.parts.partSize, Math.ceil(ciphertextBytes / MAX_PARTS));
}

/** The upload of a small file the caller holds in memory, encrypted in memory. */
function sealInMemory(file: FileUpload, plaintext: Uint8Array, secret: SealingSecret): FileUpload {
  const { header, nonce, fileKey } = secret;
  const body = new Uint8Array(header.byteLength + PAYLOAD_NONCE_BYTES + sealedSize(file.size));
  body.set(header);
  body.set(nonce, header.byteLength);
  body.set(sealAll(payloadKey(fileKey, nonce), plaintext), header.byteLength + nonce.byteLength);
  const size = body.byteLength;
  const upload: FileUpload = { path: file.path, size, md5: md5Hex(body), metadata: {}, body };
  const partSize = partSizeFor(file, size);
  if (partSize !== undefined) upload.parts = { partSize, md5s: partMd5sOf(body, partSize) };
  return upload;
}

/** The upload of a file, sealed once for its MD5s and again as it is sent. */
async function sealFromFile(file: FileUpload, secret: SealingSecret): Promise<FileUpload> {
  const source = new SealedFile(file, secret);
  const partSize = partSizeFor(file, source.size);
  const digests = await source.digests(file.md5, partSize);
  const upload: FileUpload = {
    path: file.path,
    size: source.size,
    md5: digests.md5,
    metadata: {},
    source,
  };
  if (partSize !== undefined) upload.parts = { partSize, md5s: digests.partMd5s };
  return upload;
}

/**
 * The stream as it is, remembering whether it failed by itself (a network
 * error), so that such a failure is not reported as a decryption failure.
 */
function trackErrors(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const tracked = { failed: false, error: undefined as unknown, stream: undefined as unknown };
  tracked.stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result;
      try {
        result = await reader.read();
      } catch (err) {
        tracked.failed = true;
        tracked.error = err;
        throw err;
      }
      if (result.done) controller.close();
      else controller.enqueue(result.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return tracked as { failed: boolean; error: unknown; stream: ReadableStream<Uint8Array> };
}

/** The stream, with any error it fails with replaced by `mapError(error)`. */
function mapErrors(
  body: ReadableStream<Uint8Array>,
  mapError: (err: unknown) => unknown,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result;
      try {
        result = await reader.read();
      } catch (err) {
        throw mapError(err);
      }
      if (result.done) controller.close();
      else controller.enqueue(result.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
}
