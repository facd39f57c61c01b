/** `tablesnap verify [options] BUCKET PATH`: check that the backups would restore. */
import { verify, type VerifyOptions } from "../maintenance/verify.ts";
import { helpText, type OptionTable, parseOptions } from "./options.ts";
import { jobArguments, type JobFlags, runJob } from "./run_job.ts";
import {
  BUCKET_NOTE,
  CONNECTION_OPTIONS,
  connectionOf,
  identitiesOf,
  IDENTITY_OPTIONS,
  namingOf,
  namingOptions,
} from "./shared_options.ts";

const OPTIONS = "Options";

export const VERIFY_OPTIONS = {
  all: {
    group: OPTIONS,
    kind: "flag",
    help: "check every index, not only the newest per directory",
  },
  md5: { group: OPTIONS, kind: "flag", help: "download every object and check its size and MD5" },
  json: {
    group: OPTIONS,
    kind: "flag",
    help: "one JSON object per line: each object checked (key, bytes,\n" +
      "storage_class, server_side_encryption), each problem, the summary",
  },
  parallel: {
    group: OPTIONS,
    kind: "count",
    short: "j",
    arg: "N",
    help: "concurrent checks",
    default: 8,
    min: 1,
  },
  ...namingOptions(OPTIONS),
  help: { group: OPTIONS, kind: "flag", short: "h", help: "show this help" },
  ...IDENTITY_OPTIONS,
  ...CONNECTION_OPTIONS,
} as const satisfies OptionTable;

export const VERIFY_HELP = helpText(VERIFY_OPTIONS, {
  usage: "tablesnap verify [options] BUCKET PATH",
  description: "Check the backups under <name>:<PATH>/: for the newest index of every\n" +
    "directory (every index with --all), each file it names must exist and its\n" +
    "md5sum metadata must agree with the object's ETag (single-part uploads);\n" +
    "with --md5, each object is downloaded and its size and MD5 checked.\n" + BUCKET_NOTE,
  epilogue:
    "Exit status: 0 no problem, 1 a problem (each printed as 'PROBLEM key: what'), 2 usage error.",
});

/** A verification as the command line asks for it, before the store is opened. */
export type VerifyFlags = JobFlags<VerifyOptions>;

/** Parses verify's command line (pure). */
export function parseVerifyArgs(args: string[]): VerifyFlags | "help" {
  const { values, positionals } = parseOptions(args, VERIFY_OPTIONS);
  if (values.help) return "help";
  const [bucket, path] = jobArguments(positionals, ["BUCKET", "PATH"]);
  return {
    bucket,
    connection: connectionOf(values),
    naming: namingOf(values),
    identities: identitiesOf(values),
    path,
    all: values.all,
    md5: values.md5,
    json: values.json,
    parallel: values.parallel,
  };
}

/** `tablesnap verify ARGS`: returns the exit code (1 when any problem was found). */
export function verifyMain(args: string[]): Promise<number> {
  return runJob(parseVerifyArgs(args), VERIFY_HELP, async (options) => {
    const result = await verify(options);
    return result.problems.length > 0 ? 1 : 0;
  });
}
