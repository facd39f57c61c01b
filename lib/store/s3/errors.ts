/**
 * S3 error answers, from the SDK or from our direct requests, in one shape:
 * the SDK's (`name`, `$metadata.httpStatusCode`), so `failureReason` and the
 * one-line errors below treat both alike.
 */
import { FatalError } from "../../common/errors.ts";

/** An S3 error answer to a direct request, shaped like the SDK's errors. */
export class S3ResponseError extends Error {
  readonly $metadata: { httpStatusCode: number };
  readonly $retryable?: { throttling: boolean };
  /** What a redirect or a clock-skew answer says: `x-amz-bucket-region`, `Location`, `Date`. */
  readonly $response: { headers: Record<string, string> };
  /** The region an AuthorizationHeaderMalformed answer names. */
  Region?: string;
  constructor(name: string, status: number, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = name;
    this.$metadata = { httpStatusCode: status };
    this.$response = { headers };
    if (status === 429 || status === 503 || name === "SlowDown") {
      this.$retryable = { throttling: true };
    }
  }
}

/** The SDK's error names for bodiless answers (HEAD), else S3's own `<Code>`. */
export function responseError(
  status: number,
  body: string,
  method: string,
  headers: Map<string, string> = new Map(),
): S3ResponseError {
  const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(body)?.[1];
  const name = code ?? (
    status === 403
      ? "Forbidden"
      : status === 404
      ? "NotFound"
      : status === 301
      ? "PermanentRedirect"
      : status === 503
      ? "SlowDown"
      : status >= 500
      ? "InternalError"
      : `Http${status}`
  );
  const err = new S3ResponseError(
    name,
    status,
    message ?? `${method} answered HTTP ${status} (${name})`,
    Object.fromEntries(headers),
  );
  const region = /<Region>([^<]*)<\/Region>/.exec(body)?.[1];
  if (region) err.Region = region;
  return err;
}

/**
 * True when an error's name says only that S3 answered, not why: a HEAD's
 * answer has no body, so our requests name a bare 403 "Forbidden" and the
 * SDK names it "Unknown" (message "UnknownError"), or by its status.
 */
export function namesNoCode(name: string | undefined): boolean {
  return !name || /^(Error|Forbidden|Unknown|UnknownError|\d+)$/.test(name);
}

/** What was asked when an error came back: named in the one-line errors. */
export interface S3Request {
  /** The IAM action it needs (`s3:ListBucket`, `s3:PutObject`...). */
  action: string;
  /** The key, or for a listing the prefix. */
  key?: string | undefined;
  prefix?: string | undefined;
  /** The storage class a write asked for, if not STANDARD. */
  storageClass?: string | undefined;
}

/**
 * The one-line `FatalError` for errors that waiting will not fix (no bucket,
 * bad credentials, denied, wrong region, no credentials at all), else null.
 * Every 403 starts "Access to bucket 'B' denied (HTTP 403)"; with `request`
 * it says which action on which prefix a policy refused.
 */
export function permanentError(
  err: unknown,
  bucket: string,
  region: string,
  request?: S3Request,
): FatalError | null {
  const status = httpStatus(err);
  const name = errorName(err);
  if (status === 404 || name === "NoSuchBucket" || name === "NotFound") {
    return new FatalError(`Bucket '${bucket}' does not exist`);
  }
  if (isCredentialError(name)) {
    return new FatalError(
      `Access to bucket '${bucket}' denied (HTTP 403): S3 rejected the credentials (${name})`,
    );
  }
  if (status === 403 || name === "AccessDenied") {
    const what = request ? ` for ${describe(request)}` : "";
    return new FatalError(
      `Access to bucket '${bucket}' denied (HTTP 403)${what}: check the credentials' IAM policy and the bucket policy`,
    );
  }
  if (status === 301 || name === "PermanentRedirect") {
    // Reached only when S3 named no region to follow.
    return new FatalError(
      `Bucket '${bucket}' is in another region than '${region}' and S3 did not say which: set --aws-region`,
    );
  }
  if (name === "CredentialsProviderError") {
    return new FatalError(
      "No AWS credentials found: pass -k/-s, set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role",
    );
  }
  return null;
}

/**
 * Rewrites the message of a 403 answer to say which action on which key was
 * refused (S3's own is only "Access Denied", and a HEAD's answer has none),
 * and the KMS action when S3 was refused the object's KMS key (AWS names it
 * in its message), keeping the error's name and status, which retries and
 * metrics go by. A GET of an archived object (403 InvalidObjectState)
 * becomes a `FatalError` saying so: no wait and no policy fixes it. A write
 * in a storage class answered by a bare 400 InvalidArgument (Ceph RGW's for
 * a class its placement lacks) names the class. Other errors are returned
 * unchanged.
 */
export function namedDenial(err: unknown, request: S3Request): unknown {
  if (!(err instanceof Error)) return err;
  const status = httpStatus(err);
  const name = errorName(err);
  if (
    status === 400 && name === "InvalidArgument" && request.storageClass &&
    /^(UnknownError)?$/.test(err.message)
  ) {
    err.message = `${describe(request)} refused (HTTP 400): the server may not offer ` +
      `storage class ${request.storageClass}`;
    return err;
  }
  if (status !== 403 && name !== "AccessDenied") return err;
  if (name === "InvalidObjectState") {
    return new FatalError(
      `'${request.key}' is in an archive storage class: S3 serves it only after a restore ` +
        "request (aws s3api restore-object), which takes hours",
    );
  }
  // A HEAD's 403 has no body: the status is all that is known.
  const code = namesNoCode(name) ? "" : `${name}, `;
  const kms = /\bkms:[A-Za-z]+/.exec(err.message)?.[0];
  err.message = isCredentialError(name)
    ? `S3 rejected the credentials (${name}) for ${describe(request)}`
    : `${describe(request)} denied (${code}HTTP 403)` +
      (kms ? `: ${kms} on the object's KMS key is not allowed` : "");
  return err;
}

function describe(request: S3Request): string {
  if (request.key !== undefined) return `${request.action} on '${request.key}'`;
  if (request.prefix) return `${request.action} under '${request.prefix}'`;
  return request.action;
}

/** S3 refused the keys themselves (unknown, expired, or not matching the signature). */
export function isCredentialError(name: string): boolean {
  return name === "InvalidAccessKeyId" || name === "SignatureDoesNotMatch" ||
    name === "ExpiredToken" || name === "InvalidToken";
}

/**
 * True when a per-key error of DeleteObjects is Object Lock (or a legal
 * hold) keeping that version. S3 says so only in the message: the code is
 * the same AccessDenied a policy gives ("Access Denied because object
 * protected by object lock.").
 */
export function isLockRefusal(code: string | undefined, message: string | undefined): boolean {
  return code === "AccessDenied" && /object lock|legal hold|retention/i.test(message ?? "");
}

/** True for "no such key" answers (HEAD's bare 404, GET's NoSuchKey). */
export function isNoSuchKey(err: unknown): boolean {
  const name = errorName(err);
  return httpStatus(err) === 404 || name === "NotFound" || name === "NoSuchKey";
}

/** The HTTP status of an SDK error, if it has one. */
export function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : "";
}

/** An ETag without its quotes. */
export function unquote(etag: string | undefined): string {
  return (etag ?? "").replace(/^"|"$/g, "");
}
