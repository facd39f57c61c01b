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
  constructor(name: string, status: number, message: string) {
    super(message);
    this.name = name;
    this.$metadata = { httpStatusCode: status };
    if (status === 429 || status === 503 || name === "SlowDown") {
      this.$retryable = { throttling: true };
    }
  }
}

/** The SDK's error names for bodiless answers (HEAD), else S3's own `<Code>`. */
export function responseError(status: number, body: string, method: string): S3ResponseError {
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
  return new S3ResponseError(
    name,
    status,
    message ?? `${method} answered HTTP ${status} (${name})`,
  );
}

/**
 * The one-line `FatalError` for errors that waiting will not fix (no bucket,
 * bad credentials, denied, wrong region, no credentials at all), else null.
 */
export function permanentError(err: unknown, bucket: string, region: string): FatalError | null {
  const status = httpStatus(err);
  const name = errorName(err);
  if (status === 404 || name === "NoSuchBucket" || name === "NotFound") {
    return new FatalError(`Bucket '${bucket}' does not exist`);
  }
  if (name === "InvalidAccessKeyId" || name === "SignatureDoesNotMatch") {
    return new FatalError(`S3 rejected the credentials for bucket '${bucket}': ${name}`);
  }
  if (status === 403 || name === "AccessDenied") {
    return new FatalError(
      `Access to bucket '${bucket}' denied (HTTP 403): check the credentials and the bucket policy`,
    );
  }
  if (status === 301 || name === "PermanentRedirect") {
    return new FatalError(
      `Bucket '${bucket}' is in another region than '${region}': set --aws-region`,
    );
  }
  if (name === "CredentialsProviderError") {
    return new FatalError(
      "No AWS credentials found: pass -k/-s, set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role",
    );
  }
  return null;
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
