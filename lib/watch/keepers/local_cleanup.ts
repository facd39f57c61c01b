/**
 * `--delete-on-backup`: each local file is deleted once it is safely in the
 * bucket, but never before an index of its directory still to be written has
 * seen it (the index must name it); those files are deleted when that index
 * is written. It follows the ledger: `stored` and `index-settled`.
 */
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import { dirname } from "../../common/paths.ts";
import type { Ledger } from "../ledger.ts";

export class LocalCleanup {
  readonly #ledger: Ledger;
  /** Deletions under way: --once waits for them before it exits. */
  readonly #running = new Set<Promise<void>>();

  /** Subscribes after the index publisher: a stored Data.db's index is asked for first. */
  constructor(ledger: Ledger) {
    this.#ledger = ledger;
    ledger.subscribe((event) => {
      if (event.type === "stored") this.fileStored(event.path);
      else if (event.type === "index-settled" && event.written) {
        this.directoryIndexed(event.directory);
      }
    });
  }

  /** A file is in the bucket: delete it, unless an index of its directory is pending. */
  fileStored(path: string): void {
    if (this.#ledger.hasIndexIn(dirname(path))) return;
    this.#track(
      Deno.remove(path).then(
        () => {
          this.#ledger.deleted(path);
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
          if (entry.isFile && this.#ledger.isStored(path)) this.fileStored(path);
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
