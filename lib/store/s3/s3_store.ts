/**
 * The S3 implementation of `Store`, on `@aws-sdk/client-s3`.
 *
 * Files are streamed from disk: a single PUT below the multipart threshold,
 * otherwise our own multipart loop (multipart.ts). PUT, HEAD and GET go out
 * as direct signed requests (direct_requests.ts) unless `directRequests` is
 * off or the bucket needs more than plain SigV4; everything else goes
 * through the SDK.
 *
 * Every request carries Content-MD5, so S3 itself rejects bytes that differ
 * from the digest computed before the upload (a file changed mid-upload);
 * buckets with Object Lock require it too. With `objectLock`, every new
 * object (files, parts' uploads and indexes alike) is sent with its own
 * retention.
 *
 * A 403 is reported naming the IAM action and key it was refused for, so an
 * operator can tell which statement of the policy is missing.
 */
import {
  CopyObjectCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  type StorageClass,
} from "@aws-sdk/client-s3";
import { Buffer } from "node:buffer";
import type { Readable } from "node:stream";
import { hexToBase64, md5Base64 } from "../../common/digest.ts";
import { errorMessage, FatalError } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import { VERSION } from "../../common/version.ts";
import type {
  CopyOptions,
  DeleteOptions,
  DeleteRefusal,
  FileUpload,
  GetOptions,
  MultipartUploadInfo,
  ObjectHead,
  ObjectInfo,
  ObjectVersion,
  PutFileOptions,
  Store,
  UploadedPart,
  Versioning,
  VersionRef,
} from "../store.ts";
import { PLAIN_TRAITS, type StoreTraits } from "../store.ts";
import { type ObjectKind, type ObjectStorage, storageClassFor } from "../object_storage.ts";
import { DirectS3 } from "./direct_requests.ts";
import {
  isLockRefusal,
  isNoSuchKey,
  namedDenial,
  permanentError,
  type S3Request,
  unquote,
} from "./errors.ts";
import { fileRange, rangeStream } from "./file_range.ts";
import { abortUpload, listParts, listUploads, putMultipart } from "./multipart.ts";

/** How to reach S3; every field optional, the SDK's default chain fills in. */
export interface S3Options {
  bucket: string;
  region?: string | undefined;
  endpoint?: string | undefined;
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  sessionToken?: string | undefined;
  /** Storage classes and server-side encryption of the objects written. */
  objectStorage?: ObjectStorage | undefined;
  /**
   * Send PUT, HEAD and GET signed by ourselves (direct_requests.ts) rather than
   * through the SDK's middleware; default on. Off: everything goes through
   * the SDK (`TABLESNAP_DIRECT_REQUESTS=0` does this for the CLI).
   */
  directRequests?: boolean | undefined;
  /** Observes every S3 request: operation name, seconds, error or not. */
  onRequest?: ((operation: string, seconds: number, failed: boolean) => void) | undefined;
  /**
   * How long a request's socket may stay silent before the request is
   * retried (a half-open connection, a stuck proxy). Default 120 s.
   */
  requestTimeoutMs?: number | undefined;
  /** Retention set explicitly on every object written (the watcher's --object-lock-*). */
  objectLock?: ObjectLockRetention | undefined;
  /**
   * The prefix `check()` lists: the watcher's own keys, so that a policy
   * granting s3:ListBucket only under that prefix is enough. Default: none.
   */
  checkPrefix?: string | undefined;
}

/** Object Lock retention for new objects: this mode, until this many days from the upload. */
export interface ObjectLockRetention {
  mode: "GOVERNANCE" | "COMPLIANCE";
  days: number;
}

const DAY_MS = 86_400_000;

/**
 * The user agent, computed once per client: the SDK's default builds it for
 * every request and asks the OS for its release each time (about 40 us per
 * request in Deno, measurable with many small files).
 */
function userAgent(): [string, string?][] {
  return [
    ["tablesnap", VERSION],
    ["ua", "2.1"],
    [`os/${Deno.build.os}`, Deno.osRelease()],
    ["lang/js"],
    ["md/deno", Deno.version.deno],
  ];
}

export class S3Store implements Store {
  readonly traits: StoreTraits = PLAIN_TRAITS;
  readonly url: string;
  readonly #bucket: string;
  readonly #client: S3Client;
  readonly #options: S3Options;
  /** HEAD and in-memory PUT without the SDK's per-request overhead (see direct_requests.ts). */
  readonly #directRequests: DirectS3 | null;

  constructor(options: S3Options) {
    this.#options = options;
    this.#bucket = options.bucket;
    this.url = `s3://${options.bucket}`;
    const requestTimeoutMs = options.requestTimeoutMs ?? 120_000;
    const agent = userAgent();
    const config: S3ClientConfig = {
      region: options.region ?? "us-east-1",
      // Many S3-compatible servers reject the SDK's default CRC32 trailers;
      // we send Content-MD5 ourselves instead.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      maxAttempts: 3,
      defaultUserAgentProvider: () => Promise.resolve(agent),
      requestHandler: { connectionTimeout: 10_000, requestTimeout: requestTimeoutMs },
      // The SDK would print some warnings with console.warn, breaking our
      // one-line log format: route them to debug logs instead.
      logger: {
        trace: () => {},
        debug: () => {},
        info: () => {},
        warn: (...args: unknown[]) => log.debug("aws-sdk warning", { message: sdkText(args) }),
        error: (...args: unknown[]) => log.debug("aws-sdk error", { message: sdkText(args) }),
      },
    };
    if (options.endpoint) {
      config.endpoint = options.endpoint;
      config.forcePathStyle = true;
    }
    if (options.accessKeyId && options.secretAccessKey) {
      config.credentials = {
        accessKeyId: options.accessKeyId,
        secretAccessKey: options.secretAccessKey,
        ...(options.sessionToken ? { sessionToken: options.sessionToken } : {}),
      };
    }
    this.#client = new S3Client(config);
    this.#client.middlewareStack.add(
      (next, context) => async (args) => {
        const operation = String(context.commandName ?? "unknown").replace(/Command$/, "");
        const started = performance.now();
        let failed = false;
        try {
          return await next(args);
        } catch (err) {
          failed = true;
          throw err;
        } finally {
          options.onRequest?.(operation, (performance.now() - started) / 1000, failed);
        }
      },
      { step: "initialize", name: "tablesnapRequestCounter" },
    );
    // Its only job would be an info() call with a filtered copy of every
    // request and response, which we discard anyway.
    this.#client.middlewareStack.remove("loggerMiddleware");
    this.#directRequests = options.directRequests === false ? null : new DirectS3({
      client: this.#client,
      bucket: this.#bucket,
      idleTimeoutMs: requestTimeoutMs,
      ...(options.onRequest ? { onRequest: options.onRequest } : {}),
    });
  }

  /**
   * A listing rather than a HeadBucket: both need s3:ListBucket, but a
   * HeadBucket carries no prefix, so a policy that scopes ListBucket to the
   * host's prefix (packaging/iam/agent.json) refuses it; a listing of
   * `checkPrefix` is allowed by that very statement. No key is asked for
   * (MaxKeys 0): a truncated listing would cost s3rver, which cannot make
   * continuation tokens, an InternalError.
   */
  async check(): Promise<void> {
    const prefix = this.#options.checkPrefix;
    try {
      await this.#client.send(
        new ListObjectsV2Command({
          Bucket: this.#bucket,
          MaxKeys: 0,
          ...(prefix ? { Prefix: prefix } : {}),
        }),
      );
    } catch (err) {
      throw this.#permanentError(err, { action: "s3:ListBucket", prefix }) ?? err;
    }
  }

  #permanentError(err: unknown, request?: S3Request) {
    return permanentError(err, this.#bucket, this.#options.region ?? "us-east-1", request);
  }

  async *list(prefix: string, options: { delimiter?: string } = {}): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      const page = await this.#client.send(
        new ListObjectsV2Command({
          Bucket: this.#bucket,
          Prefix: prefix,
          ...(options.delimiter ? { Delimiter: options.delimiter } : {}),
          ContinuationToken: token,
          MaxKeys: 1000,
        }),
      ).catch((err) => {
        // A listing can stand in for check(): same one-line errors.
        throw this.#permanentError(err, { action: "s3:ListBucket", prefix }) ?? err;
      });
      for (const item of page.Contents ?? []) {
        if (item.Key === undefined) continue;
        yield {
          key: item.Key,
          size: item.Size ?? 0,
          etag: unquote(item.ETag),
          lastModified: item.LastModified ?? new Date(0),
          ...(item.StorageClass ? { storageClass: item.StorageClass } : {}),
        };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async head(key: string): Promise<ObjectHead | null> {
    const direct = await this.#direct();
    try {
      if (direct) return await direct.head(key);
      const out = await this.#client.send(
        new HeadObjectCommand({ Bucket: this.#bucket, Key: key }),
      );
      return objectHead(key, out);
    } catch (err) {
      if (isNoSuchKey(err)) return null;
      throw namedDenial(err, { action: "s3:GetObject", key });
    }
  }

  putBytes(
    key: string,
    body: Uint8Array,
    options: { metadata?: Record<string, string>; contentType?: string },
  ): Promise<void> {
    return this.#putBytes(key, body, options).catch((err) => {
      throw namedDenial(err, { action: "s3:PutObject", key });
    });
  }

  async #putBytes(
    key: string,
    body: Uint8Array,
    options: { metadata?: Record<string, string>; contentType?: string },
  ): Promise<void> {
    const md5 = md5Base64(body);
    const metadata = options.metadata ?? {};
    const direct = await this.#direct();
    if (direct) {
      await direct.put(key, body, {
        ...this.#objectHeaders(metadata, options.contentType, "index"),
        "content-md5": md5,
      });
      return;
    }
    await this.#client.send(
      new PutObjectCommand({
        ...this.#objectParams(key, options.metadata ?? {}, options.contentType, "index"),
        Body: body,
        ContentLength: body.byteLength,
        ContentMD5: md5,
      }),
    );
  }

  /**
   * CopyObject, metadata copied; the store's storage class (by the object's
   * size: given, else a HEAD), SSE and retention apply.
   */
  async copy(from: string, to: string, options: CopyOptions = {}): Promise<void> {
    const size = options.size ?? (await this.head(from))?.size;
    if (size === undefined) throw new Error(`No object '${from}' to copy in ${this.url}`);
    const { Metadata: _, ...params } = this.#objectParams(to, {}, undefined, { file: size });
    // URL-encoded as S3 asks, but ":" (in every key: the default separator)
    // as it is: some servers (s3rver) decode the header with decodeURI, which leaves %3A.
    const path = from.split("/").map((s) => encodeURIComponent(s).replaceAll("%3A", ":"));
    const source = `${this.#bucket}/${path.join("/")}`;
    await this.#client.send(
      new CopyObjectCommand({ ...params, CopySource: source, MetadataDirective: "COPY" }),
    ).catch((err) => {
      throw namedDenial(err, { action: "s3:GetObject and s3:PutObject (CopyObject)", key: to });
    });
  }

  putFile(key: string, file: FileUpload, options: PutFileOptions = {}): Promise<void> {
    // CreateMultipartUpload, UploadPart and CompleteMultipartUpload are all s3:PutObject.
    return this.#putFile(key, file, options).catch((err) => {
      throw namedDenial(err, { action: "s3:PutObject", key });
    });
  }

  async #putFile(key: string, file: FileUpload, options: PutFileOptions): Promise<void> {
    const { signal, onBytes } = options;
    if (file.body) await onBytes?.(file.body.byteLength);
    const direct = await this.#direct();
    if (!file.parts && direct) {
      const body = file.body ?? fileRange(file, 0, file.size, onBytes);
      await direct.put(key, body, {
        ...this.#objectHeaders(file.metadata, file.contentType, { file: file.size }),
        "content-md5": hexToBase64(file.md5),
      }, signal);
      return;
    }
    if (!file.parts) {
      const body = file.body ??
        (file.size === 0 ? new Uint8Array(0) : rangeStream(fileRange(file, 0, file.size, onBytes)));
      await this.#client.send(
        new PutObjectCommand({
          ...this.#objectParams(key, file.metadata, file.contentType, { file: file.size }),
          Body: body,
          ContentLength: file.size,
          ContentMD5: hexToBase64(file.md5),
        }),
        signal ? { abortSignal: signal } : {},
      );
      return;
    }
    await putMultipart(
      {
        client: this.#client,
        direct,
        object: this.#objectParams(key, file.metadata, file.contentType, { file: file.size }),
      },
      { ...file, parts: file.parts },
      options,
    );
  }

  listUploads(prefix: string): AsyncIterable<MultipartUploadInfo> {
    return listUploads(this.#client, this.#bucket, prefix);
  }

  abortUpload(key: string, uploadId: string): Promise<void> {
    return abortUpload(this.#client, this.#bucket, key, uploadId);
  }

  listParts(key: string, uploadId: string): Promise<UploadedPart[]> {
    return listParts(this.#client, this.#bucket, key, uploadId);
  }

  async get(
    key: string,
    options: GetOptions = {},
  ): Promise<{ head: ObjectHead; body: ReadableStream<Uint8Array> } | null> {
    const { range } = options;
    try {
      const direct = await this.#direct();
      if (direct) return await direct.get(key, range, options.signal);
      const out = await this.#client.send(
        new GetObjectCommand({
          Bucket: this.#bucket,
          Key: key,
          ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
        }),
        options.signal ? { abortSignal: options.signal } : {},
      );
      const head = objectHead(key, out);
      // A ranged answer's Content-Length is the range's: the total is in Content-Range.
      const total = /\/(\d+)$/.exec(out.ContentRange ?? "")?.[1];
      if (range && total !== undefined) head.size = Number(total);
      return { head, body: pacedWebStream(out.Body as unknown as Readable) };
    } catch (err) {
      if (isNoSuchKey(err)) return null;
      throw namedDenial(err, { action: "s3:GetObject", key });
    }
  }

  /**
   * DeleteObjects, 1,000 keys a request. S3 answers 200 and reports each key
   * it refused in `Errors` (see `#refusals`).
   */
  async deleteMany(keys: string[], options: DeleteOptions = {}): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const out = await this.#client.send(
        new DeleteObjectsCommand({
          Bucket: this.#bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      ).catch((err) => {
        throw this.#permanentError(err, { action: "s3:DeleteObject" }) ?? err;
      });
      const errors = (out.Errors ?? []).map((e) => ({
        key: e.Key ?? "",
        code: e.Code ?? "",
        message: e.Message ?? "",
      }));
      this.#refusals(errors, batch.length, "s3:DeleteObject", options);
    }
  }

  async versioning(): Promise<Versioning> {
    const out = await this.#client.send(new GetBucketVersioningCommand({ Bucket: this.#bucket }))
      .catch((err) => {
        throw namedDenial(err, { action: "s3:GetBucketVersioning" });
      });
    return out.Status === "Enabled" ? "enabled" : out.Status === "Suspended" ? "suspended" : "off";
  }

  async *listVersions(prefix: string): AsyncIterable<ObjectVersion> {
    let keyMarker: string | undefined;
    let versionMarker: string | undefined;
    do {
      const page = await this.#client.send(
        new ListObjectVersionsCommand({
          Bucket: this.#bucket,
          Prefix: prefix,
          MaxKeys: 1000,
          ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
          ...(versionMarker !== undefined ? { VersionIdMarker: versionMarker } : {}),
        }),
      ).catch((err) => {
        throw this.#permanentError(err, { action: "s3:ListBucketVersions", prefix }) ?? err;
      });
      const versions: ObjectVersion[] = (page.Versions ?? []).map((v) => ({
        key: v.Key ?? "",
        versionId: v.VersionId ?? "null",
        size: v.Size ?? 0,
        etag: unquote(v.ETag),
        lastModified: v.LastModified ?? new Date(0),
        latest: v.IsLatest === true,
        deleteMarker: false,
      }));
      const markers: ObjectVersion[] = (page.DeleteMarkers ?? []).map((m) => ({
        key: m.Key ?? "",
        versionId: m.VersionId ?? "null",
        size: 0,
        etag: "",
        lastModified: m.LastModified ?? new Date(0),
        latest: m.IsLatest === true,
        deleteMarker: true,
      }));
      // S3 returns versions and delete markers in two lists, each in key
      // order, newest first: merged back into the one order callers group by.
      yield* mergeVersions(versions, markers);
      const truncated = page.IsTruncated === true;
      keyMarker = truncated ? page.NextKeyMarker : undefined;
      versionMarker = truncated ? page.NextVersionIdMarker : undefined;
    } while (keyMarker !== undefined);
  }

  /**
   * DeleteObjects with version ids: permanent. Not quiet, because S3 (and
   * moto) may leave the version id out of a per-key error: what was asked
   * and not reported deleted is what was refused.
   */
  async deleteVersions(versions: VersionRef[], options: DeleteOptions = {}): Promise<void> {
    for (let i = 0; i < versions.length; i += 1000) {
      const batch = versions.slice(i, i + 1000);
      const out = await this.#client.send(
        new DeleteObjectsCommand({
          Bucket: this.#bucket,
          Delete: {
            Objects: batch.map((v) => ({ Key: v.key, VersionId: v.versionId })),
            Quiet: false,
          },
        }),
      ).catch((err) => {
        throw this.#permanentError(err, { action: "s3:DeleteObjectVersion" }) ?? err;
      });
      const deleted = new Set((out.Deleted ?? []).map((d) => `${d.VersionId}\n${d.Key}`));
      // A key's errors, in order, for the versions of it that were not deleted.
      const errorsOf = new Map<string, { code: string; message: string }[]>();
      for (const e of out.Errors ?? []) {
        const list = errorsOf.get(e.Key ?? "") ?? [];
        list.push({ code: e.Code ?? "", message: e.Message ?? "" });
        errorsOf.set(e.Key ?? "", list);
      }
      const errors: DeleteRefusal[] = [];
      for (const v of batch) {
        if (deleted.has(`${v.versionId}\n${v.key}`)) continue;
        const reason = errorsOf.get(v.key)?.shift();
        // Neither deleted nor refused: S3 only skips a version that is already gone.
        if (reason) errors.push({ key: v.key, versionId: v.versionId, ...reason });
      }
      this.#refusals(errors, batch.length, "s3:DeleteObjectVersion", options);
    }
  }

  /**
   * The refusals of one DeleteObjects batch: the lock's go to `onLocked`
   * when given; any other throws, AccessDenied from a policy as a one-line
   * `FatalError` naming the action and a key, anything else naming the code.
   */
  #refusals(errors: DeleteRefusal[], asked: number, action: string, options: DeleteOptions) {
    const { onLocked } = options;
    const other = onLocked ? errors.filter((e) => !isLockRefusal(e.code, e.message)) : errors;
    const first = other[0];
    if (!first) {
      for (const e of errors) onLocked?.(e);
      return;
    }
    const more = other.length > 1
      ? ` and ${other.length - 1} more of the ${asked} in the batch`
      : "";
    const what = `'${first.key}'${first.versionId ? ` (version ${first.versionId})` : ""}${more}`;
    if (isLockRefusal(first.code, first.message)) {
      throw new FatalError(`Deleting ${what} refused: Object Lock protects it (${first.message})`);
    }
    if (first.code === "AccessDenied") {
      throw new FatalError(
        `Access to bucket '${this.#bucket}' denied (HTTP 403) for ${action} on ${what}: check the credentials' IAM policy and the bucket policy`,
      );
    }
    throw new Error(
      `Deleting ${what} failed: ${first.code}${first.message ? ` ${first.message}` : ""}`,
    );
  }

  /** True when PUT and HEAD go out as direct requests (tests check it). */
  async usesDirectRequests(): Promise<boolean> {
    return (await this.#direct()) !== null;
  }

  /** The direct request path, when enabled and usable for this bucket. */
  async #direct(): Promise<DirectS3 | null> {
    const direct = this.#directRequests;
    return direct && await direct.usable() ? direct : null;
  }

  close(): void {
    this.#directRequests?.close();
    this.#client.destroy();
  }

  /** `#objectParams` as HTTP headers, for direct requests. */
  #objectHeaders(
    metadata: Record<string, string>,
    contentType: string | undefined,
    kind: ObjectKind,
  ): Record<string, string> {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(metadata)) {
      headers[`x-amz-meta-${name.toLowerCase()}`] = value;
    }
    if (contentType) headers["content-type"] = contentType;
    const storage = this.#options.objectStorage ?? {};
    const storageClass = storageClassFor(storage, kind);
    if (storageClass) headers["x-amz-storage-class"] = storageClass;
    if (storage.sse) headers["x-amz-server-side-encryption"] = storage.sse.kind;
    if (storage.sse?.kind === "aws:kms" && storage.sse.keyId) {
      headers["x-amz-server-side-encryption-aws-kms-key-id"] = storage.sse.keyId;
    }
    const lock = this.#retention();
    if (lock) {
      headers["x-amz-object-lock-mode"] = lock.ObjectLockMode;
      headers["x-amz-object-lock-retain-until-date"] = lock.ObjectLockRetainUntilDate.toISOString();
    }
    return headers;
  }

  /** Retention from now, computed per request: each object is kept N days from its own upload. */
  #retention() {
    const lock = this.#options.objectLock;
    if (!lock) return undefined;
    return {
      ObjectLockMode: lock.mode,
      ObjectLockRetainUntilDate: new Date(Date.now() + lock.days * DAY_MS),
    };
  }

  /** What PutObject and CreateMultipartUpload take besides the body. */
  #objectParams(
    key: string,
    metadata: Record<string, string>,
    contentType: string | undefined,
    kind: ObjectKind,
  ) {
    const storage = this.#options.objectStorage ?? {};
    const storageClass = storageClassFor(storage, kind);
    const sse = storage.sse;
    return {
      Bucket: this.#bucket,
      Key: key,
      Metadata: metadata,
      ...(contentType ? { ContentType: contentType } : {}),
      ...(storageClass ? { StorageClass: storageClass as StorageClass } : {}),
      ...(sse ? { ServerSideEncryption: sse.kind } : {}),
      ...(sse?.kind === "aws:kms" && sse.keyId ? { SSEKMSKeyId: sse.keyId } : {}),
      ...this.#retention(),
    };
  }
}

/** Two lists in S3's version order (key in UTF-8 byte order, newest first) as one. */
function* mergeVersions(a: ObjectVersion[], b: ObjectVersion[]): Generator<ObjectVersion> {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && versionOrder(a[i]!, b[j]!) <= 0)) yield a[i++]!;
    else yield b[j++]!;
  }
}

function versionOrder(x: ObjectVersion, y: ObjectVersion): number {
  const byKey = Buffer.compare(Buffer.from(x.key), Buffer.from(y.key));
  if (byKey !== 0) return byKey;
  if (x.latest !== y.latest) return x.latest ? -1 : 1;
  return y.lastModified.getTime() - x.lastModified.getTime();
}

function sdkText(args: unknown[]): string {
  return args.map((a) => typeof a === "string" ? a : errorMessage(a)).join(" ");
}

/**
 * A Node response body as a web stream that reads only as fast as it is
 * consumed: the SDK's `transformToWebStream()` buffered whole ranges under
 * Deno (a 1 GB restore peaked at 150-180 MB RSS with one connection). The
 * socket is paused whenever a few chunks are queued and resumed on demand.
 */
function pacedWebStream(body: Readable): ReadableStream<Uint8Array> {
  // Once cancelled, events still queued in the socket must not reach the
  // controller: enqueue or close would throw, uncaught, from the event.
  let cancelled = false;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      body.on("data", (chunk: Buffer) => {
        if (cancelled) return;
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if ((controller.desiredSize ?? 0) <= 0) body.pause();
      });
      body.once("end", () => cancelled || controller.close());
      body.once("error", (err) => cancelled || controller.error(err));
    },
    pull() {
      body.resume();
    },
    cancel(reason) {
      cancelled = true;
      body.destroy(reason instanceof Error ? reason : undefined);
    },
  }, { highWaterMark: 4 });
}

/** The facts HEAD and GET responses share. */
function objectHead(
  key: string,
  out: {
    ContentLength?: number | undefined;
    ETag?: string | undefined;
    LastModified?: Date | undefined;
    Metadata?: Record<string, string> | undefined;
    ContentType?: string | undefined;
    StorageClass?: string | undefined;
    ServerSideEncryption?: string | undefined;
  },
): ObjectHead {
  return {
    key,
    size: out.ContentLength ?? 0,
    etag: unquote(out.ETag),
    lastModified: out.LastModified ?? new Date(0),
    metadata: lowerKeys(out.Metadata ?? {}),
    ...(out.ContentType ? { contentType: out.ContentType } : {}),
    // S3 names the class only when it is not STANDARD.
    storageClass: out.StorageClass ?? "STANDARD",
    ...(out.ServerSideEncryption ? { serverSideEncryption: out.ServerSideEncryption } : {}),
  };
}

function lowerKeys(record: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [k.toLowerCase(), v]));
}
