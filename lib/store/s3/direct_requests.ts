/**
 * Signed S3 requests without the SDK's middleware stack, for the calls whose
 * cost is paid per file or per byte: PUT (a body in memory, a file streamed
 * from disk, or one multipart part), HEAD, and GET. Through `S3Client.send`
 * each costs about 1 ms of CPU and 2-3 ms of latency more than the request
 * itself (serialisation, endpoint rules, retries, logging, parsing:
 * measured against a local server), which was most of the CPU of 10,000
 * small files and most of close->visible latency; and the SDK's stream
 * handling allocates a new buffer per chunk, which the two reused buffers
 * here avoid. GET goes through http1_client.ts, whose bodies stream into
 * the reader's own buffer (restores are bound by CPU per byte).
 *
 * Everything else stays on the SDK: listing, creating, completing and
 * aborting multipart uploads, deletes. The pieces that must be right are
 * still the SDK's: the same client's credential chain (refreshing instance
 * roles, profiles...), its endpoint rules (resolved once per bucket), and
 * AWS's `SignatureV4` signer. The body is covered by Content-MD5, so the
 * payload itself is sent as UNSIGNED-PAYLOAD (as the SDK does over HTTPS).
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { SignatureV4 } from "@smithy/signature-v4";
import {
  Agent as HttpAgent,
  type ClientRequest,
  type IncomingMessage,
  request as httpRequest,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { Buffer } from "node:buffer";
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import { type Backoff, retry } from "../../common/retry.ts";
import { isTransient } from "../failure.ts";
import type { ByteRange, ObjectHead } from "../store.ts";
import { responseError, unquote } from "./errors.ts";
import type { FileRange } from "./file_range.ts";
import { Http1Client } from "./http1_client.ts";

type Body = Uint8Array | FileRange;

/** Bytes read from a file per write: two such buffers per upload, reused. */
const CHUNK_BYTES = 256 * 1024;

/** Where the bucket's objects live and how requests to it are signed. */
interface BucketEndpoint {
  url: URL;
  signingRegion: string;
}

/** As the SDK's standard retry mode: 3 tries, 200 ms doubling, full jitter. */
const ATTEMPTS = 3;
const REQUEST_BACKOFF: Backoff = { firstMs: 200, maxMs: 20_000, jitter: "full" };

export class DirectS3 {
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #idleTimeoutMs: number;
  readonly #onRequest: ((operation: string, seconds: number, failed: boolean) => void) | undefined;
  #endpoint?: Promise<BucketEndpoint | null>;
  #signer?: SignatureV4;
  readonly #httpAgent = new HttpAgent({ keepAlive: true });
  readonly #httpsAgent = new HttpsAgent({ keepAlive: true });
  readonly #http: Http1Client;

  constructor(options: {
    client: S3Client;
    bucket: string;
    idleTimeoutMs: number;
    onRequest?: (operation: string, seconds: number, failed: boolean) => void;
  }) {
    this.#client = options.client;
    this.#bucket = options.bucket;
    this.#idleTimeoutMs = options.idleTimeoutMs;
    this.#onRequest = options.onRequest;
    this.#http = new Http1Client({ idleTimeoutMs: options.idleTimeoutMs });
  }

  /**
   * False when the bucket's endpoint needs anything but plain SigV4 (S3
   * Express, access points...): the caller then uses the SDK for everything.
   */
  async usable(): Promise<boolean> {
    return (await this.#resolve()) !== null;
  }

  /** The URL objects of the bucket live under, or null when direct requests are not used. */
  async baseUrl(): Promise<string | null> {
    return (await this.#resolve())?.url.href ?? null;
  }

  /** HEAD of a key: null when there is no such object. */
  async head(key: string, signal?: AbortSignal): Promise<ObjectHead | null> {
    const res = await this.#send("HeadObject", "HEAD", key, {}, {}, undefined, signal);
    if (res.status === 404) return null;
    const h = res.headers;
    // Node gives header names in lower case, as `ObjectHead.metadata` wants them.
    const value = (name: string) => {
      const v = h[name];
      return v === undefined ? undefined : String(v);
    };
    return headOf(key, value, Object.keys(h));
  }

  /**
   * GET of a key (or of a range of it), through the byte-stream client
   * (http1_client.ts): the body streams straight into the reader's buffer.
   * Null when there is no such key. Retried until an answer's headers are
   * in; a failure while the body streams is the caller's to retry.
   */
  async get(
    key: string,
    range: ByteRange | undefined,
    signal?: AbortSignal,
  ): Promise<{ head: ObjectHead; body: ReadableStream<Uint8Array> } | null> {
    const headers = range
      ? { range: `bytes=${range.offset}-${range.offset + range.length - 1}` }
      : {};
    const { base, target, sign } = await this.#prepare("GET", key, {}, headers, undefined);
    return await retry(async () => {
      const started = performance.now();
      const seconds = () => (performance.now() - started) / 1000;
      let res;
      try {
        res = await this.#http.request({
          url: base,
          method: "GET",
          target,
          headers: await sign(),
          signal,
        });
      } catch (err) {
        this.#onRequest?.("GetObject", seconds(), true);
        throw err;
      }
      const h = res.headers;
      if (res.status >= 300) {
        const text = await new Response(res.body).text();
        const err = responseError(res.status, text, "GET");
        // A missing key is an answer; a missing bucket is not.
        const missing = res.status === 404 && err.name !== "NoSuchBucket";
        this.#onRequest?.("GetObject", seconds(), !missing);
        if (missing) return null;
        throw err;
      }
      this.#onRequest?.("GetObject", seconds(), false);
      const head = headOf(key, (name) => h.get(name), h.keys());
      // A ranged answer's Content-Length is the range's: the total is in Content-Range.
      const total = /\/(\d+)$/.exec(h.get("content-range") ?? "")?.[1];
      if (total !== undefined) head.size = Number(total);
      return { head, body: res.body };
    }, {
      attempts: ATTEMPTS,
      backoff: REQUEST_BACKOFF,
      isRetryable: isTransient,
      ...(signal ? { signal } : {}),
    });
  }

  /**
   * PUT of a body held in memory or of a file range; `headers` carry
   * Content-MD5, metadata and the like.
   */
  async put(
    key: string,
    body: Body,
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<void> {
    await this.#send("PutObject", "PUT", key, {}, headers, body, signal);
  }

  /** One part of a multipart upload; returns the part's ETag for the completion. */
  async uploadPart(
    key: string,
    uploadId: string,
    partNumber: number,
    body: Body,
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<string> {
    const query = { partNumber: String(partNumber), uploadId };
    const res = await this.#send("UploadPart", "PUT", key, query, headers, body, signal);
    return String(res.headers["etag"] ?? "");
  }

  close(): void {
    this.#http.close();
    this.#httpAgent.destroy();
    this.#httpsAgent.destroy();
  }

  #resolve(): Promise<BucketEndpoint | null> {
    this.#endpoint ??= (async () => {
      const config = this.#client.config;
      const region = await config.region();
      const endpoint = await config.endpointProvider({
        Bucket: this.#bucket,
        Region: region,
        UseFIPS: await config.useFipsEndpoint(),
        UseDualStack: await config.useDualstackEndpoint(),
        ForcePathStyle: config.forcePathStyle ?? false,
        Accelerate: config.useAccelerateEndpoint ?? false,
        ...(config.endpoint ? { Endpoint: endpointUrl(await config.endpoint()) } : {}),
      });
      const schemes = (endpoint.properties?.authSchemes ?? []) as {
        name?: string;
        signingRegion?: string;
      }[];
      const scheme = schemes[0];
      if (scheme && scheme.name !== "sigv4") return null;
      this.#signer = new SignatureV4({
        service: "s3",
        region,
        credentials: config.credentials,
        // The client's own hash constructor (node:crypto SHA-256 and HMAC).
        sha256: config.sha256,
        uriEscapePath: false,
        applyChecksum: false,
      });
      return { url: endpoint.url, signingRegion: scheme?.signingRegion ?? region };
    })().catch((err) => {
      // The SDK path reports whatever is wrong (a bucket name its rules
      // refuse, say) in its own words; direct requests just stand aside.
      log.debug("direct S3 requests not used", { error: errorMessage(err) });
      return null;
    });
    return this.#endpoint;
  }

  /** The encoded request target and signing input of a request. */
  async #prepare(
    method: string,
    key: string,
    query: Record<string, string>,
    extraHeaders: Record<string, string>,
    body: Body | undefined,
  ) {
    const endpoint = await this.#resolve();
    if (!endpoint) throw new Error("direct S3 requests are not usable for this endpoint");
    const base = endpoint.url;
    const path = `${base.pathname.replace(/\/$/, "")}/${escapeKey(key)}`;
    // Sent encoded as the signer encodes it for the canonical request (RFC 3986).
    const search = Object.keys(query).sort().map((name) =>
      `${escapeComponent(name)}=${escapeComponent(query[name]!)}`
    ).join("&");
    const target = search ? `${path}?${search}` : path;
    const request = {
      method,
      protocol: base.protocol,
      hostname: base.hostname,
      ...(base.port ? { port: Number(base.port) } : {}),
      path,
      query,
      headers: {
        host: base.host,
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        ...(body ? { "content-length": String(bodyLength(body)) } : {}),
        ...extraHeaders,
      },
    };
    // Signed again on every attempt: the signature covers the time.
    const sign = async () =>
      (await this.#signer!.sign(request, { signingRegion: endpoint.signingRegion }))
        .headers as Record<string, string>;
    return { base, target, sign };
  }

  async #send(
    operation: string,
    method: string,
    key: string,
    query: Record<string, string>,
    extraHeaders: Record<string, string>,
    body: Body | undefined,
    signal?: AbortSignal,
  ): Promise<{ status: number; headers: IncomingMessage["headers"] }> {
    const { base, target, sign } = await this.#prepare(method, key, query, extraHeaders, body);
    return await retry(async () => {
      const started = performance.now();
      let res;
      try {
        res = await this.#exchange(base, method, target, await sign(), body, signal);
      } catch (err) {
        this.#onRequest?.(operation, (performance.now() - started) / 1000, true);
        throw err;
      }
      const failed = res.status >= 300 && !(method === "HEAD" && res.status === 404);
      this.#onRequest?.(operation, (performance.now() - started) / 1000, failed);
      if (failed) throw responseError(res.status, res.body, method);
      return res;
    }, {
      attempts: ATTEMPTS,
      backoff: REQUEST_BACKOFF,
      isRetryable: isTransient,
      ...(signal ? { signal } : {}),
    });
  }

  /** One HTTP exchange; resolves with the status, headers and (error) body. */
  #exchange(
    base: URL,
    method: string,
    path: string,
    headers: Record<string, string>,
    body: Body | undefined,
    signal?: AbortSignal,
  ): Promise<{ status: number; headers: IncomingMessage["headers"]; body: string }> {
    const https = base.protocol === "https:";
    return new Promise((resolve, reject) => {
      const req = (https ? httpsRequest : httpRequest)({
        method,
        hostname: base.hostname,
        port: base.port || (https ? 443 : 80),
        path,
        headers,
        agent: https ? this.#httpsAgent : this.#httpAgent,
        ...(signal ? { signal } : {}),
      }, (res) => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        // Only error answers have a body worth reading (a short XML document).
        res.on("data", (chunk: Buffer) => {
          if (status >= 300) chunks.push(chunk);
        });
        res.on("end", () => {
          // S3 may refuse a body before it has all been sent: stop sending it.
          if (status >= 300 && !req.writableFinished) req.destroy();
          resolve({ status, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") });
        });
        res.on("error", reject);
      });
      req.setNoDelay(true);
      // A socket silent this long is treated as a network error (retried).
      req.setTimeout(this.#idleTimeoutMs, () => {
        req.destroy(Object.assign(new Error("S3 request timed out"), { code: "ETIMEDOUT" }));
      });
      req.on("error", reject);
      if (body === undefined || body instanceof Uint8Array) {
        req.end(body);
      } else {
        sendFileRange(req, body).catch((err) => req.destroy(err));
      }
    });
  }
}

/** The facts HEAD and GET answers share, from their (lower-case) headers. */
function headOf(
  key: string,
  header: (name: string) => string | undefined,
  names: Iterable<string>,
): ObjectHead {
  const metadata: Record<string, string> = {};
  for (const name of names) {
    const value = header(name);
    if (name.startsWith("x-amz-meta-") && value !== undefined) {
      metadata[name.slice("x-amz-meta-".length)] = value;
    }
  }
  const lastModified = header("last-modified");
  const contentType = header("content-type");
  const sse = header("x-amz-server-side-encryption");
  return {
    key,
    size: Number(header("content-length") ?? 0),
    etag: unquote(header("etag")),
    lastModified: lastModified ? new Date(lastModified) : new Date(0),
    metadata,
    ...(contentType ? { contentType } : {}),
    // S3 names the class only when it is not STANDARD.
    storageClass: header("x-amz-storage-class") ?? "STANDARD",
    ...(sse ? { serverSideEncryption: sse } : {}),
  };
}

function bodyLength(body: Body): number {
  return body instanceof Uint8Array ? body.byteLength : body.length;
}

/**
 * Writes a file range into a request. A buffer is refilled only after the
 * socket took its previous contents (the write callback), so memory is two
 * buffers per upload and reading overlaps sending, with no garbage per chunk.
 */
async function sendFileRange(req: ClientRequest, range: FileRange): Promise<void> {
  if (range.source) return await sendMadeRange(req, range);
  using file = await Deno.open(range.path, { read: true });
  await file.seek(range.start, Deno.SeekMode.Start);
  const buffers = [new Uint8Array(CHUNK_BYTES), new Uint8Array(CHUNK_BYTES)];
  const flushed: Promise<void>[] = [Promise.resolve(), Promise.resolve()];
  let sent = 0;
  for (let i = 0; sent < range.length; i ^= 1) {
    await flushed[i];
    const buffer = buffers[i]!;
    const want = Math.min(CHUNK_BYTES, range.length - sent);
    let filled = 0;
    while (filled < want) {
      const n = await file.read(buffer.subarray(filled, want));
      if (n === null) throw new Error(`File '${range.path}' became shorter while being sent`);
      filled += n;
    }
    await range.onBytes?.(filled);
    // Aborted (shutdown) or failed meanwhile: stop reading; the request's
    // own error is what the caller sees.
    if (req.destroyed) return;
    sent += filled;
    const written = new Promise<void>((resolve, reject) =>
      req.write(buffer.subarray(0, filled), (err) => err ? reject(err) : resolve())
    );
    // Awaited on the buffer's next turn or at the end; never left unhandled
    // if the request fails before that.
    written.catch(() => {});
    flushed[i] = written;
  }
  await Promise.all(flushed);
  req.end();
}

/**
 * Writes a range made by its body source into a request. Two pieces at
 * most are in the socket's hands while the source makes the next, as with
 * file ranges: waiting for each write before the next would leave the
 * socket idle between pieces.
 */
async function sendMadeRange(req: ClientRequest, range: FileRange): Promise<void> {
  const flushed: Promise<void>[] = [];
  let sent = 0;
  for await (const piece of range.source!.read({ offset: range.start, length: range.length })) {
    await range.onBytes?.(piece.byteLength);
    if (flushed.length >= 2) await flushed.shift();
    if (req.destroyed) return;
    sent += piece.byteLength;
    const written = new Promise<void>((resolve, reject) =>
      req.write(piece, (err) => err ? reject(err) : resolve())
    );
    written.catch(() => {});
    flushed.push(written);
  }
  await Promise.all(flushed);
  if (sent !== range.length) throw new Error(`Body of '${range.path}' shorter than its range`);
  req.end();
}

/** S3 keys keep their slashes; everything else is percent-encoded (RFC 3986). */
function escapeKey(key: string): string {
  return key.split("/").map(escapeComponent).join("/");
}

function escapeComponent(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function endpointUrl(
  endpoint: { protocol: string; hostname: string; port?: number; path: string },
) {
  const port = endpoint.port ? `:${endpoint.port}` : "";
  const protocol = endpoint.protocol.endsWith(":") ? endpoint.protocol : `${endpoint.protocol}:`;
  return `${protocol}//${endpoint.hostname}${port}${endpoint.path}`;
}
