/**
 * The watcher's options for how S3 keeps its objects: storage classes and
 * server-side encryption, the original's `-R` and `--with-sse` among them.
 */
import { UsageError } from "../common/errors.ts";
import {
  type ObjectStorage,
  parseServerSideEncryption,
  parseStorageClass,
} from "../store/object_storage.ts";
import type { OptionTable, OptionValues } from "./options.ts";

const STORAGE = "Storage class and server-side encryption (S3)";

export const STORAGE_OPTIONS = {
  "storage-class": {
    group: STORAGE,
    kind: "text",
    arg: "CLASS",
    help: "class of file objects from 128 KiB: STANDARD_IA,\n" +
      "ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR or STANDARD\n" +
      "(GLACIER, DEEP_ARCHIVE refused: no GET before a restore)",
  },
  "small-object-class": {
    group: STORAGE,
    kind: "text",
    arg: "CLASS",
    help: "class of smaller files and of indexes (IA classes\n" +
      "bill each object as 128 KiB at least) (default STANDARD)",
  },
  "reduced-redundancy": {
    group: STORAGE,
    kind: "flag",
    short: "R",
    help: "legacy: every object in REDUCED_REDUNDANCY",
  },
  sse: {
    group: STORAGE,
    kind: "text",
    arg: "ALGORITHM",
    help: "server-side encryption of every object: AES256 or aws:kms",
  },
  "sse-kms-key-id": {
    group: STORAGE,
    kind: "text",
    arg: "KEY",
    help: "with --sse aws:kms: the KMS key (id, ARN or alias/NAME;\n" +
      "default the account's aws/s3 key)",
  },
  "with-sse": { group: STORAGE, kind: "flag", help: "the original's spelling of --sse AES256" },
} as const satisfies OptionTable;

/**
 * The storage settings the options ask for (pure). `-R` is the original's
 * REDUCED_REDUNDANCY for every object, indexes included, unless a class is
 * named; it and `--storage-class` exclude each other. The new options need
 * an S3 bucket (a local store keeps no class); `-R` and `--with-sse` are
 * ignored there, as before.
 */
export function objectStorageOf(
  values: OptionValues<typeof STORAGE_OPTIONS>,
  bucket: string,
): ObjectStorage {
  const given = values["storage-class"];
  const givenSmall = values["small-object-class"];
  if (values["reduced-redundancy"] && given !== undefined) {
    throw new UsageError(
      "Options '-R/--reduced-redundancy' and '--storage-class' exclude each other",
    );
  }
  const local = bucket.startsWith("file://");
  for (const name of ["storage-class", "small-object-class", "sse", "sse-kms-key-id"] as const) {
    if (local && values[name] !== undefined) {
      throw new UsageError(`Option '--${name}' needs an S3 bucket, not a local store`);
    }
  }
  const legacy = values["reduced-redundancy"] ? "REDUCED_REDUNDANCY" : undefined;
  const storageClass = given === undefined ? legacy : parseStorageClass(given, "--storage-class");
  const smallObjectClass = givenSmall === undefined
    ? legacy
    : parseStorageClass(givenSmall, "--small-object-class");
  const sse = parseServerSideEncryption(
    values.sse,
    values["sse-kms-key-id"],
    values["with-sse"],
  );
  return {
    ...(storageClass ? { storageClass } : {}),
    ...(smallObjectClass ? { smallObjectClass } : {}),
    ...(sse ? { sse } : {}),
  };
}
