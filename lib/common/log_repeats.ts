/**
 * A problem that recurs (every event, every retry of one bad file or
 * directory) is logged once, then counted: at the end of each period, one
 * summary line per problem that recurred, with the count. A problem quiet
 * for a whole period is forgotten, and logged in full again should it come
 * back. So one problem writes at most one line per period, however often
 * it happens.
 */
import type { Fields, Level } from "./log_line.ts";

/** Problems remembered at once; past this, the oldest are summarised and forgotten. */
const MAX_PROBLEMS = 1_000;

interface Problem {
  level: Level;
  message: string;
  fields: Fields | undefined;
  /** Occurrences not logged since the last summary. */
  unlogged: number;
}

export class RepeatedLines {
  readonly #problems = new Map<string, Problem>();
  readonly #emit: (level: Level, message: string, fields?: Fields) => void;
  #periodMs: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Occurrences counted rather than logged, since the start (a metric). */
  suppressed = 0;

  constructor(emit: (level: Level, message: string, fields?: Fields) => void, periodMs: number) {
    this.#emit = emit;
    this.#periodMs = periodMs;
  }

  /** Changes the period (the environment is read after start-up). */
  set periodMs(ms: number) {
    this.#periodMs = ms;
    if (this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#startTimer();
    }
  }

  /** Logs the first occurrence of `key`'s problem; counts the rest until it goes quiet. */
  report(key: string, level: Level, message: string, fields?: Fields): void {
    const known = this.#problems.get(key);
    if (known) {
      known.unlogged++;
      known.level = level;
      known.message = message;
      known.fields = fields;
      this.suppressed++;
      return;
    }
    if (this.#problems.size >= MAX_PROBLEMS) this.flush(true);
    this.#problems.set(key, { level, message, fields, unlogged: 0 });
    this.#emit(level, message, fields);
    this.#startTimer();
  }

  /**
   * One summary line per problem that recurred since the last; problems
   * that did not are forgotten (all of them with `forgetAll`, at the end).
   */
  flush(forgetAll = false): void {
    for (const [key, problem] of this.#problems) {
      if (problem.unlogged > 0) {
        this.#emit(problem.level, `${problem.message} (repeated)`, {
          ...problem.fields,
          repeats: problem.unlogged,
          in_seconds: Math.round(this.#periodMs / 1000),
        });
        problem.unlogged = 0;
        if (!forgetAll) continue;
      }
      this.#problems.delete(key);
    }
    if (this.#problems.size === 0) this.stop();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #startTimer(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.flush(), this.#periodMs);
    Deno.unrefTimer(this.#timer);
  }
}
