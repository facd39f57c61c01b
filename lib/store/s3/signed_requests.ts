/**
 * Direct requests' addressing and signatures: the bucket's endpoint from
 * the SDK's own rules (resolved once per region: a region redirect moves
 * it), and AWS's `SignatureV4` signer with the SDK client's credentials and
 * clock offset. The body is covered by Content-MD5 (or a CRC-32), so the
 * payload itself is sent as UNSIGNED-PAYLOAD (as the SDK does over HTTPS);
 * or, asked for `streaming`, as signed frames (signed_chunks.ts), the
 * signature of each chained on the request's.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { createScope, getSigningKey, SignatureV4 } from "@smithy/signature-v4";
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import type { BucketRegion } from "./bucket_region.ts";
import { ChunkSigner, streamingHeaders } from "./signed_chunks.ts";
import { bodyLength, type RequestBody } from "./transport/request_body.ts";
import { escapeUri } from "./transport/sdk_handler.ts";

/** Where the bucket's objects live and how requests to it are signed. */
interface BucketEndpoint {
  region: string;
  url: URL;
  signingRegion: string;
  signer: SignatureV4;
}

/** A request's signed headers, and the signer of its frames when its body is streamed signed. */
export interface SignedHeaders {
  headers: Record<string, string>;
  chunks?: ChunkSigner;
}

/** A request ready to send: where, and its headers signed anew on every attempt. */
export interface PreparedRequest {
  url: URL;
  target: string;
  sign(): Promise<SignedHeaders>;
}

export class BucketSigner {
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #region: BucketRegion;
  #endpoint?: Promise<BucketEndpoint | null>;

  constructor(client: S3Client, bucket: string, region: BucketRegion) {
    this.#client = client;
    this.#bucket = bucket;
    this.#region = region;
  }

  /** The bucket's endpoint in its current region; null when it needs more than plain SigV4. */
  resolve(): Promise<BucketEndpoint | null> {
    const region = this.#region.current;
    const cached = this.#endpoint;
    if (cached) {
      return cached.then((e) => e === null || e.region === region ? e : this.#resolveAnew(region));
    }
    return this.#resolveAnew(region);
  }

  #resolveAnew(region: string): Promise<BucketEndpoint | null> {
    this.#endpoint = this.#lookUp(region).catch((err) => {
      // The SDK path reports whatever is wrong (a bucket name its rules
      // refuse, say) in its own words; direct requests just stand aside.
      log.debug("direct S3 requests not used", { error: errorMessage(err) });
      return null;
    });
    return this.#endpoint;
  }

  async #lookUp(region: string): Promise<BucketEndpoint | null> {
    const config = this.#client.config;
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
    const signer = new SignatureV4({
      service: "s3",
      region,
      credentials: config.credentials,
      // The client's own hash constructor (node:crypto SHA-256 and HMAC).
      sha256: config.sha256,
      uriEscapePath: false,
      applyChecksum: false,
    });
    return { region, url: endpoint.url, signingRegion: scheme?.signingRegion ?? region, signer };
  }

  /**
   * The encoded target and the signing of a request; `host` overrides the
   * endpoint's (a 307); `streaming`: the body goes as signed frames.
   */
  async prepare(
    method: string,
    key: string,
    query: Record<string, string>,
    extraHeaders: Record<string, string>,
    body: RequestBody | undefined,
    options: { host?: string | undefined; streaming?: boolean | undefined } = {},
  ): Promise<PreparedRequest> {
    const { host, streaming } = options;
    const endpoint = await this.resolve();
    if (!endpoint) throw new Error("direct S3 requests are not usable for this endpoint");
    const url = new URL(endpoint.url);
    if (host) url.host = host;
    const path = `${url.pathname.replace(/\/$/, "")}/${escapeKey(key)}`;
    // Sent encoded as the signer encodes it for the canonical request (RFC 3986).
    const search = Object.keys(query).sort().map((name) =>
      `${escapeUri(name)}=${escapeUri(query[name]!)}`
    ).join("&");
    const length = bodyLength(body);
    const request = {
      method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path,
      query,
      headers: {
        host: url.host,
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        ...(body !== undefined && length !== undefined ? { "content-length": String(length) } : {}),
        ...extraHeaders,
        ...(streaming ? streamingHeaders(length ?? 0) : {}),
      },
    };
    if (streaming && length === undefined) throw new Error("A streamed body needs its length");
    const config = this.#client.config as { systemClockOffset?: number };
    // Signed again on every attempt: the signature covers the time, which
    // follows S3's clock when ours is off (the SDK keeps the offset).
    const sign = async () => {
      const signingDate = new Date(Date.now() + (config.systemClockOffset ?? 0));
      const { signer, signingRegion } = endpoint;
      const signed = await signer.sign(request, { signingRegion, signingDate });
      const headers = signed.headers as Record<string, string>;
      if (!streaming) return { headers };
      return { headers, chunks: await this.#chunkSigner(headers, signingRegion) };
    };
    return { url, target: search ? `${path}?${search}` : path, sign };
  }

  /**
   * The frames' signer of a request signed with `headers`: its signature,
   * date and scope, and the signing key of the client's credentials (the
   * same provider the request was just signed with; it caches them).
   */
  async #chunkSigner(headers: Record<string, string>, region: string): Promise<ChunkSigner> {
    const seed = /Signature=([0-9a-f]{64})/.exec(headers["authorization"] ?? "")?.[1];
    const longDate = headers["x-amz-date"];
    if (!seed || !longDate) throw new Error("A streamed request was signed without a signature");
    const config = this.#client.config;
    const shortDate = longDate.slice(0, 8);
    const key = await getSigningKey(
      config.sha256,
      await config.credentials(),
      shortDate,
      region,
      "s3",
    );
    return new ChunkSigner(seed, longDate, createScope(shortDate, region, "s3"), key);
  }

  /** Takes the clock offset a skew answer implied, for every later signature (SDK's too). */
  correctClock(offsetMs: number): void {
    (this.#client.config as { systemClockOffset?: number }).systemClockOffset = offsetMs;
  }
}

/** S3 keys keep their slashes; everything else is percent-encoded (RFC 3986). */
function escapeKey(key: string): string {
  return key.split("/").map(escapeUri).join("/");
}

function endpointUrl(
  endpoint: { protocol: string; hostname: string; port?: number; path: string },
) {
  const port = endpoint.port ? `:${endpoint.port}` : "";
  const protocol = endpoint.protocol.endsWith(":") ? endpoint.protocol : `${endpoint.protocol}:`;
  return `${protocol}//${endpoint.hostname}${port}${endpoint.path}`;
}
