/**
 * Writes buckets the way the Python tablesnap did (keys, `stat` and `md5sum`
 * metadata, `{"dir": ["name", ...]}` indexes), straight through an S3 client
 * of our own or a `LocalStore`, so the readers are tested against the layout
 * itself rather than against our watcher. The local store can also age
 * objects (its LastModified is the data file's mtime).
 */
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import type { KeyNaming } from "../lib/bucket/keys.ts";
import { LocalStore } from "../lib/store/local_store.ts";
import type { S3Server } from "./_helpers.ts";

export const NAMING: KeyNaming = { prefix: "", name: "cass1.example.com", separator: ":" };
export const DAY = 86_400_000;

/** Something that can hold objects: an S3 bucket or a local store. */
export interface BucketWriter {
  put(
    key: string,
    body: Uint8Array,
    options?: { metadata?: Record<string, string>; contentType?: string; mtime?: Date },
  ): Promise<void>;
}

/** Writes through the test's own S3 client (LastModified is the server's clock). */
export function s3Writer(s3: S3Server): BucketWriter {
  return {
    async put(key, body, options = {}) {
      await s3.client.send(
        new PutObjectCommand({
          Bucket: s3.bucket,
          Key: key,
          Body: body,
          Metadata: options.metadata ?? {},
          ...(options.contentType ? { ContentType: options.contentType } : {}),
        }),
      );
    },
  };
}

/** Writes into a local store, setting the object's LastModified to `mtime` if given. */
export function localWriter(store: LocalStore): BucketWriter {
  return {
    async put(key, body, options = {}) {
      await store.putBytes(key, body, {
        ...(options.metadata ? { metadata: options.metadata } : {}),
        ...(options.contentType ? { contentType: options.contentType } : {}),
      });
      if (options.mtime) await Deno.utime(store.dataPath(key), options.mtime, options.mtime);
    },
  };
}

/** A checked, ready local store in a directory. */
export async function localStore(dir: string): Promise<LocalStore> {
  await Deno.mkdir(dir, { recursive: true });
  const store = new LocalStore(dir);
  await store.check();
  return store;
}

export function md5Hex(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/** Python's `json.dumps` of the `stat` metadata. */
export function statJson(mode = 0o100644, uid = 999, gid = 999, user = "cassandra"): string {
  return `{"uid": ${uid}, "gid": ${gid}, "mode": ${mode}, "user": "${user}", "group": "${user}"}`;
}

export function key(naming: KeyNaming, path: string): string {
  return `${naming.prefix}${naming.name}${naming.separator}${path}`;
}

/**
 * Deterministic bytes for a file, different per name. A TOC.txt lists the
 * components of `generation()`, as Cassandra's would.
 */
export function contentOf(name: string, size?: number): Uint8Array {
  if (name.endsWith("TOC.txt") && size === undefined) {
    return new TextEncoder().encode(COMPONENTS.join("\n") + "\n");
  }
  size ??= 100 + name.length * 7;
  const out = new Uint8Array(size);
  let x = 0;
  for (const c of name) x = (x * 31 + c.charCodeAt(0)) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

export interface PutFileOptions {
  naming?: KeyNaming;
  mtime?: Date;
  /** `false`: no md5sum metadata (as some Python versions wrote). */
  md5sum?: string | false;
  stat?: string | false;
}

/** Puts one file at `path` (absolute) with Python tablesnap's metadata. */
export async function putFile(
  writer: BucketWriter,
  path: string,
  body: Uint8Array,
  options: PutFileOptions = {},
): Promise<string> {
  const metadata: Record<string, string> = {};
  if (options.stat !== false) metadata["stat"] = options.stat ?? statJson();
  if (options.md5sum !== false) metadata["md5sum"] = options.md5sum ?? md5Hex(body);
  const k = key(options.naming ?? NAMING, path);
  await writer.put(k, body, { metadata, ...(options.mtime ? { mtime: options.mtime } : {}) });
  return k;
}

/** Puts the index of the Data.db at `dataPath`, naming `names` (or a raw body). */
export async function putIndex(
  writer: BucketWriter,
  dataPath: string,
  names: string[] | string,
  options: { naming?: KeyNaming; mtime?: Date; directory?: string } = {},
): Promise<string> {
  const dir = options.directory ?? dataPath.slice(0, dataPath.lastIndexOf("/"));
  const body = typeof names === "string"
    ? names
    : `{${JSON.stringify(dir)}: [${names.map((n) => JSON.stringify(n)).join(", ")}]}`;
  const k = `${key(options.naming ?? NAMING, dataPath)}-listdir.json`;
  await writer.put(k, new TextEncoder().encode(body), {
    contentType: "application/json",
    ...(options.mtime ? { mtime: options.mtime } : {}),
  });
  return k;
}

const COMPONENTS = ["Data.db", "Index.db", "Filter.db", "Statistics.db", "TOC.txt"];

/** The components of one SSTable generation. */
export function generation(n: number): string[] {
  return COMPONENTS.map((c) => `nb-${n}-big-${c}`);
}

/**
 * Puts the files of `names` under `dir` (content from `contentOf`) that are
 * not yet in `written`, then the index of the newest generation's Data.db
 * naming all of them.
 */
export async function putTable(
  writer: BucketWriter,
  dir: string,
  names: string[],
  options: PutFileOptions & { written?: Set<string>; indexMtime?: Date } = {},
): Promise<string> {
  const written = options.written ?? new Set<string>();
  for (const name of names) {
    if (written.has(`${dir}/${name}`)) continue;
    written.add(`${dir}/${name}`);
    await putFile(writer, `${dir}/${name}`, contentOf(name), options);
  }
  const data = names.filter((n) => n.endsWith("Data.db")).sort().at(-1)!;
  const mtime = options.indexMtime ?? options.mtime;
  return await putIndex(writer, `${dir}/${data}`, names, {
    ...(options.naming ? { naming: options.naming } : {}),
    ...(mtime ? { mtime } : {}),
  });
}
