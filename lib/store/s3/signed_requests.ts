/**
 * Direct requests' addressing and signatures: the bucket's endpoint from
 * the SDK's own rules (resolved once per region: a region redirect moves
 * it), and AWS's `SignatureV4` signer with the SDK client's credentials and
 * clock offset. The body is covered by Content-MD5, so the payload itself is
 * sent as UNSIGNED-PAYLOAD (as the SDK does over HTTPS).
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { SignatureV4 } from "@smithy/signature-v4";
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import type { BucketRegion } from "./bucket_region.ts";
import { bodyLength, type RequestBody } from "./transport/request_body.ts";
import { escapeUri } from "./transport/sdk_handler.ts";

/** Where the bucket's objects live and how requests to it are signed. */
interface BucketEndpoint {
  region: string;
  url: URL;
  signingRegion: string;
  signer: SignatureV4;
}

/** A request ready to send: where, and its headers signed anew on every attempt. */
export interface PreparedRequest {
  url: URL;
  target: string;
  sign(): Promise<Record<string, string>>;
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

  /** The encoded target and the signing of a request; `host` overrides the endpoint's (a 307). */
  async prepare(
    method: string,
    key: string,
    query: Record<string, string>,
    extraHeaders: Record<string, string>,
    body: RequestBody | undefined,
    host?: string,
  ): Promise<PreparedRequest> {
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
      },
    };
    const config = this.#client.config as { systemClockOffset?: number };
    // Signed again on every attempt: the signature covers the time, which
    // follows S3's clock when ours is off (the SDK keeps the offset).
    const sign = async () => {
      const signingDate = new Date(Date.now() + (config.systemClockOffset ?? 0));
      const signed = await endpoint.signer.sign(request, {
        signingRegion: endpoint.signingRegion,
        signingDate,
      });
      return signed.headers as Record<string, string>;
    };
    return { url, target: search ? `${path}?${search}` : path, sign };
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
