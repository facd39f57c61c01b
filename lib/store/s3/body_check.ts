/**
 * How the server checks a body made on the fly (`Store.bodyCheck`), found by
 * asking it to take bytes with a wrong check. A digest header must precede
 * the body it covers, so an encrypted body is sealed once for its digest
 * and again as it is sent (nothing is spooled); SigV4's signed streaming
 * payload (signed_chunks.ts) is checked as it arrives, so it is sealed once,
 * and its SHA-256 costs less than an MD5. Ceph RGW verifies it (tried), as
 * AWS documents it does (not tried here);
 * s3rver takes the header but stores the frames as they are, so it is used
 * only where a wrong frame is refused and a right one stored decoded.
 * Otherwise: `x-amz-checksum-crc32` where it is verified (AWS), as it costs
 * some thirty times less than Content-MD5; Content-MD5 where only that is
 * (Ceph RGW 16 ignores the CRC-32); and nothing where nothing is (s3rver,
 * moto): a digest nobody checks is CPU for nothing, and the encrypted body
 * authenticates itself when it is read.
 *
 * The probe: one multipart upload on the key about to be written, a part
 * with a wrong frame signature (then a right one), a part with a wrong
 * CRC-32, then (when it was taken) a part with a wrong Content-MD5, then
 * the upload is aborted: no object is made or replaced, and it needs no
 * permission an upload does not. A server that verifies refuses the part
 * (`BadDigest`, or `SignatureDoesNotMatch` for the frames). Any other
 * failure (the upload aborted under the probe by the stale-upload
 * clean-up, a refusal) keeps Content-MD5, as before the probe.
 */
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  type CreateMultipartUploadCommandInput,
  type S3Client,
} from "@aws-sdk/client-s3";
import { crc32Base64, md5Base64, md5Hex, newMd5 } from "../../common/digest.ts";
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import type { BodyCheck, FileUpload } from "../store.ts";
import type { DirectS3 } from "./direct_requests.ts";

export interface ProbeTarget {
  client: S3Client;
  direct: DirectS3;
  /** Bucket, key and the object's options (storage class, SSE, retention). */
  object: CreateMultipartUploadCommandInput & { Bucket: string; Key: string };
  /** Every PUT must carry a digest header (S3's rule for Object Lock): "md5" or "crc32". */
  needsDigest?: boolean;
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
    if (!target.needsDigest && await verifiesFrames(direct, Key, uploadId)) return "signed-chunks";
    const wrongCrc = { ...CRC32_HEADERS, "x-amz-checksum-crc32": crc32Base64(OTHER_BODY) };
    if (await refused(direct.uploadPart(Key, uploadId, 1, PROBE_BODY, wrongCrc))) return "crc32";
    const wrongMd5 = {
      ...CRC32_HEADERS,
      "x-amz-checksum-crc32": crc32Base64(PROBE_BODY),
      "content-md5": md5Base64(OTHER_BODY),
    };
    if (await refused(direct.uploadPart(Key, uploadId, 2, PROBE_BODY, wrongMd5))) return "md5";
    return target.needsDigest ? "crc32" : "none";
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

/**
 * True when the server refuses a part whose frame is signed for other bytes
 * and stores a part signed right as the bytes it holds (its ETag their MD5).
 * False also when it refuses signed frames altogether.
 */
async function verifiesFrames(direct: DirectS3, key: string, uploadId: string): Promise<boolean> {
  try {
    const forged = { signedAs: OTHER_BODY };
    if (!await refused(direct.uploadPart(key, uploadId, 1, PROBE_BODY, {}, undefined, forged))) {
      return false;
    }
    const etag = await direct.uploadPart(key, uploadId, 1, PROBE_BODY, {}, undefined, {});
    return etag.replaceAll('"', "") === md5Hex(PROBE_BODY);
  } catch (err) {
    log.debug("signed frames refused", { key, error: errorMessage(err) });
    return false;
  }
}

/** Refusals of a body that differs from its check (RGW names a wrong first frame the third). */
const REFUSALS = new Set(["BadDigest", "SignatureDoesNotMatch", "XAmzContentSHA256Mismatch"]);

/** True when the part was refused for its check; other failures pass through. */
async function refused(part: Promise<string>): Promise<boolean> {
  try {
    await part;
    return false;
  } catch (err) {
    if (err instanceof Error && REFUSALS.has(err.name)) return true;
    throw err;
  }
}

/**
 * True for a PUT refused for carrying no digest header: a bucket with Object
 * Lock's default retention asks one of every PUT, which the probe (parts
 * need none) cannot see. moto names it; AWS says `InvalidRequest`.
 */
export function wantsDigestHeader(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === "MissingUploadObjectWithObjectLockHeaders") return true;
  return err.name === "InvalidRequest" && /Content-MD5/i.test(err.message);
}

/** The MD5 (hex) of a body made on the fly, read through once. */
export async function md5OfMadeBody(file: FileUpload): Promise<string> {
  if (file.body) return md5Hex(file.body);
  const hash = newMd5();
  for await (const piece of file.source!.read({ offset: 0, length: file.size })) hash.update(piece);
  return hash.digest("hex");
}
