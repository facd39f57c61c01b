/**
 * At start: aborts this watcher's incomplete multipart uploads that no
 * journal will resume: those under its PATHs' keys, the only keys it ever
 * uploads to. Not the whole host's prefix: several watchers may share a
 * host name (one for the data directories, one for the commit logs, each
 * with its state directory), and each must leave the other's uploads be. A SIGKILL leaves its upload in flight; S3 keeps (and bills)
 * its parts until a lifecycle rule removes them, and lists them nowhere but
 * ListMultipartUploads. Run before the first upload of this process, so
 * everything listed is an earlier run's: with `--state-dir` the journal's
 * uploads are spared (multipart_resume.ts resumes or aborts them), all
 * others aborted; after any sequence of crashes none is left once the
 * watcher is idle.
 *
 * It needs s3:ListBucketMultipartUploads (and s3:AbortMultipartUpload); a
 * store or a policy without them costs a one-line warning, nothing more.
 */
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import type { Store } from "../../store/store.ts";
import type { InFlightUpload } from "./multipart_resume.ts";

/** Aborts the uploads under `prefixes` whose id is not in `keep`; returns how many. */
export async function abortStaleUploads(
  store: Store,
  prefixes: string[],
  keep: ReadonlySet<string>,
): Promise<number> {
  if (!store.listUploads || !store.abortUpload) return 0;
  // A PATH inside another is listed with it.
  const outer = prefixes.filter((p) => !prefixes.some((q) => q !== p && p.startsWith(q)));
  let aborted = 0;
  for (const prefix of new Set(outer)) {
    try {
      for await (const upload of store.listUploads(prefix)) {
        if (keep.has(upload.uploadId)) continue;
        await store.abortUpload(upload.key, upload.uploadId);
        aborted++;
        log.debug("aborted a stale multipart upload", {
          key: upload.key,
          upload_id: upload.uploadId,
          initiated: upload.initiated.toISOString(),
        });
      }
    } catch (err) {
      log.warn("cannot clean up unfinished multipart uploads; their parts stay billed", {
        prefix,
        aborted,
        error: errorMessage(err),
      });
      return aborted;
    }
  }
  if (aborted > 0) {
    log.info("aborted unfinished multipart uploads left by an earlier run", { uploads: aborted });
  }
  return aborted;
}

/**
 * The ids of the journal's uploads that this run will resume or abort: those
 * of files it still backs up. The others (a PATH no longer given, a file now
 * filtered out) are forgotten, so that `abortStaleUploads` aborts them.
 */
/** The journal's multipart uploads in flight, as the clean-up at start sees them. */
export interface JournaledUploads {
  uploads(): [string, InFlightUpload][];
  uploadEnded(path: string): void;
}

export function uploadsToKeep(
  journal: JournaledUploads,
  backsUp: (path: string) => boolean,
): Set<string> {
  const keep = new Set<string>();
  for (const [path, upload] of journal.uploads()) {
    if (backsUp(path)) keep.add(upload.uploadId);
    else journal.uploadEnded(path);
  }
  return keep;
}
