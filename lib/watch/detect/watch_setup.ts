/**
 * What the watcher checks before it watches: each path is a readable
 * directory, the kernel's event queue is large enough, and a refused watch
 * says which limit to raise.
 */
import { errorMessage, UsageError } from "../../common/errors.ts";
import { log } from "../../common/log.ts";

/** The OS refused more watches (fs.inotify.max_user_watches). */
export class WatchLimitError extends Error {
  override name = "WatchLimitError";
  constructor(cause: unknown) {
    super(
      `Cannot watch the paths: ${errorMessage(cause)} (raise fs.inotify.max_user_watches)`,
    );
  }
}

/** Throws `UsageError` unless `root` is a readable directory. */
export async function checkRoot(root: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(root);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new UsageError(`Path '${root}' does not exist`);
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new UsageError(`Path '${root}' is not readable (permission denied)`);
    }
    throw err;
  }
  if (!info.isDirectory) throw new UsageError(`Path '${root}' is not a directory`);
}

/** The kernel drops events silently past this queue length: say so at start. */
export async function warnOnSmallInotifyQueue(): Promise<void> {
  try {
    const value = Number(
      (await Deno.readTextFile("/proc/sys/fs/inotify/max_queued_events")).trim(),
    );
    if (value < 524_288) {
      log.warn(
        "fs.inotify.max_queued_events is low; bursts may drop events (sweeps recover them)",
        {
          value,
          hint: "sysctl -w fs.inotify.max_queued_events=1048576",
        },
      );
    }
  } catch {
    // not Linux, or /proc not readable: nothing to say
  }
}
