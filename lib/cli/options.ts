/**
 * Option tables: each job declares its options once, as data (spelling,
 * value kind, default, --help text, section), and this module makes the
 * parser, the typed values and the --help text from that one table, so the
 * three cannot drift apart. Parsing is pure: no I/O, no logging.
 *
 * Underneath is `node:util`'s `parseArgs` (the JSR `@std/cli` cannot be
 * reached from our build hosts); its messages are reworded into one-line
 * usage errors.
 */
import { parseArgs } from "node:util";
import { UsageError } from "../common/errors.ts";

/** One option. The table's key is its long name (`threads` for `--threads`). */
export interface OptionSpec {
  /** The --help section it is listed in; sections appear in table order. */
  readonly group: string;
  /**
   * flag: present or not; text: one string; texts: repeatable;
   * count: a whole number (at least `min`); seconds: a non-negative number.
   */
  readonly kind: "flag" | "text" | "texts" | "count" | "seconds";
  readonly short?: string | undefined;
  /** Other long names that mean the same (the original tools' spellings). */
  readonly aliases?: readonly string[];
  /** The value's placeholder in --help (`N`, `SEC`, `REGEX`). */
  readonly arg?: string;
  /** One line, or several joined by "\n"; "(default ...)" is added from `default`. */
  readonly help: string;
  readonly default?: number | string | readonly string[];
  /** The smallest value a count takes (default 0). */
  readonly min?: number;
}

export type OptionTable = Readonly<Record<string, OptionSpec>>;

type ValueOf<S extends OptionSpec> = S["kind"] extends "flag" ? boolean
  : S["kind"] extends "texts" ? string[]
  : S["kind"] extends "count" | "seconds" ? (S extends { default: number } ? number
      : number | undefined)
  : S extends { default: string } ? string
  : string | undefined;

/** The parsed values of a table, one typed field per option. */
export type OptionValues<T extends OptionTable> = { -readonly [K in keyof T]: ValueOf<T[K]> };

export interface ParsedArgs<T extends OptionTable> {
  values: OptionValues<T>;
  positionals: string[];
}

/**
 * Parses `args` strictly against `table`; any mistake is a `UsageError`
 * naming it. Aliases fill their option when it was not given itself.
 */
export function parseOptions<T extends OptionTable>(args: string[], table: T): ParsedArgs<T> {
  type Config = { type: "string" | "boolean"; short?: string; multiple?: boolean };
  const config: Record<string, Config> = {};
  for (const [name, spec] of Object.entries(table)) {
    const type = spec.kind === "flag" ? "boolean" : "string";
    const entry: Config = { type };
    if (spec.short) entry.short = spec.short;
    if (spec.kind === "texts") entry.multiple = true;
    config[name] = entry;
    for (const alias of spec.aliases ?? []) {
      config[alias] = spec.kind === "texts" ? { type, multiple: true } : { type };
    }
  }
  let raw: Record<string, string | boolean | (string | boolean)[] | undefined>;
  let positionals: string[];
  try {
    ({ values: raw, positionals } = parseArgs({
      args,
      options: config,
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    throw usageErrorOf(err);
  }
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(table)) {
    let given = raw[name];
    for (const alias of spec.aliases ?? []) given ??= raw[alias];
    values[name] = valueOf(name, spec, given);
  }
  return { values: values as OptionValues<T>, positionals };
}

function valueOf(name: string, spec: OptionSpec, given: unknown): unknown {
  const flag = `--${name}`;
  switch (spec.kind) {
    case "flag":
      return given === true;
    case "texts":
      return Array.isArray(given) ? given : [...(spec.default as readonly string[] ?? [])];
    case "text":
      return typeof given === "string" ? given : spec.default;
    case "count":
      if (typeof given !== "string") return spec.default;
      return wholeNumber(given, flag, spec.min ?? 0);
    case "seconds":
      if (typeof given !== "string") return spec.default;
      return nonNegativeNumber(given, flag);
  }
}

/** A whole number of at least `min`, or a usage error naming the option and the value. */
export function wholeNumber(value: string, flag: string, min = 0): number {
  if (!/^\d+$/.test(value.trim())) {
    throw new UsageError(`Option '${flag}' needs a whole number, got '${value}'`);
  }
  const n = Number(value);
  if (n < min) throw new UsageError(`Option '${flag}' must be at least ${min}, got ${n}`);
  return n;
}

/** A non-negative decimal (seconds, days), or a usage error naming the option and the value. */
export function nonNegativeNumber(value: string, flag: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0) {
    throw new UsageError(`Option '${flag}' needs a non-negative number, got '${value}'`);
  }
  return n;
}

/**
 * A point in time: ISO 8601 with a zone (`2026-12-01T14:30:00Z`,
 * `2026-12-01T15:30:00.250+01:00`) or `@<unix seconds>`. A time without a
 * zone would mean different moments on different hosts: refused.
 */
export function timeValue(value: string, flag: string): Date {
  const iso = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i;
  let time: Date | undefined;
  if (iso.test(value.trim())) time = new Date(value.trim());
  else if (/^@\d+(\.\d+)?$/.test(value.trim())) {
    time = new Date(Number(value.trim().slice(1)) * 1000);
  }
  if (time === undefined || Number.isNaN(time.getTime())) {
    throw new UsageError(
      `Option '${flag}' needs an ISO 8601 time with a zone (2026-12-01T14:30:00Z) ` +
        `or @<unix seconds>, got '${value}'`,
    );
  }
  return time;
}

/** `parseArgs` messages are long and mention internals: reworded to one line. */
function usageErrorOf(err: unknown): UsageError {
  const message = err instanceof Error ? err.message : String(err);
  const unknown = message.match(/Unknown option '([^']+)'/);
  if (unknown) return new UsageError(`Unknown option '${unknown[1]}'`);
  const missing = message.match(/Option '([^']+)' argument missing/);
  if (missing) {
    return new UsageError(`Option '${missing[1]!.replace(/ <value>$/, "")}' needs a value`);
  }
  const ambiguous = message.match(/Option '([^']+)' argument is ambiguous/);
  if (ambiguous) {
    return new UsageError(
      `Option '${
        ambiguous[1]
      }' is followed by a value starting with '-': write it as --option=VALUE`,
    );
  }
  const positional = message.match(/Unexpected argument '([^']+)'/);
  if (positional) return new UsageError(`Unexpected argument '${positional[1]}'`);
  return new UsageError(message.split("\n")[0] ?? message);
}

/** Where option descriptions start in --help. */
const HELP_COLUMN = 30;

/**
 * The --help text: `usage`, `description`, then every option of the table
 * under its section, then `epilogue`.
 */
export function helpText(
  table: OptionTable,
  text: { usage: string; description: string; epilogue?: string },
): string {
  const groups = new Map<string, string[]>();
  for (const [name, spec] of Object.entries(table)) {
    let lines = groups.get(spec.group);
    if (!lines) groups.set(spec.group, lines = []);
    lines.push(...optionLines(name, spec));
  }
  const sections = [...groups].map(([group, lines]) => `${group}:\n${lines.join("\n")}`);
  return [
    `Usage: ${text.usage}`,
    text.description,
    ...sections,
    ...(text.epilogue ? [text.epilogue] : []),
  ]
    .join("\n\n");
}

function optionLines(name: string, spec: OptionSpec): string[] {
  const names = [name, ...(spec.aliases ?? [])].map((n) => `--${n}`).join(", ");
  const label = `  ${spec.short ? `-${spec.short}, ` : "    "}${names}${
    spec.arg ? ` ${spec.arg}` : ""
  }`;
  const help = spec.help.split("\n");
  const shown = defaultShown(spec);
  if (shown !== undefined) help[help.length - 1] += ` (default ${shown})`;
  const pad = " ".repeat(HELP_COLUMN);
  const first = label.length < HELP_COLUMN - 1
    ? label.padEnd(HELP_COLUMN) + help[0]
    : `${label}  ${help[0]}`;
  return [first, ...help.slice(1).map((line) => pad + line)];
}

function defaultShown(spec: OptionSpec): string | undefined {
  const value = spec.default;
  if (value === undefined || value === "") return undefined;
  if (Array.isArray(value)) return value.length > 0 ? value.join(" and ") : undefined;
  return typeof value === "string" ? `"${value}"` : String(value);
}
