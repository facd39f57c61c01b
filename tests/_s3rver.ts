/**
 * The test S3 server s3rver (a fixture, not the program): its own command
 * line, run after one fix to its file store. `deno run <permissions>
 * tests/_s3rver.ts <s3rver options>`, the permissions those of
 * tests/_helpers.ts (`S3RVER_FLAGS`, its directory to read and write).
 *
 * Why the fix: s3rver writes an object's bytes first and its `.md5` file
 * after. A listing or HEAD that lands in between finds no `.md5`, hashes the
 * half-written (often empty) file and saves that hash, which can overwrite
 * the right one the PUT saves a moment later. The object then carries the
 * ETag of an empty body for good (seen in CI: a TOC.txt whose ETag was
 * d41d8cd9…, the MD5 of nothing, while its bytes and `md5sum` were right).
 * S3 never shows an object before its PUT completes; here, likewise, a key
 * being written is read (listed, HEAD, GET) once its write has finished.
 */
import FilesystemStore from "s3rver/lib/stores/filesystem.js";

interface StoredObject {
  bucket: string;
  key: string;
}
type Method = (this: unknown, ...args: unknown[]) => Promise<unknown>;

const store = FilesystemStore.prototype as Record<
  "putObject" | "copyObject" | "getMetadata",
  Method
>;
/** Writes under way, by `bucket/key`: what a read of that key waits for. */
const writes = new Map<string, Promise<unknown>>();
/** How long a read waits for a write of its key to finish. */
const WRITE_WAIT_MS = 5_000;
const nameOf = (bucket: unknown, key: unknown) => `${bucket}/${key}`;

/** Runs `write` with `name` marked as being written until it settles. */
function whileWriting<T>(name: string, write: () => Promise<T>): Promise<T> {
  const before = writes.get(name) ?? Promise.resolve();
  const done = before.catch(() => {}).then(write);
  const settled = done.catch(() => {});
  writes.set(name, settled);
  settled.then(() => {
    if (writes.get(name) === settled) writes.delete(name);
  });
  return done;
}

const { putObject, copyObject, getMetadata } = store;
store.putObject = function (object) {
  const { bucket, key } = object as StoredObject;
  return whileWriting(nameOf(bucket, key), () => putObject.call(this, object));
};
store.copyObject = function (...args) {
  const [, , destBucket, destKey] = args;
  // The copy reads its own result back: that read must not wait for itself.
  const self = Object.create(this as object, { getMetadata: { value: getMetadata } });
  return whileWriting(nameOf(destBucket, destKey), () => copyObject.apply(self, args));
};
store.getMetadata = async function (bucket, key) {
  const write = writes.get(nameOf(bucket, key));
  if (write) {
    // A PUT whose client went away may never settle (s3rver does not pass a
    // dropped request's error down its pipe): wait a while, not for ever.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([write, new Promise((r) => timer = setTimeout(r, WRITE_WAIT_MS))]);
    clearTimeout(timer);
  }
  return getMetadata.call(this, bucket, key);
};

await import("s3rver/bin/s3rver.js");
