/**
 * Logging: one line per event that matters, to stderr by default.
 *
 * - `TDEBUG` set (to anything but "" or "0") enables debug lines.
 * - `TABLESNAP_SYSLOG` set sends lines to syslog (facility DAEMON, tag
 *   `tablesnap`) through the system `logger` command instead of stderr: Deno
 *   has no stable API for the `/dev/log` datagram socket, and `logger` is in
 *   every Linux base system (util-linux / bsdutils). Without the socket, lines
 *   stay on stderr, with a warning.
 * - `format: "json"` writes one JSON object per line for log shippers.
 * - `repeated()` logs a recurring problem once, then one summary line per
 *   period (`TABLESNAP_LOG_REPEAT_SECONDS`, default 60) with its count.
 *
 * Never pass credentials in `fields`: nothing here redacts.
 */

import { escapeControl, hasControl, safeJson } from "./escape.ts";
import type { Fields, Level } from "./log_line.ts";
import { RepeatedLines } from "./log_repeats.ts";

export type { Fields, Level };

const SEVERITY: Record<Level, number> = { debug: 7, info: 6, warn: 4, error: 3 };
const DAEMON_FACILITY = 3;

export interface LogOptions {
  format?: "plain" | "json";
  debug?: boolean;
  syslog?: boolean;
  /** The period of repeated problems' summary lines (ms). */
  repeatPeriodMs?: number;
}

/** Default period of the summary lines of repeated problems. */
const REPEAT_PERIOD_MS = 60_000;

/** A line sink: stderr, or a `logger` child process for syslog. */
interface Sink {
  write(level: Level, line: string): void;
  close(): Promise<void>;
}

function stderrSink(): Sink {
  const encoder = new TextEncoder();
  return {
    write(_level, line) {
      Deno.stderr.writeSync(encoder.encode(line + "\n"));
    },
    close: () => Promise.resolve(),
  };
}

/** The syslog socket; `TABLESNAP_SYSLOG_SOCKET` overrides it (tests, chroots). */
function syslogSocket(): string {
  return Deno.env.get("TABLESNAP_SYSLOG_SOCKET") || "/dev/log";
}

function syslogSink(socket: string): Sink {
  const child = new Deno.Command("logger", {
    args: ["--socket", socket, "--socket-errors=on", "--tag", "tablesnap", "--prio-prefix"],
    stdin: "piped",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  const encoder = new TextEncoder();
  return {
    write(level, line) {
      // `--prio-prefix` reads "<facility*8+severity>" at the start of a line.
      const prio = DAEMON_FACILITY * 8 + SEVERITY[level];
      writer.write(encoder.encode(`<${prio}>${line.replace(/\n/g, " ")}\n`)).catch(() => {});
    },
    async close() {
      await writer.close().catch(() => {});
      await child.status;
    },
  };
}

class Logger {
  #sink: Sink = stderrSink();
  #format: "plain" | "json" = "plain";
  #debug = false;
  #syslog = false;
  #syslogTried = false;
  /** Under systemd, journald stamps every line already. */
  readonly #journald = Deno.env.get("JOURNAL_STREAM") !== undefined;
  readonly #repeats = new RepeatedLines(
    (level, message, fields) => this.#emit(level, message, fields),
    REPEAT_PERIOD_MS,
  );

  configure(options: LogOptions): void {
    this.#format = options.format ?? "plain";
    this.#debug = options.debug ?? false;
    if (options.repeatPeriodMs !== undefined) this.#repeats.periodMs = options.repeatPeriodMs;
    // Tried once per process: a job may refine the options (the watcher's
    // --log-format) after main() applied the environment.
    if (options.syslog && !this.#syslogTried) {
      this.#syslogTried = true;
      const socket = syslogSocket();
      try {
        Deno.statSync(socket);
      } catch {
        // Losing every log line silently is worse than logging to stderr.
        this.warn("TABLESNAP_SYSLOG is set but the syslog socket is missing; logging to stderr", {
          socket,
        });
        return;
      }
      this.#sink = syslogSink(socket);
      this.#syslog = true;
    }
  }

  /** True when lines go to syslog rather than stderr. */
  get toSyslog(): boolean {
    return this.#syslog;
  }

  get debugEnabled(): boolean {
    return this.#debug;
  }

  debug(message: string, fields?: Fields): void {
    if (this.#debug) this.#emit("debug", message, fields);
  }
  info(message: string, fields?: Fields): void {
    this.#emit("info", message, fields);
  }
  warn(message: string, fields?: Fields): void {
    this.#emit("warn", message, fields);
  }
  error(message: string, fields?: Fields): void {
    this.#emit("error", message, fields);
  }

  /**
   * A problem that may recur (per event, per retry): logged the first time
   * for `key`, then counted, with one summary line per period while it
   * recurs (see log_repeats.ts).
   */
  repeated(key: string, level: Level, message: string, fields?: Fields): void {
    this.#repeats.report(key, level, message, fields);
  }

  /** Occurrences of repeated problems counted instead of logged, since the start. */
  get repeatsSuppressed(): number {
    return this.#repeats.suppressed;
  }

  /** Flushes and closes the sink (syslog child). */
  async close(): Promise<void> {
    this.#repeats.flush(true);
    await this.#sink.close();
    this.#sink = stderrSink();
    this.#syslog = false;
  }

  #emit(level: Level, message: string, fields?: Fields): void {
    const line = this.#format === "json"
      ? jsonLine(level, message, fields)
      : plainLine(level, message, fields, !this.#syslog && !this.#journald);
    this.#sink.write(level, line);
  }
}

function jsonLine(level: Level, message: string, fields?: Fields): string {
  const record: Record<string, unknown> = { time: new Date().toISOString(), level, message };
  for (const [k, v] of Object.entries(fields ?? {})) if (v !== undefined) record[k] = v;
  return safeJson(record);
}

function plainLine(level: Level, message: string, fields: Fields | undefined, stamp: boolean) {
  // Messages and values may carry names and error texts from the file
  // system or the bucket: no control character reaches the line raw.
  const text = escapeControl(message);
  let line = stamp ? `${new Date().toISOString()} ${level.toUpperCase()} ${text}` : text;
  for (const [k, v] of Object.entries(fields ?? {})) {
    if (v === undefined) continue;
    const value = String(v);
    line += ` ${k}=${
      /[\s"=]/.test(value) || value === "" || hasControl(value) ? safeJson(value) : value
    }`;
  }
  return line;
}

/** The process-wide logger. */
export const log: Logger = new Logger();

/** Reads TDEBUG / TABLESNAP_SYSLOG the way the original did. */
export function logOptionsFromEnv(format?: "plain" | "json"): LogOptions {
  const flag = (name: string) => {
    const value = Deno.env.get(name);
    return value !== undefined && value !== "" && value !== "0";
  };
  const repeatSeconds = Number(Deno.env.get("TABLESNAP_LOG_REPEAT_SECONDS"));
  return {
    format: format ?? "plain",
    debug: flag("TDEBUG"),
    syslog: flag("TABLESNAP_SYSLOG"),
    ...(repeatSeconds > 0 ? { repeatPeriodMs: repeatSeconds * 1000 } : {}),
  };
}
