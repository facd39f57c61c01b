/** Sizes, rates and durations for people (summaries, progress) and for JSON logs. */

/** `1.5 MiB`-style sizes (powers of 1024). */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** `1h05m` or `3m07s`. */
export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(rest).padStart(2, "0")}s`;
}

/**
 * Seconds with millisecond precision, as a number: log fields that are
 * durations stay numeric in JSON logs.
 */
export function roundSeconds(seconds: number): number {
  return Math.round(seconds * 1000) / 1000;
}

/** Seconds elapsed since `startedMs` (a `performance.now()` reading), rounded. */
export function secondsSince(startedMs: number): number {
  return roundSeconds((performance.now() - startedMs) / 1000);
}

/** Parses "500K", "10M", "1.5G", "1048576" (bytes per second, powers of 1024); null if not a rate. */
export function parseRate(text: string): number | null {
  return parseBytes(text, true);
}

/** Parses a size: "64K", "10G", "1.5GiB", "1048576" (powers of 1024); null if not one. */
export function parseSize(text: string): number | null {
  return parseBytes(text, false);
}

function parseBytes(text: string, perSecond: boolean): number | null {
  const pattern = perSecond
    ? /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?(?:\/s)?\s*$/i
    : /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i;
  const match = pattern.exec(text);
  if (!match) return null;
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[
    match[2]!.toUpperCase() as "" | "K" | "M" | "G" | "T"
  ];
  const rate = Number(match[1]) * unit;
  return rate >= 1 ? Math.floor(rate) : null;
}
