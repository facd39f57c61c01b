/**
 * tablesnap: one binary, five jobs. This file only picks the job and turns
 * failures into one-line errors and exit codes (2: usage, 1: anything else).
 *
 *   tablesnap [options] BUCKET PATH...   watch and upload (lib/cli/watch.ts)
 *   tablesnap slurp ...                  restore          (lib/cli/slurp.ts)
 *   tablesnap chop ...                   retention        (lib/cli/chop.ts)
 *   tablesnap verify ...                 check a bucket   (lib/cli/verify.ts)
 *   tablesnap list ...                   restore points   (lib/cli/list.ts)
 */
import { errorMessage, FatalError, UsageError } from "./lib/common/errors.ts";
import { escapeOutputLine } from "./lib/common/escape.ts";
import { log, logOptionsFromEnv } from "./lib/common/log.ts";
import { chopMain } from "./lib/cli/chop.ts";
import { listMain } from "./lib/cli/list.ts";
import { slurpMain } from "./lib/cli/slurp.ts";
import { verifyMain } from "./lib/cli/verify.ts";
import { watchMain } from "./lib/cli/watch.ts";

const JOBS: Record<string, (args: string[]) => Promise<number>> = {
  slurp: slurpMain,
  chop: chopMain,
  verify: verifyMain,
  list: listMain,
};

async function main(args: string[]): Promise<number> {
  const [first, ...rest] = args;
  const job = first !== undefined ? JOBS[first] : undefined;
  // TDEBUG and TABLESNAP_SYSLOG apply to every job, not only the watcher.
  log.configure(logOptionsFromEnv());
  try {
    return job ? await job(rest) : await watchMain(args);
  } catch (err) {
    if (err instanceof UsageError) {
      const command = job ? `tablesnap ${first}` : "tablesnap";
      console.error(`error: ${escapeOutputLine(err.message)}\nRun '${command} --help' for usage.`);
      return 2;
    }
    if (!(err instanceof FatalError) && log.debugEnabled) {
      // A stack trace is many lines: each one escaped on its own.
      console.error(Deno.inspect(err).split("\n").map(escapeOutputLine).join("\n"));
    }
    const message = err instanceof FatalError ? err.message : errorMessage(err);
    // The message may quote a key, a file name or an S3 error text.
    console.error(`error: ${escapeOutputLine(message)}`);
    if (log.toSyslog) log.error(message);
    return 1;
  } finally {
    await log.close();
  }
}

Deno.exit(await main(Deno.args));
