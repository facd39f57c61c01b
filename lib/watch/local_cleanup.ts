/**
 * `--delete-on-backup`: each local file is deleted once it is safely in the
 * bucket, but never before an index of its directory still to be written has
 * seen it (the index must name it); those files are deleted when that index
 * is published.
 */
import { errorMessage } from "../common/errors.ts";
import { log } from "../common/log.ts";
import { dirname } from "../common/paths.ts";
import type { IndexPublisher } from "./index_publisher.ts";
import type { UploadPipeline } from "./pipeline.ts";

export class LocalCleanup {
  readonly #pipeline: UploadPipeline;
  readonly #publisher: IndexPublisher | undefined;
  /** Deletions under way: --once waits for them before it exits. */
  readonly #running = new Set<Promise<void>>();

  constructor(pipeline: UploadPipeline, publisher: IndexPublisher | undefined) {
    this.#pipeline = pipeline;
    this.#publisher = publisher;
  }

  /** A file is in the bucket: delete it, unless an index of its directory is pending. */
  fileStored(path: string): void {
    if (this.#publisher?.hasPendingIn(dirname(path))) return;
    this.#track(
      Deno.remove(path).then(
        () => {
          this.#publisher?.deletedByUs(path);
          log.info("deleted local file after backup", { path });
        },
        (err) => {
          if (!(err instanceof Deno.errors.NotFound)) {
            log.warn("could not delete local file after backup", {
              path,
              error: errorMessage(err),
            });
          }
        },
      ),
    );
  }

  /** An index of `directory` was written: delete the directory's files that are in the bucket. */
  directoryIndexed(directory: string): void {
    this.#track(
      (async () => {
        for await (const entry of Deno.readDir(directory)) {
          const path = `${directory}/${entry.name}`;
          if (entry.isFile && this.#pipeline.isStored(path)) this.fileStored(path);
        }
      })().catch((err) => {
        log.warn("could not delete local files after their index", {
          directory,
          error: errorMessage(err),
        });
      }),
    );
  }

  /** Resolves when no deletion is under way. */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.all(this.#running);
  }

  #track(work: Promise<void>): void {
    this.#running.add(work);
    work.finally(() => this.#running.delete(work));
  }
}
