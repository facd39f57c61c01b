/**
 * What every new object is sent with, besides its body: metadata, content
 * type, storage class, server-side encryption and Object Lock retention,
 * as the SDK's parameters and as the headers of a direct request.
 */
import type { StorageClass } from "@aws-sdk/client-s3";
import { type ObjectKind, storageClassFor } from "../object_storage.ts";
import type { S3Options } from "./s3_options.ts";

const DAY_MS = 86_400_000;

/** `objectParams` as HTTP headers, for direct requests. */
export function objectHeaders(
  options: S3Options,
  metadata: Record<string, string>,
  contentType: string | undefined,
  kind: ObjectKind,
): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(metadata)) {
    headers[`x-amz-meta-${name.toLowerCase()}`] = value;
  }
  if (contentType) headers["content-type"] = contentType;
  const storage = options.objectStorage ?? {};
  const storageClass = storageClassFor(storage, kind);
  if (storageClass) headers["x-amz-storage-class"] = storageClass;
  if (storage.sse) headers["x-amz-server-side-encryption"] = storage.sse.kind;
  if (storage.sse?.kind === "aws:kms" && storage.sse.keyId) {
    headers["x-amz-server-side-encryption-aws-kms-key-id"] = storage.sse.keyId;
  }
  const lock = retention(options);
  if (lock) {
    headers["x-amz-object-lock-mode"] = lock.ObjectLockMode;
    headers["x-amz-object-lock-retain-until-date"] = lock.ObjectLockRetainUntilDate.toISOString();
  }
  return headers;
}

/** Retention from now, computed per request: each object is kept N days from its own upload. */
function retention(options: S3Options) {
  const lock = options.objectLock;
  if (!lock) return undefined;
  return {
    ObjectLockMode: lock.mode,
    ObjectLockRetainUntilDate: new Date(Date.now() + lock.days * DAY_MS),
  };
}

/** What PutObject and CreateMultipartUpload take besides the body. */
export function objectParams(
  options: S3Options,
  key: string,
  metadata: Record<string, string>,
  contentType: string | undefined,
  kind: ObjectKind,
) {
  const storage = options.objectStorage ?? {};
  const storageClass = storageClassFor(storage, kind);
  const sse = storage.sse;
  return {
    Bucket: options.bucket,
    Key: key,
    Metadata: metadata,
    ...(contentType ? { ContentType: contentType } : {}),
    ...(storageClass ? { StorageClass: storageClass as StorageClass } : {}),
    ...(sse ? { ServerSideEncryption: sse.kind } : {}),
    ...(sse?.kind === "aws:kms" && sse.keyId ? { SSEKMSKeyId: sse.keyId } : {}),
    ...retention(options),
  };
}
