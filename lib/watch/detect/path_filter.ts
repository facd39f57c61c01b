/**
 * Which paths are backed up: the original's `-e/--exclude` and
 * `-i/--include` (repeatable, mutually exclusive, regex *search* on the full
 * path). With neither, Cassandra's transient files are skipped (see
 * `isTransient`). The index publisher lists directories through the same
 * filter, so what is skipped here is never named by an index either.
 */
import { UsageError } from "../../common/errors.ts";

export interface PathFilter {
  /** True when `path` (absolute) should be uploaded. */
  accepts(path: string): boolean;
  /** For logs: why a path was refused. */
  describe(): string;
}

/**
 * Compiles the patterns. Python's named groups `(?P<name>...)` and
 * backreferences `(?P=name)` are translated; any other syntax error is a
 * usage error naming the pattern.
 */
export function makePathFilter(options: { include?: string[]; exclude?: string[] }): PathFilter {
  const include = options.include ?? [];
  const exclude = options.exclude ?? [];
  if (include.length > 0 && exclude.length > 0) {
    throw new UsageError("Options '--include' and '--exclude' cannot be used together");
  }
  if (include.length > 0) {
    const patterns = include.map((p) => compile(p, "--include"));
    return {
      accepts: (path) => patterns.some((re) => re.test(path)),
      describe: () => `does not match --include ${include.join(" ")}`,
    };
  }
  if (exclude.length > 0) {
    const patterns = exclude.map((p) => compile(p, "--exclude"));
    return {
      accepts: (path) => !patterns.some((re) => re.test(path)),
      describe: () => `matches --exclude ${exclude.join(" ")}`,
    };
  }
  return {
    accepts: (path) => !isTransient(path),
    describe: () =>
      "is a temporary file or transaction log ('-tmp', '.tmp', 'tmplink', '_txn_*.log': the default exclusion)",
  };
}

/** `<version>_txn_<operation>_<uuid>.log`. */
const TXN_LOG = /_txn_.*\.log$/;

/**
 * The default exclusion: files Cassandra writes on the way to others and
 * deletes (or renames) once done. Backed up they are useless, and a restored
 * transaction log is harmful: at start-up Cassandra replays leftover logs and
 * deletes the files of the operations they name as unfinished.
 *
 * - the original's rule: any path containing `-tmp` (2.x wrote SSTables as
 *   `<ks>-<table>-tmp-...` and `-tmplink-`);
 * - names ending in `.tmp`: `<name>-Statistics.db.tmp`, written and renamed
 *   over the Statistics.db, and streaming's `<file>.<timeuuid>.tmp`;
 * - names containing `tmplink`;
 * - transaction logs, `<version>_txn_<operation>_<uuid>.log`
 *   (`nb_txn_flush_...log`, `nb_txn_compaction_...log`).
 */
export function isTransient(path: string): boolean {
  if (path.includes("-tmp")) return true;
  const name = path.slice(path.lastIndexOf("/") + 1);
  return name.endsWith(".tmp") || name.includes("tmplink") || TXN_LOG.test(name);
}

function compile(pattern: string, flag: string): RegExp {
  const translated = pattern.replace(/\(\?P</g, "(?<").replace(/\(\?P=(\w+)\)/g, "\\k<$1>");
  try {
    return new RegExp(translated, "u");
  } catch {
    try {
      // Python accepts some escapes that unicode-mode JS refuses (e.g. "\-" outside classes).
      return new RegExp(translated);
    } catch (err) {
      const reason = err instanceof Error
        ? err.message.replace(/^Invalid regular expression: /, "")
        : "";
      throw new UsageError(`Invalid regular expression for '${flag}': '${pattern}' (${reason})`);
    }
  }
}
