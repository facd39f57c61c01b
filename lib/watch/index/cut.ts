/**
 * An index's cut: which files of its directory it names, whether it may be
 * published yet, and (--pin) whether its live set is secured so it can be
 * frozen. Pure but for reading the directory; index_publisher.ts decides
 * what to do with it.
 */
import { lstatOrNull } from "../../common/fs.ts";
import type { FileFacts, IndexRecord, Ledger } from "../ledger.ts";
import type { PathFilter } from "../detect/path_filter.ts";

export /** What an index names now, and whether it may be published. */
interface Cut {
  names: string[];
  /** Files it waits for (named once in the bucket). */
  waiting: Set<string>;
  complete: boolean;
  /** Some of `waiting` are queued or uploading. */
  inFlight: boolean;
  /** The cut time (epoch ms) it records. */
  at: number;
}

/** What a cut needs to know. */
export interface CutContext {
  files: FileFacts;
  filter: PathFilter;
  /** `--pin`: is this file pinned? */
  isPinned: ((path: string) => boolean) | undefined;
  /** Without a TOC, the generation is whole once no file of it appeared for this long. */
  quietMs: number;
  /** Names of the directory we deleted after upload (--delete-on-backup): still named. */
  deleted: Set<string>;
  /** The components a TOC.txt lists; null without one, or when it is unreadable. */
  tocComponents(tocPath: string): string[] | null;
}

/** A frozen cut: its names, once in the bucket (their originals may be gone). */
export function frozenCut(c: CutContext, entry: IndexRecord): Cut {
  const directory = entry.directory;
  const { names, at } = entry.frozen!;
  const { deleted } = c;
  const stored = (name: string) => {
    const path = `${directory}/${name}`;
    return deleted.has(name) || c.files.isStored(path, lstatOrNull(path)?.size);
  };
  const waiting = new Set(names.filter((name) => !stored(name)));
  const inFlight = [...waiting].some((name) => c.files.isInFlight(`${directory}/${name}`));
  entry.awaiting = waiting;
  return {
    names: names.filter((name) => !waiting.has(name)),
    waiting,
    complete: waiting.size === 0,
    inFlight,
    at,
  };
}

/**
 * The directory's live set as of now (`files`: its names): the names an
 * index cut now would give (only files in the bucket), whether it is
 * complete yet, and (--pin) whether every file of it is secured.
 */
export function liveSet(c: CutContext, entry: IndexRecord, files: Set<string>, now: number) {
  const directory = entry.directory;
  const pathOf = (name: string) => `${directory}/${name}`;
  const accepted = [...files].filter((n) => c.filter.accepts(pathOf(n)));
  const { deleted } = c;
  const stored = (name: string) => {
    if (deleted.has(name)) return true;
    const size = lstatOrNull(pathOf(name))?.size;
    return size !== undefined && c.files.isStored(pathOf(name), size);
  };
  const known = (name: string) =>
    deleted.has(name) || c.files.isPending(pathOf(name)) ||
    c.files.isStored(pathOf(name));
  const tocOf = (prefix: string) => {
    const components = c.tocComponents(pathOf(`${prefix}TOC.txt`));
    return components === null ? null : components.map((c) => `${prefix}${c}`)
      .filter((name) => c.filter.accepts(pathOf(name)));
  };

  // The own generation: every component its TOC lists, else what has appeared.
  const own = accepted.filter((n) => n.startsWith(entry.prefix));
  for (const name of own) {
    if (!entry.seen.has(name)) {
      entry.seen.add(name);
      entry.changedAt = now;
    }
  }
  const ownToc = tocOf(entry.prefix);
  const members = new Set([...own, ...(ownToc ?? [])]);

  // Other generations with a TOC count only once whole; everything else once complete.
  const tocPrefixes = accepted.filter((n) => n.endsWith("TOC.txt") && !n.startsWith(entry.prefix))
    .map((n) => n.slice(0, -"TOC.txt".length))
    .sort((a, b) => b.length - a.length);
  const wholeGenerations = new Map<string, boolean>();
  for (const name of accepted) {
    if (members.has(name)) continue;
    const prefix = tocPrefixes.find((p) => name.startsWith(p));
    if (prefix === undefined) {
      if (known(name)) members.add(name);
      continue;
    }
    let whole = wholeGenerations.get(prefix);
    if (whole === undefined) {
      const toc = tocOf(prefix) ?? [];
      whole = toc.every((c) => files.has(c) ? known(c) : deleted.has(c));
      wholeGenerations.set(prefix, whole);
    }
    if (whole && known(name)) members.add(name);
  }
  for (const name of deleted) members.add(name);

  const waiting = new Set([...members].filter((name) => !stored(name)));
  const inFlight = [...waiting].some((name) => c.files.isInFlight(pathOf(name)));
  entry.awaiting = ownToc ? waiting : null;
  const quiet = now - entry.changedAt >= c.quietMs;
  const whole = ownToc !== null || quiet;
  const complete = waiting.size === 0 && whole;
  const names = [...members].filter((name) => !waiting.has(name)).sort();
  // --pin: every file named is in the bucket or pinned, so will be.
  const isPinned = c.isPinned;
  const secured = isPinned !== undefined && whole &&
    [...waiting].every((name) => isPinned(pathOf(name)));
  return { names, waiting, complete, inFlight, secured, members: [...members].sort() };
}

/**
 * A frozen cut of the same directory, earlier than `at`, still to be
 * published: this index waits for it. So a directory's indexes reach the
 * bucket in the order of their cuts, even when one was cut long before
 * its files were uploaded (--pin), and readers that order indexes by
 * upload time (LastModified, see index_reader.ts) still find the newest.
 */
export function earlierCutPending(ledger: Ledger, entry: IndexRecord, at: number): boolean {
  for (const other of ledger.indexesIn(entry.directory)) {
    const frozen = other === entry ? null : other.frozen;
    if (!frozen) continue;
    // Cut in the same millisecond: the one named first goes first.
    if (frozen.at < at || (frozen.at === at && other.dataPath < entry.dataPath)) return true;
  }
  return false;
}
