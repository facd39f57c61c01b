/**
 * The store a BUCKET argument names: `file:///dir` is a `LocalStore`,
 * anything else an S3 bucket. Credentials: the given ones (flags), then
 * AWS_* variables (including the original's AWS_SECURITY_TOKEN), then the
 * SDK's default chain (profiles, SSO, instance roles through IMDSv2).
 */
import { UsageError } from "../common/errors.ts";
import { LocalStore } from "./local_store.ts";
import { networkOptions } from "./s3/network_options.ts";
import { type S3Options, S3Store } from "./s3/s3_store.ts";
import type { Store } from "./store.ts";

/** How to reach the bucket, as given on the command line; unset fields come from the environment. */
export interface Connection {
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  sessionToken?: string | undefined;
  region?: string | undefined;
  endpoint?: string | undefined;
  /** `--ca-bundle`: a PEM file of CAs trusted besides the system roots. */
  caBundle?: string | undefined;
  /** `--force-path-style`. */
  forcePathStyle?: boolean | undefined;
}

/** Extra S3 behaviour only the watcher sets (a local store ignores it). */
export type UploadTuning = Pick<
  S3Options,
  "objectStorage" | "onRequest" | "objectLock" | "checkPrefix"
>;

export type { ObjectLockRetention } from "./s3/s3_store.ts";

/** Refuses a BUCKET argument that is neither a bucket name nor `file:///dir` (pure). */
export function checkBucketArgument(bucket: string): void {
  if (bucket.startsWith("file://")) {
    if (!localStorePath(bucket).startsWith("/")) {
      throw new UsageError(`Local store URL '${bucket}' needs an absolute path (file:///dir)`);
    }
    return;
  }
  if (bucket === "" || bucket.includes("/")) {
    throw new UsageError(`Invalid bucket name '${bucket}' (use file:///dir for a local store)`);
  }
}

/**
 * Opens the store; reads AWS_*, the proxy variables, TABLESNAP_DIRECT_REQUESTS
 * and the CA bundles. Requires `--allow-env` and `--allow-read`.
 */
export function openStore(
  bucket: string,
  connection: Connection,
  tuning: UploadTuning = {},
): Store {
  checkBucketArgument(bucket);
  if (bucket.startsWith("file://")) return new LocalStore(localStorePath(bucket));
  const env = (name: string) => Deno.env.get(name) || undefined;
  const endpoint = connection.endpoint ?? env("AWS_ENDPOINT_URL_S3") ?? env("AWS_ENDPOINT_URL");
  if (endpoint !== undefined && !URL.canParse(endpoint)) {
    throw new UsageError(`Invalid endpoint URL '${endpoint}'`);
  }
  const options: S3Options = {
    bucket,
    region: connection.region ?? env("AWS_REGION") ?? env("AWS_DEFAULT_REGION") ?? "us-east-1",
    ...tuning,
    ...networkOptions(connection, env, endpoint !== undefined),
  };
  if (endpoint) options.endpoint = endpoint;
  // An escape hatch: every request through the SDK, should a server dislike ours.
  if (env("TABLESNAP_DIRECT_REQUESTS") === "0") options.directRequests = false;
  const accessKeyId = connection.accessKeyId ?? env("AWS_ACCESS_KEY_ID");
  const secretAccessKey = connection.secretAccessKey ?? env("AWS_SECRET_ACCESS_KEY");
  if (accessKeyId && secretAccessKey) {
    options.accessKeyId = accessKeyId;
    options.secretAccessKey = secretAccessKey;
    const token = connection.sessionToken ?? env("AWS_SESSION_TOKEN") ??
      env("AWS_SECURITY_TOKEN");
    if (token) options.sessionToken = token;
  }
  return new S3Store(options);
}

function localStorePath(url: string): string {
  return decodeURIComponent(url.slice("file://".length));
}
