/**
 * Reading a small file whole, within a shared memory budget, and the error
 * for a file that changed while it was read (upload_file.ts uses them).
 */
import { assertRegular } from "../../common/fs.ts";

/** The file's size or mtime moved during the upload. */
export class FileChangedError extends Error {
  override name = "FileChangedError";
  constructor(path: string) {
    super(`File '${path}' changed while it was being uploaded`);
  }
}

/** A count of bytes that callers take and give back, never waiting. */
export class ByteBudget {
  #left: number;
  constructor(bytes: number) {
    this.#left = bytes;
  }
  tryTake(bytes: number): boolean {
    if (bytes > this.#left) return false;
    this.#left -= bytes;
    return true;
  }
  give(bytes: number): void {
    this.#left += bytes;
  }
}

/**
 * Reads `size` bytes of a small file; a different length means the file
 * changed. Synchronous like `lstatOrNull`: at most 4 MiB from a local disk,
 * and one call instead of four async file operations per small file.
 */
export function readExactly(path: string, size: number): Uint8Array {
  using file = Deno.openSync(path, { read: true });
  assertRegular(file, path);
  const buffer = new Uint8Array(size + 1);
  let filled = 0;
  for (;;) {
    const n = file.readSync(buffer.subarray(filled));
    if (n === null || n === 0) break;
    filled += n;
    if (filled > size) throw new FileChangedError(path);
  }
  if (filled !== size) throw new FileChangedError(path);
  return buffer.subarray(0, size);
}
