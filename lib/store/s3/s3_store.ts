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
 * buckets with Object Lock require it too. A body made from the file
 * (encrypted) may carry a CRC-32 instead, where the server verifies that,
 * or go as SigV4 signed frames, or with no digest where none is verified
 * (`bodyCheck`, body_check.ts). With `objectLock`, every new
 * object (files, parts' uploads and indexes alike) is sent with its own
 * retention.
 *
 * A 403 is reported naming the IAM action and key it was refused for, so an
 * operator can tell which statement of the policy is missing.
 */
import {
  CopyObjectCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { hexToBase64, md5Base64 } from "../../common/digest.ts";
import { VERSION } from "../../common/version.ts";
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
  UploadedPart,
  Versioning,
  VersionRef,
} from "../store.ts";
import { PLAIN_TRAITS, type StoreTraits } from "../store.ts";
import { storageClassFor } from "../object_storage.ts";
import { DirectS3 } from "./direct_requests.ts";
import { objectHeaders, objectParams } from "./object_params.ts";

export type { ObjectLockRetention, S3Options } from "./s3_options.ts";
import { isNoSuchKey, namedDenial, permanentError, type S3Request, unquote } from "./errors.ts";
import { fileRange, rangeStream } from "./file_range.ts";
import { HttpClient } from "./transport/http_client.ts";
import { objectHead, type S3Options } from "./s3_options.ts";
import { createSdkClient } from "./sdk_client.ts";
import { deleteMany, type DeleteTarget, deleteVersions, listVersions } from "./versions.ts";
import { BucketRegion } from "./bucket_region.ts";
import { abortUpload, listParts, listUploads, putMultipart } from "./multipart.ts";
import { md5OfMadeBody, probeBodyCheck, wantsDigestHeader } from "./body_check.ts";

export class S3Store implements Store {
  readonly traits: StoreTraits = PLAIN_TRAITS;
  readonly url: string;
  readonly #bucket: string;
  readonly #client: S3Client;
  readonly #options: S3Options;
  /** HEAD and in-memory PUT without the SDK's per-request overhead (see direct_requests.ts). */
  readonly #directRequests: DirectS3 | null;
  /** The one HTTP transport: direct requests and the SDK's alike. */
  readonly #http: HttpClient;
  /** The bucket's region: the configured one until S3 names another. */
  readonly #region: BucketRegion;
  /** What the server checks bodies by: probed once, on the first key asked about. */
  #bodyCheck: Promise<BodyCheck> | undefined;

  constructor(options: S3Options) {
    this.#options = options;
    this.#bucket = options.bucket;
    this.url = `s3://${options.bucket}`;
    const requestTimeoutMs = options.requestTimeoutMs ?? 120_000;
    this.#http = new HttpClient({
      caCerts: options.caCerts,
      proxy: options.proxy,
      idleTimeoutMs: requestTimeoutMs,
      connectTimeoutMs: 10_000,
      userAgent: `tablesnap/${VERSION}`,
    });
    const region = new BucketRegion(options.bucket, options.region ?? "us-east-1");
    this.#region = region;
    this.#client = createSdkClient(options, this.#http, region);
    this.#directRequests = options.directRequests === false ? null : new DirectS3({
      client: this.#client,
      bucket: this.#bucket,
      http: this.#http,
      region,
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
    return permanentError(err, this.#bucket, this.#region.current, request);
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
        ...objectHeaders(this.#options, metadata, options.contentType, "index"),
        "content-md5": md5,
      });
      return;
    }
    await this.#client.send(
      new PutObjectCommand({
        ...objectParams(this.#options, key, options.metadata ?? {}, options.contentType, "index"),
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
    const { Metadata: _, ...params } = objectParams(this.#options, to, {}, undefined, {
      file: size,
    });
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
      const storageClass = storageClassFor(this.#options.objectStorage ?? {}, { file: file.size });
      throw namedDenial(err, { action: "s3:PutObject", key, storageClass });
    });
  }

  async #putFile(key: string, file: FileUpload, options: PutFileOptions): Promise<void> {
    const { signal, onBytes } = options;
    if (file.body) await onBytes?.(file.body.byteLength);
    const direct = await this.#direct();
    if (!file.parts && direct) {
      const body = file.body ?? fileRange(file, 0, file.size, onBytes);
      const check = file.streamCheck
        ? {}
        : file.crc32
        ? { "x-amz-sdk-checksum-algorithm": "CRC32", "x-amz-checksum-crc32": file.crc32 }
        : { "content-md5": hexToBase64(file.md5) };
      const streamed = file.streamCheck === "signed-chunks" ? {} : undefined;
      const headers = objectHeaders(this.#options, file.metadata, file.contentType, {
        file: file.size,
      });
      try {
        await direct.put(key, body, { ...headers, ...check }, signal, streamed);
      } catch (err) {
        if (!file.streamCheck || !wantsDigestHeader(err)) throw err;
        // This bucket asks a digest of every PUT: later bodies get one made beforehand.
        this.#bodyCheck = Promise.resolve("md5");
        const md5 = hexToBase64(await md5OfMadeBody(file));
        await direct.put(key, body, { ...headers, "content-md5": md5 }, signal);
      }
      return;
    }
    // Only direct requests send a CRC-32 or no digest (bodyCheck answers "md5" without them).
    if (!file.parts && !file.md5) throw new Error(`No MD5 to send '${key}' with`);
    if (!file.parts) {
      const body = file.body ??
        (file.size === 0 ? new Uint8Array(0) : rangeStream(fileRange(file, 0, file.size, onBytes)));
      await this.#client.send(
        new PutObjectCommand({
          ...objectParams(this.#options, key, file.metadata, file.contentType, { file: file.size }),
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
        object: objectParams(this.#options, key, file.metadata, file.contentType, {
          file: file.size,
        }),
      },
      { ...file, parts: file.parts },
      options,
    );
  }

  /** See `Store.bodyCheck`; "md5" without direct requests (the SDK path sends only that). */
  bodyCheck(key: string): Promise<BodyCheck> {
    this.#bodyCheck ??= this.#direct().then((direct) =>
      direct
        ? probeBodyCheck({
          client: this.#client,
          direct,
          object: objectParams(this.#options, key, {}, undefined, { file: 0 }),
          // S3 asks a digest header of every PUT with Object Lock parameters.
          needsDigest: this.#options.objectLock !== undefined,
        })
        : "md5"
    );
    return this.#bodyCheck;
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
      return { head, body: out.Body!.transformToWebStream() };
    } catch (err) {
      if (isNoSuchKey(err)) return null;
      throw namedDenial(err, { action: "s3:GetObject", key });
    }
  }

  deleteMany(keys: string[], options: DeleteOptions = {}): Promise<void> {
    return deleteMany(this.#deleteTarget, keys, options);
  }

  async versioning(): Promise<Versioning> {
    const out = await this.#client.send(new GetBucketVersioningCommand({ Bucket: this.#bucket }))
      .catch((err) => {
        throw namedDenial(err, { action: "s3:GetBucketVersioning" });
      });
    return out.Status === "Enabled" ? "enabled" : out.Status === "Suspended" ? "suspended" : "off";
  }

  listVersions(prefix: string): AsyncIterable<ObjectVersion> {
    return listVersions(this.#deleteTarget, prefix);
  }

  deleteVersions(versions: VersionRef[], options: DeleteOptions = {}): Promise<void> {
    return deleteVersions(this.#deleteTarget, versions, options);
  }

  get #deleteTarget(): DeleteTarget {
    return {
      client: this.#client,
      bucket: this.#bucket,
      permanentError: (err, request) => this.#permanentError(err, request),
    };
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
    this.#http.close();
  }
}
