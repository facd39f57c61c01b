/**
 * The durable journal's file (`--state-dir DIR`; journal.ts keeps it, in
 * memory and on disk). `DIR/journal.jsonl` is JSON lines, appended in order:
 *
 *   {"journal":"tablesnap","version":1}                header, always first
 *   {"op":"checkpoint","at":1767225600000}             see durable_state.ts
 *   {"op":"pending","path":"/var/lib/...","since":...} complete, not in the bucket
 *   {"op":"done","path":"/var/lib/..."}                in the bucket, skipped or gone
 *   {"op":"upload","path":..,"key":..,"uploadId":..,   a multipart upload began
 *    "partSize":..,"size":..,"mtime":..,"remake":..}   (remake: encrypted ones, a secret)
 *   {"op":"part","path":..,"n":3,"etag":"\"..\""}      its part 3 is stored
 *   {"op":"upload-end","path":..}                      completed or aborted
 *
 * A path is pending when its last `pending` line has no `done` after it;
 * the last checkpoint counts. A multipart upload is in flight from its
 * `upload` line to its `upload-end` (see multipart_resume.ts); its file
 * counts as pending too. Anything else (a line that is not one of these, a
 * last line without its newline, another version) makes the file
 * untrustworthy: the watcher then reconciles the whole tree. The upload
 * lines came without a version change: journals from before them read the
 * same, and an older tablesnap takes them for damage: a full
 * reconciliation; their uploads wait for a newer start's clean-up.
 */
import type { InFlightUpload } from "../upload/multipart_resume.ts";

export const JOURNAL_FILE = "journal.jsonl";
export const LOCK_FILE = "lock";
export const JOURNAL_VERSION = 1;
/** Where a damaged journal is kept for a look (the last one only). */
export const DAMAGED_SUFFIX = ".damaged";

export const HEADER = JSON.stringify({ journal: "tablesnap", version: JOURNAL_VERSION });

/** What a journal file says. */
export interface JournalContents {
  /** Pending paths and since when (epoch ms) each has been complete. */
  pending: Map<string, number>;
  /** The last checkpoint (epoch ms), if any. */
  checkpoint: number | undefined;
  /** Multipart uploads in flight, by path. */
  uploads: Map<string, InFlightUpload>;
  /** Why the file cannot be trusted; `pending` then holds what came before. */
  damage: string | undefined;
}

/** Reads a journal's text. Never throws: damage is reported in `damage`. */
export function parseJournal(text: string): JournalContents {
  const contents: JournalContents = {
    pending: new Map(),
    checkpoint: undefined,
    uploads: new Map(),
    damage: undefined,
  };
  if (text === "") {
    contents.damage = "the file is empty";
    return contents;
  }
  const lines = text.split("\n");
  const last = lines.pop();
  if (last !== "") {
    // The newline is written with its line: without it, the line was cut short.
    contents.damage = `line ${lines.length + 1} is incomplete (no newline)`;
  }
  for (const [i, line] of lines.entries()) {
    const problem = i === 0 ? headerProblem(line) : applyLine(line, contents);
    if (problem) {
      contents.damage = `line ${i + 1}: ${problem}`;
      break;
    }
  }
  return contents;
}

function parseObject(line: string): Record<string, unknown> | string {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return "not JSON";
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "not a JSON object";
  }
  return value as Record<string, unknown>;
}

function headerProblem(line: string): string | undefined {
  const header = parseObject(line);
  if (typeof header === "string") return `${header} (expected the header)`;
  if (header.journal !== "tablesnap") return "not a tablesnap journal header";
  if (header.version !== JOURNAL_VERSION) {
    return `unknown version ${
      JSON.stringify(header.version)
    } (this tablesnap reads ${JOURNAL_VERSION})`;
  }
  return undefined;
}

function applyLine(line: string, contents: JournalContents): string | undefined {
  const entry = parseObject(line);
  if (typeof entry === "string") return entry;
  const { op, path } = entry;
  switch (op) {
    case "pending":
      if (typeof path !== "string" || !path.startsWith("/")) return "pending without a path";
      if (!isTime(entry.since)) return "pending without a since time";
      contents.pending.set(path, entry.since);
      return undefined;
    case "done":
      if (typeof path !== "string" || !path.startsWith("/")) return "done without a path";
      contents.pending.delete(path);
      return undefined;
    case "checkpoint":
      if (!isTime(entry.at)) return "checkpoint without a time";
      contents.checkpoint = entry.at;
      return undefined;
    case "upload": {
      const { key, uploadId, partSize, size, mtime, remake } = entry;
      if (typeof path !== "string" || !path.startsWith("/")) return "upload without a path";
      if (typeof key !== "string" || typeof uploadId !== "string" || uploadId === "") {
        return "upload without a key and upload id";
      }
      if (!isCount(partSize) || partSize === 0 || !isCount(size) || typeof mtime !== "number") {
        return "upload without a part size, size and mtime";
      }
      contents.uploads.set(path, {
        key,
        uploadId,
        partSize,
        size,
        mtimeMs: mtime,
        parts: new Map(),
        ...(typeof remake === "string" ? { remake } : {}),
      });
      return undefined;
    }
    case "part": {
      if (typeof path !== "string" || !path.startsWith("/")) return "part without a path";
      if (!isCount(entry.n) || entry.n === 0 || typeof entry.etag !== "string") {
        return "part without a number and etag";
      }
      // A part of an upload already ended is history: nothing to do.
      contents.uploads.get(path)?.parts.set(entry.n, entry.etag);
      return undefined;
    }
    case "upload-end":
      if (typeof path !== "string" || !path.startsWith("/")) return "upload-end without a path";
      contents.uploads.delete(path);
      return undefined;
    default:
      return `unknown op ${JSON.stringify(op)}`;
  }
}

function isTime(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value >= 0;
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

export function uploadLines(path: string, upload: InFlightUpload): string[] {
  const { key, uploadId, partSize, size, mtimeMs, remake } = upload;
  const lines = [
    JSON.stringify({ op: "upload", path, key, uploadId, partSize, size, mtime: mtimeMs, remake }),
  ];
  for (const [n, etag] of upload.parts) lines.push(partLine(path, n, etag));
  return lines;
}

export function partLine(path: string, n: number, etag: string): string {
  return JSON.stringify({ op: "part", path, n, etag });
}

export function uploadEndLine(path: string): string {
  return JSON.stringify({ op: "upload-end", path });
}

/** The bytes an upload's lines take (near enough for the compaction bound). */
export function uploadBytes(path: string, upload: InFlightUpload): number {
  return 2 * path.length + upload.key.length + upload.uploadId.length + 160 +
    (upload.remake?.length ?? 0) +
    upload.parts.size * (path.length + 80);
}

export function pendingLine(path: string, since: number): string {
  return JSON.stringify({ op: "pending", path, since });
}

export function doneLine(path: string): string {
  return JSON.stringify({ op: "done", path });
}

/**
 * The lines of a batch (by path: a since time for pending, null for done),
 * keeping `written` (the paths pending in the file) in step.
 */
export function batchLines(batch: Map<string, number | null>, written: Set<string>): string[] {
  const lines: string[] = [];
  for (const [path, since] of batch) {
    if (since === null) {
      lines.push(doneLine(path));
      written.delete(path);
    } else {
      lines.push(pendingLine(path, since));
      written.add(path);
    }
  }
  return lines;
}

export function checkpointLine(at: number): string {
  return JSON.stringify({ op: "checkpoint", at });
}

/** The bytes one pending line takes (near enough for the compaction bound). */
export function lineBytes(path: string): number {
  return path.length + 48;
}

/** What `Journal.open` found. */
export interface JournalRecovery {
  /** No journal existed: nothing is known of what happened before. */
  fresh: boolean;
  /** Pending files to queue again, with their since times (those of `uploads` too). */
  pending: Map<string, number>;
  /** Multipart uploads a crash left in flight, by path (multipart_resume.ts resumes them). */
  uploads: Map<string, InFlightUpload>;
  /** The last checkpoint, unless the journal was fresh or damaged. */
  checkpoint: number | undefined;
  /** The journal could not be trusted (already reported as a warning). */
  damaged: boolean;
}
