/**
 * Multipart uploads that survive a crash (`--state-dir`). The journal
 * records each upload in flight: its key and upload id, the part size, the
 * file's size and mtime, and each part stored. After SIGKILL the file is
 * pending again; its next upload resumes the recorded one when the file
 * still has that size and mtime (and the key and part size are the same):
 * the store keeps every part S3 lists whose ETag is the MD5 of the file's
 * part (ListParts), so at most the part in flight at the kill is sent
 * twice. Otherwise the old upload is aborted and the file sent afresh.
 *
 * Every attempt ends its file's upload one way or another: completed, or
 * aborted (the store aborts on failure; an upload left after an attempt is
 * aborted here too), except when shutdown stops it: then it stays in the
 * journal, to resume at the next start. Whatever this misses (an abort that
 * failed, an upload created just before a kill and not yet journaled) is
 * found at the next start by stale_uploads.ts.
 */
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import type { PutFileOptions, Store } from "../../store/store.ts";

/** A multipart upload in flight, as the journal keeps it. */
export interface InFlightUpload {
  key: string;
  uploadId: string;
  partSize: number;
  /** The file's size and mtime when the upload began. */
  size: number;
  mtimeMs: number;
  /** Parts reported stored: part number to ETag (a hint; ListParts decides). */
  parts: Map<number, string>;
  /** What the store needs to make the same body again (encrypted: a secret). */
  remake?: string | undefined;
}

/** What the uploads need of the journal (journal.ts implements it). */
export interface UploadJournal {
  upload(path: string): InFlightUpload | undefined;
  uploadStarted(path: string, upload: Omit<InFlightUpload, "parts">): void;
  partDone(path: string, n: number, etag: string): void;
  uploadEnded(path: string): void;
}

/** One file version to send in parts. */
export interface PartedFile {
  path: string;
  key: string;
  size: number;
  mtimeMs: number;
  partSize: number;
}

export class MultipartResume {
  readonly #store: Store;
  readonly #journal: UploadJournal;

  constructor(store: Store, journal: UploadJournal) {
    this.#store = store;
    this.#journal = journal;
  }

  /**
   * The `putFile` options for `file`: resume the journal's upload of this
   * very version, else abort the one recorded (if any) and record the new
   * one as it starts, part by part.
   */
  async optionsFor(file: PartedFile): Promise<PutFileOptions> {
    const { path, key, size, mtimeMs, partSize } = file;
    const known = this.#journal.upload(path);
    const same = known !== undefined && known.key === key && known.size === size &&
      known.mtimeMs === mtimeMs && known.partSize === partSize &&
      this.#store.listParts !== undefined;
    if (known && !same) {
      log.info("file changed since its multipart upload began: aborting that upload", {
        key: known.key,
        upload_id: known.uploadId,
      });
      await this.discard(path);
    }
    return {
      ...(same ? { resume: { uploadId: known.uploadId, remake: known.remake } } : {}),
      onUploadStarted: (uploadId, remake) =>
        this.#journal.uploadStarted(path, { key, uploadId, partSize, size, mtimeMs, remake }),
      onPartDone: (n, etag) => this.#journal.partDone(path, n, etag),
      keepOnAbort: true,
    };
  }

  /** The upload of `path` completed. */
  completed(path: string): void {
    this.#journal.uploadEnded(path);
  }

  /**
   * After an attempt at `path`: an upload still recorded for it is aborted,
   * unless shutdown stopped the attempt (`keep`): that one resumes at the
   * next start. A failed abort is left to the next start's clean-up.
   */
  async afterAttempt(path: string, keep: boolean): Promise<void> {
    if (keep || !this.#journal.upload(path)) return;
    await this.discard(path);
  }

  /** Aborts the upload recorded for `path` and forgets it. */
  async discard(path: string): Promise<void> {
    const known = this.#journal.upload(path);
    if (!known) return;
    try {
      await this.#store.abortUpload?.(known.key, known.uploadId);
    } catch (err) {
      log.warn("could not abort a multipart upload; the next start cleans it up", {
        key: known.key,
        upload_id: known.uploadId,
        error: errorMessage(err),
      });
    }
    this.#journal.uploadEnded(path);
  }
}
