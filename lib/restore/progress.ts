/** Restore progress: a redrawn bar on a terminal, a plain log line every 10 s otherwise. */
import { formatBytes, formatDuration } from "../common/format.ts";
import { log } from "../common/log.ts";

export class Progress {
  #files: number;
  #bytes: number;
  #tty: boolean;
  #doneFiles = 0;
  #doneBytes = 0;
  #started = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #encoder = new TextEncoder();

  constructor(files: number, bytes: number, tty: boolean) {
    this.#files = files;
    this.#bytes = bytes;
    this.#tty = tty;
  }

  start(): void {
    this.#started = performance.now();
    this.#timer = setInterval(() => this.#report(), this.#tty ? 250 : 10_000);
  }

  addBytes(n: number): void {
    this.#doneBytes += n;
  }

  /** A file finished; `bytes` is counted now if it was not streamed (a skip). */
  fileDone(bytes: number): void {
    this.#doneFiles++;
    this.#doneBytes += bytes;
  }

  stop(): void {
    clearInterval(this.#timer);
    if (this.#tty) {
      this.#report();
      Deno.stderr.writeSync(this.#encoder.encode("\n"));
    }
  }

  #report(): void {
    const seconds = (performance.now() - this.#started) / 1000;
    const rate = seconds > 0 ? this.#doneBytes / seconds : 0;
    const left = this.#bytes - this.#doneBytes;
    const eta = rate > 0 && left > 0 ? formatDuration(left / rate) : "-";
    const text = `${this.#doneFiles}/${this.#files} files, ${formatBytes(this.#doneBytes)}/${
      formatBytes(this.#bytes)
    }, ${formatBytes(rate)}/s, ETA ${eta}`;
    if (!this.#tty) {
      log.info("restore progress", {
        files: `${this.#doneFiles}/${this.#files}`,
        bytes: `${this.#doneBytes}/${this.#bytes}`,
        rate: `${formatBytes(rate)}/s`,
        eta,
      });
      return;
    }
    const width = 24;
    const fraction = this.#bytes > 0 ? Math.min(1, this.#doneBytes / this.#bytes) : 1;
    const filled = Math.round(fraction * width);
    const bar = `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
    Deno.stderr.writeSync(this.#encoder.encode(`\r\x1b[K${bar} ${text}`));
  }
}
