/** Where a cut's index goes in the bucket (index_publisher.ts writes it there). */
import { CUT_TIME_METADATA } from "../../bucket/index_reader.ts";
import { indexKey, type KeyNaming, recutIndexKey } from "../../bucket/keys.ts";
import type { Store } from "../../store/store.ts";

/**
 * Where this cut goes, never over another cut (every restore point stays):
 * the generation's first index at `<Data.db key>-listdir.json`, later cuts
 * at `recutIndexKey`; the same cut again (a lost answer) to the same key.
 */
export async function freeIndexKey(
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
