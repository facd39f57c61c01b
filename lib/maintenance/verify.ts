/**
 * `tablesnap verify`: check that a restore would work, for monitoring. For
 * the newest index of every directory under PATH (every index with `--all`),
 * every file it names must exist, and its digest metadata must agree with
 * the object (a single-part ETag is the MD5 of the bytes S3 holds); with
 * `--md5` every object is downloaded (streamed, not stored) and its size and
 * MD5 checked.
 */
import { unsafeNameReason } from "../bucket/index_body.ts";
import {
  chooseRestorePoint,
  cutTimeOf,
  indexesPerDirectory,
  readIndex,
  tocGaps,
} from "../bucket/index_reader.ts";
import {
  directoryPrefix,
  keyDirectory,
  keyHead,
  type KeyNaming,
  trimSlashes,
} from "../bucket/keys.ts";
import { etagMd5, expectedMd5 } from "../bucket/object_meta.ts";
import { isMutableComponent } from "../bucket/sstable.ts";
import { laterThanCut, SupersededCopies } from "../bucket/superseded.ts";
import { ChunkReader } from "../common/chunk_reader.ts";
import { newMd5 } from "../common/digest.ts";
import { errorMessage, FatalError } from "../common/errors.ts";
import { formatBytes } from "../common/format.ts";
import { log } from "../common/log.ts";
import { forEachLimited } from "../common/pool.ts";
import type { ObjectHead, ObjectInfo, Store } from "../store/store.ts";
import { printLine, safeJson } from "../common/escape.ts";

/** What to verify. */
export interface VerifyOptions {
  store: Store;
  naming: KeyNaming;
  /** Directory path (as the watcher saw it) whose backups are checked. */
  path: string;
  /** Check every index, not only the newest per directory. */
  all?: boolean;
  /** Download every object and check size and MD5. */
  md5?: boolean;
  /** Concurrent checks (default 8). */
  parallel?: number;
  /**
   * One JSON object per line instead of text: each object checked
   * (`"kind": "object"`, with its storage class), each problem, the summary.
   */
  json?: boolean;
  /** Where problem and summary lines go (default: stdout). */
  print?: (line: string) => void;
}

/** One thing wrong, on one key. */
export interface VerifyProblem {
  key: string;
  problem: string;
}

/** What verify found. */
export interface VerifyResult {
  indexes: number;
  files: number;
  bytes: number;
  problems: VerifyProblem[];
}

/** Verifies the backups under `path`; never throws for a problem found, only reports it. */
export async function verify(options: VerifyOptions): Promise<VerifyResult> {
  const { store } = options;
  const print = options.print ?? printLine;
  const prefix = directoryPrefix(options.naming, options.path);
  const head = keyHead(options.naming);
  const result: VerifyResult = { indexes: 0, files: 0, bytes: 0, problems: [] };
  const problem = (key: string, text: string) => {
    result.problems.push({ key, problem: text });
    print(
      options.json ? safeJson({ kind: "problem", key, problem: text }) : `PROBLEM ${key}: ${text}`,
    );
  };

  const selected: ObjectInfo[] = [];
  // Copies of rewritten components: the bytes of points cut before the rewrite.
  const copies = new SupersededCopies();
  for (const [, inDirectory] of await indexesPerDirectory(store, prefix, (i) => copies.add(i))) {
    if (options.all) {
      selected.push(...inDirectory);
    } else {
      const newest = await chooseRestorePoint(store, inDirectory);
      if (newest) selected.push(newest.info);
    }
  }
  if (selected.length === 0) problem(prefix, "no index under this prefix");

  // Keys already checked, of the directory at hand only: `selected` comes a
  // directory at a time, and a set over the whole bucket would grow with it.
  let seen: DirectorySeen = { dir: "", checked: new Set(), metadata: new Map() };
  const check = { options, head, copies, result, problem, print };
  for (const index of selected) {
    const dir = keyDirectory(index.key);
    if (dir !== seen.dir) seen = { dir, checked: new Set(), metadata: new Map() };
    await verifyIndex(check, index, seen);
  }
  if (options.json) {
    const { problems, ...counts } = result;
    print(safeJson({ kind: "summary", ...counts, problems: problems.length }));
    return result;
  }
  print(
    `Verified ${result.indexes} indexes, ${result.files} files (${formatBytes(result.bytes)}) ` +
      `under '${prefix}' in ${store.url}${options.md5 ? " with MD5" : ""}: ` +
      `${result.problems.length} problem${result.problems.length === 1 ? "" : "s"}`,
  );
  return result;
}

/** What checking every index shares. */
interface IndexCheck {
  options: VerifyOptions;
  /** `<prefix><name><separator>`: an index's directory must be its key's. */
  head: string;
  copies: SupersededCopies;
  result: VerifyResult;
  problem: (key: string, text: string) => void;
  print: (line: string) => void;
}

/** What the indexes of one key directory share: the keys checked, each component's metadata. */
interface DirectorySeen {
  dir: string;
  checked: Set<string>;
  /** Of each mutable component checked: its `mtime` tells a rewrite after a cut. */
  metadata: Map<string, Record<string, string>>;
}

/** Checks one index and the objects it names (those not checked for an earlier index). */
async function verifyIndex(
  check: IndexCheck,
  index: ObjectInfo,
  seen: DirectorySeen,
): Promise<void> {
  const { options, copies, result, problem, print } = check;
  const { store } = options;
  const { dir, checked, metadata } = seen;
  result.indexes++;
  let names: string[];
  let cutMs: number;
  try {
    const listing = await readIndex(store, index.key);
    names = listing.names;
    cutMs = (cutTimeOf(listing.head) ?? index.lastModified).getTime();
    if (`${check.head}${trimSlashes(listing.directory)}` !== dir) {
      problem(index.key, `describes directory '${listing.directory}', not the one its key is in`);
    }
  } catch (err) {
    problem(index.key, errorMessage(err));
    return;
  }
  const keys: string[] = [];
  /** The object holding a named key's bytes as of this point: a copy, or itself. */
  const keyOf = (named: string) => copies.at(named, cutMs)?.key ?? named;
  const current: string[] = [];
  for (const name of names) {
    const reason = unsafeNameReason(name);
    if (reason !== null) {
      problem(index.key, `names an unsafe file ${JSON.stringify(name)}: ${reason}`);
      continue;
    }
    const key = keyOf(`${dir}/${name}`);
    if (key === `${dir}/${name}` && isMutableComponent(name)) current.push(key);
    if (!checked.has(key)) {
      checked.add(key);
      keys.push(key);
    }
  }
  // Whole SSTables: every component a generation's TOC.txt lists is named.
  const onUnreadable = (key: string, reason: string) =>
    problem(key, `TOC.txt unreadable (${reason}); its generation is not checked`);
  for (const gap of await tocGaps(store, dir, names, () => true, { keyOf, onUnreadable })) {
    problem(
      index.key,
      `generation '${gap.generation}' lacks ${gap.missing.join(", ")} (listed by its TOC.txt)`,
    );
  }
  await forEachLimited(keys, options.parallel ?? 8, async (key) => {
    try {
      const { head, text } = await checkObject(store, key, options.md5 ?? false, result);
      if (head && isMutableComponent(key)) metadata.set(key, head.metadata);
      if (options.json && head) print(safeJson(objectJson(head)));
      if (text !== null) problem(key, `${text} (named by '${index.key}')`);
    } catch (err) {
      problem(
        key,
        `cannot check: ${err instanceof FatalError ? err.message : errorMessage(err)}`,
      );
    }
  });
  // A component rewritten after this point's cut, with no copy of its earlier bytes.
  for (const key of current) {
    const later = laterThanCut(metadata.get(key) ?? {}, cutMs);
    if (later !== null) problem(key, `${later} (named by '${index.key}')`);
  }
  log.debug("index verified", { key: index.key, files: names.length });
}

/** An object checked, for --json: its facts, not its metadata. */
function objectJson(head: ObjectHead): Record<string, unknown> {
  return {
    kind: "object",
    key: head.key,
    bytes: head.size,
    ...(head.storageClass !== undefined ? { storage_class: head.storageClass } : {}),
    ...(head.serverSideEncryption !== undefined
      ? { server_side_encryption: head.serverSideEncryption }
      : {}),
  };
}

/** Checks one object; returns its head (null: missing) and what is wrong with it, or null. */
async function checkObject(
  store: Store,
  key: string,
  md5: boolean,
  result: VerifyResult,
): Promise<{ head: ObjectHead | null; text: string | null }> {
  // With --md5 the GET's answer carries the head: no HEAD first.
  const object = md5 ? await store.get(key) : null;
  const head = md5 ? object?.head ?? null : await store.head(key);
  return { head, text: head === null ? "missing" : await checkHead(head, object, result) };
}

/** What is wrong with an object found (its body read too, with --md5), or null. */
async function checkHead(
  head: ObjectHead,
  object: { body: ReadableStream<Uint8Array> } | null,
  result: VerifyResult,
): Promise<string | null> {
  result.files++;
  result.bytes += head.size;
  const metaMd5 = head.metadata["md5sum"]?.trim().toLowerCase();
  const etag = etagMd5(head);
  if (metaMd5 && etag !== null && etag !== metaMd5) {
    await object?.body.cancel();
    return `ETag ${etag} differs from md5sum ${metaMd5}: the object is not the file uploaded`;
  }
  if (!object) return null;
  const hash = newMd5();
  let bytes = 0;
  // Hashed in chunks of up to 1 MiB read into one buffer, not per socket read.
  const reader = new ChunkReader(object.body, Math.min(1024 * 1024, head.size + 1));
  for (let chunk = await reader.next(); chunk; chunk = await reader.next()) {
    hash.update(chunk);
    bytes += chunk.byteLength;
  }
  if (bytes !== head.size) return `size ${bytes} bytes, expected ${head.size}`;
  const expected = expectedMd5(head);
  const actual = hash.digest("hex");
  if (expected !== null && actual !== expected) return `MD5 ${actual}, expected ${expected}`;
  return null;
}
