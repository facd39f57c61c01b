/**
 * What SSTable file names say: which generation a component belongs to, and
 * which files get an index.
 */
import { basename } from "../common/paths.ts";

/** `nb-7-big-` for `nb-7-big-Data.db`; null for a name that is not a Data.db. */
export function generationPrefix(name: string): string | null {
  const at = name.lastIndexOf("Data.db");
  return at >= 0 ? name.slice(0, at) : null;
}

/** True for files that get an index when uploaded (the original's rule). */
export function wantsIndex(path: string): boolean {
  return basename(path).includes("Data.db");
}

/** The component names a TOC.txt's text lists. */
export function parseToc(text: string): string[] {
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0 && !l.includes("/"));
}

/** The numeric SSTable generation of an index key's Data.db, if it has one. */
export function generationOf(key: string): bigint | null {
  const match = basename(key).match(/-(\d+)-(?:[a-z]+-)?Data\.db-listdir\.json$/);
  return match ? BigInt(match[1]!) : null;
}
