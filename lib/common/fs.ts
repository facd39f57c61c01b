/**
 * Local file facts that tolerate compaction: Cassandra deletes files all the
 * time, so "gone" is an answer, not an error.
 *
 * Synchronous on purpose: a local lstat takes microseconds, while the async
 * form costs about 10x the CPU (a hop through Deno's blocking-thread pool),
 * which showed up as the largest item when profiling 10,000 small files.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";

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

/**
 * A path that was a regular file when listed is something else when opened
 * (a FIFO, a device, a directory put in its place): never read.
 */
export class NotRegularFileError extends Error {
  override name = "NotRegularFileError";
  constructor(path: string) {
    super(`'${path}' is no longer a regular file`);
  }
}

/**
 * Throws `NotRegularFileError` unless the opened `file` is a regular file:
 * the re-check after an lstat and an open, for a path swapped in between.
 */
export function assertRegular(file: Deno.FsFile, path: string): void {
  if (!file.statSync().isFile) throw new NotRegularFileError(path);
}

/** A small file's bytes, or why there are none. */
export type SmallFileRead =
  | { bytes: Uint8Array }
  | { gone: true }
  | { notRegular: true }
  | { tooLarge: true };

/**
 * Reads a small regular file whole, never blocking: opened with O_NONBLOCK
 * (a FIFO's open would otherwise wait for a writer forever) and
 * O_NOFOLLOW (which Deno's permission check defeats short of --allow-all:
 * it resolves the path first), then checked with fstat, so a path swapped
 * for a FIFO, device or directory between a listing and this read, or a
 * symlink to one, is refused, not read. Reads at most `maxBytes` (one more says "too large").
 */
export function readSmallRegularFile(path: string, maxBytes: number): SmallFileRead {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "ENOENT" || code === "ENOTDIR") return { gone: true };
    if (code === "ELOOP" || code === "ENXIO" || code === "ENODEV") return { notRegular: true };
    throw err;
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) return { notRegular: true };
    if (stat.size > maxBytes) return { tooLarge: true };
    // Sized by fstat (plus one byte, to notice growth), not by the limit:
    // TOCs are read by the hundred per index check.
    const buffer = new Uint8Array(stat.size + 1);
    let filled = 0;
    while (filled < buffer.byteLength) {
      const n = readSync(fd, buffer, filled, buffer.byteLength - filled, null);
      if (n === 0) break;
      filled += n;
    }
    if (filled > stat.size) return filled > maxBytes ? { tooLarge: true } : readGrown(fd, maxBytes);
    return { bytes: buffer.subarray(0, filled) };
  } finally {
    closeSync(fd);
  }
}

/** Reads a file that grew since its fstat from the start, up to the limit. */
function readGrown(fd: number, maxBytes: number): SmallFileRead {
  const buffer = new Uint8Array(maxBytes + 1);
  let filled = 0;
  while (filled < buffer.byteLength) {
    const n = readSync(fd, buffer, filled, buffer.byteLength - filled, filled);
    if (n === 0) break;
    filled += n;
  }
  return filled > maxBytes ? { tooLarge: true } : { bytes: buffer.subarray(0, filled) };
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
