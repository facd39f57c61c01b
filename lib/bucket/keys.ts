/**
 * Object key naming, exactly as the Python tablesnap wrote it:
 * `<prefix><name><separator><absolute path>`, and the index of a Data.db at
 * `<that key>-listdir.json`.
 */
import { lookup, lookupService } from "node:dns/promises";

/** How keys are formed for one host. */
export interface KeyNaming {
  prefix: string;
  name: string;
  separator: string;
}

/**
 * Key naming from the `-p/--prefix`, `-n/--name` and `--keyname-separator`
 * flags every job takes, with the original's defaults.
 */
export async function namingFromFlags(values: {
  prefix?: string;
  name?: string;
  "keyname-separator"?: string;
}): Promise<KeyNaming> {
  return {
    prefix: values.prefix ?? "",
    name: values.name ?? await fullyQualifiedHostname(),
    separator: values["keyname-separator"] ?? ":",
  };
}

/** The start of every key of one host: `<prefix><name><separator>`. */
export function keyHead(naming: KeyNaming): string {
  return `${naming.prefix}${naming.name}${naming.separator}`;
}

/** The key of a local file (absolute path). */
export function objectKey(naming: KeyNaming, path: string): string {
  return keyHead(naming) + path;
}

/** The key of the index written for the Data.db at `path`. */
export function indexKey(naming: KeyNaming, path: string): string {
  return objectKey(naming, path) + INDEX_SUFFIX;
}

/** The local path a key stands for, or null if the key is not this host's. */
export function pathOfKey(naming: KeyNaming, key: string): string | null {
  const head = keyHead(naming);
  return key.startsWith(head) ? key.slice(head.length) : null;
}

/** Index keys end like this; the file they belong to is the key without it. */
export const INDEX_SUFFIX = "-listdir.json";

/**
 * The fully qualified host name, as Python's `socket.getfqdn()` gives it:
 * resolve the short name, then reverse-resolve the address; fall back to the
 * short name when either step fails or yields nothing better.
 */
export async function fullyQualifiedHostname(): Promise<string> {
  const short = Deno.hostname();
  try {
    const { address } = await lookup(short);
    const { hostname } = await lookupService(address, 0);
    if (hostname && hostname.includes(".") && hostname !== "localhost") return hostname;
  } catch {
    // No resolver or no entry: the short name is what getfqdn() returns too.
  }
  return short;
}
