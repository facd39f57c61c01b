/** `tablesnap list [options] BUCKET PATH`: the restore points under PATH. */
import { type ListOptions, listRestorePoints } from "../restore/list.ts";
import { helpText, type OptionTable, parseOptions, timeValue } from "./options.ts";
import { jobArguments, type JobFlags, runJob } from "./run_job.ts";
import {
  BUCKET_NOTE,
  CONNECTION_OPTIONS,
  connectionOf,
  namingOf,
  namingOptions,
} from "./shared_options.ts";

const OPTIONS = "Options";

export const LIST_OPTIONS = {
  at: {
    group: OPTIONS,
    kind: "text",
    arg: "TIME",
    help: "mark the point 'slurp --at TIME' would use in each directory",
  },
  json: {
    group: OPTIONS,
    kind: "flag",
    help: "one JSON object per restore point and line (directory, index, time,\n" +
      "files, bytes, complete, missing, newest; in S3, each file's storage class)",
  },
  parallel: {
    group: OPTIONS,
    kind: "count",
    short: "j",
    arg: "N",
    help: "concurrent index reads",
    default: 8,
    min: 1,
  },
  ...namingOptions(OPTIONS),
  help: { group: OPTIONS, kind: "flag", short: "h", help: "show this help" },
  ...CONNECTION_OPTIONS,
} as const satisfies OptionTable;

export const LIST_HELP = helpText(LIST_OPTIONS, {
  usage: "tablesnap list [options] BUCKET PATH",
  description: "List the restore points of PATH and of every directory below it that has\n" +
    "indexes: per directory, oldest first, each index's cut time, files, bytes, and\n" +
    "whether every object it names is in the bucket; the newest is marked.\n" + BUCKET_NOTE,
  epilogue: "Times are the watcher host's clock, to the millisecond where the index records\n" +
    "it, else the bucket's LastModified (marked 'bucket time').\n" +
    "Exit status: 0 every point complete, 1 some point incomplete or unreadable, 2 usage error.",
});

export type ListFlags = JobFlags<ListOptions>;

/** Parses list's command line (pure). */
export function parseListArgs(args: string[]): ListFlags | "help" {
  const { values, positionals } = parseOptions(args, LIST_OPTIONS);
  if (values.help) return "help";
  const [bucket, path] = jobArguments(positionals, ["BUCKET", "PATH"]);
  return {
    bucket,
    connection: connectionOf(values),
    naming: namingOf(values),
    path,
    at: values.at === undefined ? undefined : timeValue(values.at, "--at"),
    json: values.json,
    parallel: values.parallel,
  };
}

/** `tablesnap list ARGS`: returns the exit code. */
export function listMain(args: string[]): Promise<number> {
  return runJob(parseListArgs(args), LIST_HELP, async (options) => {
    const points = await listRestorePoints(options);
    return points.every((p) => p.complete) ? 0 : 1;
  });
}
