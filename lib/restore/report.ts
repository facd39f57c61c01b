/**
 * What a restore prints: the plan (`--plan`), and the findings the plan
 * and the summary both report (tables with no point by then, incomplete
 * SSTables, bytes from after a point, missing objects, the replay point).
 */
import { formatBytes } from "../common/format.ts";
import type { Store } from "../store/store.ts";
import type { IncompleteGeneration, SlurpResult } from "./types.ts";

/** One line per incomplete generation, for errors and the plan. */
export function describeIncomplete(g: IncompleteGeneration): string {
  return `generation '${g.generation}' in '${g.directory}' lacks ${g.missing.join(", ")} ` +
    `(listed by its TOC.txt; index '${g.index}')`;
}

export function printPlan(print: (line: string) => void, store: Store, result: SlurpResult): void {
  const times = result.points.map((p) => p.time.getTime());
  for (const point of result.points) {
    print(`index ${point.time.toISOString()} ${point.info.key}`);
  }
  for (const file of result.files) {
    const size = file.size === undefined ? "MISSING" : String(file.size);
    print(`${size.padStart(12)} ${file.key} -> ${file.path}`);
  }
  print(
    `${result.files.length} files, ${
      formatBytes(result.bytes)
    } (${result.bytes} bytes) from ${store.url}; ` +
      `newest index ${new Date(Math.max(...times)).toISOString()}, ` +
      `oldest index ${new Date(Math.min(...times)).toISOString()}`,
  );
  printFindings(print, result);
}

/** What the plan and the summary both say: skipped tables, gaps, the replay point. */
export function printFindings(print: (line: string) => void, result: SlurpResult): void {
  if (result.tablesSkipped.length > 0) {
    print(`No restore point by then, not restored (${result.tablesSkipped.length}):`);
    for (const directory of result.tablesSkipped) print(`  ${directory}`);
  }
  if (result.incomplete.length > 0) {
    print(`Incomplete SSTables (${result.incomplete.length}):`);
    for (const g of result.incomplete) print(`  ${describeIncomplete(g)}`);
  }
  if (result.later.length > 0) {
    print(`Restored with bytes from after their restore point (${result.later.length}):`);
    for (const l of result.later) print(`  ${l.path}: ${l.reason}`);
  }
  if (result.missing.length > 0) {
    print(`Missing from the bucket (${result.missing.length}):`);
    for (const key of result.missing) print(`  ${key}`);
  }
  if (result.restorePointInTime !== null) {
    print(`Commit log replay: restore_point_in_time=${result.restorePointInTime}`);
  }
}
