/**
 * `--pin`: a hard link to each complete file, in a staging directory on the
 * same file system, held until the file (and, for a Data.db, its index) is
 * in the bucket. Compaction deletes its inputs as soon as its output is
 * committed, often before a throttled or backlogged upload has read them;
 * the link keeps the inode, so the upload reads the pin instead and the
 * object still gets the ORIGINAL's key.
 *
 * Where: `<root>/.tablesnap-pins/<path below root>` by default, or
 * `--pin-dir DIR` + the absolute path. Pin paths are excluded from watching
 * and from the bucket (`excluding`).
 *
 * Which version: the pin follows the original. Each time a file is found
 * complete (`pin`), a pin whose inode is no longer the original's is
 * replaced by a link to the new one (link to a temporary name, renamed over
 * the pin): a mutable component (Statistics.db renamed over, Summary.db,
 * TOC.txt) is pinned in its newest complete version, while an immutable one
 * keeps the one inode it ever had. A component rewritten in place is the
 * same inode, seen through the pin as through the original.
 *
 * Bounded: past `maxBytes` of pinned files no new pin is made (warned once
 * per episode, counted by `tablesnap_pins_refused_total`); such files are
 * uploaded from their original as without --pin. A staging directory that
 * cannot take links (another file system: EXDEV; read-only; not writable)
 * turns pinning off for that root with one warning.
 *
 * Pins left by an earlier run (SIGKILL, a crash) are adopted at start
 * (`recover`): uploaded to the original's key, then removed.
 */
import { filesUnder } from "../../common/tree.ts";
import { errorMessage } from "../../common/errors.ts";
import { formatBytes } from "../../common/format.ts";
import { isGone, lstatOrNull } from "../../common/fs.ts";
import { log } from "../../common/log.ts";
import { dirname } from "../../common/paths.ts";
import type { Ledger } from "../ledger.ts";
import type { PathFilter } from "../detect/path_filter.ts";

/** The staging directory's name under each watched root, by default. */
export const DEFAULT_PIN_DIR = ".tablesnap-pins";

/** A link being made, before it is renamed over the pin. */
const TEMP_SUFFIX = ".tablesnap-pin-tmp";

/** Why a file was not pinned (the `reason` label of the refused counter). */
export type PinRefusal = "limit" | "unavailable";

/** What pinning reports, for metrics. `Metrics` implements it. */
export interface PinObserver {
  pinRefused(reason: PinRefusal): void;
}

export interface PinOptions {
  roots: readonly string[];
  /**
   * `--pin-dir`: one staging directory for every root, mirroring absolute
   * paths. It must not contain a root (the CLI refuses that).
   */
  dir?: string | undefined;
  /** Pinned bytes past which no new pin is made. */
  maxBytes: number;
  observer?: PinObserver;
}

/** Where one root's pins go: `dir` + the path without `base`. */
interface PinArea {
  root: string;
  dir: string;
  base: string;
  /** False once the directory proved unable to take links. */
  enabled: boolean;
}

interface Pin {
  path: string;
  bytes: number;
  dev: number | null;
  ino: number | null;
}

export class Pins {
  readonly #areas: PinArea[];
  readonly #maxBytes: number;
  readonly #observer: PinObserver | undefined;
  readonly #pins = new Map<string, Pin>();
  readonly #madeDirs = new Set<string>();
  #bytes = 0;
  /** True from a refusal at the limit until pins fall back under half of it. */
  #atLimit = false;
  /** Told of each pin made (the index publisher takes a cut early). */
  #ledger: Ledger | undefined;

  private constructor(areas: PinArea[], options: PinOptions) {
    this.#areas = areas;
    this.#maxBytes = options.maxBytes;
    this.#observer = options.observer;
  }

  /**
   * Creates the staging directories and checks each can take links from its
   * root: one on another file system, or not writable, is one warning and
   * pinning is off for that root (the watcher works on as without --pin).
   */
  static open(options: PinOptions): Pins {
    const areas = options.roots.map((root) =>
      options.dir === undefined
        ? { root, dir: `${root}/${DEFAULT_PIN_DIR}`, base: root, enabled: true }
        : { root, dir: options.dir, base: "", enabled: true }
    );
    for (const area of areas) {
      const problem = stagingProblem(area);
      if (problem === undefined) continue;
      area.enabled = false;
      log.warn("pinning is off for this path: its pin directory cannot take hard links", {
        path: area.root,
        pin_dir: area.dir,
        problem,
      });
    }
    return new Pins(areas, options);
  }

  /** True for the staging directories and everything under them. */
  isPinPath(path: string): boolean {
    return this.#areas.some((a) => path === a.dir || path.startsWith(a.dir + "/"));
  }

  /** `filter`, also refusing pin paths: they are neither watched nor uploaded. */
  excluding(filter: PathFilter): PathFilter {
    return {
      accepts: (path) => !this.isPinPath(path) && filter.accepts(path),
      describe: () => filter.describe(),
    };
  }

  /**
   * Follows the ledger: a complete file is pinned (before its upload can
   * start, which then reads the pin); a released one loses its pin. A
   * Data.db held for its index keeps it until the index is written.
   */
  follow(ledger: Ledger): void {
    this.#ledger = ledger;
    ledger.subscribe((event) => {
      if (event.type === "complete") this.pin(event.path);
      else if (event.type === "released") this.release(event.path);
    });
  }

  /** Files and bytes pinned now. */
  usage(): { files: number; bytes: number } {
    return { files: this.#pins.size, bytes: this.#bytes };
  }

  isPinned(path: string): boolean {
    return this.#pins.has(path);
  }

  /** The file an upload of `path` reads: its pin, or undefined (the original). */
  sourceOf(path: string): string | undefined {
    return this.#pins.get(path)?.path;
  }

  /**
   * `path` is complete: pins it, or moves its pin to the original's current
   * inode. A file already gone keeps the pin it has. Never throws.
   */
  pin(path: string): void {
    const area = this.#areaOf(path);
    if (!area) return;
    if (!area.enabled) {
      // Counted, so that the alert says --pin is not protecting anything here.
      this.#observer?.pinRefused("unavailable");
      return;
    }
    const held = this.#pins.get(path);
    let info: Deno.FileInfo | null;
    try {
      info = lstatOrNull(path);
    } catch {
      return; // unreadable: the upload will say so
    }
    if (!info?.isFile) return;
    if (held && held.ino === info.ino && held.dev === info.dev) return;
    if (this.#bytes - (held?.bytes ?? 0) + info.size > this.#maxBytes) {
      // A stale pin would upload an older version: the original is read instead.
      if (held) this.release(path);
      this.#refuseAtLimit(path, info.size);
      return;
    }
    const pinPath = area.dir + path.slice(area.base.length);
    try {
      this.#link(path, pinPath);
    } catch (err) {
      if (isGone(err) && !lstatOrNull(path)) return; // deleted meanwhile: nothing to pin
      this.#linkFailed(area, path, err);
      return;
    }
    const linked = lstatOrNull(pinPath);
    if (!linked) return;
    this.#bytes += linked.size - (held?.bytes ?? 0);
    this.#pins.set(path, { path: pinPath, bytes: linked.size, dev: linked.dev, ino: linked.ino });
    this.#ledger?.pinned(path);
  }

  /** Removes the pin of `path`, if any. */
  release(path: string): void {
    const pin = this.#pins.get(path);
    if (!pin) return;
    this.#pins.delete(path);
    this.#bytes -= pin.bytes;
    try {
      Deno.removeSync(pin.path);
    } catch (err) {
      if (!isGone(err)) {
        log.warn("could not remove a pin", { path: pin.path, error: errorMessage(err) });
      }
    }
    if (this.#atLimit && this.#bytes <= this.#maxBytes / 2) {
      this.#atLimit = false;
      log.info("pinning new files again", { pinned_bytes: this.#bytes });
    }
  }

  /**
   * Pins left by an earlier run: adopted, and their originals' paths
   * returned for the caller to queue (uploaded from the pin when the
   * original is gone). Pins of paths no longer watched or filtered out, and
   * half-made links, are removed.
   */
  async recover(filter: PathFilter): Promise<string[]> {
    const found: string[] = [];
    for (const dir of new Set(this.#areas.filter((a) => a.enabled).map((a) => a.dir))) {
      for (const pinPath of await filesUnder(dir)) {
        const original = this.#originalOf(dir, pinPath);
        if (original !== undefined && this.#pins.has(original)) continue;
        const info = lstatOrNull(pinPath);
        if (original === undefined || !info?.isFile || !filter.accepts(original)) {
          await Deno.remove(pinPath).catch(() => {});
          continue;
        }
        this.#bytes += info.size;
        this.#pins.set(original, { path: pinPath, bytes: info.size, dev: info.dev, ino: info.ino });
        found.push(original);
      }
    }
    if (found.length > 0) {
      log.info("found pins of an earlier run; uploading them", {
        files: found.length,
        bytes: this.#bytes,
      });
    }
    return found;
  }

  #areaOf(path: string): PinArea | undefined {
    return this.#areas.find((a) => path.startsWith(a.root + "/"));
  }

  /** The original path a pin stands for, if it belongs to a root pinned there. */
  #originalOf(dir: string, pinPath: string): string | undefined {
    if (pinPath.endsWith(TEMP_SUFFIX)) return undefined;
    for (const area of this.#areas) {
      if (area.dir !== dir || !area.enabled) continue;
      const original = area.base + pinPath.slice(dir.length);
      if (original.startsWith(area.root + "/") && !this.isPinPath(original)) return original;
    }
    return undefined;
  }

  /** Links `path` to `pinPath`, atomically replacing an older pin there. */
  #link(path: string, pinPath: string): void {
    const dir = dirname(pinPath);
    if (!this.#madeDirs.has(dir)) {
      Deno.mkdirSync(dir, { recursive: true });
      this.#madeDirs.add(dir);
    }
    const temp = pinPath + TEMP_SUFFIX;
    try {
      Deno.linkSync(path, temp);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      Deno.removeSync(temp);
      Deno.linkSync(path, temp);
    }
    Deno.renameSync(temp, pinPath);
  }

  #refuseAtLimit(path: string, bytes: number): void {
    this.#observer?.pinRefused("limit");
    if (this.#atLimit) return;
    this.#atLimit = true;
    log.warn("pin limit reached: new files are not pinned until pins are released", {
      path,
      bytes,
      pinned_bytes: this.#bytes,
      limit: formatBytes(this.#maxBytes),
      hint: "compaction may delete such files before their upload; raise --pin-max-bytes",
    });
  }

  #linkFailed(area: PinArea, path: string, err: unknown): void {
    this.#observer?.pinRefused("unavailable");
    const code = (err as { code?: unknown }).code;
    const fatal = code === "EXDEV" || code === "EROFS" || code === "EACCES" ||
      code === "EPERM" || err instanceof Deno.errors.PermissionDenied;
    if (fatal) area.enabled = false;
    log.warn(
      fatal
        ? "pinning is off for this path: cannot link into its pin directory"
        : "could not pin a file",
      { path: area.root, file: path, pin_dir: area.dir, error: errorMessage(err) },
    );
  }
}

/**
 * Why `area.dir` cannot hold links of files under `area.root`, or undefined.
 * A link made and removed inside the directory proves it writable; the
 * device number, that it is on the root's file system; /proc/self/mountinfo,
 * that it is under the same mount point (link(2) does not cross them even
 * on one file system: systemd's ReadWritePaths= of the directory alone).
 * Anything missed fails at the first pin, which turns pinning off then.
 */
function stagingProblem(area: PinArea): string | undefined {
  // Named like a half-made link: a probe left by a kill is removed by `recover`.
  const probe = `${area.dir}/probe-${Deno.pid}${TEMP_SUFFIX}`;
  const link = `${area.dir}/probe-${Deno.pid}-link${TEMP_SUFFIX}`;
  try {
    Deno.mkdirSync(area.dir, { recursive: true, mode: 0o750 });
    const rootDev = Deno.statSync(area.root).dev;
    const dirDev = Deno.statSync(area.dir).dev;
    if (rootDev !== dirDev) return "on another file system than the watched path (EXDEV)";
    const mounts = mountPoints();
    const rootMount = mountOf(Deno.realPathSync(area.root), mounts);
    if (rootMount !== mountOf(Deno.realPathSync(area.dir), mounts)) {
      return `under another mount point than the watched path ('${rootMount}'): links cannot cross it (EXDEV)`;
    }
    Deno.writeFileSync(probe, new Uint8Array());
    try {
      Deno.linkSync(probe, link);
      Deno.removeSync(link);
    } finally {
      Deno.removeSync(probe);
    }
  } catch (err) {
    return errorMessage(err);
  }
  return undefined;
}

/**
 * The mount points of this process's namespace; empty where /proc is not
 * readable (Deno lets only --allow-all read /proc/self, which the compiled
 * binary does not have: the first pin finds a bind mount there).
 */
function mountPoints(): string[] {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/mountinfo");
  } catch {
    return [];
  }
  // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
  return text.split("\n").map((line) => line.split(" ")[4]).filter((m) => m !== undefined)
    .map((m) => m.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8))));
}

/** The mount point `path` (resolved) is under: the longest one that holds it. */
function mountOf(path: string, mounts: string[]): string | undefined {
  let best: string | undefined;
  for (const mount of mounts) {
    const holds = mount === "/" || path === mount || path.startsWith(mount + "/");
    if (holds && (best === undefined || mount.length > best.length)) best = mount;
  }
  return best;
}
