/**
 * Command-line plumbing shared by every job: parsing with `node:util`'s
 * `parseArgs` (the JSR `@std/cli` cannot be reached from our build hosts),
 * usage errors, numeric options, and the connection flags every job takes.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "../common/errors.ts";
import { LocalStore } from "../store/local_store.ts";
import { type S3Options, S3Store } from "../store/s3/s3_store.ts";
import type { Store } from "../store/store.ts";

export type OptionSpecs = NonNullable<ParseArgsConfig["options"]>;

/** The flags that say how to reach the bucket, the same for every job. */
export const CONNECTION_OPTIONS = {
  "aws-key": { type: "string", short: "k" },
  "aws-secret": { type: "string", short: "s" },
  "aws-token": { type: "string" },
  "aws-region": { type: "string" },
  "endpoint-url": { type: "string" },
} as const satisfies OptionSpecs;

export const CONNECTION_HELP = `Connection:
  -k, --aws-key KEY        AWS access key id (default: AWS_ACCESS_KEY_ID, else the SDK chain)
  -s, --aws-secret SECRET  AWS secret key (default: AWS_SECRET_ACCESS_KEY); prefer the
                           environment: flags are visible in process listings
  --aws-token TOKEN        session token (default: AWS_SESSION_TOKEN or AWS_SECURITY_TOKEN)
  --aws-region REGION      region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)
  --endpoint-url URL       S3-compatible endpoint, path-style addressing
                           (default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL)
BUCKET may be file:///some/dir to use a local directory instead of S3.`;

/**
 * Parses `args` strictly; any mistake becomes a `UsageError` naming it.
 * `parseArgs` messages are long and mention internals, so they are reworded.
 */
export function parseCli<T extends OptionSpecs>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const unknown = message.match(/Unknown option '([^']+)'/);
    if (unknown) throw new UsageError(`Unknown option '${unknown[1]}'`);
    const missing = message.match(/Option '([^']+)' argument missing/);
    if (missing) {
      const flag = missing[1]!.replace(/ <value>$/, "");
      throw new UsageError(`Option '${flag}' needs a value`);
    }
    const ambiguous = message.match(/Option '([^']+)' argument is ambiguous/);
    if (ambiguous) {
      throw new UsageError(
        `Option '${
          ambiguous[1]
        }' is followed by a value starting with '-': write it as --option=VALUE`,
      );
    }
    const positional = message.match(/Unexpected argument '([^']+)'/);
    if (positional) throw new UsageError(`Unexpected argument '${positional[1]}'`);
    throw new UsageError(message.split("\n")[0] ?? message);
  }
}

/** Reads a whole-number option, refusing anything else with a usage error. */
export function intOption(
  value: string | undefined,
  flag: string,
  fallback: number,
  min = 0,
): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value.trim())) {
    throw new UsageError(`Option '${flag}' needs a whole number, got '${value}'`);
  }
  const n = Number(value);
  if (n < min) throw new UsageError(`Option '${flag}' must be at least ${min}, got ${n}`);
  return n;
}

/** Reads a non-negative decimal option (seconds and the like). */
export function numberOption(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0) {
    throw new UsageError(`Option '${flag}' needs a non-negative number, got '${value}'`);
  }
  return n;
}

/** Connection flags as parsed by `parseCli` with `CONNECTION_OPTIONS`. */
export interface ConnectionValues {
  "aws-key"?: string;
  "aws-secret"?: string;
  "aws-token"?: string;
  "aws-region"?: string;
  "endpoint-url"?: string;
}

/** Extra S3 behaviour only the watcher sets. */
export type UploadTuning = Pick<
  S3Options,
  "reducedRedundancy" | "serverSideEncryption" | "onRequest"
>;

/**
 * Opens the store a BUCKET argument names: `file:///dir` is a `LocalStore`,
 * anything else an S3 bucket. Credentials: flags, then AWS_* variables
 * (including the original's AWS_SECURITY_TOKEN), then the SDK's default chain
 * (profiles, SSO, instance roles through IMDSv2).
 */
export function openStore(
  bucket: string,
  values: ConnectionValues,
  tuning: UploadTuning = {},
): Store {
  if (bucket.startsWith("file://")) {
    const path = decodeURIComponent(bucket.slice("file://".length));
    if (!path.startsWith("/")) {
      throw new UsageError(`Local store URL '${bucket}' needs an absolute path (file:///dir)`);
    }
    return new LocalStore(path);
  }
  if (bucket === "" || bucket.includes("/")) {
    throw new UsageError(`Invalid bucket name '${bucket}' (use file:///dir for a local store)`);
  }
  const env = (name: string) => Deno.env.get(name) || undefined;
  const accessKeyId = values["aws-key"] ?? env("AWS_ACCESS_KEY_ID");
  const secretAccessKey = values["aws-secret"] ?? env("AWS_SECRET_ACCESS_KEY");
  if ((values["aws-key"] === undefined) !== (values["aws-secret"] === undefined)) {
    throw new UsageError("Options '--aws-key' and '--aws-secret' go together");
  }
  const endpoint = values["endpoint-url"] ?? env("AWS_ENDPOINT_URL_S3") ?? env("AWS_ENDPOINT_URL");
  if (endpoint !== undefined && !URL.canParse(endpoint)) {
    throw new UsageError(`Invalid endpoint URL '${endpoint}'`);
  }
  const options: S3Options = {
    bucket,
    region: values["aws-region"] ?? env("AWS_REGION") ?? env("AWS_DEFAULT_REGION") ?? "us-east-1",
    ...tuning,
  };
  if (endpoint) options.endpoint = endpoint;
  // An escape hatch: every request through the SDK, should a server dislike ours.
  if (env("TABLESNAP_DIRECT_REQUESTS") === "0") options.directRequests = false;
  if (accessKeyId && secretAccessKey) {
    options.accessKeyId = accessKeyId;
    options.secretAccessKey = secretAccessKey;
    const token = values["aws-token"] ?? env("AWS_SESSION_TOKEN") ?? env("AWS_SECURITY_TOKEN");
    if (token) options.sessionToken = token;
  }
  return new S3Store(options);
}
