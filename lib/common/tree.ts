/**
 * The one walk of a local directory tree. Cassandra deletes files and whole
 * directories while we look, so a directory that is gone when reached is
 * skipped, not an error.
 */
import { isGone } from "./fs.ts";

/** One directory met by `walkTree`. */
export interface DirListing {
  /** The directory's path, as reached from a root. */
  dir: string;
  /** Its lstat (a root's stat: a root given as a symlink is followed). */
  info: Deno.FileInfo;
  /** Paths of its regular files, in the order the directory lists them. */
  files: string[];
  /** Paths of its subdirectories the walk enters (after `descend`). */
  dirs: string[];
}

export interface WalkOptions {
  /** Whether to enter a subdirectory (default: every one). */
  descend?: (dir: string) => boolean;
}

/** Entries listed between two turns given to the event loop. */
const ENTRIES_PER_TURN = 1000;

/**
 * Yields every directory under `roots` (roots included), each before the
 * ones below it. Symlinks below a root are neither followed nor listed.
 * Every thousand entries the event loop gets a turn: callers lstat
 * synchronously, and a large tree must not hold up uploads and events.
 */
export async function* walkTree(
  roots: string[],
  options: WalkOptions = {},
): AsyncGenerator<DirListing> {
  const stack = [...roots].reverse().map((dir) => ({ dir, root: true }));
  let listed = 0;
  while (stack.length > 0) {
    const { dir, root } = stack.pop()!;
    const listing = await list(dir, root, options.descend);
    if (listing === null) continue;
    yield listing;
    for (let i = listing.dirs.length - 1; i >= 0; i--) {
      stack.push({ dir: listing.dirs[i]!, root: false });
    }
    listed += listing.files.length + listing.dirs.length + 1;
    if (listed >= ENTRIES_PER_TURN) {
      listed = 0;
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
}

/** Every directory below `root` (not `root` itself). */
export async function collectDirs(root: string, out = new Set<string>()): Promise<Set<string>> {
  for await (const { dir } of walkTree([root])) if (dir !== root) out.add(dir);
  return out;
}

/** Every regular file under `root` (none when it is gone). */
export async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for await (const { files } of walkTree([root])) out.push(...files);
  return out;
}

async function list(
  dir: string,
  root: boolean,
  descend: ((dir: string) => boolean) | undefined,
): Promise<DirListing | null> {
  let info: Deno.FileInfo;
  let entries: Deno.DirEntry[];
  try {
    info = root ? Deno.statSync(dir) : Deno.lstatSync(dir);
    if (!info.isDirectory) return null;
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
  const files: string[] = [];
  const dirs: string[] = [];
  for (const entry of entries) {
    const path = `${dir}/${entry.name}`;
    if (entry.isFile) files.push(path);
    else if (entry.isDirectory && (descend?.(path) ?? true)) dirs.push(path);
  }
  return { dir, info, files, dirs };
}
