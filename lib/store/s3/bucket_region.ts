/**
 * Where the bucket really is, and the clock S3 keeps: the answers real S3
 * gives that a local server never does, handled once for the SDK's
 * requests and ours alike.
 *
 * Region: a bucket in another region than the configured one answers 301
 * `PermanentRedirect` with `x-amz-bucket-region` (a HEAD has only the
 * header), or 400 `AuthorizationHeaderMalformed` naming the region in its
 * body. The store then switches to that region for good (logged once) and
 * sends the request again; the SDK's own `followRegionRedirects` would
 * redirect every request anew. A 307 `TemporaryRedirect` (a new bucket
 * while DNS catches up) is followed to its `Location` once.
 *
 * Clock: `RequestTimeTooSkewed` means our clock is off by more than 15
 * minutes; the offset is taken from the answer's `Date` and every later
 * request is signed with it (the SDK keeps the same `systemClockOffset`).
 */
import { log } from "../../common/log.ts";
import { httpStatus } from "./errors.ts";

export class BucketRegion {
  readonly #bucket: string;
  #region: string;

  constructor(bucket: string, region: string) {
    this.#bucket = bucket;
    this.#region = region;
  }

  get current(): string {
    return this.#region;
  }

  /**
   * True when `err` is a redirect naming the bucket's region: the store
   * switches to it (if it has not already) and the request may be sent again.
   */
  follow(err: unknown): boolean {
    const region = redirectRegion(err);
    if (region === undefined) return false;
    if (region !== this.#region) {
      log.warn("the bucket is in another region: switching to it", {
        bucket: this.#bucket,
        configured: this.#region,
        region,
      });
      this.#region = region;
    }
    return true;
  }
}

/** The region a redirect answer names, if any. */
export function redirectRegion(err: unknown): string | undefined {
  const status = httpStatus(err);
  const name = err instanceof Error ? err.name : "";
  const header = headersOf(err)["x-amz-bucket-region"];
  const named = (err as { Region?: unknown }).Region;
  const region = header ?? (typeof named === "string" ? named : undefined);
  if (region === undefined || !/^[a-z0-9-]{1,40}$/.test(region)) return undefined;
  if (status === 301 || status === 307) return region;
  if (
    status === 400 &&
    /^(AuthorizationHeaderMalformed|IllegalLocationConstraintException)$/.test(name)
  ) {
    return region;
  }
  return undefined;
}

/** The host a 307 answer sends the request on to, if any. */
export function temporaryRedirectHost(err: unknown): string | undefined {
  if (httpStatus(err) !== 307) return undefined;
  const location = headersOf(err)["location"];
  const url = location ? URL.parse(location) : null;
  return url?.protocol === "https:" || url?.protocol === "http:" ? url.host : undefined;
}

/**
 * The clock offset (server minus local, ms) a `RequestTimeTooSkewed` (or
 * `RequestExpired`) answer implies, from its `Date` header.
 */
export function skewOffset(err: unknown): number | undefined {
  const name = err instanceof Error ? err.name : "";
  if (!/^(RequestTimeTooSkewed|RequestExpired|RequestInTheFuture)$/.test(name)) return undefined;
  const date = Date.parse(headersOf(err)["date"] ?? "");
  return Number.isNaN(date) ? undefined : date - Date.now();
}

function headersOf(err: unknown): Record<string, string | undefined> {
  return (err as { $response?: { headers?: Record<string, string> } })?.$response?.headers ?? {};
}
