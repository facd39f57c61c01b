/**
 * The options every job takes, written once: how to reach the bucket, and
 * how keys are named (which must match what the watcher was run with).
 */
import { UsageError } from "../common/errors.ts";
import { fullyQualifiedHostname } from "../common/hostname.ts";
import type { KeyNaming } from "../bucket/keys.ts";
import { type AgeIdentities, readIdentities } from "../store/age_keys.ts";
import type { Connection } from "../store/open_store.ts";
import type { OptionTable, OptionValues } from "./options.ts";

export const CONNECTION_OPTIONS = {
  "aws-key": {
    group: "Connection",
    kind: "text",
    short: "k",
    arg: "KEY",
    help: "AWS access key id (default: AWS_ACCESS_KEY_ID, else the SDK chain)",
  },
  "aws-secret": {
    group: "Connection",
    kind: "text",
    short: "s",
    arg: "SECRET",
    help: "AWS secret key (default: AWS_SECRET_ACCESS_KEY); prefer the\n" +
      "environment: flags are visible in process listings",
  },
  "aws-token": {
    group: "Connection",
    kind: "text",
    arg: "TOKEN",
    help: "session token (default: AWS_SESSION_TOKEN or AWS_SECURITY_TOKEN)",
  },
  "aws-region": {
    group: "Connection",
    kind: "text",
    arg: "REGION",
    help: "region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)",
  },
  "endpoint-url": {
    group: "Connection",
    kind: "text",
    arg: "URL",
    help: "S3-compatible endpoint, path-style addressing\n" +
      "(default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL)",
  },
  "ca-bundle": {
    group: "Connection",
    kind: "text",
    arg: "FILE",
    help: "PEM certificates to trust besides the system's, for a private CA\n" +
      "(default: AWS_CA_BUNDLE, else the profile's ca_bundle)",
  },
  "force-path-style": {
    group: "Connection",
    kind: "flag",
    help: "address the bucket in the path, not the host name (default:\n" +
      "AWS_S3_FORCE_PATH_STYLE, the profile's s3 addressing_style)",
  },
} as const satisfies OptionTable;

/** `--identity`, for the jobs that read file bodies (slurp, verify). */
export const IDENTITY_OPTIONS = {
  identity: {
    group: "Encryption",
    kind: "text",
    arg: "FILE",
    help: "age identity file (AGE-SECRET-KEY-1..., as age-keygen writes it)\n" +
      "to decrypt objects the watcher encrypted with --encrypt-to",
  },
} as const satisfies OptionTable;

/** The identities `--identity` names, read and checked now (a usage error otherwise). */
export function identitiesOf(
  values: OptionValues<typeof IDENTITY_OPTIONS>,
): AgeIdentities | undefined {
  const file = values.identity;
  if (file === undefined) return undefined;
  if (file === "") throw new UsageError("Option '--identity' needs a file path");
  return readIdentities(file);
}

/** The key naming options, listed in --help under `group`. */
export function namingOptions<G extends string>(group: G) {
  return {
    prefix: {
      group,
      kind: "text",
      short: "p",
      arg: "PREFIX",
      help: "string before every key (default none)",
    },
    name: {
      group,
      kind: "text",
      short: "n",
      arg: "NAME",
      help: "host name in keys (default this host's FQDN)",
    },
    "keyname-separator": {
      group,
      kind: "text",
      arg: "SEP",
      help: "between name and path",
      default: ":",
    },
  } as const satisfies OptionTable;
}

type NamingValues = OptionValues<ReturnType<typeof namingOptions>>;

/** Said once below the options of every job. */
export const BUCKET_NOTE = "BUCKET may be file:///some/dir to use a local directory instead of S3.";

/** The connection flags as the store opener takes them; key and secret go together. */
export function connectionOf(values: OptionValues<typeof CONNECTION_OPTIONS>): Connection {
  if ((values["aws-key"] === undefined) !== (values["aws-secret"] === undefined)) {
    throw new UsageError("Options '--aws-key' and '--aws-secret' go together");
  }
  return {
    accessKeyId: values["aws-key"],
    secretAccessKey: values["aws-secret"],
    sessionToken: values["aws-token"],
    region: values["aws-region"],
    endpoint: values["endpoint-url"],
    caBundle: values["ca-bundle"],
    forcePathStyle: values["force-path-style"] || undefined,
  };
}

/** Key naming as given; `name` undefined means this host's FQDN (resolved by the runner). */
export interface NamingFlags {
  prefix: string;
  name: string | undefined;
  separator: string;
}

export function namingOf(values: NamingValues): NamingFlags {
  return {
    prefix: values.prefix ?? "",
    name: values.name,
    separator: values["keyname-separator"],
  };
}

/** The naming, with the host's FQDN looked up when no name was given (DNS). */
export async function resolveNaming(flags: NamingFlags): Promise<KeyNaming> {
  return {
    prefix: flags.prefix,
    name: flags.name ?? await fullyQualifiedHostname(),
    separator: flags.separator,
  };
}
