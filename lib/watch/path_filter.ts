/**
 * Which paths are backed up: the original's `-e/--exclude` and
 * `-i/--include` (repeatable, mutually exclusive, regex *search* on the full
 * path); with neither, any path containing `-tmp` is skipped, because
 * Cassandra writes in-progress SSTables under `-tmp` names.
 */
import { UsageError } from "../common/errors.ts";

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
    accepts: (path) => !path.includes("-tmp"),
    describe: () => "contains '-tmp' (the default exclusion)",
  };
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
