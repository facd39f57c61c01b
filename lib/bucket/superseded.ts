/**
 * The bytes a rewritten component replaced. Cassandra rewrites
 * `Statistics.db` (repair, level changes) and `Summary.db` (index summary
 * redistribution) in place, and SAI appends to `TOC.txt`; the watcher
 * uploads each new version over its key, so that the newest index (and the
 * Python tableslurp) restores the current bytes. Before it does, it copies
 * the object there, server-side, to `<key>.superseded-<until>`: `until` is
 * the new version's mtime, the moment those bytes stopped being the file's.
 *
 * A restore point cut at T takes, for each such component it names, the
 * copy with the earliest `until` after T, else the current object: the
 * bytes the file held at T. `chop` keeps a copy while a kept point may need
 * it, `verify` checks that every point's copies are there.
 */
import type { ObjectInfo, Store } from "../store/store.ts";
import { keyTime, parseKeyTime } from "./keys.ts";
import { mtimeOf } from "./object_meta.ts";
import { isMutableComponent } from "./sstable.ts";

const SUPERSEDED_MARK = ".superseded-";

/** The key of the copy of `key`'s bytes that were current until `untilMs`. */
export function supersededKey(key: string, untilMs: number): string {
  return `${key}${SUPERSEDED_MARK}${keyTime(untilMs)}`;
}

/** The key a copy was made of and until when its bytes were current, or null for other keys. */
export function parseSupersededKey(key: string): { key: string; until: number } | null {
  const at = key.lastIndexOf(SUPERSEDED_MARK);
  if (at < 0) return null;
  const until = parseKeyTime(key.slice(at + SUPERSEDED_MARK.length));
  const original = key.slice(0, at);
  return until === null || !isMutableComponent(original) ? null : { key: original, until };
}

/**
 * Before a mutable component's object is overwritten with a version whose
 * mtime is `untilMs`: copies the object at `key` to its superseded key, so
 * that points cut before still restore the bytes of their time. Nothing to
 * do when the key holds nothing (any more). A store without server-side
 * copies keeps nothing (`false`). Other failures throw: the upload waits
 * rather than lose the earlier bytes.
 */
export async function keepSuperseded(
  store: Store,
  key: string,
  untilMs: number,
  /** The object's size as listed (its storage class goes by it). */
  size?: number,
): Promise<boolean> {
  if (!store.copy) return false;
  try {
    await store.copy(key, supersededKey(key, untilMs), size === undefined ? {} : { size });
  } catch (err) {
    if (await store.head(key) === null) return true; // gone meanwhile: nothing to keep
    throw err;
  }
  return true;
}

/** The copies in one listing, by the key they were made of, to pick a point's bytes from. */
export class SupersededCopies {
  readonly #byKey = new Map<string, { until: number; info: ObjectInfo }[]>();

  /** Takes `info` if it is a copy; false for any other key. */
  add(info: ObjectInfo): boolean {
    const parsed = parseSupersededKey(info.key);
    if (parsed === null) return false;
    let copies = this.#byKey.get(parsed.key);
    if (!copies) this.#byKey.set(parsed.key, copies = []);
    copies.push({ until: parsed.until, info });
    return true;
  }

  /**
   * The copy holding `key`'s bytes as of `atMs` (the earliest whose `until`
   * is later), or null when the current object holds them.
   */
  at(key: string, atMs: number): ObjectInfo | null {
    let best: { until: number; info: ObjectInfo } | null = null;
    for (const copy of this.#byKey.get(key) ?? []) {
      if (copy.until > atMs && (best === null || copy.until < best.until)) best = copy;
    }
    return best?.info ?? null;
  }

  get size(): number {
    return this.#byKey.size;
  }
}

/**
 * Why the current object of a mutable component is not what a point cut at
 * `cutMs` named, or null: its `mtime` says it was written after the cut, and
 * no copy holds the earlier bytes.
 */
export function laterThanCut(metadata: Record<string, string>, cutMs: number): string | null {
  const mtime = mtimeOf(metadata);
  if (mtime === undefined || mtime <= cutMs) return null;
  return `rewritten at ${new Date(mtime).toISOString()}, after the point's cut at ${
    new Date(cutMs).toISOString()
  }, and the bytes of that time are not in the bucket`;
}
