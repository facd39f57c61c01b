/**
 * Text from the file system or the bucket is untrusted: a file name, a key,
 * a TOC.txt line, a metadata value or an S3 error message may hold bytes
 * that a terminal obeys (ESC sequences that retitle the window or clear the
 * screen, the one-byte CSI 0x9b) or that forge a log line (a newline). Every
 * output boundary (log lines, the jobs' printed lines, the one-line error
 * of main.ts) passes its text through here, so no such byte reaches an
 * operator raw; the text is otherwise unchanged, and readable.
 *
 * Escaped, as `\xHH` (`\u{HHHH}` above 0xff): C0 controls (0x00-0x1f),
 * DEL (0x7f), C1 controls (0x80-0x9f, 0x9b among them), the Unicode line
 * and paragraph separators and the bidirectional overrides and isolates
 * (which reorder what a terminal shows). `\n` and `\t` are escaped too,
 * except by `escapeOutputLine`, which keeps tabs.
 */

/** Every character `escapeControl` rewrites. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** The same, except tab: for whole printed lines. */
const CONTROL_BUT_TAB =
  // deno-lint-ignore no-control-regex
  /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  return code <= 0xff
    ? `\\x${code.toString(16).padStart(2, "0")}`
    : `\\u{${code.toString(16).padStart(4, "0")}}`;
}

/** True when `text` holds a character `escapeControl` would rewrite. */
export function hasControl(text: string): boolean {
  CONTROL.lastIndex = 0;
  return CONTROL.test(text);
}

/** `text` with every control character written as a visible escape (`\x1b`, `\x0a`). */
export function escapeControl(text: string): string {
  return hasControl(text) ? text.replace(CONTROL, escapeChar) : text;
}

/** One printed line made safe: as `escapeControl`, but tabs (column separators) stay. */
export function escapeOutputLine(line: string): string {
  CONTROL_BUT_TAB.lastIndex = 0;
  return CONTROL_BUT_TAB.test(line) ? line.replace(CONTROL_BUT_TAB, escapeChar) : line;
}

/**
 * JSON text with nothing a terminal obeys: `JSON.stringify` already writes
 * C0 controls as `\u00XX`, but leaves DEL, C1 controls and the separators
 * as raw characters; those are written as `\u00XX` too. The value decoded
 * is unchanged (this is JSON's own escape, not a rewrite of the data).
 */
export function safeJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** The jobs' default printer: one line to stdout, escaped. */
export function printLine(line: string): void {
  console.log(escapeOutputLine(line));
}
