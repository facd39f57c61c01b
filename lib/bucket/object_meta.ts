/**
 * What is stored beside a file's bytes: the `stat` metadata (uid, gid, mode
 * and, when resolvable, user and group names) and digests (the whole file's
 * MD5 for `md5sum`, each multipart part's MD5 for Content-MD5).
 */
import { createHash } from "node:crypto";

/** The `stat` metadata, with Python's `json.dumps` spacing, as the original wrote it. */
export function statMetadata(info: Deno.FileInfo, names: OwnerNames): string {
  const uid = info.uid ?? 0;
  const gid = info.gid ?? 0;
  const fields: [string, string | number][] = [["uid", uid], ["gid", gid], [
    "mode",
    info.mode ?? 0,
  ]];
  const user = names.user(uid);
  const group = names.group(gid);
  if (user !== undefined) fields.push(["user", user]);
  if (group !== undefined) fields.push(["group", group]);
  return pythonJsonObject(fields);
}

/**
 * `json.dumps` output for a flat object: ", " and ": " separators, and
 * non-ASCII escaped as \uXXXX (Python's ensure_ascii default).
 */
export function pythonJsonObject(fields: [string, unknown][]): string {
  return `{${fields.map(([k, v]) => `${pythonJson(k)}: ${pythonJson(v)}`).join(", ")}}`;
}

/** `json.dumps` of a string, number or array of those. */
export function pythonJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(", ")}]`;
  return JSON.stringify(value).replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** Resolves uids and gids to names from /etc/passwd and /etc/group, cached. */
export class OwnerNames {
  #users: Map<number, string> | undefined;
  #groups: Map<number, string> | undefined;

  user(uid: number): string | undefined {
    this.#users ??= readIdFile("/etc/passwd");
    return this.#users.get(uid);
  }

  group(gid: number): string | undefined {
    this.#groups ??= readIdFile("/etc/group");
    return this.#groups.get(gid);
  }
}

function readIdFile(path: string): Map<number, string> {
  const map = new Map<number, string>();
  let text = "";
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return map; // no names: the metadata then carries ids only, as Python did
  }
  for (const line of text.split("\n")) {
    const [name, , id] = line.split(":");
    if (name && id !== undefined && /^\d+$/.test(id) && !map.has(Number(id))) {
      map.set(Number(id), name);
    }
  }
  return map;
}

export interface FileDigests {
  /** Lowercase hex MD5 of the whole file. */
  md5: string;
  /** Bytes read: the size the digests describe. */
  size: number;
  /** With `partSize`: each part's MD5 (hex). */
  partMd5s?: string[];
}

const READ_CHUNK = 1024 * 1024;

/**
 * Streams a file once, computing its MD5 and, when `partSize` is given,
 * every part's MD5 in the same pass. Reads at most `size` bytes (the size
 * stat reported): a file growing meanwhile is caught by the caller's
 * re-stat, not by reading further. Memory: one 1 MiB buffer.
 */
export async function digestFile(
  path: string,
  size: number,
  partSize?: number,
  onBytes?: (n: number) => Promise<void> | void,
): Promise<FileDigests> {
  using file = await Deno.open(path, { read: true });
  const whole = createHash("md5");
  const parts: string[] = [];
  let part = partSize ? createHash("md5") : undefined;
  let inPart = 0;
  let total = 0;
  const buffer = new Uint8Array(Math.max(1, Math.min(READ_CHUNK, size)));
  while (total < size) {
    let want = Math.min(READ_CHUNK, size - total);
    if (partSize) want = Math.min(want, partSize - inPart);
    const n = await file.read(buffer.subarray(0, want));
    if (n === null) break;
    const chunk = buffer.subarray(0, n);
    whole.update(chunk);
    total += n;
    if (part && partSize) {
      part.update(chunk);
      inPart += n;
      if (inPart === partSize) {
        parts.push(part.digest("hex"));
        part = createHash("md5");
        inPart = 0;
      }
    }
    await onBytes?.(n);
  }
  if (part && inPart > 0) parts.push(part.digest("hex"));
  return { md5: whole.digest("hex"), size: total, ...(partSize ? { partMd5s: parts } : {}) };
}

/**
 * `Deno.lstatSync`, or null when the path (or a parent) is gone: files vanish
 * under compaction. Synchronous on purpose: a local lstat takes microseconds,
 * while the async form costs about 10x the CPU (a hop through Deno's
 * blocking-thread pool), which showed up as the largest item when profiling
 * 10,000 small files.
 */
export function lstatOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) {
      return null;
    }
    throw err;
  }
}
