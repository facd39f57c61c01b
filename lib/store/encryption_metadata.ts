/**
 * How the bucket marks what an encrypting watcher wrote (docs/bucket-format.md):
 * object metadata any job may read without a key.
 */
import { FatalError } from "../common/errors.ts";

/** Metadata marking an encrypted object, and its value for the format written. */
export const ENCRYPTION_METADATA = "tablesnap-encryption";
export const AGE_V1 = "age-v1";
/** Metadata giving an encrypted object's plaintext size in bytes. */
export const PLAINTEXT_SIZE_METADATA = "tablesnap-plaintext-size";
/** Metadata of an index written by an encrypting watcher: the files it names are encrypted. */
export const FILE_ENCRYPTION_METADATA = "tablesnap-file-encryption";

/** Whether an object's metadata marks it encrypted. */
export function isEncrypted(metadata: Record<string, string>): boolean {
  return metadata[ENCRYPTION_METADATA] !== undefined;
}

/** Whether an index's metadata says the files it names were uploaded encrypted. */
export function namesEncryptedFiles(metadata: Record<string, string>): boolean {
  return metadata[FILE_ENCRYPTION_METADATA] !== undefined;
}

/** A decryption refused: no identity, not ours, or damaged. Retrying will not help. */
export class DecryptionError extends FatalError {
  override name = "DecryptionError";
}
