/**
 * Multipart uploads, driven directly: create, one part at a time streamed
 * from its file range (each with its Content-MD5), complete; on any failure
 * the upload is aborted, so none is left behind (S3 bills the parts of an
 * unfinished upload and lists it nowhere else). `@aws-sdk/lib-storage`'s
 * `Upload` would buffer every part in memory (part size x queue size), which
 * breaks the memory bound; streaming keeps memory independent of both.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  type CreateMultipartUploadCommandInput,
  type S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { hexToBase64 } from "../../common/digest.ts";
import type { ByteCounter, FileUpload } from "../store.ts";
import type { DirectS3 } from "./direct_requests.ts";
import { type FileRange, rangeStream } from "./file_range.ts";

export interface MultipartTarget {
  client: S3Client;
  /** Sends the parts when usable; the SDK does otherwise. */
  direct: DirectS3 | null;
  /** Bucket, key, metadata, storage class...: what CreateMultipartUpload takes. */
  object: CreateMultipartUploadCommandInput & { Bucket: string; Key: string };
}

/** Uploads `file` (which has `parts`) in parts; aborts the upload on any failure. */
export async function putMultipart(
  target: MultipartTarget,
  file: FileUpload & { parts: NonNullable<FileUpload["parts"]> },
  options: { signal?: AbortSignal | undefined; onBytes?: ByteCounter | undefined } = {},
): Promise<void> {
  const { client, direct, object } = target;
  const { Bucket, Key } = object;
  const { signal, onBytes } = options;
  const abort = signal ? { abortSignal: signal } : {};
  const created = await client.send(new CreateMultipartUploadCommand(object), abort);
  const UploadId = created.UploadId!;
  try {
    const completed: { ETag: string; PartNumber: number }[] = [];
    const { partSize, md5s } = file.parts;
    for (let i = 0; i < md5s.length; i++) {
      const start = i * partSize;
      const range: FileRange = {
        path: file.path,
        start,
        length: Math.min(partSize, file.size - start),
      };
      if (onBytes) range.onBytes = onBytes;
      const contentMd5 = hexToBase64(md5s[i]!);
      const PartNumber = i + 1;
      let ETag: string;
      if (direct) {
        ETag = await direct.uploadPart(Key, UploadId, PartNumber, range, {
          "content-md5": contentMd5,
        }, signal);
      } else {
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
          abort,
        );
        ETag = out.ETag!;
      }
      completed.push({ ETag, PartNumber });
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
    await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId })).catch(() => {});
    throw err;
  }
}
