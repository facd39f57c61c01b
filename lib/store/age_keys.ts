/**
 * age keys as the command line gives them: X25519 recipients (`age1...`,
 * public) for the watcher, identities (`AGE-SECRET-KEY-1...`, secret) for
 * the jobs that read bodies. Each is checked by the `age-encryption`
 * library's own parser before any work starts. Errors name the option, the
 * file and the line, never the key text: a secret key pasted into the wrong
 * place must not end up in a terminal log or a CI transcript.
 */
import { Decrypter, Encrypter } from "age-encryption";
import { UsageError } from "../common/errors.ts";

/** Identities read from one file, ready for `EncryptingStore`. */
export interface AgeIdentities {
  /** The file they were read from, for error messages. */
  file: string;
  identities: string[];
}

/** Checks one recipient; `where` says where it came from (an option, or a file and line). */
export function checkRecipient(recipient: string, where: string): string {
  const text = recipient.trim();
  if (/^AGE-SECRET-KEY-/i.test(text)) {
    throw new UsageError(
      `${where} is an age secret key (identity), not a recipient: give its public key (age1...)`,
    );
  }
  // Post-quantum and tag recipients have other header sizes (see encrypting_store.ts).
  if (!text.startsWith("age1") || /^age1(pq|tag)/.test(text)) {
    throw new UsageError(`${where} is not an age X25519 recipient (age1...)`);
  }
  try {
    new Encrypter().addRecipient(text);
  } catch {
    throw new UsageError(`${where} is not a valid age X25519 recipient (bad encoding)`);
  }
  return text;
}

/**
 * The recipients of `--encrypt-to` values and `--encrypt-to-file` files (one
 * per line, `#` comments and blank lines ignored, as the age CLI reads `-R`).
 * Requires `--allow-read` for the files.
 */
export function readRecipients(values: string[], files: string[]): string[] {
  const recipients = values.map((v, i) =>
    checkRecipient(v, `Option '--encrypt-to' value ${i + 1}`)
  );
  for (const file of files) {
    const lines = readKeyFile(file, "--encrypt-to-file");
    if (lines.length === 0) {
      throw new UsageError(`Recipients file '${file}' (--encrypt-to-file) holds no recipient`);
    }
    for (const { line, text } of lines) {
      recipients.push(checkRecipient(text, `Line ${line} of recipients file '${file}'`));
    }
  }
  return [...new Set(recipients)];
}

/**
 * The identities of an age identity file (`age-keygen` output: comments,
 * then `AGE-SECRET-KEY-1...` lines). Requires `--allow-read`.
 */
export function readIdentities(file: string): AgeIdentities {
  const lines = readKeyFile(file, "--identity");
  const identities: string[] = [];
  for (const { line, text } of lines) {
    const where = `Line ${line} of identity file '${file}'`;
    if (!text.startsWith("AGE-SECRET-KEY-1")) {
      throw new UsageError(`${where} is not an age X25519 identity (AGE-SECRET-KEY-1...)`);
    }
    try {
      new Decrypter().addIdentity(text);
    } catch {
      throw new UsageError(`${where} is not a valid age identity (bad encoding)`);
    }
    identities.push(text);
  }
  if (identities.length === 0) {
    throw new UsageError(`Identity file '${file}' (--identity) holds no identity`);
  }
  return { file, identities };
}

/** The meaningful lines of a key file, with their numbers. */
function readKeyFile(file: string, option: string): { line: number; text: string }[] {
  let content: string;
  try {
    content = Deno.readTextFileSync(file);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound
      ? "no such file"
      : err instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : err instanceof Deno.errors.IsADirectory
      ? "is a directory"
      : "unreadable";
    throw new UsageError(`Cannot read '${file}' (${option}): ${reason}`);
  }
  return content.split("\n")
    .map((raw, i) => ({ line: i + 1, text: raw.trim() }))
    .filter(({ text }) => text !== "" && !text.startsWith("#"));
}
