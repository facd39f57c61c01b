/**
 * Multipart uploads, driven directly: create, one part at a time streamed
 * from its file range (each with its Content-MD5), complete; on any failure
 * the upload is aborted, so none is left behind (S3 bills the parts of an
 * unfinished upload and lists it nowhere else). `@aws-sdk/lib-storage`'s
 * `Upload` would buffer every part in memory (part size x queue size), which
 * breaks the memory bound; streaming keeps memory independent of both.
 *
 * An upload can also be resumed (the watcher's journal remembers its id
 * across a crash): the parts S3 lists for it whose ETag is the MD5 of the
 * file's part, and whose size is the part's, are kept; the rest are sent.
 * Only the listing is trusted, never what the caller believes was sent.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  type CreateMultipartUploadCommandInput,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  type S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { hexToBase64 } from "../../common/digest.ts";
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import {
  type FileUpload,
  type MultipartUploadInfo,
  NoSuchUploadError,
  type PutFileOptions,
  type UploadedPart,
} from "../store.ts";
import type { DirectS3 } from "./direct_requests.ts";
import { httpStatus, namedDenial, unquote } from "./errors.ts";
import { type FileRange, fileRange, rangeStream } from "./file_range.ts";

export interface MultipartTarget {
  client: S3Client;
  /** Sends the parts when usable; the SDK does otherwise. */
  direct: DirectS3 | null;
  /** Bucket, key, metadata, storage class...: what CreateMultipartUpload takes. */
  object: CreateMultipartUploadCommandInput & { Bucket: string; Key: string };
}

/** One part, as a direct request when usable; returns its ETag. */
async function sendPart(
  target: MultipartTarget,
  UploadId: string,
  PartNumber: number,
  range: FileRange,
  md5: string,
  signal: AbortSignal | undefined,
): Promise<string> {
  const { client, direct, object: { Bucket, Key } } = target;
  const contentMd5 = hexToBase64(md5);
  if (direct) {
    return await direct.uploadPart(Key, UploadId, PartNumber, range, {
      "content-md5": contentMd5,
    }, signal);
  }
  const out = await client.send(
    new UploadPartCommand({
      Bucket,
      Key,
      UploadId,
      PartNumber,
      Body: rangeStream(range),
      ContentLength: range.length,
      ContentMD5: contentMd5,
    }),
    signal ? { abortSignal: signal } : {},
  );
  return out.ETag!;
}

/**
 * Uploads `file` (which has `parts`) in parts, or resumes `options.resume`;
 * aborts the upload on any failure (but an abort by `signal` with
 * `keepOnAbort`).
 */
export async function putMultipart(
  target: MultipartTarget,
  file: FileUpload & { parts: NonNullable<FileUpload["parts"]> },
  options: PutFileOptions = {},
): Promise<void> {
  const { client, object } = target;
  const { Bucket, Key } = object;
  const { signal, onBytes } = options;
  const abort = signal ? { abortSignal: signal } : {};
  const { partSize, md5s } = file.parts;
  const kept = await resumable(client, Bucket, Key, options.resume?.uploadId);
  let UploadId = kept?.uploadId;
  if (UploadId === undefined) {
    const created = await client.send(new CreateMultipartUploadCommand(object), abort);
    UploadId = created.UploadId!;
    options.onUploadStarted?.(UploadId);
  }
  try {
    const completed: { ETag: string; PartNumber: number }[] = [];
    let reused = 0;
    for (let i = 0; i < md5s.length; i++) {
      const start = i * partSize;
      const range = fileRange(file, start, Math.min(partSize, file.size - start), undefined);
      const PartNumber = i + 1;
      const stored = kept?.parts.get(PartNumber);
      if (stored && stored.size === range.length && unquote(stored.etag) === md5s[i]) {
        completed.push({ ETag: stored.etag, PartNumber });
        reused++;
        continue;
      }
      if (onBytes) range.onBytes = onBytes;
      const ETag = await sendPart(target, UploadId, PartNumber, range, md5s[i]!, signal);
      completed.push({ ETag, PartNumber });
      options.onPartDone?.(PartNumber, ETag);
    }
    if (kept) {
      log.info("resumed a multipart upload", {
        key: Key,
        parts: md5s.length,
        parts_kept: reused,
        parts_sent: md5s.length - reused,
      });
    }
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket,
        Key,
        UploadId,
        MultipartUpload: { Parts: completed },
      }),
      abort,
    );
  } catch (err) {
    if (!(options.keepOnAbort && signal?.aborted)) {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId })).catch(() => {});
    }
    throw err;
  }
}

/**
 * The upload to resume and its stored parts, or undefined when there is
 * none to resume (none asked for, or S3 no longer has it: expired, aborted,
 * completed).
 */
async function resumable(
  client: S3Client,
  bucket: string,
  key: string,
  uploadId: string | undefined,
): Promise<{ uploadId: string; parts: Map<number, UploadedPart> } | undefined> {
  if (uploadId === undefined) return undefined;
  try {
    const parts = await listParts(client, bucket, key, uploadId);
    return { uploadId, parts: new Map(parts.map((p) => [p.partNumber, p])) };
  } catch (err) {
    if (!(err instanceof NoSuchUploadError)) throw err;
    log.info("the multipart upload to resume is gone; starting a new one", {
      key,
      upload_id: uploadId,
      error: errorMessage(err),
    });
    return undefined;
  }
}

/** ListParts, every page; `NoSuchUploadError` when S3 does not have the upload. */
export async function listParts(
  client: S3Client,
  bucket: string,
  key: string,
  uploadId: string,
): Promise<UploadedPart[]> {
  const parts: UploadedPart[] = [];
  let marker: string | undefined;
  do {
    const page = await client.send(
      new ListPartsCommand({
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        MaxParts: 1000,
        ...(marker !== undefined ? { PartNumberMarker: marker } : {}),
      }),
    ).catch((err) => {
      if (isNoSuchUpload(err)) throw new NoSuchUploadError(errorMessage(err));
      throw namedDenial(err, { action: "s3:ListMultipartUploadParts", key });
    });
    for (const p of page.Parts ?? []) {
      if (p.PartNumber === undefined) continue;
      parts.push({ partNumber: p.PartNumber, etag: p.ETag ?? "", size: p.Size ?? 0 });
    }
    marker = page.IsTruncated ? page.NextPartNumberMarker : undefined;
  } while (marker !== undefined);
  return parts.sort((a, b) => a.partNumber - b.partNumber);
}

/** ListMultipartUploads under `prefix`, every page. */
export async function* listUploads(
  client: S3Client,
  bucket: string,
  prefix: string,
): AsyncIterable<MultipartUploadInfo> {
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  do {
    let page;
    try {
      page = await client.send(
        new ListMultipartUploadsCommand({
          Bucket: bucket,
          Prefix: prefix,
          MaxUploads: 1000,
          ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
          ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
        }),
      );
    } catch (err) {
      // Some S3-compatible servers (s3rver) cannot list uploads: none to see.
      if (err instanceof Error && err.name === "NotImplemented") {
        log.debug("the server cannot list multipart uploads", { error: errorMessage(err) });
        return;
      }
      throw namedDenial(err, { action: "s3:ListBucketMultipartUploads", prefix });
    }
    for (const u of page.Uploads ?? []) {
      if (u.Key === undefined || u.UploadId === undefined) continue;
      yield { key: u.Key, uploadId: u.UploadId, initiated: u.Initiated ?? new Date(0) };
    }
    const truncated = page.IsTruncated === true;
    keyMarker = truncated ? page.NextKeyMarker : undefined;
    uploadIdMarker = truncated ? page.NextUploadIdMarker : undefined;
  } while (keyMarker !== undefined);
}

/** AbortMultipartUpload; an upload S3 no longer has counts as aborted. */
export async function abortUpload(
  client: S3Client,
  bucket: string,
  key: string,
  uploadId: string,
): Promise<void> {
  try {
    await client.send(
      new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }),
    );
  } catch (err) {
    if (isNoSuchUpload(err)) return;
    throw namedDenial(err, { action: "s3:AbortMultipartUpload", key });
  }
}

function isNoSuchUpload(err: unknown): boolean {
  return (err instanceof Error && err.name === "NoSuchUpload") || httpStatus(err) === 404;
}
