/**
 * The state directory's files, as the journal (journal.ts) uses them: the
 * lock that makes one watcher per directory (an exclusive advisory lock,
 * flock, and the holder's pid), reading the journal at start, and
 * rewriting it durably.
 */
import { writeAll } from "../../common/chunk_reader.ts";
import { errorMessage, FatalError } from "../../common/errors.ts";
import { isGone } from "../../common/fs.ts";
import { log } from "../../common/log.ts";
import { DAMAGED_SUFFIX, type JournalContents, LOCK_FILE, parseJournal } from "./journal_format.ts";

/** The one-line error for a state directory that cannot be used. */
export function cannotUse(dir: string, err: unknown): FatalError {
  return new FatalError(`Cannot use the state directory '${dir}': ${errorMessage(err)}`);
}

/**
 * Creates the directory if needed and takes its lock, writing our pid in
 * it. Throws `FatalError` (one line) when the directory cannot be used or
 * another watcher holds it.
 */
export async function lockStateDir(dir: string): Promise<Deno.FsFile> {
  let lock: Deno.FsFile;
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    lock = await Deno.open(`${dir}/${LOCK_FILE}`, { read: true, write: true, create: true });
  } catch (err) {
    throw cannotUse(dir, err);
  }
  if (!await lock.tryLock(true)) {
    const holder = await Deno.readTextFile(`${dir}/${LOCK_FILE}`).catch(() => "");
    lock.close();
    const pid = holder.trim() ? ` (pid ${holder.trim()})` : "";
    throw new FatalError(`The state directory '${dir}' is in use by another tablesnap${pid}`);
  }
  try {
    await lock.truncate(0);
    await writeAll(lock, new TextEncoder().encode(`${Deno.pid}\n`));
  } catch (err) {
    lock.close();
    throw cannotUse(dir, err);
  }
  return lock;
}

/**
 * The journal at `path`: undefined when there is none; damage is reported
 * in one warning and the damaged file kept beside it for a look (the
 * journal itself is rewritten from what was readable).
 */
export async function readJournalFile(path: string): Promise<JournalContents | undefined> {
  await Deno.remove(`${path}.tmp`).catch(() => {});
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (isGone(err)) return undefined;
    throw err;
  }
  const contents = parseJournal(text);
  if (contents.damage !== undefined) {
    await Deno.rename(path, path + DAMAGED_SUFFIX).catch(() => {});
    log.warn("state journal damaged; reconciling the whole tree with the bucket", {
      file: path,
      problem: contents.damage,
      kept_as: path + DAMAGED_SUFFIX,
    });
  }
  return contents;
}

/**
 * Replaces `path` with `bytes`: a temp file, synced, renamed over it, then
 * the directory synced, so a crash leaves either the old file or the new.
 */
export async function replaceDurably(dir: string, path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp`;
  // 0600: encrypted uploads in flight keep their file keys here (docs/encryption.md).
  const out = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
  await Deno.chmod(tmp, 0o600);
  try {
    await writeAll(out, bytes);
    await out.sync();
  } finally {
    out.close();
  }
  await Deno.rename(tmp, path);
  await syncDirectory(dir);
}

/** What the journal's batches cost (the debug log, the benchmark notes). */
export interface BatchStats {
  batches: number;
  lines: number;
  compactions: number;
  lastBatchMs: number;
  maxBatchMs: number;
}

/** Counts a batch of `lines` written and synced since `started` (performance.now()). */
export function noteBatch(stats: BatchStats, started: number, lines: number): void {
  const ms = performance.now() - started;
  stats.batches++;
  stats.lines += lines;
  stats.lastBatchMs = ms;
  stats.maxBatchMs = Math.max(stats.maxBatchMs, ms);
  log.debug("journal synced", { lines, ms: Math.round(ms * 100) / 100 });
}

/** fsync of a directory: makes a rename in it durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await Deno.open(dir, { read: true });
  try {
    await handle.sync();
  } finally {
    handle.close();
  }
}
