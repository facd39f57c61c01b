/** `tablesnap slurp [options] BUCKET ORIGIN TARGET`: restore (the original tableslurp). */
import { Accounts } from "../common/accounts.ts";
import { UsageError } from "../common/errors.ts";
import { DEFAULT_CONNECTIONS, slurp, type SlurpOptions } from "../restore/slurp.ts";
import { helpText, type OptionTable, parseOptions, timeValue } from "./options.ts";
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
const naming = namingOptions(OPTIONS);

export const SLURP_OPTIONS = {
  file: {
    group: OPTIONS,
    kind: "text",
    short: "f",
    arg: "FILE",
    help: "restore the file set of FILE's index (FILE is a bare name\n" +
      "such as nb-7-big-Data.db) instead of the newest index",
  },
  at: {
    group: OPTIONS,
    kind: "text",
    arg: "TIME",
    help: "the newest restore point at or before TIME (ISO 8601 with a zone,\n" +
      "or @<unix seconds>) instead of the newest; see tablesnap list",
  },
  "allow-incomplete": {
    group: OPTIONS,
    kind: "flag",
    help: "restore even SSTables whose TOC.txt lists components the set lacks",
  },
  recursive: {
    group: OPTIONS,
    kind: "flag",
    short: "r",
    help: "ORIGIN is a data directory: restore every keyspace/table\n" +
      "below it from its own newest index into TARGET/<ks>/<table>",
  },
  commitlogs: {
    group: OPTIONS,
    kind: "text",
    arg: "DIR",
    help: "also restore the commit logs under <name>:DIR/ needed to replay from\n" +
      "the oldest index restored (up to --at, with its restore_point_in_time)",
  },
  "commitlogs-target": {
    group: OPTIONS,
    kind: "text",
    arg: "DIR",
    help: "where to put them (default: TARGET/commitlogs)",
  },
  owner: {
    group: OPTIONS,
    kind: "text",
    short: "o",
    arg: "USER",
    help: "chown restored files to USER (name or uid)",
  },
  group: {
    group: OPTIONS,
    kind: "text",
    short: "g",
    arg: "GROUP",
    help: "chgrp restored files to GROUP (name or gid)",
  },
  preserve: {
    group: OPTIONS,
    kind: "flag",
    short: "p",
    help: "owner and group from each file's stat metadata (overrides -o/-g)",
  },
  threads: {
    group: OPTIONS,
    kind: "count",
    short: "t",
    arg: "N",
    help: "concurrent connections (a restore's own default; the watcher's -t is 4)",
    default: DEFAULT_CONNECTIONS,
    min: 1,
  },
  force: { group: OPTIONS, kind: "flag", help: "download even files already present and verified" },
  plan: {
    group: OPTIONS,
    kind: "flag",
    help: "resolve and check the file set, print it, download nothing",
  },
  ...naming,
  // -p is --preserve here, as in the original tableslurp.
  prefix: { ...naming.prefix, short: undefined },
  help: { group: OPTIONS, kind: "flag", short: "h", help: "show this help" },
  ...IDENTITY_OPTIONS,
  ...CONNECTION_OPTIONS,
  // The original tableslurp's name for the session token.
  "aws-token": { ...CONNECTION_OPTIONS["aws-token"], aliases: ["token"] },
} as const satisfies OptionTable;

export const SLURP_HELP = helpText(SLURP_OPTIONS, {
  usage: "tablesnap slurp [options] BUCKET ORIGIN TARGET",
  description: "Restore the files of ORIGIN (a directory path as the watcher saw it) from the\n" +
    "newest index under <name>:<ORIGIN>/ into the local directory TARGET.\n" +
    BUCKET_NOTE,
  epilogue: "Every file is checked against its size and MD5 (md5sum metadata, else a\n" +
    "single-part ETag) and downloaded again if it does not match (5 attempts).\n" +
    "Exit status: 0 all restored, 1 some file not restored (named), 2 usage error.",
});

/** A restore as the command line asks for it, before the store is opened. */
export type SlurpFlags = JobFlags<SlurpOptions>;

/** Parses slurp's command line (pure but for reading /etc/passwd for -o/-g). */
export function parseSlurpArgs(args: string[]): SlurpFlags | "help" {
  const { values, positionals } = parseOptions(args, SLURP_OPTIONS);
  if (values.help) return "help";
  const [bucket, origin, target] = jobArguments(positionals, ["BUCKET", "ORIGIN", "TARGET"]);
  const accounts = new Accounts();
  const flags: SlurpFlags = {
    bucket,
    connection: connectionOf(values),
    naming: namingOf(values),
    identities: identitiesOf(values),
    origin,
    target,
    threads: values.threads,
    recursive: values.recursive,
    preserve: values.preserve,
    force: values.force,
    plan: values.plan,
    file: values.file,
    at: values.at === undefined ? undefined : timeValue(values.at, "--at"),
    allowIncomplete: values["allow-incomplete"],
    commitlogs: values.commitlogs,
    commitlogsTarget: values["commitlogs-target"],
  };
  if (values.owner !== undefined) {
    flags.owner = accounts.uid(values.owner);
    if (flags.owner === undefined) throw new UsageError(`Unknown user '${values.owner}'`);
  }
  if (values.group !== undefined) {
    flags.group = accounts.gid(values.group);
    if (flags.group === undefined) throw new UsageError(`Unknown group '${values.group}'`);
  }
  return flags;
}

/** `tablesnap slurp ARGS`: returns the exit code (1 when anything promised was not restored). */
export function slurpMain(args: string[]): Promise<number> {
  return runJob(parseSlurpArgs(args), SLURP_HELP, async (options) => {
    const result = await slurp(options);
    const short = result.missing.length > 0 || result.failed.length > 0;
    // A plan of SSTables that cannot be restored whole fails like the restore would.
    const refused = result.incomplete.length > 0 && !options.allowIncomplete;
    return short || refused ? 1 : 0;
  });
}
