/**
 * How the S3 store is configured (every field optional but the bucket: the
 * SDK's default chain fills in), and the facts HEAD and GET answers share,
 * whether they came through the SDK or as direct requests.
 */
import type { ObjectStorage } from "../object_storage.ts";
import type { ObjectHead } from "../store.ts";
import { unquote } from "./errors.ts";
import type { ProxySettings } from "./transport/proxy.ts";

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
  /** PEM certificates trusted besides the system roots (CA bundles). */
  caCerts?: string[] | undefined;
  /** The proxies requests go through (HTTPS_PROXY, NO_PROXY...). */
  proxy?: ProxySettings | undefined;
  /** Path-style addressing even without an endpoint (an S3-compatible server on a host name). */
  forcePathStyle?: boolean | undefined;
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

/** The facts HEAD and GET responses share. */
export function objectHead(
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

/** The facts HEAD and GET answers share, from their (lower-case) headers. */
export function headOf(
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
