/**
 * Path pieces for the absolute, normalized paths tablesnap handles (watched
 * roots are resolved at start, so there is no "." or ".." to care about).
 * Smaller than `node:path` and, unlike it, "/"-only on every platform, as
 * keys are.
 */

/** Everything before the last "/" ("/" for a file at the top). */
export function dirname(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

/** Everything after the last "/". */
export function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
