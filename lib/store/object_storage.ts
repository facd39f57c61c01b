/**
 * Where and how S3 keeps the objects the watcher writes: their storage
 * class and their server-side encryption (pure: no I/O).
 *
 * Two classes, by size. Objects under 128 KiB are billed as 128 KiB in the
 * infrequent-access classes and GLACIER_IR (and are never moved between
 * tiers by INTELLIGENT_TIERING), and indexes are read by every `list`,
 * `slurp` and `chop`: so small files and every index get the small-object
 * class (STANDARD unless told), and only file objects of 128 KiB or more
 * the storage class asked for.
 *
 * The archive classes (GLACIER, DEEP_ARCHIVE) are refused: an object in one
 * needs a restore request, and hours, before a GET can read it, so `slurp`
 * and `verify --md5` could not.
 */
import { UsageError } from "../common/errors.ts";

/** Objects smaller than this get the small-object class (S3's minimum billable size in IA). */
export const SMALL_OBJECT_BYTES = 128 * 1024;

/** The classes a GET reads at once; REDUCED_REDUNDANCY is `-R`'s, kept for the original's users. */
export const STORAGE_CLASSES = [
  "STANDARD",
  "STANDARD_IA",
  "ONEZONE_IA",
  "INTELLIGENT_TIERING",
  "GLACIER_IR",
  "REDUCED_REDUNDANCY",
] as const;

export type StorageClassName = typeof STORAGE_CLASSES[number];

/** Refused, with the reason. */
const ARCHIVE_CLASSES = ["GLACIER", "DEEP_ARCHIVE"];

/** Server-side encryption: S3-managed keys (AES256), or a KMS key (the account's aws/s3 one without `keyId`). */
export type ServerSideEncryption =
  | { kind: "AES256" }
  | { kind: "aws:kms"; keyId?: string | undefined };

/** The storage settings of the objects written; every field unset: S3's defaults. */
export interface ObjectStorage {
  /** For file objects of `SMALL_OBJECT_BYTES` or more. */
  storageClass?: StorageClassName | undefined;
  /** For smaller file objects and every index. */
  smallObjectClass?: StorageClassName | undefined;
  sse?: ServerSideEncryption | undefined;
}

/** What kind of object is written: a file's body of this many bytes, or an index. */
export type ObjectKind = { file: number } | "index";

/** The storage class an object of this kind gets; undefined: STANDARD (no header sent). */
export function storageClassFor(
  storage: ObjectStorage,
  kind: ObjectKind,
): StorageClassName | undefined {
  const small = kind === "index" || kind.file < SMALL_OBJECT_BYTES;
  const chosen = small ? storage.smallObjectClass : storage.storageClass;
  return chosen === "STANDARD" ? undefined : chosen;
}

/** A `--storage-class`-like value, upper-cased and checked; a usage error naming `flag` otherwise. */
export function parseStorageClass(value: string, flag: string): StorageClassName {
  const upper = value.trim().toUpperCase();
  if (ARCHIVE_CLASSES.includes(upper)) {
    throw new UsageError(
      `Option '${flag}' refuses ${upper}: its objects need a restore request (hours) before any ` +
        `GET, so slurp could not read them; GLACIER_IR is the archive class read at once`,
    );
  }
  const known = STORAGE_CLASSES.find((c) => c === upper);
  if (known === undefined) {
    throw new UsageError(
      `Option '${flag}' takes ${STORAGE_CLASSES.join(", ")}, got '${value}'`,
    );
  }
  return known;
}

/** An AWS KMS key id, ARN, alias name or alias ARN: what may go into a header. */
const KMS_KEY_ID = /^[A-Za-z0-9:/_.+=@-]{1,2048}$/;

/**
 * `--sse`, `--sse-kms-key-id` and the original's `--with-sse` (AES256),
 * checked together.
 */
export function parseServerSideEncryption(
  sse: string | undefined,
  keyId: string | undefined,
  withSse: boolean,
): ServerSideEncryption | undefined {
  let kind: ServerSideEncryption["kind"] | undefined;
  if (sse !== undefined) {
    const normal = sse.trim().toLowerCase();
    if (normal === "aes256") kind = "AES256";
    else if (normal === "aws:kms") kind = "aws:kms";
    else throw new UsageError(`Option '--sse' takes AES256 or aws:kms, got '${sse}'`);
  }
  if (withSse) {
    if (kind === "aws:kms") {
      throw new UsageError("Option '--with-sse' means '--sse AES256': not with '--sse aws:kms'");
    }
    kind = "AES256";
  }
  if (keyId !== undefined) {
    if (kind !== "aws:kms") throw new UsageError("Option '--sse-kms-key-id' needs '--sse aws:kms'");
    if (!KMS_KEY_ID.test(keyId)) {
      throw new UsageError(
        "Option '--sse-kms-key-id' needs a KMS key id, key ARN, alias/NAME or alias ARN",
      );
    }
    return { kind, keyId };
  }
  return kind === undefined ? undefined : { kind };
}

/** The settings as log fields (the start-up line), only those given. */
export function objectStorageFields(storage: ObjectStorage): Record<string, string> {
  const fields: Record<string, string> = {};
  if (storage.storageClass) fields["storage_class"] = storage.storageClass;
  if (storage.smallObjectClass) fields["small_object_class"] = storage.smallObjectClass;
  if (storage.sse) fields["sse"] = storage.sse.kind;
  if (storage.sse?.kind === "aws:kms" && storage.sse.keyId) {
    fields["sse_kms_key_id"] = storage.sse.keyId;
  }
  return fields;
}
