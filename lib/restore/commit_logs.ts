/**
 * Point-in-time recovery: the commit log segments a restore adds to its
 * plan (`--commitlogs`), and the replay settings written beside them with
 * `--at` (Cassandra's `restore_point_in_time`).
 */
import { directoryPrefix } from "../bucket/keys.ts";
import type { RestorePlan, SlurpOptions } from "./types.ts";

const COMMIT_LOG = /^CommitLog-\d+-(\d+)\.log$/;

/** The name of the commit log replay settings written beside restored commit logs. */
export const ARCHIVING_PROPERTIES = "commitlog_archiving.properties.tablesnap";

/**
 * The commit log segments that may hold mutations between the oldest chosen
 * restore point and --at (or now): those created by then (a segment's name
 * carries its creation time in milliseconds) and either created since the
 * oldest point or uploaded since (a segment is uploaded when Cassandra
 * closes it, so one uploaded before the point holds nothing after it).
 * Inclusive on purpose: replaying a segment twice is harmless, missing one
 * loses writes; past --at, `restore_point_in_time` stops the replay.
 */
export async function addCommitLogs(options: SlurpOptions, plan: RestorePlan): Promise<void> {
  const since = Math.min(...plan.points.map((p) => p.time.getTime()));
  const until = options.at?.getTime() ?? Infinity;
  const prefix = directoryPrefix(options.naming, options.commitlogs!);
  const root = options.commitlogsTarget ?? `${options.target}/commitlogs`;
  for await (const info of options.store.list(prefix, { delimiter: "/" })) {
    const name = info.key.slice(prefix.length);
    const match = name.match(COMMIT_LOG);
    if (!match) continue;
    const created = Number(match[1]);
    if (created > until) continue;
    if (created >= since || info.lastModified.getTime() >= since) {
      plan.sources.push({ key: info.key, root, segments: [], name });
    }
  }
  if (options.at) plan.restorePointInTime = restorePointInTime(options.at);
}

/**
 * Cassandra's `restore_point_in_time` (GMT, `yyyy:MM:dd HH:mm:ss`): it
 * applies mutations up to and including that second, so the time is
 * rounded down, never past --at.
 */
export function restorePointInTime(at: Date): string {
  const iso = new Date(Math.floor(at.getTime() / 1000) * 1000).toISOString();
  return `${iso.slice(0, 10).replaceAll("-", ":")} ${iso.slice(11, 19)}`;
}

/** The commit log replay settings Cassandra reads, for `commitlogs`. */
export function archivingProperties(directory: string, pointInTime: string, at: Date): string {
  return [
    `# Written by tablesnap slurp --at ${at.toISOString()}. To replay these commit logs up to`,
    "# that time, copy these lines into Cassandra's conf/commitlog_archiving.properties",
    "# before starting the restored node.",
    "restore_command=/bin/cp -f %from %to",
    `restore_directories=${directory}`,
    `restore_point_in_time=${pointInTime}`,
    "",
  ].join("\n");
}
