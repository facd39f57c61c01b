/**
 * Local file facts that tolerate compaction: Cassandra deletes files all the
 * time, so "gone" is an answer, not an error.
 *
 * Synchronous on purpose: a local lstat takes microseconds, while the async
 * form costs about 10x the CPU (a hop through Deno's blocking-thread pool),
 * which showed up as the largest item when profiling 10,000 small files.
 */

/** `Deno.lstatSync`, or null when the path (or a parent) is gone. */
export function lstatOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
}

/** Names of the regular files in a directory; null if it is gone. */
export function fileNamesOrNull(directory: string): Set<string> | null {
  const names = new Set<string>();
  try {
    for (const entry of Deno.readDirSync(directory)) if (entry.isFile) names.add(entry.name);
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
  return names;
}

/** A text file's contents, or null when it does not exist. */
export function readTextOrNull(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
}

/** Removes a file; one that is already gone is not an error. */
export async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** True for the errors that mean "no such file" (the path or one of its parents). */
export function isGone(err: unknown): boolean {
  return err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory;
}
