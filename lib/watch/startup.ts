/**
 * Start-up reconciliation (-B): one listing of what the bucket already holds
 * under each root (one request per 1,000 keys instead of a HEAD per file),
 * then a sweep that queues every local file, checked against that listing.
 */
import { errorMessage, FatalError } from "../common/errors.ts";
import { secondsSince } from "../common/format.ts";
import { log } from "../common/log.ts";
import { INDEX_SUFFIX, type KeyNaming, objectKey, pathOfKey } from "../bucket/keys.ts";
import { wantsIndex } from "../bucket/sstable.ts";
import type { Store } from "../store/store.ts";
import type { RemoteListing } from "./bucket_view.ts";
import type { FileWatcher } from "./file_watcher.ts";
import type { IndexPublisher } from "./index_publisher.ts";
import type { UploadPipeline } from "./pipeline.ts";

export interface StartupParts {
  store: Store;
  naming: KeyNaming;
  roots: string[];
  /** With --once a failed listing is fatal; otherwise files are checked one by one. */
  once: boolean;
  pipeline: UploadPipeline;
  publisher: IndexPublisher | undefined;
  watcher: FileWatcher;
}

/** Lists the bucket, queues every existing file, and frees the listing once they are checked. */
export async function reconcileAtStart(parts: StartupParts): Promise<void> {
  const { pipeline, naming } = parts;
  const listing = await listExisting(parts);
  if (listing) {
    pipeline.setListing(listing);
    parts.publisher?.expectIndexes(dataFilesWithoutIndex(listing, naming));
  }
  await parts.watcher.sweep("startup", true);
  // The sweep only queues files: keep the listing until they are checked
  // against it (one request per file otherwise), then free it.
  void pipeline.idle().then(() => pipeline.setListing(undefined));
}

async function listExisting(parts: StartupParts): Promise<RemoteListing | undefined> {
  const { store, naming, roots, once } = parts;
  const objects = new Map<string, { size: number; etag: string }>();
  const prefixes = roots.map((root) => objectKey(naming, root + "/"));
  const started = performance.now();
  try {
    for (const prefix of prefixes) {
      for await (const item of store.list(prefix)) {
        objects.set(item.key, { size: item.size, etag: item.etag });
      }
    }
  } catch (err) {
    if (once || err instanceof FatalError) throw err;
    log.warn("could not list the bucket at start; checking files one by one", {
      error: errorMessage(err),
    });
    return undefined;
  }
  log.info("bucket listed", { objects: objects.size, seconds: secondsSince(started) });
  return { objects, prefixes };
}

/** Data.db files the bucket holds without an index (-B writes those indexes). */
function dataFilesWithoutIndex(listing: RemoteListing, naming: KeyNaming): Set<string> {
  const paths = new Set<string>();
  for (const key of listing.objects.keys()) {
    const path = pathOfKey(naming, key);
    if (path === null || key.endsWith(INDEX_SUFFIX)) continue;
    if (wantsIndex(path) && !listing.objects.has(key + INDEX_SUFFIX)) paths.add(path);
  }
  return paths;
}
