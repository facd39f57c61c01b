/**
 * One classification of failures, for retries, logs and metrics: every
 * error an upload, a request or a download can meet becomes one short
 * reason label. Reads the AWS SDK's `name` and `$metadata.httpStatusCode`
 * (our direct requests' `S3ResponseError` has the same shape), Node-style
 * `code`s and Deno's error classes, following `cause` chains.
 */

/** Every label `failureReason()` returns (metrics export each from the start, at 0). */
export const FAILURE_REASONS = [
  "network",
  "throttled",
  "server_error",
  "access_denied",
  "changed",
  "other",
] as const;

export type FailureReason = typeof FAILURE_REASONS[number];

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "ESOCKETTIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
]);
const NETWORK_NAMES = new Set([
  "TimeoutError",
  "RequestTimeout",
  "RequestTimeoutException",
  "ConnectionRefused",
  "ConnectionReset",
  "ConnectionAborted",
  "TimedOut",
  "NetworkingError",
]);
const THROTTLED_NAMES = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "TooManyRequests",
  "TooManyRequestsException",
  "RequestLimitExceeded",
  "ServiceUnavailable",
]);
const ACCESS_NAMES = new Set([
  "AccessDenied",
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "ExpiredToken",
  "InvalidToken",
  "TokenRefreshRequired",
  "AllAccessDisabled",
  "CredentialsProviderError",
]);
const CHANGED_NAMES = new Set(["FileChangedError", "DigestMismatchError", "BadDigest"]);

/**
 * The reason label of an error: "network", "throttled", "server_error",
 * "access_denied", "changed" (the file changed during its upload) or "other".
 */
export function failureReason(err: unknown): FailureReason {
  const seen = new Set<unknown>();
  for (let e = err; typeof e === "object" && e !== null && !seen.has(e); e = causeOf(e)) {
    seen.add(e);
    const reason = reasonOf(e);
    if (reason) return reason;
  }
  return "other";
}

function reasonOf(e: object): FailureReason | undefined {
  const name = stringField(e, "name");
  const code = stringField(e, "code");
  const metadata = (e as { $metadata?: { httpStatusCode?: unknown } }).$metadata;
  const status = typeof metadata?.httpStatusCode === "number" ? metadata.httpStatusCode : 0;
  if (NETWORK_CODES.has(code) || NETWORK_NAMES.has(name) || NETWORK_NAMES.has(code)) {
    return "network";
  }
  if (CHANGED_NAMES.has(name) || CHANGED_NAMES.has(code)) return "changed";
  const throttling = (e as { $retryable?: { throttling?: unknown } }).$retryable?.throttling;
  if (status === 503 || status === 429 || THROTTLED_NAMES.has(name) || throttling === true) {
    return "throttled";
  }
  if (status === 403 || ACCESS_NAMES.has(name) || ACCESS_NAMES.has(code)) return "access_denied";
  if (status >= 500 || name === "InternalError") return "server_error";
  return undefined;
}

function causeOf(e: object): unknown {
  return (e as { cause?: unknown }).cause;
}

function stringField(e: object, field: string): string {
  const value = (e as Record<string, unknown>)[field];
  return typeof value === "string" ? value : "";
}

/** Failures that another attempt a moment later may cure. */
export function isTransient(err: unknown): boolean {
  const reason = failureReason(err);
  return reason === "network" || reason === "throttled" || reason === "server_error";
}
