/**
 * What is stored beside a file's bytes: the `stat` metadata (uid, gid, mode
 * and, when resolvable, user and group names, with Python's `json.dumps`
 * spacing), the `md5sum` of the whole file, and the file's `mtime`, written
 * and read back.
 */
import type { Accounts } from "../common/accounts.ts";
import { isMd5Hex } from "../common/digest.ts";
import type { ObjectHead } from "../store/store.ts";

/** The `stat` metadata, with Python's `json.dumps` spacing, as the original wrote it. */
export function statMetadata(
  info: Deno.FileInfo,
  names: Pick<Accounts, "userName" | "groupName">,
): string {
  const uid = info.uid ?? 0;
  const gid = info.gid ?? 0;
  const fields: [string, string | number][] = [["uid", uid], ["gid", gid], [
    "mode",
    info.mode ?? 0,
  ]];
  const user = names.userName(uid);
  const group = names.groupName(gid);
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

/**
 * The metadata recording the file's mtime when it was read for upload (ISO
 * 8601 UTC, to the millisecond, as Deno reports it). A key of its own: the
 * `stat` JSON keeps exactly the fields the Python tableslurp reads. The
 * watcher compares it with a mutable component's local mtime when a HEAD has
 * fetched it anyway (see lib/watch/upload_file.ts).
 */
export const MTIME_METADATA = "mtime";

/** The `mtime` metadata value for an mtime in epoch milliseconds. */
export function mtimeMetadata(mtimeMs: number): string {
  return new Date(mtimeMs).toISOString();
}

/** The mtime (epoch ms) an object's metadata records, or undefined (absent or unreadable). */
export function mtimeOf(metadata: Record<string, string>): number | undefined {
  const text = metadata[MTIME_METADATA];
  if (text === undefined) return undefined;
  const ms = new Date(text).getTime();
  return Number.isNaN(ms) ? undefined : ms;
}

/**
 * The MD5 (lowercase hex) an object's bytes must have: the `md5sum`
 * metadata, else the ETag when it is one (see `etagMd5`). `null` when
 * neither is available.
 */
export function expectedMd5(
  head: Pick<ObjectHead, "etag" | "metadata" | "serverSideEncryption">,
): string | null {
  const meta = head.metadata["md5sum"]?.trim().toLowerCase();
  if (meta !== undefined && isMd5Hex(meta)) return meta;
  return etagMd5(head);
}

/**
 * The ETag as the MD5 of the object's bytes, or `null` when it is not one:
 * a multipart ETag ("-N"), or an object encrypted with SSE-KMS, whose ETag
 * S3 documents as not the MD5 (though it looks like one).
 */
export function etagMd5(head: Pick<ObjectHead, "etag" | "serverSideEncryption">): string | null {
  if (head.serverSideEncryption?.toLowerCase().startsWith("aws:kms")) return null;
  const etag = head.etag.toLowerCase();
  return isMd5Hex(etag) ? etag : null;
}

/** The `stat` metadata of an object, as far as it could be read. */
export interface StatMetadata {
  uid?: number;
  gid?: number;
  mode?: number;
  user?: string;
  group?: string;
}

/** Parses the `stat` metadata; fields of the wrong type are dropped, bad JSON gives null. */
export function parseStatMetadata(text: string | undefined): StatMetadata | null {
  if (text === undefined) return null;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    if (err instanceof SyntaxError) return null;
    throw err;
  }
  if (typeof data !== "object" || data === null) return null;
  const record = data as Record<string, unknown>;
  const out: StatMetadata = {};
  for (const field of ["uid", "gid", "mode"] as const) {
    const value = record[field];
    if (typeof value === "number" && Number.isInteger(value) && value >= 0) out[field] = value;
  }
  for (const field of ["user", "group"] as const) {
    const value = record[field];
    if (typeof value === "string" && value !== "") out[field] = value;
  }
  return out;
}
