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
 * the plaintext size. Ranged reads of encrypted objects are refused: callers
 * fetch them whole (lib/restore/download.ts).
 *
 * Uploads keep the memory bound of plaintext ones: a file is encrypted as a
 * stream into a spool file (mode 0600, removed after the put) while its
 * plaintext MD5 is checked and the ciphertext's MD5s are computed, whole and
 * per part; the inner store then streams the spool file with those
 * Content-MD5s, exactly as it streams any file. Why a spool file and not
 * regenerating the ciphertext per part: docs/design.md#client-side-encryption.
 *
 * Listings cannot carry metadata, so `list` (for a store with recipients)
 * gives each object's plaintext size as computed from its ciphertext size
 * for the header this store writes (one X25519 stanza per recipient):
 * exact for every object written with the same number of recipients. The
 * watcher confirms any other size with a HEAD before acting on it
 * (lib/watch/upload_file.ts), which `head` answers exactly.
 */
import { Decrypter, Encrypter } from "age-encryption";
import { Buffer } from "node:buffer";
import { md5Hex, newMd5 } from "../common/digest.ts";
import { errorMessage, FatalError } from "../common/errors.ts";
import type { AgeIdentities } from "./age_keys.ts";
import {
  type ByteCounter,
  type CopyOptions,
  type DeleteOptions,
  DigestMismatchError,
  type FileUpload,
  type GetOptions,
  type ObjectHead,
  type ObjectInfo,
  type ObjectVersion,
  type Store,
  type Versioning,
  type VersionRef,
} from "./store.ts";

/** Where ciphertext is spooled unless told otherwise. */
export function defaultSpoolDir(): string {
  return Deno.env.get("TMPDIR") || "/tmp";
}

/** Metadata marking an encrypted object, and its value for the format written. */
export const ENCRYPTION_METADATA = "tablesnap-encryption";
export const AGE_V1 = "age-v1";
/** Metadata giving an encrypted object's plaintext size in bytes. */
export const PLAINTEXT_SIZE_METADATA = "tablesnap-plaintext-size";
/** Metadata of an index written by an encrypting watcher: the files it names are encrypted. */
export const FILE_ENCRYPTION_METADATA = "tablesnap-file-encryption";

/** age's STREAM: 64 KiB chunks, each followed by a 16-byte Poly1305 tag. */
const CHUNK_BYTES = 64 * 1024;
const TAG_BYTES = 16;
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
  /** Where ciphertext is spooled before its upload (default: TMPDIR, else /tmp). */
  spoolDir?: string | undefined;
  /** File bodies stored plaintext all the same (the watcher's: TOC.txt, names only). */
  plaintext?: ((key: string) => boolean) | undefined;
}

/** The optional methods of `Store` (present or not as in the wrapped store), delegated. */
const OPTIONAL_METHODS = [
  "copy",
  "versioning",
  "listVersions",
  "deleteVersions",
  // Multipart resume (another branch): forwarded when the inner store has them.
  "listUploads",
  "abortUpload",
  "listParts",
] as const;

export class EncryptingStore implements Store {
  readonly #inner: Store;
  readonly #recipients: string[];
  readonly #encrypter: Encrypter | null;
  readonly #decrypter: Decrypter | null;
  readonly #identityFile: string | undefined;
  readonly #spoolDir: string;
  readonly #plaintext: (key: string) => boolean;
  #spoolCounter = 0;
  /** Header plus payload nonce, in bytes, for this store's recipients. */
  #headerBytes: Promise<number> | undefined;

  copy?: (from: string, to: string, options?: CopyOptions) => Promise<void>;
  versioning?: () => Promise<Versioning>;
  listVersions?: (prefix: string) => AsyncIterable<ObjectVersion>;
  deleteVersions?: (versions: VersionRef[], options?: DeleteOptions) => Promise<void>;

  constructor(inner: Store, options: EncryptionOptions) {
    this.#inner = inner;
    this.#recipients = options.recipients ?? [];
    if (this.#recipients.length > 0) {
      const encrypter = new Encrypter();
      for (const recipient of this.#recipients) encrypter.addRecipient(recipient);
      this.#encrypter = encrypter;
    } else {
      this.#encrypter = null;
    }
    const identities = options.identities?.identities ?? [];
    if (identities.length > 0) {
      const decrypter = new Decrypter();
      for (const identity of identities) decrypter.addIdentity(identity);
      this.#decrypter = decrypter;
    } else {
      this.#decrypter = null;
    }
    this.#identityFile = options.identities?.file;
    this.#spoolDir = options.spoolDir ?? defaultSpoolDir();
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
    return this.#encrypter !== null;
  }

  /** Whether `get` can decrypt (an identity was given). */
  get hasIdentity(): boolean {
    return this.#decrypter !== null;
  }

  check(): Promise<void> {
    return this.#inner.check();
  }

  async *list(prefix: string, options?: { delimiter?: string }): AsyncIterable<ObjectInfo> {
    if (!this.#encrypter) {
      yield* this.#inner.list(prefix, options);
      return;
    }
    const header = await this.#headerSize();
    for await (const info of this.#inner.list(prefix, options)) {
      const size = plaintextSize(info.size - header);
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
    if (!this.#encrypter) return this.#inner.putBytes(key, body, options);
    return this.#inner.putBytes(key, body, {
      ...options,
      metadata: { ...options.metadata, [FILE_ENCRYPTION_METADATA]: AGE_V1 },
    });
  }

  async putFile(
    key: string,
    file: FileUpload,
    options: { signal?: AbortSignal; onBytes?: ByteCounter } = {},
  ): Promise<void> {
    // Only these two: an encrypted upload is never resumed (a new file key
    // makes new ciphertext), it starts over.
    const forwarded: { signal?: AbortSignal; onBytes?: ByteCounter } = {};
    if (options.signal) forwarded.signal = options.signal;
    if (options.onBytes) forwarded.onBytes = options.onBytes;
    if (!this.#encrypter || this.#plaintext(key)) {
      return await this.#inner.putFile(key, file, forwarded);
    }
    const metadata = {
      ...file.metadata,
      [ENCRYPTION_METADATA]: AGE_V1,
      [PLAINTEXT_SIZE_METADATA]: String(file.size),
    };
    const base = { ...(file.contentType ? { contentType: file.contentType } : {}), metadata };
    if (file.body) {
      // Small files the caller holds in memory are encrypted in memory.
      const ciphertext = await this.#encrypter.encrypt(file.body);
      const upload: FileUpload = {
        ...base,
        path: file.path,
        size: ciphertext.byteLength,
        md5: md5Hex(ciphertext),
        body: ciphertext,
      };
      if (file.parts) upload.parts = partsOf(ciphertext, this.#partSize(file, ciphertext.length));
      return await this.#inner.putFile(key, upload, forwarded);
    }
    const spool = this.#spoolPath();
    try {
      const expected = await this.#headerSize() + ciphertextPayloadSize(file.size);
      const partSize = file.parts ? this.#partSize(file, expected) : undefined;
      const digests = await this.#encryptToSpool(file, spool, partSize, options.signal);
      if (digests.size !== expected) {
        throw new Error(`Encrypted '${file.path}' to ${digests.size} bytes, expected ${expected}`);
      }
      const upload: FileUpload = { ...base, path: spool, size: digests.size, md5: digests.md5 };
      if (partSize !== undefined) upload.parts = { partSize, md5s: digests.partMd5s };
      await this.#inner.putFile(key, upload, forwarded);
    } finally {
      await Deno.remove(spool).catch(() => {});
    }
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
    if (!this.#decrypter) {
      await object.body.cancel().catch(() => {});
      throw new DecryptionError(
        `Object '${key}' is encrypted with age: give --identity FILE to read it`,
      );
    }
    const source = trackErrors(object.body);
    let plaintext;
    try {
      plaintext = await this.#decrypter.decrypt(source.stream);
    } catch (err) {
      await object.body.cancel().catch(() => {});
      if (source.failed) throw source.error;
      throw this.#decryptionError(key, err);
    }
    let size: number;
    try {
      size = plaintext.size(object.head.size);
    } catch {
      await plaintext.cancel().catch(() => {});
      throw new DecryptionError(`Cannot decrypt '${key}': its size is not that of an age file`);
    }
    return {
      head: { ...object.head, size },
      body: mapErrors(
        plaintext,
        (err) => source.failed ? source.error : this.#decryptionError(key, err),
      ),
    };
  }

  deleteMany(keys: string[], options?: DeleteOptions): Promise<void> {
    return this.#inner.deleteMany(keys, options);
  }

  close(): void {
    this.#inner.close();
  }

  #decryptionError(key: string, err: unknown): DecryptionError {
    const message = errorMessage(err);
    const identity = this.#identityFile ? ` with the identity in '${this.#identityFile}'` : "";
    const reason = /no identity matched/.test(message)
      ? `the identity does not match any of its recipients`
      : /header|HMAC/i.test(message)
      ? `its header is damaged or was tampered with (${message})`
      : `its content is damaged or was tampered with (${message})`;
    return new DecryptionError(`Cannot decrypt '${key}'${identity}: ${reason}`);
  }

  /** The caller's part size, raised if the ciphertext would need more than S3's 10,000 parts. */
  #partSize(file: FileUpload, ciphertextBytes: number): number {
    return Math.max(file.parts!.partSize, Math.ceil(ciphertextBytes / MAX_PARTS));
  }

  /** age's header and payload nonce for this store's recipients, measured once. */
  #headerSize(): Promise<number> {
    this.#headerBytes ??= (async () => {
      const empty = new ReadableStream<Uint8Array>({ start: (c) => c.close() });
      const stream = await this.#encrypter!.encrypt(empty);
      await stream.cancel();
      return stream.size(0) - ciphertextPayloadSize(0);
    })();
    return this.#headerBytes;
  }

  #spoolPath(): string {
    const random = crypto.getRandomValues(new Uint8Array(6));
    const suffix = Buffer.from(random).toString("hex");
    return `${this.#spoolDir}/.tablesnap-spool-${Deno.pid}-${this.#spoolCounter++}-${suffix}`;
  }

  /**
   * Encrypts the file into `spool` as a stream, checking the plaintext's
   * size and MD5 against the upload's (a file that changed since it was
   * digested fails here, as it would fail the store's Content-MD5 check)
   * and computing the ciphertext's MD5s.
   */
  async #encryptToSpool(
    file: FileUpload,
    spool: string,
    partSize: number | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ size: number; md5: string; partMd5s: string[] }> {
    using source = await Deno.open(file.path, { read: true });
    using target = await Deno.open(spool, { write: true, createNew: true, mode: 0o600 });
    const plainMd5 = newMd5();
    let plainBytes = 0;
    const plaintext = source.readable.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          signal?.throwIfAborted();
          plainMd5.update(chunk);
          plainBytes += chunk.byteLength;
          controller.enqueue(chunk);
        },
      }),
    );
    const ciphertext = await this.#encrypter!.encrypt(plaintext);
    const whole = newMd5();
    const partMd5s: string[] = [];
    let part = newMd5();
    let inPart = 0;
    let size = 0;
    for await (let chunk of ciphertext) {
      size += chunk.byteLength;
      whole.update(chunk);
      let written = 0;
      while (written < chunk.byteLength) written += await target.write(chunk.subarray(written));
      if (partSize === undefined) continue;
      while (chunk.byteLength > 0) {
        const take = Math.min(partSize - inPart, chunk.byteLength);
        part.update(chunk.subarray(0, take));
        inPart += take;
        chunk = chunk.subarray(take);
        if (inPart === partSize) {
          partMd5s.push(part.digest("hex"));
          part = newMd5();
          inPart = 0;
        }
      }
    }
    if (partSize !== undefined && inPart > 0) partMd5s.push(part.digest("hex"));
    const md5 = plainMd5.digest("hex");
    if (plainBytes !== file.size || md5 !== file.md5) {
      throw new DigestMismatchError(
        `Content of '${file.path}' changed during upload (MD5 ${md5}, expected ${file.md5})`,
      );
    }
    return { size, md5: whole.digest("hex"), partMd5s };
  }
}

/** The name of a spool file: the process id first, so that a later start knows whose it was. */
const SPOOL_FILE = /^\.tablesnap-spool-(\d+)-/;

/**
 * Removes the spool files that processes no longer running left in `dir`
 * (killed mid-upload). Requires `--allow-read --allow-write`; Linux (/proc).
 */
export async function removeStaleSpoolFiles(dir: string): Promise<number> {
  let removed = 0;
  for await (const entry of Deno.readDir(dir)) {
    const pid = SPOOL_FILE.exec(entry.name)?.[1];
    if (!entry.isFile || pid === undefined || Number(pid) === Deno.pid) continue;
    try {
      await Deno.stat(`/proc/${pid}`);
      continue; // still running: another watcher's upload in flight
    } catch {
      // gone
    }
    await Deno.remove(`${dir}/${entry.name}`).then(() => removed++, () => {});
  }
  return removed;
}

/** The payload of age's STREAM for `plaintext` bytes: every chunk (at least one) gains a tag. */
export function ciphertextPayloadSize(plaintext: number): number {
  const chunks = Math.max(1, Math.ceil(plaintext / CHUNK_BYTES));
  return plaintext + chunks * TAG_BYTES;
}

/** The plaintext size of a STREAM payload of `payload` bytes, or null when no plaintext has it. */
export function plaintextSize(payload: number): number | null {
  if (payload < TAG_BYTES) return null;
  const chunks = Math.max(1, Math.ceil(payload / (CHUNK_BYTES + TAG_BYTES)));
  const plaintext = payload - chunks * TAG_BYTES;
  return plaintext >= 0 && ciphertextPayloadSize(plaintext) === payload ? plaintext : null;
}

/** Part MD5s of bytes in memory. */
function partsOf(bytes: Uint8Array, partSize: number): { partSize: number; md5s: string[] } {
  const md5s: string[] = [];
  for (let start = 0; start < bytes.length; start += partSize) {
    md5s.push(md5Hex(bytes.subarray(start, start + partSize)));
  }
  return { partSize, md5s };
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
