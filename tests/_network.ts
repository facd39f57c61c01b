/**
 * Network test fixtures: a certificate authority made per run, moto served
 * over HTTPS with a certificate from it, a CONNECT proxy that counts its
 * tunnels (and may map every host name to one local server, so AWS's own
 * names reach moto while nothing is reachable directly), and the program
 * spawned with exactly the flags of the `compile` task.
 */
import { type CliResult, runCli, type RunningCli, spawnCli } from "./_helpers.ts";
import { spawnMoto } from "./_moto.ts";
import { makeTestTls } from "./_tls.ts";

export type { CliResult } from "./_helpers.ts";

/** Runs the program with the compile flags and exactly `env` (see `runCli`'s `clearEnv`). */
export function runProgram(args: string[], env: Record<string, string>): Promise<CliResult> {
  return runCli(args, { env, clearEnv: true });
}

export interface Authority extends AsyncDisposable {
  dir: string;
  /** The CA's certificate (PEM file). */
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** A CA and a server certificate for `names` (DNS names; 127.0.0.1 is always in). */
export async function makeAuthority(names: string[]): Promise<Authority> {
  const dir = await Deno.makeTempDir({ prefix: "tablesnap-ca-" });
  const tls = await makeTestTls(dir, ["IP:127.0.0.1", ...names.map((n) => `DNS:${n}`)]);
  return {
    dir,
    caFile: tls.caFile,
    certFile: tls.certFile,
    keyFile: tls.keyFile,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** The names AWS gives S3 in the regions the tests use, virtual-hosted and path style. */
export const AWS_S3_NAMES = ["us-east-1", "eu-west-1"].flatMap((r) => [
  `s3.${r}.amazonaws.com`,
  `*.s3.${r}.amazonaws.com`,
]).concat(["s3.amazonaws.com", "*.s3.amazonaws.com", "localhost"]);

export interface HttpsMoto extends AsyncDisposable {
  port: number;
  /** `https://localhost:PORT`. */
  endpoint: string;
  /** Creates a bucket (path style, straight to moto). */
  createBucket(name: string, region?: string): Promise<void>;
  /** The keys in a bucket. */
  keys(bucket: string): Promise<string[]>;
}

/** moto_server over HTTPS with the authority's server certificate. */
export async function startHttpsMoto(ca: Authority): Promise<HttpsMoto> {
  const moto = await spawnMoto({ tls: ca });
  const port = moto.port;
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(ca.caFile)] });
  const endpoint = `https://localhost:${port}`;
  const call = async (method: string, path: string, body?: string) => {
    const res = await fetch(`${endpoint}${path}`, {
      method,
      client,
      ...(body ? { body } : {}),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text.slice(0, 200)}`);
    return text;
  };
  const stop = async () => {
    client.close();
    await moto.stop();
  };
  try {
    await call("GET", "/"); // serving HTTPS with the authority's certificate
  } catch (err) {
    await stop();
    throw new Error(`moto_server over HTTPS did not answer: ${err}`);
  }
  return {
    port,
    endpoint,
    createBucket: async (name, region = "us-east-1") => {
      const body = region === "us-east-1"
        ? undefined
        : `<CreateBucketConfiguration><LocationConstraint>${region}</LocationConstraint></CreateBucketConfiguration>`;
      await call("PUT", `/${name}`, body);
    },
    keys: async (bucket) => {
      const text = await call("GET", `/${bucket}?list-type=2`);
      return [...text.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]!);
    },
    [Symbol.asyncDispose]: stop,
  };
}

export interface ConnectProxy extends AsyncDisposable {
  port: number;
  /** Tunnels opened, by the host:port asked for. */
  tunnels: string[];
  /** The Proxy-Authorization values seen. */
  authorizations: string[];
  /** Plain HTTP connections forwarded (absolute-form requests), by host:port. */
  forwarded: string[];
}

/**
 * A CONNECT proxy on 127.0.0.1: every tunnel goes to `route(host, port)`
 * (for instance one local server for every name), or is refused with 502.
 * With `password`, tunnels without `Proxy-Authorization` get 407.
 */
export function startConnectProxy(
  route: (host: string, port: number) => { hostname: string; port: number } | undefined,
  options: { user?: string; password?: string } = {},
): ConnectProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tunnels: string[] = [];
  const authorizations: string[] = [];
  const forwarded: string[] = [];
  const open = new Set<Deno.Conn>();
  const expected = options.password === undefined
    ? undefined
    : `Basic ${btoa(`${options.user ?? ""}:${options.password}`)}`;
  const handle = async (client: Deno.Conn) => {
    open.add(client);
    try {
      const buffer = new Uint8Array(8192);
      let raw = new Uint8Array(0);
      let text = "";
      while (!text.includes("\r\n\r\n")) {
        const n = await client.read(buffer);
        if (n === null) return;
        raw = new Uint8Array([...raw, ...buffer.subarray(0, n)]);
        text = new TextDecoder().decode(raw);
      }
      const [line, ...headers] = text.split("\r\n\r\n")[0]!.split("\r\n");
      const target = /^CONNECT (\S+):(\d+) HTTP\/1\.1$/.exec(line ?? "");
      const auth = headers.find((h) => /^proxy-authorization:/i.test(h))?.replace(/^[^:]*:\s*/, "");
      if (auth) authorizations.push(auth);
      const reply = (s: string) => client.write(new TextEncoder().encode(`HTTP/1.1 ${s}\r\n\r\n`));
      if (expected !== undefined && auth !== expected) {
        return void await reply("407 Proxy Authentication Required");
      }
      // Plain HTTP: the absolute URL is the target; the bytes go on as they came.
      const plain = /^[A-Z]+ http:\/\/([^/:\s]+)(?::(\d+))?\//.exec(line ?? "");
      if (!target && plain) {
        const to = route(plain[1]!, Number(plain[2] ?? 80));
        if (!to) return void await reply("502 Bad Gateway");
        const upstream = await Deno.connect(to);
        open.add(upstream);
        forwarded.push(`${plain[1]}:${plain[2] ?? 80}`);
        // Sent on in origin form, as proxies do (servers take the URL's path as the path).
        const origin = originForm(`http://${plain[1]}${plain[2] ? `:${plain[2]}` : ""}`);
        const toServer = origin.readable.pipeTo(upstream.writable).catch(() => {});
        const writer = origin.writable.getWriter();
        await writer.write(raw);
        writer.releaseLock();
        await Promise.all([
          toServer,
          client.readable.pipeTo(origin.writable).catch(() => {}),
          upstream.readable.pipeTo(client.writable).catch(() => {}),
        ]);
        return;
      }
      if (!target) return void await reply("405 Method Not Allowed");
      const to = route(target[1]!.replace(/^\[(.*)\]$/, "$1"), Number(target[2]));
      if (!to) return void await reply("502 Bad Gateway");
      const upstream = await Deno.connect(to);
      open.add(upstream);
      tunnels.push(`${target[1]}:${target[2]}`);
      await reply("200 Connection established");
      await Promise.all([
        client.readable.pipeTo(upstream.writable).catch(() => {}),
        upstream.readable.pipeTo(client.writable).catch(() => {}),
      ]);
    } catch {
      // a side went away
    } finally {
      for (const c of [client]) {
        open.delete(c);
        try {
          c.close();
        } catch {
          // closed by the pipe
        }
      }
    }
  };
  const serving = (async () => {
    for await (const conn of listener) handle(conn);
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    tunnels,
    authorizations,
    forwarded,
    [Symbol.asyncDispose]: async () => {
      listener.close();
      for (const c of open) {
        try {
          c.close();
        } catch {
          // closed
        }
      }
      await serving.catch(() => {});
    },
  };
}

/** The watcher started by `spawnProgram`. */
export type RunningProgram = RunningCli;

/** Starts the program (the watcher) with the compile flags and exactly `env`. */
export function spawnProgram(args: string[], env: Record<string, string>): RunningProgram {
  return spawnCli(args, { env, clearEnv: true });
}

/**
 * Rewrites ` http://host:port/` to ` /` in a byte stream: the request lines
 * of plain-HTTP requests through a proxy (test bodies never hold it).
 */
function originForm(prefix: string): TransformStream<Uint8Array, Uint8Array> {
  const pattern = new TextEncoder().encode(` ${prefix}/`);
  let carry = new Uint8Array(0);
  const rewrite = (bytes: Uint8Array, last: boolean) => {
    const out: number[] = [];
    let i = 0;
    while (i < bytes.length) {
      const left = bytes.length - i;
      let match = 0;
      while (match < Math.min(left, pattern.length) && bytes[i + match] === pattern[match]) match++;
      if (match === pattern.length) {
        out.push(32, 47); // " /"
        i += match;
      } else if (match === left && !last) {
        break; // maybe the start of the pattern: wait for the next bytes
      } else {
        out.push(bytes[i++]!);
      }
    }
    carry = bytes.slice(i);
    return new Uint8Array(out);
  };
  return new TransformStream({
    transform(chunk, controller) {
      controller.enqueue(rewrite(new Uint8Array([...carry, ...chunk]), false));
    },
    flush(controller) {
      controller.enqueue(rewrite(carry, true));
    },
  });
}
