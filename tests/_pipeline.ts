/**
 * The upload pipeline as in-process tests run it: keys `h:<path>`, two
 * threads, no retries within a cycle (a failure waits for the next cycle,
 * which is what those tests look at), nothing multipart.
 */
import type { Store } from "../lib/store/store.ts";
import { UploadPipeline, type UploadPipelineOptions } from "../lib/watch/upload/pipeline.ts";

/** The key naming of these pipelines: `h:` then the file's path. */
export const TEST_NAMING = { prefix: "", name: "h", separator: ":" };

/** A pipeline storing into `store`; `options` replace or add to the defaults. */
export function testPipeline(
  store: Store,
  options: Partial<UploadPipelineOptions> = {},
): UploadPipeline {
  return new UploadPipeline({
    store,
    naming: TEST_NAMING,
    threads: 2,
    retries: 0,
    multipartThreshold: 5 * 1024 ** 3,
    partSize: 256 * 1024 ** 2,
    md5OnStart: false,
    ...options,
  });
}
