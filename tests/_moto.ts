/**
 * A moto server process for the tests: `moto_server`, or `python3 -c
 * SCRIPT` for a moto patched to answer as AWS does (tests/_moto_iam.ts,
 * storage_class_test.ts), on a free port of 127.0.0.1, over HTTPS with
 * `tls`. Resolves once the port accepts connections, without an HTTP
 * request (moto with authentication lets only its first few requests
 * through unsigned); `await using` stops it, also when the start fails.
 */
import { delay, freePort } from "./_helpers.ts";

export interface MotoProcess extends AsyncDisposable {
  port: number;
  /** `http://127.0.0.1:PORT` (`https://` with `tls`). */
  endpoint: string;
  stop(): Promise<void>;
}

export async function spawnMoto(options: {
  /** Python run with `-c`, moto's arguments after it (it ends by calling moto's `main`). */
  script?: string;
  env?: Record<string, string>;
  tls?: { certFile: string; keyFile: string };
} = {}): Promise<MotoProcess> {
  const port = freePort();
  const args = ["-H", "127.0.0.1", "-p", String(port)];
  if (options.tls) args.push("-c", options.tls.certFile, "-k", options.tls.keyFile);
  const child = new Deno.Command(options.script ? "python3" : "moto_server", {
    args: options.script ? ["-c", options.script, ...args] : args,
    ...(options.env ? { env: options.env } : {}),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await status;
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (exited || Date.now() > deadline) {
        await stop();
        throw new Error(`moto did not start on port ${port}${exited ? " (it exited)" : ""}`);
      }
      await delay(100);
    }
  }
  return {
    port,
    endpoint: `${options.tls ? "https" : "http"}://127.0.0.1:${port}`,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
