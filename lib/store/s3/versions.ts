/**
 * Listing object versions and deleting objects or versions, in batches of
 * 1,000 (DeleteObjects): S3 answers 200 and names each key it refused, so
 * refusals are sorted here into Object Lock's (which `chop` expects) and the
 * rest (one-line errors naming the action and a key).
 */
import { DeleteObjectsCommand, ListObjectVersionsCommand, type S3Client } from "@aws-sdk/client-s3";
import { Buffer } from "node:buffer";
import { FatalError } from "../../common/errors.ts";
import type { DeleteOptions, DeleteRefusal, ObjectVersion, VersionRef } from "../store.ts";
import { isLockRefusal, type S3Request, unquote } from "./errors.ts";

/** The bucket, its client, and how the store words errors that waiting will not fix. */
export interface DeleteTarget {
  client: S3Client;
  bucket: string;
  permanentError(err: unknown, request?: S3Request): Error | null;
}

/**
 * DeleteObjects, 1,000 keys a request. S3 answers 200 and reports each key
 * it refused in `Errors` (see `refusals`).
 */
export async function deleteMany(
  t: DeleteTarget,
  keys: string[],
  options: DeleteOptions = {},
): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000);
    const out = await t.client.send(
      new DeleteObjectsCommand({
        Bucket: t.bucket,
        Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
      }),
    ).catch((err) => {
      throw t.permanentError(err, { action: "s3:DeleteObject" }) ?? err;
    });
    const errors = (out.Errors ?? []).map((e) => ({
      key: e.Key ?? "",
      code: e.Code ?? "",
      message: e.Message ?? "",
    }));
    refusals(t, errors, batch.length, "s3:DeleteObject", options);
  }
}

export async function* listVersions(t: DeleteTarget, prefix: string): AsyncIterable<ObjectVersion> {
  let keyMarker: string | undefined;
  let versionMarker: string | undefined;
  do {
    const page = await t.client.send(
      new ListObjectVersionsCommand({
        Bucket: t.bucket,
        Prefix: prefix,
        MaxKeys: 1000,
        ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
        ...(versionMarker !== undefined ? { VersionIdMarker: versionMarker } : {}),
      }),
    ).catch((err) => {
      throw t.permanentError(err, { action: "s3:ListBucketVersions", prefix }) ?? err;
    });
    const versions: ObjectVersion[] = (page.Versions ?? []).map((v) => ({
      key: v.Key ?? "",
      versionId: v.VersionId ?? "null",
      size: v.Size ?? 0,
      etag: unquote(v.ETag),
      lastModified: v.LastModified ?? new Date(0),
      latest: v.IsLatest === true,
      deleteMarker: false,
    }));
    const markers: ObjectVersion[] = (page.DeleteMarkers ?? []).map((m) => ({
      key: m.Key ?? "",
      versionId: m.VersionId ?? "null",
      size: 0,
      etag: "",
      lastModified: m.LastModified ?? new Date(0),
      latest: m.IsLatest === true,
      deleteMarker: true,
    }));
    // S3 returns versions and delete markers in two lists, each in key
    // order, newest first: merged back into the one order callers group by.
    yield* mergeVersions(versions, markers);
    const truncated = page.IsTruncated === true;
    keyMarker = truncated ? page.NextKeyMarker : undefined;
    versionMarker = truncated ? page.NextVersionIdMarker : undefined;
  } while (keyMarker !== undefined);
}

/**
 * DeleteObjects with version ids: permanent. Not quiet, because S3 (and
 * moto) may leave the version id out of a per-key error: what was asked
 * and not reported deleted is what was refused.
 */
export async function deleteVersions(
  t: DeleteTarget,
  versions: VersionRef[],
  options: DeleteOptions = {},
): Promise<void> {
  for (let i = 0; i < versions.length; i += 1000) {
    const batch = versions.slice(i, i + 1000);
    const out = await t.client.send(
      new DeleteObjectsCommand({
        Bucket: t.bucket,
        Delete: {
          Objects: batch.map((v) => ({ Key: v.key, VersionId: v.versionId })),
          Quiet: false,
        },
      }),
    ).catch((err) => {
      throw t.permanentError(err, { action: "s3:DeleteObjectVersion" }) ?? err;
    });
    const deleted = new Set((out.Deleted ?? []).map((d) => `${d.VersionId}\n${d.Key}`));
    // A key's errors, in order, for the versions of it that were not deleted.
    const errorsOf = new Map<string, { code: string; message: string }[]>();
    for (const e of out.Errors ?? []) {
      const list = errorsOf.get(e.Key ?? "") ?? [];
      list.push({ code: e.Code ?? "", message: e.Message ?? "" });
      errorsOf.set(e.Key ?? "", list);
    }
    const errors: DeleteRefusal[] = [];
    for (const v of batch) {
      if (deleted.has(`${v.versionId}\n${v.key}`)) continue;
      const reason = errorsOf.get(v.key)?.shift();
      // Neither deleted nor refused: S3 only skips a version that is already gone.
      if (reason) errors.push({ key: v.key, versionId: v.versionId, ...reason });
    }
    refusals(t, errors, batch.length, "s3:DeleteObjectVersion", options);
  }
}

/**
 * The refusals of one DeleteObjects batch: the lock's go to `onLocked`
 * when given; any other throws, AccessDenied from a policy as a one-line
 * `FatalError` naming the action and a key, anything else naming the code.
 */
function refusals(
  t: DeleteTarget,
  errors: DeleteRefusal[],
  asked: number,
  action: string,
  options: DeleteOptions,
) {
  const { onLocked } = options;
  const other = onLocked ? errors.filter((e) => !isLockRefusal(e.code, e.message)) : errors;
  const first = other[0];
  if (!first) {
    for (const e of errors) onLocked?.(e);
    return;
  }
  const more = other.length > 1 ? ` and ${other.length - 1} more of the ${asked} in the batch` : "";
  const what = `'${first.key}'${first.versionId ? ` (version ${first.versionId})` : ""}${more}`;
  if (isLockRefusal(first.code, first.message)) {
    throw new FatalError(`Deleting ${what} refused: Object Lock protects it (${first.message})`);
  }
  if (first.code === "AccessDenied") {
    throw new FatalError(
      `Access to bucket '${t.bucket}' denied (HTTP 403) for ${action} on ${what}: check the credentials' IAM policy and the bucket policy`,
    );
  }
  throw new Error(
    `Deleting ${what} failed: ${first.code}${first.message ? ` ${first.message}` : ""}`,
  );
}

/** Two lists in S3's version order (key in UTF-8 byte order, newest first) as one. */
function* mergeVersions(a: ObjectVersion[], b: ObjectVersion[]): Generator<ObjectVersion> {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && versionOrder(a[i]!, b[j]!) <= 0)) yield a[i++]!;
    else yield b[j++]!;
  }
}

function versionOrder(x: ObjectVersion, y: ObjectVersion): number {
  const byKey = Buffer.compare(Buffer.from(x.key), Buffer.from(y.key));
  if (byKey !== 0) return byKey;
  if (x.latest !== y.latest) return x.latest ? -1 : 1;
  return y.lastModified.getTime() - x.lastModified.getTime();
}
