/**
 * The one base of store wrappers (rate limit, encryption): every method of
 * `Store` forwarded to the inner store, options included, so that a wrapper
 * overrides only what it changes and a method added to `Store` reaches
 * through every wrapper. The optional methods exist exactly when the inner
 * store has them: callers test for them (a store without multipart uploads,
 * without versioning).
 */
import type {
  BodyCheck,
  CopyOptions,
  DeleteOptions,
  FileUpload,
  GetOptions,
  MultipartUploadInfo,
  ObjectHead,
  ObjectInfo,
  ObjectVersion,
  PutFileOptions,
  Store,
  StoreTraits,
  UploadedPart,
  Versioning,
  VersionRef,
} from "./store.ts";

export class ForwardingStore implements Store {
  protected readonly inner: Store;

  readonly copy?: (from: string, to: string, options?: CopyOptions) => Promise<void>;
  readonly versioning?: () => Promise<Versioning>;
  readonly listVersions?: (prefix: string) => AsyncIterable<ObjectVersion>;
  readonly deleteVersions?: (versions: VersionRef[], options?: DeleteOptions) => Promise<void>;
  readonly listUploads?: (prefix: string) => AsyncIterable<MultipartUploadInfo>;
  readonly abortUpload?: (key: string, uploadId: string) => Promise<void>;
  readonly listParts?: (key: string, uploadId: string) => Promise<UploadedPart[]>;
  readonly bodyCheck?: (key: string) => Promise<BodyCheck>;

  constructor(inner: Store) {
    this.inner = inner;
    if (inner.copy) this.copy = (from, to, options) => inner.copy!(from, to, options);
    if (inner.versioning) this.versioning = () => inner.versioning!();
    if (inner.listVersions) this.listVersions = (prefix) => inner.listVersions!(prefix);
    if (inner.deleteVersions) {
      this.deleteVersions = (versions, options) => inner.deleteVersions!(versions, options);
    }
    if (inner.listUploads) this.listUploads = (prefix) => inner.listUploads!(prefix);
    if (inner.abortUpload) this.abortUpload = (key, id) => inner.abortUpload!(key, id);
    if (inner.listParts) this.listParts = (key, id) => inner.listParts!(key, id);
    if (inner.bodyCheck) this.bodyCheck = (key) => inner.bodyCheck!(key);
  }

  get url(): string {
    return this.inner.url;
  }

  get traits(): StoreTraits {
    return this.inner.traits;
  }

  check(): Promise<void> {
    return this.inner.check();
  }

  list(prefix: string, options?: { delimiter?: string }): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix, options);
  }

  head(key: string): Promise<ObjectHead | null> {
    return this.inner.head(key);
  }

  putBytes(
    key: string,
    body: Uint8Array,
    options: { metadata?: Record<string, string>; contentType?: string },
  ): Promise<void> {
    return this.inner.putBytes(key, body, options);
  }

  putFile(key: string, file: FileUpload, options?: PutFileOptions): Promise<void> {
    return this.inner.putFile(key, file, options);
  }

  get(
    key: string,
    options?: GetOptions,
  ): Promise<{ head: ObjectHead; body: ReadableStream<Uint8Array> } | null> {
    return this.inner.get(key, options);
  }

  deleteMany(keys: string[], options?: DeleteOptions): Promise<void> {
    return this.inner.deleteMany(keys, options);
  }

  close(): void {
    this.inner.close();
  }
}
