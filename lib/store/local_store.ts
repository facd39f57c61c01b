/**
 * The local-directory implementation of `Store`: the embedded default
 * (`file:///var/backups/tablesnap`), for trying tablesnap without an S3
 * account and for tests. Same keys, bodies and metadata as S3:
 *
 *   <root>/data/<key as path>   the object's bytes
 *   <root>/meta/<key as path>   a JSON sidecar: size, etag, metadata, contentType
 *
 * Keys are mapped to paths segment by segment (see `keyToSegments`), so a
 * hostile key can never leave `<root>`. Writes go to `<root>/tmp` first and
 * are renamed into place, so a reader never sees half an object. An object's
 * LastModified is its data file's mtime, which tests may set.
 */
import { md5Hex, multipartEtag, newMd5 } from "../common/digest.ts";
import { PartDigests } from "../common/part_digests.ts";
import { FatalError } from "../common/errors.ts";
import { isGone } from "../common/fs.ts";
import { dirname } from "../common/paths.ts";
import {
  type DeleteOptions,
  DigestMismatchError,
  type FileUpload,
  type GetOptions,
  type ObjectHead,
  type ObjectInfo,
  PLAIN_TRAITS,
  type PutFileOptions,
  type Store,
  type StoreTraits,
} from "./store.ts";

interface Sidecar {
  size: number;
  etag: string;
  metadata: Record<string, string>;
  contentType?: string;
}

const READ_CHUNK = 1024 * 1024;

export class LocalStore implements Store {
  readonly traits: StoreTraits = PLAIN_TRAITS;
  readonly url: string;
  readonly root: string;
  #tmpCounter = 0;
  #prepared: Promise<void> | undefined;

  /** `root` is an absolute directory path; it must exist (like a bucket). */
  constructor(root: string) {
    this.root = root.replace(/\/+$/, "") || "/";
    this.url = `file://${this.root}`;
  }

  check(): Promise<void> {
    return this.#prepare();
  }

  /**
   * Proves the directory exists (a missing one is never created: like a
   * bucket, it must be made on purpose) and creates the subdirectories,
   * once. Every operation goes through it, so check() is optional.
   */
  #prepare(): Promise<void> {
    this.#prepared ??= (async () => {
      let info: Deno.FileInfo;
      try {
        info = await Deno.stat(this.root);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          throw new FatalError(`Local store directory '${this.root}' does not exist`);
        }
        throw new FatalError(`Cannot open local store directory '${this.root}': ${err}`);
      }
      if (!info.isDirectory) {
        throw new FatalError(`Local store '${this.root}' is not a directory`);
      }
      for (const sub of ["data", "meta", "tmp"]) {
        await Deno.mkdir(`${this.root}/${sub}`, { recursive: true });
      }
    })();
    return this.#prepared;
  }

  /** The data file's path for a key (exported for tests that age objects). */
  dataPath(key: string): string {
    return `${this.root}/data/${keyToSegments(key).join("/")}`;
  }

  #metaPath(key: string): string {
    return `${this.root}/meta/${keyToSegments(key).join("/")}`;
  }

  async *list(prefix: string, options: { delimiter?: string } = {}): AsyncIterable<ObjectInfo> {
    await this.#prepare();
    // Start at the deepest directory the prefix fully names; walk in key order.
    const dirSegments = keyToSegments(prefix).slice(0, -1);
    for await (const key of walkKeys(`${this.root}/meta`, dirSegments, prefix, options.delimiter)) {
      const head = await this.head(key);
      if (head) yield { key, size: head.size, etag: head.etag, lastModified: head.lastModified };
    }
  }

  async head(key: string): Promise<ObjectHead | null> {
    let sidecar: Sidecar;
    let stat: Deno.FileInfo;
    try {
      sidecar = JSON.parse(await Deno.readTextFile(this.#metaPath(key)));
      stat = await Deno.stat(this.dataPath(key));
    } catch (err) {
      if (isGone(err)) return null;
      throw err;
    }
    if (!stat.isFile) return null;
    return {
      key,
      size: stat.size,
      etag: sidecar.etag,
      lastModified: stat.mtime ?? new Date(0),
      metadata: sidecar.metadata,
      ...(sidecar.contentType ? { contentType: sidecar.contentType } : {}),
    };
  }

  async copy(from: string, to: string): Promise<void> {
    await this.#prepare();
    const head = await this.head(from);
    if (head === null) throw new Error(`No object '${from}' to copy in ${this.url}`);
    const tmp = this.#tmpPath();
    await Deno.copyFile(this.dataPath(from), tmp);
    await this.#commit(to, tmp, {
      size: head.size,
      etag: head.etag,
      metadata: head.metadata,
      ...(head.contentType ? { contentType: head.contentType } : {}),
    });
  }

  async putBytes(
    key: string,
    body: Uint8Array,
    options: { metadata?: Record<string, string>; contentType?: string },
  ): Promise<void> {
    await this.#prepare();
    const tmp = this.#tmpPath();
    await Deno.writeFile(tmp, body);
    const etag = md5Hex(body);
    await this.#commit(key, tmp, {
      size: body.byteLength,
      etag,
      metadata: options.metadata ?? {},
      ...(options.contentType ? { contentType: options.contentType } : {}),
    });
  }

  async putFile(key: string, file: FileUpload, options: PutFileOptions = {}): Promise<void> {
    await this.#prepare();
    const tmp = this.#tmpPath();
    const hash = newMd5();
    let copied = 0;
    if (file.body) {
      await options.onBytes?.(file.body.byteLength);
      await Deno.writeFile(tmp, file.body);
      await this.#commit(key, tmp, {
        size: file.body.byteLength,
        etag: md5Hex(file.body),
        metadata: file.metadata,
        ...(file.contentType ? { contentType: file.contentType } : {}),
      });
      return;
    }
    try {
      using target = await Deno.open(tmp, { write: true, createNew: true });
      // A multipart upload is checked part by part, as S3 checks it.
      const parts = file.parts ? new PartDigests(file.parts.partSize) : undefined;
      for await (const chunk of readBody(file)) {
        options.signal?.throwIfAborted();
        if (parts) parts.update(chunk);
        else hash.update(chunk);
        await options.onBytes?.(chunk.byteLength);
        let written = 0;
        while (written < chunk.byteLength) written += await target.write(chunk.subarray(written));
        copied += chunk.byteLength;
      }
      // A multipart upload's ETag is the MD5 of the part MD5s, "-N": keep S3's shape.
      const expected = file.parts ? multipartEtag(file.parts.md5s) : file.md5;
      const etag = parts ? multipartEtag(parts.finish()) : hash.digest("hex");
      if (copied !== file.size || etag !== expected) {
        throw new DigestMismatchError(
          `Content of '${file.path}' changed during upload (MD5 ${etag}, expected ${expected})`,
        );
      }
      await this.#commit(key, tmp, {
        size: copied,
        etag,
        metadata: file.metadata,
        ...(file.contentType ? { contentType: file.contentType } : {}),
      });
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
  }

  async get(
    key: string,
    options: GetOptions = {},
  ): Promise<{ head: ObjectHead; body: ReadableStream<Uint8Array> } | null> {
    const head = await this.head(key);
    if (!head) return null;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(this.dataPath(key), { read: true });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
    const { range } = options;
    if (!range) return { head, body: file.readable };
    await file.seek(range.offset, Deno.SeekMode.Start);
    return { head, body: rangeOf(file, range.length) };
  }

  /** A directory has no Object Lock: nothing is kept by one, failures throw. */
  async deleteMany(keys: string[], _options?: DeleteOptions): Promise<void> {
    for (const key of keys) {
      for (const path of [this.#metaPath(key), this.dataPath(key)]) {
        await Deno.remove(path).catch((err) => {
          if (!(err instanceof Deno.errors.NotFound)) throw err;
        });
      }
    }
  }

  close(): void {}

  #tmpPath(): string {
    return `${this.root}/tmp/${Deno.pid}-${Date.now()}-${this.#tmpCounter++}`;
  }

  async #commit(key: string, tmp: string, sidecar: Sidecar): Promise<void> {
    const dataPath = this.dataPath(key);
    const metaPath = this.#metaPath(key);
    await Deno.mkdir(dirname(dataPath), { recursive: true });
    await Deno.mkdir(dirname(metaPath), { recursive: true });
    const metaTmp = this.#tmpPath();
    await Deno.writeTextFile(metaTmp, JSON.stringify(sidecar));
    await Deno.rename(tmp, dataPath);
    await Deno.rename(metaTmp, metaPath);
  }
}

/**
 * Splits a key at "/" into path segments that are safe file names: "%"
 * becomes "%25", and the segments the file system treats specially ("",
 * ".", "..") become "%", "%.", "%..", which no encoded segment can equal.
 * Keys with NUL are refused: no file system takes them.
 */
export function keyToSegments(key: string): string[] {
  if (key.includes("\0")) throw new Error(`Key ${JSON.stringify(key)} contains a NUL byte`);
  return key.split("/").map((segment) => {
    if (segment === "" || segment === "." || segment === "..") return `%${segment}`;
    return segment.replaceAll("%", "%25");
  });
}

/** The inverse of `keyToSegments`. */
export function segmentsToKey(segments: string[]): string {
  return segments
    .map((segment) => {
      if (segment === "%" || segment === "%." || segment === "%..") return segment.slice(1);
      return segment.replaceAll("%25", "%");
    })
    .join("/");
}

/**
 * The keys under `segments` that start with `prefix`, streamed in S3's order
 * (UTF-8 bytes of the whole key) one directory at a time, so a listing of
 * millions of keys holds one directory's names, not every key. Within a
 * directory, a subdirectory sorts as its name followed by "/", which is
 * where its keys fall among its siblings.
 */
async function* walkKeys(
  metaRoot: string,
  segments: string[],
  prefix: string,
  delimiter: string | undefined,
): AsyncGenerator<string> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir([metaRoot, ...segments].join("/")));
  } catch (err) {
    if (isGone(err)) return;
    throw err;
  }
  const named = entries
    .filter((e) => e.isDirectory || e.isFile)
    .map((e) => ({ entry: e, key: segmentsToKey([...segments, e.name]) }))
    .map((x) => ({ ...x, sortKey: x.entry.isDirectory ? `${x.key}/` : x.key }))
    .sort((a, b) => compareKeys(a.sortKey, b.sortKey));
  for (const { entry, key, sortKey } of named) {
    if (entry.isDirectory) {
      if (!sortKey.startsWith(prefix) && !prefix.startsWith(sortKey)) continue;
      if (
        delimiter && sortKey.startsWith(prefix) && sortKey.slice(prefix.length).includes(delimiter)
      ) {
        continue; // everything below holds the delimiter after the prefix
      }
      yield* walkKeys(metaRoot, [...segments, entry.name], prefix, delimiter);
    } else if (key.startsWith(prefix)) {
      if (delimiter && key.slice(prefix.length).includes(delimiter)) continue;
      yield key;
    }
  }
}

/** `length` bytes of an open file from its position, as a stream that closes it. */
function rangeOf(file: Deno.FsFile, length: number): ReadableStream<Uint8Array> {
  let left = length;
  return new ReadableStream({
    async pull(controller) {
      const buffer = new Uint8Array(Math.min(READ_CHUNK, left));
      const n = left > 0 ? await file.read(buffer) : null;
      if (n === null) {
        file.close();
        controller.close();
        return;
      }
      left -= n;
      controller.enqueue(buffer.subarray(0, n));
    },
    cancel() {
      file.close();
    },
  });
}

/** S3 lists keys in UTF-8 byte order. */
function compareKeys(a: string, b: string): number {
  const ea = new TextEncoder().encode(a);
  const eb = new TextEncoder().encode(b);
  const n = Math.min(ea.length, eb.length);
  for (let i = 0; i < n; i++) if (ea[i] !== eb[i]) return ea[i]! - eb[i]!;
  return ea.length - eb.length;
}

/** The body of `file`: its source's bytes, else the file's (up to its size). */
async function* readBody(file: FileUpload): AsyncIterable<Uint8Array> {
  if (file.source) {
    yield* file.source.read({ offset: 0, length: file.size });
    return;
  }
  using source = await Deno.open(file.path, { read: true });
  const buffer = new Uint8Array(READ_CHUNK);
  for (let copied = 0; copied < file.size;) {
    const n = await source.read(buffer.subarray(0, Math.min(READ_CHUNK, file.size - copied)));
    if (n === null) return;
    copied += n;
    yield buffer.subarray(0, n);
  }
}
