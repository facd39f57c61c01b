/**
 * Test helpers: a real S3 wire-protocol server (s3rver, from npm) on
 * 127.0.0.1, the real CLI as a child process (the watcher with its /metrics
 * scraped), promtool, and polling. Every helper that
 * starts something returns an `AsyncDisposable`, so `await using` stops it
 * even when the test fails.
 */
import { MOTO_AS_SENT } from "./_moto_iam.ts";
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3";

import { RUN_FLAGS } from "./_run_flags.ts";
import {
  caAgent,
  caFetchClient,
  makeTestTls,
  startTlsFront,
  type TestTls,
  type TlsFront,
} from "./_tls.ts";

/**
 * What the test S3 server s3rver (a fixture, not the program) may do: read
 * the environment (its npm packages look up settings there), listen on
 * 127.0.0.1, and `sys` as a whole: fs-extra calls Node's `process.umask()`,
 * which has no narrower permission. Files: only its own directory.
 */
const S3RVER_FLAGS = ["--allow-env", "--allow-sys", "--allow-net=127.0.0.1"];
const S3RVER_SCRIPT = new URL("./_s3rver.ts", import.meta.url).pathname;

/** `deno run` arguments of s3rver keeping its objects in `dir` (the tests' and the bench's). */
export function s3rverRun(dir: string): string[] {
  return ["run", ...S3RVER_FLAGS, `--allow-read=${dir}`, `--allow-write=${dir}`, S3RVER_SCRIPT];
}

export const MAIN = new URL("../main.ts", import.meta.url).pathname;
export const REPO = new URL("..", import.meta.url).pathname;

/**
 * `deno run` arguments starting the program with the compiled binary's own
 * flags (deno.json's `compile` task), never broader: what is tested is what
 * ships.
 */
export function programArgs(args: string[]): string[] {
  return ["run", ...RUN_FLAGS, MAIN, ...args];
}

/** A free TCP port on 127.0.0.1 (the OS picks, we release it at once). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

export interface S3Server extends AsyncDisposable {
  /** `https://127.0.0.1:PORT` (`http://` for a server started with `tls: false`). */
  endpoint: string;
  port: number;
  /** Where s3rver keeps its objects. */
  dir: string;
  bucket: string;
  /** The server's private CA and certificate; undefined over plain HTTP. */
  tls: TestTls | undefined;
  /** A client of our own, independent of tablesnap's store code. */
  client: S3Client;
  /** `fetch` straight to the server (trusting its CA), for what the SDK cannot send. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /**
   * Environment for a tablesnap child process reaching this server: the
   * credentials, the endpoint and, over HTTPS, the CA the way an operator
   * gives it (`AWS_CA_BUNDLE`).
   */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/**
 * Starts s3rver (or moto) with one bucket, over HTTPS with a CA made for
 * this server unless `tls: false`; resolves when it accepts requests. Pass
 * `port` and `dir` to restart a stopped server with the same contents
 * (`keepDir` then stops `stop()` from deleting them, certificates included).
 */
export async function startS3Server(
  bucket = "test-bucket",
  options: {
    port?: number;
    dir?: string;
    keepDir?: boolean;
    server?: "s3rver" | "moto";
    /** moto only: check signatures against moto's IAM (no valid keys exist: every call is 403). */
    auth?: boolean;
    /** moto only: judge signatures and DeleteObjects as AWS does (tests/_moto_iam.ts). */
    asSent?: boolean;
    /** HTTPS (the default) or plain HTTP, for tests that read the wire (counting proxies). */
    tls?: boolean;
    /** The names the certificate covers (openssl subjectAltName entries); default loopback. */
    tlsNames?: string[];
  } = {},
): Promise<S3Server> {
  const port = options.port ?? freePort();
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "s3rver-" });
  // s3rver cannot paginate ListObjectsV2 here (its continuation tokens use
  // DES, which neither Deno's nor Node's OpenSSL 3 offers): tests that list
  // more than 1,000 keys use moto's server instead.
  const moto = options.server === "moto";
  // The certificates live beside the objects (s3rver would take a folder
  // inside its directory for a bucket), in a folder kept for a restart.
  const tlsDir = `${dir}.tls`;
  let tls: TestTls | undefined;
  if (options.tls !== false) {
    const reuse = await Deno.stat(`${tlsDir}/ca.pem`).then(() => true, () => false);
    await Deno.mkdir(tlsDir, { recursive: true });
    tls = reuse
      ? {
        caFile: `${tlsDir}/ca.pem`,
        certFile: `${tlsDir}/server.pem`,
        keyFile: `${tlsDir}/server.key`,
        caPem: await Deno.readTextFile(`${tlsDir}/ca.pem`),
      }
      : await makeTestTls(tlsDir, options.tlsNames);
  }
  // s3rver speaks plain HTTP behind a TLS front of ours: its own TLS mode
  // (node:https under Deno) leaves some responses unsent. moto serves TLS.
  const front = tls && !moto;
  const serverPort = front ? freePort() : port;
  const [program, args] = moto
    ? [options.asSent ? "python3" : "moto_server", [
      ...(options.asSent ? ["-c", MOTO_AS_SENT] : []),
      "-H",
      "127.0.0.1",
      "-p",
      String(port),
      ...(tls ? ["-c", tls.certFile, "-k", tls.keyFile] : []),
    ]]
    : [Deno.execPath(), [
      ...s3rverRun(dir),
      "--silent",
      "-a",
      "127.0.0.1",
      "-p",
      String(serverPort),
      "-d",
      dir,
      "--configure-bucket",
      bucket,
    ]];
  // Output is discarded, not piped: an unread pipe fills after a few
  // hundred request log lines and stalls the server.
  const child = new Deno.Command(program, {
    args,
    ...(options.auth ? { env: { INITIAL_NO_AUTH_ACTION_COUNT: "0" } } : {}),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let tlsFront: TlsFront | undefined;
  if (front && tls) {
    try {
      tlsFront = await startTlsFront(serverPort, tls, port);
    } catch (err) {
      child.kill("SIGKILL");
      await child.status;
      throw err;
    }
  }
  const endpoint = `${tls ? "https" : "http"}://127.0.0.1:${port}`;
  const httpClient = tls ? caFetchClient(tls.caPem) : undefined;
  const fetchServer = (path: string, init: RequestInit = {}) =>
    fetch(`${endpoint}${path}`, httpClient ? { ...init, client: httpClient } : init);
  const stopChild = async () => {
    await tlsFront?.stop();
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
  };
  const removeFiles = async () => {
    if (options.keepDir) return;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(tlsDir, { recursive: true }).catch(() => {});
  };
  try {
    await waitUntilServing(fetchServer, bucket, { moto, auth: options.auth ?? false });
  } catch (err) {
    await stopChild();
    httpClient?.close();
    await removeFiles();
    throw new Error(`${moto ? "moto_server" : "s3rver"} did not start: ${(err as Error).message}`);
  }
  const client = new S3Client({
    region: "us-east-1",
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    ...(tls ? { requestHandler: { httpsAgent: caAgent(tls.caPem) } } : {}),
  });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    client.destroy();
    httpClient?.close();
    await stopChild();
    await removeFiles();
  };
  return {
    endpoint,
    port,
    dir,
    bucket,
    tls,
    client,
    fetch: fetchServer,
    env: {
      AWS_ACCESS_KEY_ID: "S3RVER",
      AWS_SECRET_ACCESS_KEY: "S3RVER",
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_REGION: "us-east-1",
      ...(tls ? trustEnv(tls.caFile) : {}),
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** Polls until the server answers for `bucket` (creating it on moto); at most 60 s. */
async function waitUntilServing(
  fetchServer: (path: string, init?: RequestInit) => Promise<Response>,
  bucket: string,
  o: { moto: boolean; auth: boolean },
): Promise<void> {
  const deadline = Date.now() + 60_000;
  let last = "no answer";
  for (;;) {
    try {
      if (o.auth) {
        const res = await fetchServer("/");
        await res.body?.cancel();
        if (res.status >= 400) return; // listening; it refuses unsigned requests
      } else if (o.moto) {
        const res = await fetchServer(`/${bucket}`, { method: "PUT" });
        await res.body?.cancel();
        if (res.ok) return;
      }
      const res = await fetchServer(`/${bucket}?list-type=2&max-keys=1`);
      await res.body?.cancel();
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = (err as Error).message; // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`within 60 s (last: ${last})`);
    await delay(100);
  }
}

/**
 * What a child process needs to trust a private CA, as an operator gives it:
 * `AWS_CA_BUNDLE` (the AWS CLI's convention). `NODE_EXTRA_CA_CERTS` stays
 * inherited (set to the system bundle on these machines, as on many hosts).
 */
export function trustEnv(caFile: string): Record<string, string> {
  return { AWS_CA_BUNDLE: caFile };
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `probe` until it returns a truthy value; throws after `timeoutMs`.
 * The default only bounds how long a failure takes to report: test files
 * run two at a time on machines others share, where a start or an upload
 * can take many seconds.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await delay(50);
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** How the program is started: its environment and working directory. */
export interface CliOptions {
  /** Added to the test's own environment, or with `clearEnv` the whole of it. */
  env?: Record<string, string>;
  /**
   * Start from an empty environment: the program sees `env` and nothing of
   * the test's (no AWS_*, no proxy), but for what Deno itself needs to find
   * its module cache.
   */
  clearEnv?: boolean;
  /** Default: the repository. */
  cwd?: string;
}

/** The module cache stays the real one whatever HOME a test gives the program. */
const DENO_DIR = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;

/** `Deno.Command` options for the program, with the compile task's flags. */
function programCommand(args: string[], options: CliOptions): Deno.CommandOptions {
  return {
    args: programArgs(args),
    env: options.clearEnv
      ? { NO_COLOR: "1", DENO_DIR, DENO_NO_UPDATE_CHECK: "1", ...options.env }
      : { NO_COLOR: "1", ...options.env },
    clearEnv: options.clearEnv ?? false,
    cwd: options.cwd ?? REPO,
    stdin: "null",
  };
}

/** Runs `main.ts` to completion with the given arguments. */
export async function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    ...programCommand(args, options),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

export interface RunningCli extends AsyncDisposable {
  child: Deno.ChildProcess;
  /** Everything written to stderr so far (for failure messages, not for assertions). */
  stderr(): string;
  /** Sends a signal and waits for the exit; returns the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
}

/** Starts `main.ts` in the background (the watcher), capturing stderr. */
export function spawnCli(args: string[], options: CliOptions = {}): RunningCli {
  const child = new Deno.Command(Deno.execPath(), {
    ...programCommand(args, options),
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const pump = (async () => {
    for await (const chunk of child.stderr) text += decoder.decode(chunk, { stream: true });
  })();
  let exited: Promise<number> | undefined;
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    if (!exited) {
      try {
        child.kill(signal);
      } catch {
        // already exited
      }
      exited = child.status.then((s) => s.code);
    }
    const code = await exited;
    await pump;
    return code;
  };
  return {
    child,
    stderr: () => text,
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop("SIGKILL");
    },
  };
}

/** One scrape of a watcher's `/metrics` (Prometheus text format). */
export interface Scrape {
  text: string;
  /** The sample with exactly these labels, or undefined if there is none. */
  get(name: string, labels?: Record<string, string>): number | undefined;
  /** The sum over every sample of `name` (0 if there is none). */
  sum(name: string): number;
}

/** Parses the text format's sample lines (what the tests read; metrics_test checks the format). */
export function parseScrape(text: string): Scrape {
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? "").matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[k!] = v!.replace(/\\(.)/g, (_, c) => c === "n" ? "\n" : c);
    }
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  const same = (a: Record<string, string>, b: Record<string, string>) =>
    Object.keys(a).length === Object.keys(b).length &&
    Object.entries(b).every(([k, v]) => a[k] === v);
  return {
    text,
    get: (name, labels = {}) =>
      samples.find((s) => s.name === name && same(s.labels, labels))?.value,
    sum: (name) => samples.filter((s) => s.name === name).reduce((n, s) => n + s.value, 0),
  };
}

export interface RunningWatcher extends RunningCli {
  /** The `--metrics-listen` port on 127.0.0.1. */
  metricsPort: number;
  /** Fetches and parses `/metrics` once. */
  scrape(): Promise<Scrape>;
  /** Scrapes until `ready` holds; returns that scrape. Fails early if the watcher exits. */
  waitForMetrics(
    what: string,
    ready: (m: Scrape) => boolean,
    timeoutMs?: number,
  ): Promise<Scrape>;
  /** Resolves once the file system watches are in place (`tablesnap_watching 1`). */
  waitUntilWatching(): Promise<Scrape>;
}

/**
 * Starts the watcher like `spawnCli`, with `--metrics-listen` on a free
 * port, so that tests can wait for and assert on what it reports there
 * rather than on the wording of its log lines.
 */
export function spawnWatcher(args: string[], options: CliOptions = {}): RunningWatcher {
  const metricsPort = freePort();
  const cli = spawnCli(["--metrics-listen", `127.0.0.1:${metricsPort}`, ...args], options);
  let exited: number | undefined;
  cli.child.status.then((s) => exited = s.code);
  const scrape = async () => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
    return parseScrape(await res.text());
  };
  const waitForMetrics = async (
    what: string,
    ready: (m: Scrape) => boolean,
    timeoutMs = 30_000,
  ) => {
    let last: Scrape | undefined;
    try {
      return await waitFor(what, async () => {
        if (exited !== undefined) throw new Error(`the watcher exited (code ${exited})`);
        try {
          last = await scrape();
        } catch {
          return undefined; // not listening yet
        }
        return ready(last) ? last : undefined;
      }, timeoutMs);
    } catch (err) {
      throw new Error(
        `${(err as Error).message} (waiting for ${what})\n--- last /metrics ---\n${
          last?.text ?? "(none)"
        }\n--- stderr ---\n${cli.stderr()}`,
      );
    }
  };
  return {
    ...cli,
    metricsPort,
    scrape,
    waitForMetrics,
    waitUntilWatching: () =>
      waitForMetrics("the watches in place", (m) => m.get("tablesnap_watching") === 1),
  };
}

/** A temporary directory removed on dispose. */
export async function tempDir(
  prefix = "tablesnap-test-",
): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.realPath(await Deno.makeTempDir({ prefix }));
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

export interface ToolResult {
  code: number;
  /** stdout and stderr together. */
  output: string;
}

/**
 * Runs promtool (Debian package `prometheus`, which .ci/run installs) with
 * `input` on its stdin. A hard requirement: without promtool this throws,
 * saying how to install it; no test skips for want of it.
 */
export async function promtool(args: string[], input?: string): Promise<ToolResult> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("promtool", {
      args,
      stdin: input === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(
        "promtool not found: install it with " +
          "'apt-get update && apt-get install -y prometheus' (Debian)",
      );
    }
    throw err;
  }
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(input));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, output: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

/** Every key under `prefix` with its size, through the test's own client (paginated). */
export async function bucketKeys(s3: S3Server, prefix = ""): Promise<Map<string, number>> {
  const keys = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await s3.client.send(
      new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) keys.set(o.Key!, o.Size!);
    token = page.NextContinuationToken;
  } while (token);
  return keys;
}

/** The object's HEAD through the test's own client, or null when it is missing. */
export async function headObject(s3: S3Server, key: string) {
  try {
    return await s3.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
  } catch {
    return null;
  }
}

/** The object's body as text, or null when it is missing. */
export async function objectText(s3: S3Server, key: string): Promise<string | null> {
  try {
    const out = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    return await out.Body!.transformToString();
  } catch {
    return null;
  }
}
