/**
 * The two kinds of failure the CLI reports to an operator. Both are printed
 * as one line (`error: ...`), never as a stack trace; main.ts maps them to
 * exit codes.
 */

/** A mistake in how the command was called (flags, arguments). Exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * A failure the operator must fix before the job can run (missing bucket,
 * denied access, unreadable path, corrupt index). Exit code 1.
 */
export class FatalError extends Error {
  override name = "FatalError";
}

/** Returns the message of any thrown value, on one line. */
export function errorMessage(err: unknown): string {
  let text: string;
  if (err instanceof Error) {
    // The AWS SDK puts the S3 error code in `name` and sometimes leaves
    // `message` empty ("UnknownError"): say both when they differ.
    const name = err.name && err.name !== "Error" ? err.name : "";
    const message = err.message || "";
    text = name && !message.includes(name) ? `${name}: ${message}` : message || name;
  } else {
    text = String(err);
  }
  return text.replace(/\s*\n\s*/g, " ").trim() || "unknown error";
}
