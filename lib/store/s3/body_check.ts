/**
 * Which digest of a body the server checks (`Store.bodyCheck`), found by
 * asking it to take bytes with a wrong one. Content-MD5 costs the client an
 * MD5 of every byte sent; for an encrypted body, whose MD5 nobody else
 * needs, that is a third of the upload's CPU. `x-amz-checksum-crc32` costs
 * some thirty times less and AWS verifies it, as it does Content-MD5 (and
 * takes it instead for Object Lock, with `x-amz-sdk-checksum-algorithm`).
 * Not every server does: Ceph RGW 16 ignores the header and checks only
 * Content-MD5, so there the MD5 stays; s3rver and moto check neither, so
 * either digest is as good as none and the cheaper is sent.
 *
 * The probe: one multipart upload on the key about to be written, a part
 * with a wrong CRC-32, then (when it was taken) a part with a wrong
 * Content-MD5, then the upload is aborted: no object is made or replaced,
 * and it needs no permission an upload does not. A server that verifies a
 * digest refuses the part with `BadDigest`. Any other failure (the upload
 * aborted under the probe by the stale-upload clean-up, a refusal) keeps
 * Content-MD5, as before the probe.
 */
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  type CreateMultipartUploadCommandInput,
  type S3Client,
} from "@aws-sdk/client-s3";
import { crc32Base64, md5Base64 } from "../../common/digest.ts";
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import type { BodyCheck } from "../store.ts";
import type { DirectS3 } from "./direct_requests.ts";

export interface ProbeTarget {
  client: S3Client;
  direct: DirectS3;
  /** Bucket, key and the object's options (storage class, SSE, retention). */
  object: CreateMultipartUploadCommandInput & { Bucket: string; Key: string };
}

const PROBE_BODY = new TextEncoder().encode("tablesnap checksum probe\n");
const OTHER_BODY = new TextEncoder().encode("not the probe's bytes\n");
const CRC32_HEADERS = { "x-amz-sdk-checksum-algorithm": "CRC32" };

/** The digest to send with single-part bodies made by a body source. */
export async function probeBodyCheck(target: ProbeTarget): Promise<BodyCheck> {
  const check = await probe(target);
  log.debug("encrypted bodies are checked by", { digest: check, key: target.object.Key });
  return check;
}

async function probe(target: ProbeTarget): Promise<BodyCheck> {
  const { client, direct, object } = target;
  const { Bucket, Key } = object;
  let uploadId: string | undefined;
  try {
    const created = await client.send(
      new CreateMultipartUploadCommand({ ...object, ChecksumAlgorithm: "CRC32" }),
    );
    uploadId = created.UploadId!;
    const wrongCrc = { ...CRC32_HEADERS, "x-amz-checksum-crc32": crc32Base64(OTHER_BODY) };
    if (await refused(direct.uploadPart(Key, uploadId, 1, PROBE_BODY, wrongCrc))) return "crc32";
    const wrongMd5 = {
      ...CRC32_HEADERS,
      "x-amz-checksum-crc32": crc32Base64(PROBE_BODY),
      "content-md5": md5Base64(OTHER_BODY),
    };
    return await refused(direct.uploadPart(Key, uploadId, 2, PROBE_BODY, wrongMd5))
      ? "md5"
      : "crc32";
  } catch (err) {
    log.debug("checksum probe failed: bodies keep their Content-MD5", {
      key: Key,
      error: errorMessage(err),
    });
    return "md5";
  } finally {
    if (uploadId !== undefined) {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId: uploadId }))
        .catch(() => {});
    }
  }
}

/** True when the part was refused for its digest; other failures pass through. */
async function refused(part: Promise<string>): Promise<boolean> {
  try {
    await part;
    return false;
  } catch (err) {
    if (err instanceof Error && err.name === "BadDigest") return true;
    throw err;
  }
}
