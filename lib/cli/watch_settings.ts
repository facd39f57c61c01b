/**
 * The watcher's option values that need more than a type: paths made
 * absolute, options that only make sense together, recipients read and
 * checked. Each throws `UsageError` naming the option.
 */
import { resolve } from "node:path";
import { UsageError } from "../common/errors.ts";
import { parseSize } from "../common/format.ts";
import { readRecipients } from "../store/age_keys.ts";
import type { ObjectLockRetention } from "../store/open_store.ts";
import type { PinSettings, WatchEncryption } from "../watch/run_watch.ts";
import { DEFAULT_PIN_MAX_BYTES } from "./watch_options.ts";

/** --state-dir, absolute (the lock and the journal must not move with the working directory). */
export function stateDirOf(dir: string | undefined): string | undefined {
  if (dir === undefined) return undefined;
  if (dir === "" || dir.includes("\0")) {
    throw new UsageError("Option '--state-dir' needs a directory path");
  }
  return resolve(Deno.cwd(), dir);
}

/**
 * --pin, --pin-dir, --pin-max-bytes; the other two only with --pin. A pin
 * directory holding a watched path would exclude that whole tree.
 */
export function pinOf(
  pin: boolean,
  dir: string | undefined,
  maxBytes: string | undefined,
  roots: string[],
): PinSettings | undefined {
  if (!pin) {
    if (dir !== undefined) throw new UsageError("Option '--pin-dir' needs '--pin'");
    if (maxBytes !== undefined) throw new UsageError("Option '--pin-max-bytes' needs '--pin'");
    return undefined;
  }
  maxBytes ??= DEFAULT_PIN_MAX_BYTES;
  const bytes = parseSize(maxBytes);
  if (bytes === null) {
    throw new UsageError(
      `Option '--pin-max-bytes' needs a size like 500M, 10G or 1T, got '${maxBytes}'`,
    );
  }
  if (dir === undefined) return { dir: undefined, maxBytes: bytes };
  if (dir === "" || dir.includes("\0")) {
    throw new UsageError("Option '--pin-dir' needs a directory path");
  }
  const absolute = resolve(Deno.cwd(), dir);
  const covered = roots.find((r) =>
    absolute === "/" || r === absolute || r.startsWith(absolute + "/")
  );
  if (covered !== undefined) {
    throw new UsageError(
      `Option '--pin-dir' must not contain a watched path: '${absolute}' holds '${covered}'`,
    );
  }
  return { dir: absolute, maxBytes: bytes };
}

/**
 * --encrypt-to and --encrypt-to-file (read and checked now: a bad
 * recipient is a usage error before anything starts), --encrypt-spool-dir.
 */
export function encryptionOf(
  recipients: string[],
  files: string[],
  spoolDir: string | undefined,
): WatchEncryption | undefined {
  const all = readRecipients(recipients, files);
  if (all.length === 0) {
    if (spoolDir !== undefined) {
      throw new UsageError(
        "Option '--encrypt-spool-dir' needs '--encrypt-to' or '--encrypt-to-file'",
      );
    }
    return undefined;
  }
  if (spoolDir === "" || spoolDir?.includes("\0")) {
    throw new UsageError("Option '--encrypt-spool-dir' needs a directory path");
  }
  return {
    recipients: all,
    ...(spoolDir !== undefined ? { spoolDir: resolve(Deno.cwd(), spoolDir) } : {}),
  };
}

/** S3 takes retain-until dates up to 100 years ahead; more is surely a typo. */
const MAX_LOCK_DAYS = 36_500;

/** --object-lock-mode and --object-lock-days: both or neither, for an S3 bucket. */
export function objectLockOf(
  mode: string | undefined,
  days: number | undefined,
  bucket: string,
): ObjectLockRetention | undefined {
  if (mode === undefined && days === undefined) return undefined;
  if (mode === undefined) {
    throw new UsageError("Option '--object-lock-days' needs '--object-lock-mode' too");
  }
  if (days === undefined) {
    throw new UsageError("Option '--object-lock-mode' needs '--object-lock-days' too");
  }
  const upper = mode.toUpperCase();
  if (upper !== "GOVERNANCE" && upper !== "COMPLIANCE") {
    throw new UsageError(
      `Option '--object-lock-mode' takes GOVERNANCE or COMPLIANCE, got '${mode}'`,
    );
  }
  if (days > MAX_LOCK_DAYS) {
    throw new UsageError(
      `Option '--object-lock-days' must be at most ${MAX_LOCK_DAYS}, got ${days}`,
    );
  }
  if (bucket.startsWith("file://")) {
    throw new UsageError("Options '--object-lock-*' need an S3 bucket, not a local store");
  }
  return { mode: upper, days };
}

/** An absolute, normalized path without a trailing slash (keys use it verbatim). */
export function normalizeRoot(path: string): string {
  if (path.includes("\0")) throw new UsageError("Path contains a NUL byte");
  const absolute = resolve(Deno.cwd(), path);
  return absolute.length > 1 ? absolute.replace(/\/+$/, "") : absolute;
}
