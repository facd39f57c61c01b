/**
 * Restore directories that cannot be redirected: created below a root one
 * level at a time, refusing any component that is a symlink or not a
 * directory, and checked to resolve inside the root.
 */
import { errorMessage, FatalError } from "../common/errors.ts";
import { log } from "../common/log.ts";
import { forEachLimited } from "../common/pool.ts";

/**
 * Creates directories below a root one level at a time, refusing any
 * component that is a symlink or not a directory, so a restore can never be
 * redirected outside its root. Each directory is checked once per run.
 */
export class SafeDirectories {
  #done = new Map<string, Promise<string>>();
  /** Directories whose entries changed: a file renamed in, or a directory made in them. */
  readonly #changed = new Set<string>();

  ensure(root: string, segments: string[]): Promise<string> {
    const path = [root, ...segments].join("/");
    let pending = this.#done.get(path);
    if (!pending) {
      pending = this.#create(root, segments);
      this.#done.set(path, pending);
    }
    return pending;
  }

  /** Records that a file was renamed into `dir` (a path `ensure` gave). */
  fileAdded(dir: string): void {
    this.#changed.add(dir);
  }

  /**
   * fsyncs every directory whose entries changed, once each at the end of a
   * restore, so the renames and new directories are on disk when it says
   * it is done (each file's data was fsynced before its rename).
   */
  async syncChanged(): Promise<void> {
    await forEachLimited([...this.#changed], 16, async (dir) => {
      try {
        using handle = await Deno.open(dir, { read: true });
        await handle.sync();
      } catch (err) {
        log.warn("could not fsync a restored directory", { dir, reason: errorMessage(err) });
      }
    });
    this.#changed.clear();
  }

  async #create(root: string, segments: string[]): Promise<string> {
    await Deno.mkdir(root, { recursive: true });
    const realRoot = await Deno.realPath(root);
    let path = realRoot;
    for (const segment of segments) {
      const parent = path;
      path = `${path}/${segment}`;
      let info: Deno.FileInfo | null = null;
      try {
        info = await Deno.lstat(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
      if (info === null) {
        try {
          await Deno.mkdir(path);
          this.#changed.add(parent);
        } catch (err) {
          if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
        }
        info = await Deno.lstat(path);
      }
      if (info.isSymlink || !info.isDirectory) {
        throw new FatalError(
          `Refusing to restore into '${path}': it is ${
            info.isSymlink ? "a symlink" : "not a directory"
          }`,
        );
      }
    }
    const real = await Deno.realPath(path);
    if (real !== realRoot && !real.startsWith(`${realRoot}/`)) {
      throw new FatalError(`Refusing to restore into '${path}': it resolves outside '${realRoot}'`);
    }
    return real;
  }
}
