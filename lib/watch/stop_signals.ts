/**
 * SIGTERM and SIGINT stop the watcher (it drains within its grace period and
 * exits 0); SIGHUP is logged and ignored: there is no configuration file to
 * re-read, and a stray HUP must not kill the watcher (systemd would not
 * restart it after a death by signal).
 */
import { log } from "../common/log.ts";

export interface StopSignals {
  /** Resolves with the name of the first stop signal received. */
  readonly stopped: Promise<string>;
  /** Removes the handlers. */
  dispose(): void;
}

export function listenForStopSignals(): StopSignals {
  let stop: (signal: string) => void = () => {};
  const stopped = new Promise<string>((resolve) => stop = resolve);
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGTERM", () => stop("SIGTERM")],
    ["SIGINT", () => stop("SIGINT")],
    ["SIGHUP", () => log.info("SIGHUP ignored: tablesnap has no configuration file to reload")],
  ];
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  return {
    stopped,
    dispose() {
      for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    },
  };
}
