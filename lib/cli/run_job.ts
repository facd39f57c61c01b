/** What the restore, retention and verify runners share: a checked store, closed after. */
import { type Connection, openStore } from "../store/open_store.ts";
import type { Store } from "../store/store.ts";

/** Opens BUCKET, proves it is reachable (one-line errors otherwise), runs `job`, closes it. */
export async function withStore<T>(
  bucket: string,
  connection: Connection,
  job: (store: Store) => Promise<T>,
): Promise<T> {
  const store = openStore(bucket, connection);
  try {
    await store.check();
    return await job(store);
  } finally {
    store.close();
  }
}
