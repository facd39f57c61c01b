/** Statistics and markdown for the benchmark report. */

/** A number with `digits` decimals, or "n/a" when it is not finite. */
export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "n/a";
}

/** The median (mean of the middle two for even counts); NaN when empty. */
export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The nearest-rank percentile `p` (0-100) of sorted values; NaN when empty. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

export interface LatencyStats {
  files: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  missed: number;
}

/** Percentiles of latencies in ms; `null` (or a hole) is a missed file. */
export function latencyStats(values: (number | null | undefined)[]): LatencyStats {
  const seen = values.filter((v): v is number => typeof v === "number").sort((a, b) => a - b);
  return {
    files: values.length,
    p50: percentile(seen, 50),
    p95: percentile(seen, 95),
    p99: percentile(seen, 99),
    max: seen.at(-1) ?? NaN,
    missed: values.length - seen.length,
  };
}

/** "met", or by how much `value` falls short of a lower bound. */
export function verdictAtLeast(value: number, target: number): string {
  if (!Number.isFinite(value)) return "not measured";
  if (value >= target) return "met";
  return `missed by ${fmt(((target - value) / target) * 100, 0)}%`;
}

/** "met", or by how much `value` exceeds an upper bound. */
export function verdictAtMost(value: number, target: number): string {
  if (!Number.isFinite(value)) return "not measured";
  if (value <= target) return "met";
  if (target === 0) return `missed (${fmt(value)})`;
  return `missed by ${fmt(((value - target) / target) * 100, 0)}%`;
}

/** Every job's peak RSS bound, MB (issue #21: "at most 150 MB for every job"). */
export const RSS_LIMIT_MB = 150;

/** A summary row judging a peak RSS (MB) against `RSS_LIMIT_MB`. */
export function peakRssRow(measure: string, peakMB: number, detail = ""): string[] {
  return [
    measure,
    `${fmt(peakMB)} MB${detail}`,
    `≤ ${RSS_LIMIT_MB} MB`,
    verdictAtMost(peakMB, RSS_LIMIT_MB),
  ];
}

/** A markdown table; `|` in cells is escaped. */
export function markdownTable(head: string[], rows: string[][]): string {
  const cell = (s: string) => s.replaceAll("|", "\\|");
  return [
    `| ${head.map(cell).join(" | ")} |`,
    `| ${head.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${r.map(cell).join(" | ")} |`),
  ].join("\n");
}
