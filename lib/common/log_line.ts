/** What a log line is made of (log.ts writes it; log_repeats.ts holds recurring ones back). */
export type Level = "debug" | "info" | "warn" | "error";
export type Fields = Record<string, string | number | boolean | undefined>;
