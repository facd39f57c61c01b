/**
 * The S3 implementation of `Store`, on `@aws-sdk/client-s3`.
 *
 * Files are streamed from disk: a single PUT below the multipart threshold,
 * otherwise our own multipart loop (multipart.ts). PUT and HEAD go out as
 * direct signed requests (direct_requests.ts) unless `directRequests` is
 * off or the bucket needs more than plain SigV4; everything else goes
 * through the SDK.
 *
 * Every request carries Content-MD5, so S3 itself rejects bytes that differ
 * from the digest computed before the upload (a file changed mid-upload).
 */
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  type StorageClass,
} from "@aws-sdk/client-s3";
import { hexToBase64, md5Base64 } from "../../common/digest.ts";
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import { VERSION } from "../../common/version.ts";
import type { ByteCounter, FileUpload, ObjectHead, ObjectInfo, Store } from "../store.ts";
import { DirectS3 } from "./direct_requests.ts";
import { isNoSuchKey, permanentError, unquote } from "./errors.ts";
import { rangeStream } from "./file_range.ts";
import { putMultipart } from "./multipart.ts";

/** How to reach S3; every field optional, the SDK's default chain fills in. */
export interface S3Options {
  bucket: string;
  region?: string | undefined;
  endpoint?: string | undefined;
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  sessionToken?: string | undefined;
  reducedRedundancy?: boolean | undefined;
  serverSideEncryption?: boolean | undefined;
  /**
   * Send PUT and HEAD signed by ourselves (direct_requests.ts) rather than
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
}

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

  async check(): Promise<void> {
    try {
      await this.#client.send(new HeadBucketCommand({ Bucket: this.#bucket }));
    } catch (err) {
      throw this.#permanentError(err) ?? err;
    }
  }

  #permanentError(err: unknown) {
    return permanentError(err, this.#bucket, this.#options.region ?? "us-east-1");
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
        throw this.#permanentError(err) ?? err;
      });
      for (const item of page.Contents ?? []) {
        if (item.Key === undefined) continue;
        yield {
          key: item.Key,
          size: item.Size ?? 0,
          etag: unquote(item.ETag),
          lastModified: item.LastModified ?? new Date(0),
        };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async head(key: string): Promise<ObjectHead | null> {
    const direct = await this.#direct();
    if (direct) return await direct.head(key);
    try {
      const out = await this.#client.send(
        new HeadObjectCommand({ Bucket: this.#bucket, Key: key }),
      );
      return objectHead(key, out);
    } catch (err) {
      if (isNoSuchKey(err)) return null;
      throw err;
    }
  }

  async putBytes(
    key: string,
    body: Uint8Array,
    options: { metadata?: Record<string, string>; contentType?: string },
  ): Promise<void> {
    const md5 = md5Base64(body);
    const metadata = options.metadata ?? {};
    const direct = await this.#direct();
    if (direct) {
      await direct.put(key, body, {
        ...this.#objectHeaders(metadata, options.contentType),
        "content-md5": md5,
      });
      return;
    }
    await this.#client.send(
      new PutObjectCommand({
        ...this.#objectParams(key, options.metadata ?? {}, options.contentType),
        Body: body,
        ContentLength: body.byteLength,
        ContentMD5: md5,
      }),
    );
  }

  async putFile(
    key: string,
    file: FileUpload,
    options: { signal?: AbortSignal; onBytes?: ByteCounter } = {},
  ): Promise<void> {
    const { signal, onBytes } = options;
    if (file.body) await onBytes?.(file.body.byteLength);
    const direct = await this.#direct();
    if (!file.parts && direct) {
      const body = file.body ??
        { path: file.path, start: 0, length: file.size, ...(onBytes ? { onBytes } : {}) };
      await direct.put(key, body, {
        ...this.#objectHeaders(file.metadata, file.contentType),
        "content-md5": hexToBase64(file.md5),
      }, signal);
      return;
    }
    if (!file.parts) {
      const body = file.body ??
        (file.size === 0 ? new Uint8Array(0) : rangeStream({
          path: file.path,
          start: 0,
          length: file.size,
          ...(onBytes ? { onBytes } : {}),
        }));
      await this.#client.send(
        new PutObjectCommand({
          ...this.#objectParams(key, file.metadata, file.contentType),
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
        object: this.#objectParams(key, file.metadata, file.contentType),
      },
      { ...file, parts: file.parts },
      { signal, onBytes },
    );
  }

  async get(
    key: string,
    options: { signal?: AbortSignal } = {},
  ): Promise<{ head: ObjectHead; body: ReadableStream<Uint8Array> } | null> {
    try {
      const out = await this.#client.send(
        new GetObjectCommand({ Bucket: this.#bucket, Key: key }),
        options.signal ? { abortSignal: options.signal } : {},
      );
      return {
        head: objectHead(key, out),
        body: out.Body!.transformToWebStream() as ReadableStream<Uint8Array>,
      };
    } catch (err) {
      if (isNoSuchKey(err)) return null;
      throw err;
    }
  }

  async deleteMany(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const out = await this.#client.send(
        new DeleteObjectsCommand({
          Bucket: this.#bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      const failed = out.Errors ?? [];
      if (failed.length > 0) {
        const first = failed[0]!;
        throw new Error(
          `Deleting ${failed.length} of ${batch.length} keys failed, first '${first.Key}': ${first.Code} ${
            first.Message ?? ""
          }`,
        );
      }
    }
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
  #objectHeaders(metadata: Record<string, string>, contentType?: string): Record<string, string> {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(metadata)) {
      headers[`x-amz-meta-${name.toLowerCase()}`] = value;
    }
    if (contentType) headers["content-type"] = contentType;
    if (this.#options.reducedRedundancy) headers["x-amz-storage-class"] = "REDUCED_REDUNDANCY";
    if (this.#options.serverSideEncryption) headers["x-amz-server-side-encryption"] = "AES256";
    return headers;
  }

  #objectParams(key: string, metadata: Record<string, string>, contentType?: string) {
    return {
      Bucket: this.#bucket,
      Key: key,
      Metadata: metadata,
      ...(contentType ? { ContentType: contentType } : {}),
      ...(this.#options.reducedRedundancy
        ? { StorageClass: "REDUCED_REDUNDANCY" as StorageClass }
        : {}),
      ...(this.#options.serverSideEncryption ? { ServerSideEncryption: "AES256" as const } : {}),
    };
  }
}

function sdkText(args: unknown[]): string {
  return args.map((a) => typeof a === "string" ? a : errorMessage(a)).join(" ");
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
  },
): ObjectHead {
  return {
    key,
    size: out.ContentLength ?? 0,
    etag: unquote(out.ETag),
    lastModified: out.LastModified ?? new Date(0),
    metadata: lowerKeys(out.Metadata ?? {}),
    ...(out.ContentType ? { contentType: out.ContentType } : {}),
  };
}

function lowerKeys(record: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [k.toLowerCase(), v]));
}
