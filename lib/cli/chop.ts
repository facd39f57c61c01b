/** `tablesnap chop [options] BUCKET PATH AGE_DAYS`: retention (the original tablechop). */
import { UsageError } from "../common/errors.ts";
import { chop, type ChopOptions } from "../maintenance/chop.ts";
import { helpText, nonNegativeNumber, type OptionTable, parseOptions } from "./options.ts";
import { jobArguments, type JobFlags, runJob } from "./run_job.ts";
import {
  BUCKET_NOTE,
  CONNECTION_OPTIONS,
  connectionOf,
  namingOf,
  namingOptions,
} from "./shared_options.ts";

const OPTIONS = "Options";

export const CHOP_OPTIONS = {
  "dry-run": {
    group: OPTIONS,
    kind: "flag",
    short: "d",
    aliases: ["debug"],
    help: "dry run: delete nothing, report what would be deleted",
  },
  "list-deletes": {
    group: OPTIONS,
    kind: "flag",
    short: "l",
    help: "print every key deleted (or that would be)",
  },
  parallel: {
    group: OPTIONS,
    kind: "count",
    short: "j",
    arg: "N",
    help: "concurrent index reads",
    default: 5,
    min: 1,
  },
  ...namingOptions(OPTIONS),
  now: {
    group: OPTIONS,
    kind: "text",
    arg: "TIME",
    help: "pretend the time is TIME (ISO 8601): for tests and what-ifs",
  },
  help: { group: OPTIONS, kind: "flag", short: "h", help: "show this help" },
  ...CONNECTION_OPTIONS,
  // The original tablechop's names for the credentials.
  "aws-key": { ...CONNECTION_OPTIONS["aws-key"], aliases: ["key"] },
  "aws-secret": { ...CONNECTION_OPTIONS["aws-secret"], aliases: ["secret"] },
} as const satisfies OptionTable;

export const CHOP_HELP = helpText(CHOP_OPTIONS, {
  usage: "tablesnap chop [options] BUCKET PATH AGE_DAYS",
  description: "Delete old backups under <name>:<PATH>. Kept: every index younger than\n" +
    "AGE_DAYS days, the newest index of every directory whatever its age, every\n" +
    "file a kept index names, and every object younger than AGE_DAYS days.\n" +
    "Everything else under the prefix is deleted (DeleteObjects, 1,000 keys a request).\n" +
    "Nothing is deleted if an index that must be kept cannot be read or parsed,\n" +
    "or if there is no index under the prefix at all.\n" + BUCKET_NOTE,
  epilogue: "PATH is used verbatim as a key prefix, as the original did: /data/ks also\n" +
    "matches /data/ks2 (whose indexes then protect their own files the same way).\n" +
    "On a versioned bucket every version of a deleted key goes; versions Object Lock\n" +
    "retains are counted as 'kept by lock' (named with -l), not an error.\n" +
    "Exit status: 0 done, 1 aborted or a delete failed, 2 usage error.",
});

/** A chop as the command line asks for it, before the store is opened. */
export type ChopFlags = JobFlags<ChopOptions>;

/** Parses chop's command line (pure). */
export function parseChopArgs(args: string[]): ChopFlags | "help" {
  const { values, positionals } = parseOptions(args, CHOP_OPTIONS);
  if (values.help) return "help";
  const [bucket, path, age] = jobArguments(positionals, ["BUCKET", "PATH", "AGE_DAYS"]);
  const flags: ChopFlags = {
    bucket,
    connection: connectionOf(values),
    naming: namingOf(values),
    path,
    ageDays: nonNegativeNumber(age, "AGE_DAYS"),
    dryRun: values["dry-run"],
    listDeletes: values["list-deletes"],
    parallel: values.parallel,
  };
  if (values.now !== undefined) {
    flags.now = new Date(values.now);
    if (Number.isNaN(flags.now.getTime())) {
      throw new UsageError(`Option '--now' needs an ISO 8601 time, got '${values.now}'`);
    }
  }
  return flags;
}

/** `tablesnap chop ARGS`: returns the exit code. */
export function chopMain(args: string[]): Promise<number> {
  return runJob(parseChopArgs(args), CHOP_HELP, async (options) => {
    await chop(options);
    return 0;
  });
}
