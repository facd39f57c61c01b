/**
 * Writing a cut's index (index_publisher.ts decides when): where it goes in
 * the bucket, its body and cut-time metadata, and how many go at once.
 */
import { indexBody } from "../../bucket/index_body.ts";
import { CUT_TIME_METADATA } from "../../bucket/index_reader.ts";
import { indexKey, type KeyNaming, recutIndexKey } from "../../bucket/keys.ts";
import { Semaphore } from "../../common/pool.ts";
import type { Store } from "../../store/store.ts";

/**
 * Index writes (a HEAD, then a PUT) in flight at once. Many can come due
 * together (the end of a -B backlog, a journal's reconcile at start):
 * unbounded, 1,250 of them once held about 900 sockets and 65 MB of RSS.
 */
const INDEX_WRITES_AT_ONCE = 8;

export class IndexWriter {
  readonly #store: Store;
  readonly #naming: KeyNaming;
  readonly #writes = new Semaphore(INDEX_WRITES_AT_ONCE);

  constructor(store: Store, naming: KeyNaming) {
    this.#store = store;
    this.#naming = naming;
  }

  /** Writes the index of `directory` naming `names`, cut at `at`; resolves to its key. */
  write(
    dataPath: string,
    directory: string,
    cut: { at: number; names: string[] },
  ): Promise<string> {
    return this.#writes.use(async () => {
      const key = await freeIndexKey(this.#store, this.#naming, dataPath, cut.at);
      await this.#store.putBytes(key, new TextEncoder().encode(indexBody(directory, cut.names)), {
        contentType: "application/json",
        metadata: { [CUT_TIME_METADATA]: new Date(cut.at).toISOString() },
      });
      return key;
    });
  }
}

/**
 * Where this cut goes, never over another cut (every restore point stays):
 * the generation's first index at `<Data.db key>-listdir.json`, later cuts
 * at `recutIndexKey`; the same cut again (a lost answer) to the same key.
 */
async function freeIndexKey(
  store: Store,
  naming: KeyNaming,
  dataPath: string,
  at: number,
): Promise<string> {
  const first = indexKey(naming, dataPath);
  const head = await store.head(first);
  if (head === null || head.metadata[CUT_TIME_METADATA] === new Date(at).toISOString()) {
    return first;
  }
  return recutIndexKey(naming, dataPath, at);
}
