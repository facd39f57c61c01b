/**
 * The `-listdir.json` index body, byte for byte as the Python tablesnap wrote
 * it (`json.dumps({directory: names})`), and its strict reading: a body comes
 * from a bucket, which is input, not trust. Errors name the index key.
 */
import { FatalError } from "../common/errors.ts";
import { pythonJson } from "./object_meta.ts";

/** What one index says: the directory it describes and the file names in it. */
export interface IndexListing {
  /** The index's object key. */
  key: string;
  /** The absolute directory the index describes (its one JSON member). */
  directory: string;
  /** Bare file names, in the order the index gives them, duplicates removed. */
  names: string[];
}

/** Index bodies are small (one name per SSTable component); refuse giant ones. */
export const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/** The index body for `names` in `directory`. */
export function indexBody(directory: string, names: string[]): string {
  return `{${pythonJson(directory)}: ${pythonJson(names)}}`;
}

/**
 * Parses an index body. It must be JSON, an object with exactly one member,
 * whose value is a list of strings. Throws `FatalError` naming `key`
 * otherwise. Names are not checked for safety here: see `checkFileName`.
 */
export function parseIndex(key: string, body: string): IndexListing {
  let data: unknown;
  try {
    data = JSON.parse(body);
  } catch (err) {
    const reason = err instanceof SyntaxError ? err.message : String(err);
    throw new FatalError(`Index '${key}' is not valid JSON: ${reason}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new FatalError(
      `Index '${key}' is not a JSON object (directory mapped to file names)`,
    );
  }
  const entries = Object.entries(data);
  if (entries.length !== 1) {
    throw new FatalError(
      `Index '${key}' must have exactly one member (directory mapped to file names), found ${entries.length}`,
    );
  }
  const [directory, value] = entries[0]!;
  if (!Array.isArray(value) || !value.every((name) => typeof name === "string")) {
    throw new FatalError(`Index '${key}' does not map '${directory}' to a list of file names`);
  }
  return { key, directory, names: [...new Set(value as string[])] };
}

/**
 * Why `name` cannot be used as a file name inside a restore directory, or
 * `null` when it can. Refused: "", ".", "..", anything containing "/" (which
 * includes absolute paths) or a NUL byte.
 */
export function unsafeNameReason(name: string): string | null {
  if (name === "") return "it is empty";
  if (name === "." || name === "..") return "it is a relative directory reference";
  if (name.includes("/")) return "it contains '/'";
  if (name.includes("\0")) return "it contains a NUL byte";
  return null;
}

/**
 * Throws `FatalError` when `name` (given by `source`, e.g. an index key) is
 * not a safe bare file name.
 */
export function checkFileName(name: string, source: string): void {
  const reason = unsafeNameReason(name);
  if (reason !== null) {
    throw new FatalError(
      `Index '${source}' names an unsafe file ${JSON.stringify(name)}: ${reason}; refusing it`,
    );
  }
}
