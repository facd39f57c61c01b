/**
 * What SSTable file names say: which generation a component belongs to,
 * which files get an index, which components Cassandra rewrites after they
 * are written, and how generations order.
 *
 * The names Cassandra has used (Descriptor.java):
 *
 * - since 3.0, `<version>-<id>-<format>-<component>`: `nb-7-big-Data.db`,
 *   `da-1-bti-Partitions.db`, `nb-1-big-SAI+aa+idx+TermsData.db`; the id is
 *   a decimal generation or, with `uuid_sstable_identifiers_enabled`, a
 *   28-character time-ordered id `xxxx_xxxx_xxxxxyyyyyyyyyyyyy` in base 36
 *   (`nb-3g1m_0oe5_2kxx42qmnomqc4sx6a-big-Data.db`);
 * - before (2.x, 1.2), `<ks>-<table>-[tmp-|tmplink-]<version>-<gen>-<component>`
 *   (`ks-users-ka-7-Data.db`), and in 1.x without the keyspace.
 *
 * The component is everything after the generation, so an SAI part whose
 * name ends in `TermsData.db` is not a Data.db.
 */
import { basename } from "../common/paths.ts";
import { dataKeyOfIndex, INDEX_SUFFIX } from "./keys.ts";

/** A file name split at its generation. */
export interface ComponentName {
  /** The generation's common prefix: `nb-7-big-`, `ks-users-ka-7-`. */
  prefix: string;
  /** The generation id (`7`, `3g1m_0oe5_2kxx42qmnomqc4sx6a`); null for a name of no known scheme. */
  id: string | null;
  /** What follows the prefix: `Data.db`, `SAI+aa+idx+TermsData.db`, `TOC.txt`. */
  component: string;
}

/**
 * Since 3.0. The component may not start with `<digits>-`: that is a 2.x
 * name whose keyspace looks like a version and whose table name is a
 * number (`ab-12-ka-7-Data.db`).
 */
const MODERN = /^([a-z]+)-(\d+|[0-9a-z]{4}_[0-9a-z]{4}_[0-9a-z]{18})-([a-z]+)-(?!\d+-)(.+)$/;

/**
 * 2.x and 1.2 (`<ks>-<table>-`), 1.0/1.1 (`<table>-`). The table part may
 * hold a dot: 2.x named a secondary index's SSTables `<ks>-<table>.<index>-`.
 */
const LEGACY = /^((?:[\w.]+-)?[\w.]+-(?:tmp-|tmplink-)?[a-z]+-(\d+)-)(.+)$/;

/** The name split at its generation; a name of no known scheme splits at its last "-". */
export function parseComponentName(name: string): ComponentName {
  const modern = MODERN.exec(name);
  if (modern) {
    const [, version, id, format, component] = modern;
    return { prefix: `${version}-${id}-${format}-`, id: id!, component: component! };
  }
  const legacy = LEGACY.exec(name);
  if (legacy) return { prefix: legacy[1]!, id: legacy[2]!, component: legacy[3]! };
  // Not Cassandra's (or a scheme still to come): the original's loose rule,
  // so `x-Data.db` still gets an index and groups with `x-*`.
  const dash = name.lastIndexOf("-");
  return { prefix: name.slice(0, dash + 1), id: null, component: name.slice(dash + 1) };
}

/**
 * `nb-7-big-` for `nb-7-big-Data.db`; null for a name that is not a Data.db
 * (`nb-7-big-SAI+aa+idx+TermsData.db`, `nb-7-big-Data.db.tmp` included).
 */
export function generationPrefix(name: string): string | null {
  const parsed = parseComponentName(name);
  return parsed.component === "Data.db" ? parsed.prefix : null;
}

/**
 * True for files that get an index when uploaded: every Data.db. Narrower
 * than the original's "name contains Data.db", which also indexed SAI's
 * `...TermsData.db` parts and temporary `Data.db.tmp` copies.
 */
export function wantsIndex(path: string): boolean {
  return generationPrefix(basename(path)) !== null;
}

/**
 * The components Cassandra changes after writing them: `Statistics.db`
 * (rewritten through `<name>.tmp` and a rename, by repair and level
 * changes) and `Summary.db` (rebuilt by index summary redistribution),
 * which it marks mutable, and `TOC.txt`, which SAI appends its components
 * to. Everything else is written once.
 */
const MUTABLE_COMPONENTS: ReadonlySet<string> = new Set(["Statistics.db", "Summary.db", "TOC.txt"]);

/** True when a file of this name may legitimately change after it is complete. */
export function isMutableComponent(path: string): boolean {
  const parsed = parseComponentName(basename(path));
  return parsed.id !== null && MUTABLE_COMPONENTS.has(parsed.component);
}

/**
 * The mutable component a file is (`Statistics.db`, ...), by its component
 * name alone, whatever the naming scheme; undefined for every other file.
 */
export function mutableComponentOf(path: string): string | undefined {
  const component = parseComponentName(basename(path)).component;
  return MUTABLE_COMPONENTS.has(component) ? component : undefined;
}

/**
 * Larger than any TOC.txt Cassandra writes (about 100 bytes, plus one line
 * per SAI component): past this it is not one.
 */
export const MAX_TOC_BYTES = 64 * 1024;

/** A file name's limit on Linux; a longer line is not a component. */
const MAX_COMPONENT_LENGTH = 255;

/**
 * What a component name may hold: Cassandra's are letters, digits and
 * `.`, `+`, `_`, `-` (`Data.db`, `Digest.crc32`, `SAI+aa+idx+TermsData.db`).
 * A line cut short by a TOC.txt still being appended (`Filt`) fits too: it
 * names a file that does not exist yet, and the index waits for it.
 */
const COMPONENT = /^[A-Za-z0-9][A-Za-z0-9.+_-]*$/;

/** A TOC.txt read: the components it lists, or why it is not a list of components. */
export type TocReading = { components: string[] } | { unreadable: string };

/**
 * The component names a TOC.txt lists, or `unreadable` with the reason when
 * it is not a list of component names (binary, NUL bytes, not UTF-8,
 * over-long lines or file, a line that is no component name). Readers then
 * decide as if there were no TOC, and say so once.
 */
export function readToc(bytes: Uint8Array): TocReading {
  if (bytes.byteLength > MAX_TOC_BYTES) return { unreadable: `larger than ${MAX_TOC_BYTES} bytes` };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return { unreadable: "not UTF-8 text" };
  }
  const components: string[] = [];
  let lineNumber = 0;
  for (const raw of text.split("\n")) {
    lineNumber++;
    const line = raw.endsWith("\r") ? raw.slice(0, -1).trim() : raw.trim();
    if (line.length === 0) continue;
    if (line.length > MAX_COMPONENT_LENGTH) {
      return { unreadable: `line ${lineNumber} is longer than ${MAX_COMPONENT_LENGTH} characters` };
    }
    if (!COMPONENT.test(line)) {
      return { unreadable: `line ${lineNumber} is not a component name` };
    }
    components.push(line);
  }
  return { components };
}

/**
 * A sort key for the generation of an index key's Data.db, or null when its
 * name has none. Keys compare as strings in creation order: decimal
 * generations numerically (length first: `9` before `10`), UUID ids as
 * strings (they are time-ordered), and every decimal generation before
 * every UUID id (a table switches to UUID ids once and never back).
 */
export function generationOf(key: string): string | null {
  if (!key.endsWith(INDEX_SUFFIX)) return null;
  const parsed = parseComponentName(basename(dataKeyOfIndex(key)));
  if (parsed.id === null || parsed.component !== "Data.db") return null;
  if (parsed.id.includes("_")) return `u${parsed.id}`;
  const digits = parsed.id.replace(/^0+(?=\d)/, "");
  return `d${String(digits.length).padStart(4, "0")}${digits}`;
}
