/**
 * Step 8, the SIGKILL matrix (`--only crash`): tests/_crash_matrix.ts run
 * with the bench's sizes, its figures reported.
 */
import {
  type CrashMatrixFigures,
  describeFigures,
  runCrashMatrix,
} from "../tests/_crash_matrix.ts";
import type { Config } from "./_config.ts";
import { log } from "./_context.ts";
import { fmt } from "./_report.ts";

/** Runs the matrix; throws (after logging the figures) when it found a fault. */
export async function crashStep(cfg: Config): Promise<CrashMatrixFigures> {
  log(`crash matrix: seed ${cfg.crashSeed} (--crash-seed ${cfg.crashSeed} replays it)`);
  const figures = await runCrashMatrix({
    seed: cfg.crashSeed,
    kills: cfg.crashKills,
    steps: cfg.crashKills * 3,
    bigFiles: Math.max(1, Math.round(cfg.crashKills / 5)),
    pin: cfg.crashPin,
    log,
  });
  log(describeFigures(figures));
  return figures;
}

/** Whether the matrix found a fault. */
export function crashFailed(figures: CrashMatrixFigures): boolean {
  return figures.mismatches.length > 0 || figures.incompleteUploads > 0 || figures.pinsLeft > 0;
}

/** The detail of step 8. */
export function crashReport(c: CrashMatrixFigures): string[] {
  const lines = [
    `**8. SIGKILL matrix** (\`--only crash\`; tests/_crash_matrix.ts): a workload written ` +
    `while a watcher with \`--state-dir\` is killed at ${c.kills} random points and ` +
    `restarted without -B each time (moto, \`--max-bandwidth 8M\` until the last start).`,
    "",
    "| Seed | Kills | Files | File MiB | Body MiB sent | Re-sent MiB | Resumed | Stale aborted | Incomplete left | Mismatches | s |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    `| ${c.seed} | ${c.kills} | ${c.files} | ${fmt(c.fileBytes / 2 ** 20, 1)} | ${
      fmt(c.sentFileBytes / 2 ** 20, 1)
    } | ${
      fmt((c.sentFileBytes - c.fileBytes) / 2 ** 20, 1)
    } | ${c.resumed} | ${c.staleAborted} | ${c.incompleteUploads} | ${c.mismatches.length} | ${
      fmt(c.seconds, 0)
    } |`,
    "",
  ];
  for (const m of c.mismatches.slice(0, 10)) lines.push(`- mismatch: ${m}`);
  if (c.mismatches.length > 0) lines.push("");
  return lines;
}
