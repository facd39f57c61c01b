/**
 * Signed S3 requests without the SDK's middleware stack, for the calls whose
 * cost is paid per file or per byte: PUT (a body in memory, a file streamed
 * from disk, or one multipart part), HEAD, and GET. Through `S3Client.send`
 * each costs about 1 ms of CPU and 2-3 ms of latency more than the request
 * itself (serialisation, endpoint rules, retries, logging, parsing:
 * measured against a local server), which was most of the CPU of 10,000
 * small files and most of close->visible latency. They go out through the
 * same transport as the SDK's requests (transport/http_client.ts): file
 * bodies written from two reused buffers, GET bodies read straight into the
 * reader's own buffer (restores are bound by CPU per byte).
 *
 * Everything else stays on the SDK: listing, creating, completing and
 * aborting multipart uploads, deletes. The pieces that must be right are
 * still the SDK's (signed_requests.ts): the same client's credential chain
 * (refreshing instance roles, profiles...), its endpoint rules, and AWS's
 * `SignatureV4` signer. Retries, region redirects and clock skew are
 * handled as for the SDK's requests (bucket_region.ts).
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { retry } from "../../common/retry.ts";
import { isTransient } from "../failure.ts";
import type { ByteRange, ObjectHead } from "../store.ts";
import { type BucketRegion, skewOffset, temporaryRedirectHost } from "./bucket_region.ts";
import { responseError } from "./errors.ts";
import { type CredentialRenewal, renewalOf } from "./credential_renewal.ts";
import { ATTEMPTS, REQUEST_BACKOFF } from "./request_retry.ts";
import { headOf } from "./s3_options.ts";
import type { FileRange } from "./file_range.ts";
import { type ChunkSigner, framedLength, signedFrames } from "./signed_chunks.ts";
import { BucketSigner, type PreparedRequest } from "./signed_requests.ts";
import type { HttpClient, HttpResponse } from "./transport/http_client.ts";
import type { RequestBody } from "./transport/request_body.ts";

type Body = Uint8Array | FileRange;

/**
 * A PUT body sent as signed frames (signed_chunks.ts) rather than covered by
 * a digest header. `signedAs`: bytes of the body's length whose signatures
 * the frames carry instead of their own (the probe of whether a server
 * verifies them).
 */
export interface Streamed {
  signedAs?: Uint8Array;
}

type OnRequest = (operation: string, seconds: number, failed: boolean) => void;

/** What one request is: its signing input. */
interface Call {
  operation: string;
  method: string;
  key: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  body: Body | undefined;
  signal?: AbortSignal | undefined;
  streamed?: Streamed | undefined;
}

export class DirectS3 {
  readonly #signer: BucketSigner;
  readonly #region: BucketRegion;
  readonly #onRequest: OnRequest | undefined;
  readonly #http: HttpClient;
  readonly #renewal: CredentialRenewal;

  constructor(options: {
    client: S3Client;
    bucket: string;
    http: HttpClient;
    region: BucketRegion;
    onRequest?: OnRequest;
  }) {
    this.#region = options.region;
    this.#signer = new BucketSigner(options.client, options.bucket, options.region);
    this.#onRequest = options.onRequest;
    this.#http = options.http;
    this.#renewal = renewalOf(options.client);
  }

  /**
   * False when the bucket's endpoint needs anything but plain SigV4 (S3
   * Express, access points...): the caller then uses the SDK for everything.
   */
  async usable(): Promise<boolean> {
    return (await this.#signer.resolve()) !== null;
  }

  /** The URL objects of the bucket live under, or null when direct requests are not used. */
  async baseUrl(): Promise<string | null> {
    return (await this.#signer.resolve())?.url.href ?? null;
  }

  /** HEAD of a key: null when there is no such object. */
  async head(key: string, signal?: AbortSignal): Promise<ObjectHead | null> {
    const call = {
      operation: "HeadObject",
      method: "HEAD",
      key,
      query: {},
      headers: {},
      body: undefined,
      signal,
    };
    const res = await this.#send(call);
    if (res.status === 404) return null;
    const h = res.headers;
    return headOf(key, (name) => h.get(name), h.keys());
  }

  /**
   * GET of a key (or of a range of it): the body streams straight into the
   * reader's buffer. Null when there is no such key. Retried until an
   * answer's head is in; a failure while the body streams is the caller's
   * to retry.
   */
  async get(
    key: string,
    range: ByteRange | undefined,
    signal?: AbortSignal,
  ): Promise<{ head: ObjectHead; body: ReadableStream<Uint8Array> } | null> {
    const headers = range
      ? { range: `bytes=${range.offset}-${range.offset + range.length - 1}` }
      : {};
    const call = {
      operation: "GetObject",
      method: "GET",
      key,
      query: {},
      headers,
      body: undefined,
      signal,
    };
    const res = await this.#send(call, true);
    if (res.status === 404) return null;
    const h = res.headers;
    const head = headOf(key, (name) => h.get(name), h.keys());
    // A ranged answer's Content-Length is the range's: the total is in Content-Range.
    const total = /\/(\d+)$/.exec(h.get("content-range") ?? "")?.[1];
    if (total !== undefined) head.size = Number(total);
    return { head, body: res.body };
  }

  /**
   * PUT of a body held in memory or of a file range; `headers` carry
   * Content-MD5, metadata and the like; `streamed`: sent as signed frames.
   */
  async put(
    key: string,
    body: Body,
    headers: Record<string, string>,
    signal?: AbortSignal,
    streamed?: Streamed,
  ): Promise<void> {
    await this.#send({
      operation: "PutObject",
      method: "PUT",
      key,
      query: {},
      headers,
      body,
      signal,
      streamed,
    });
  }

  /** One part of a multipart upload; returns the part's ETag for the completion. */
  async uploadPart(
    key: string,
    uploadId: string,
    partNumber: number,
    body: Body,
    headers: Record<string, string>,
    signal?: AbortSignal,
    streamed?: Streamed,
  ): Promise<string> {
    const query = { partNumber: String(partNumber), uploadId };
    const res = await this.#send({
      operation: "UploadPart",
      method: "PUT",
      key,
      query,
      headers,
      body,
      signal,
      streamed,
    });
    return res.headers.get("etag") ?? "";
  }

  /** The transport belongs to the store, which closes it. */
  close(): void {}

  /**
   * Sends a request: retried with backoff while failures are transient;
   * sent again once after a region redirect (in the new region), a clock
   * skew (signed with S3's time), a 307 (to its Location) or refused keys
   * (with keys read anew, credential_renewal.ts). A 404 of HEAD
   * or GET is an answer; with `keepBody`, a success's body is the caller's.
   */
  async #send(call: Call, keepBody = false): Promise<HttpResponse> {
    let host: string | undefined;
    let renewed = false;
    for (let turn = 1;; turn++) {
      const signedWith = renewed ? undefined : await this.#renewal.current();
      try {
        const prepared = await this.#signer.prepare(
          call.method,
          call.key,
          call.query,
          call.headers,
          call.body,
          { host, streaming: call.streamed !== undefined },
        );
        return await retry(() => this.#attempt(call, prepared, keepBody), {
          attempts: ATTEMPTS,
          backoff: REQUEST_BACKOFF,
          isRetryable: isTransient,
          ...(call.signal ? { signal: call.signal } : {}),
        });
      } catch (err) {
        if (await this.#renewal.renewed(err, signedWith)) {
          renewed = true;
          continue;
        }
        if (turn >= 3) throw err;
        if (this.#region.follow(err)) continue;
        const offset = skewOffset(err);
        if (offset !== undefined) {
          this.#signer.correctClock(offset);
          continue;
        }
        host = temporaryRedirectHost(err);
        if (host === undefined) throw err;
      }
    }
  }

  async #attempt(call: Call, prepared: PreparedRequest, keepBody: boolean): Promise<HttpResponse> {
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    let res: HttpResponse;
    let text = "";
    try {
      const { headers, chunks } = await prepared.sign();
      res = await this.#http.request({
        url: prepared.url,
        method: call.method,
        target: prepared.target,
        headers,
        body: chunks ? framedBody(call, chunks) : call.body,
        signal: call.signal,
      });
      if (res.status >= 300) text = await new Response(res.body).text();
      else if (!keepBody) await drain(res.body);
    } catch (err) {
      this.#onRequest?.(call.operation, seconds(), true);
      throw err;
    }
    const err = res.status >= 300
      ? responseError(res.status, text, call.method, res.headers)
      : null;
    // A missing key is an answer; a missing bucket is not.
    const missing = res.status === 404 && err?.name !== "NoSuchBucket" && call.method !== "PUT";
    this.#onRequest?.(call.operation, seconds(), err !== null && !missing);
    if (err && !missing) throw err;
    return res;
  }
}

/** A call's body as signed frames, made anew for each attempt (each signed anew). */
function framedBody(call: Call, signer: ChunkSigner): RequestBody {
  const body = call.body;
  if (body === undefined) throw new Error("A streamed request needs a body");
  const signedAs = call.streamed?.signedAs;
  const frames = signedAs ? { next: () => signer.next(signedAs) } : signer;
  if (body instanceof Uint8Array) {
    return {
      chunks: signedFrames([body], body.byteLength, frames),
      length: framedLength(body.byteLength),
    };
  }
  if (!body.source) throw new Error("A streamed file range needs a body source");
  const pieces = body.source.read({ offset: body.start, length: body.length });
  return {
    chunks: signedFrames(pieces, body.length, frames, body.onBytes),
    length: framedLength(body.length),
  };
}

/** Reads a (short) answer body to its end, so that its connection can be used again. */
async function drain(body: ReadableStream<Uint8Array>): Promise<void> {
  for await (const _ of body) {
    // nothing to keep
  }
}
