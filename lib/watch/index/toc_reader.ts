/**
 * Reading a generation's TOC.txt for an index cut (cut.ts). A TOC that is
 * not a list of component names (binary, NUL bytes, a FIFO, too large) is
 * treated as no TOC, the documented fallback, and said once per file.
 */
import { MAX_TOC_BYTES, readToc } from "../../bucket/sstable.ts";
import { readSmallRegularFile } from "../../common/fs.ts";
import { log } from "../../common/log.ts";

/** Unreadable TOC.txt paths remembered (each warned about once); more start the count over. */
const MAX_REMEMBERED_TOCS = 10_000;

export class TocReader {
  /** TOC.txt files found unreadable, each warned about once (until readable again). */
  readonly #unreadable = new Set<string>();
  readonly #onUnreadable: ((tocPath: string) => void) | undefined;

  /** `onUnreadable`: a TOC.txt was found unreadable (once per file), for the metrics. */
  constructor(onUnreadable?: (tocPath: string) => void) {
    this.#onUnreadable = onUnreadable;
  }

  /**
   * The components a generation's TOC.txt lists; null without a TOC, or
   * when it is not a list of component names: the generation is then
   * decided as if it had none, and indexed unchecked.
   */
  components(tocPath: string): string[] | null {
    const read = readSmallRegularFile(tocPath, MAX_TOC_BYTES);
    let reason: string;
    if ("bytes" in read) {
      const toc = readToc(read.bytes);
      if ("components" in toc) {
        this.#unreadable.delete(tocPath);
        return toc.components;
      }
      reason = toc.unreadable;
    } else if ("gone" in read) {
      return null;
    } else {
      reason = "notRegular" in read ? "not a regular file" : `larger than ${MAX_TOC_BYTES} bytes`;
    }
    if (!this.#unreadable.has(tocPath)) {
      if (this.#unreadable.size >= MAX_REMEMBERED_TOCS) this.#unreadable.clear();
      this.#unreadable.add(tocPath);
      this.#onUnreadable?.(tocPath);
      log.warn("TOC.txt unreadable; its generation is indexed unchecked, as without a TOC", {
        path: tocPath,
        reason,
      });
    }
    return null;
  }
}
