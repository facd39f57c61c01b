/**
 * HTTP proxies, as curl and the AWS CLI read them from the environment:
 * `HTTPS_PROXY` for https URLs, `HTTP_PROXY` for http ones, `NO_PROXY` for
 * the hosts reached directly (either case of each name, the lower-case one
 * first). HTTPS goes through a CONNECT tunnel, TLS running end to end inside
 * it; plain HTTP is sent to the proxy with the absolute URL as its target.
 * `user:pass@` in the proxy URL becomes a Basic `Proxy-Authorization`; the
 * proxy is only ever named by host and port, so the password is never logged.
 */
import { FatalError } from "../../../common/errors.ts";
import {
  indexOfBlankLine,
  latin1,
  messageOf,
  networkError,
  parseHead,
  writeAll,
} from "./http_wire.ts";

export interface ProxySettings {
  https?: URL | undefined;
  http?: URL | undefined;
  /** NO_PROXY entries, lower case: host names, `.domain`s, `*`, each with an optional port. */
  noProxy: string[];
}

/**
 * The instance metadata and container credential endpoints: their answers
 * are this machine's own, so they are never asked through a proxy.
 */
const NEVER_PROXIED = new Set([
  "169.254.169.254",
  "fd00:ec2::254",
  "169.254.170.2",
  "169.254.170.23",
]);

/** The proxy settings of an environment; a malformed proxy URL is a one-line error. */
export function proxySettings(env: (name: string) => string | undefined): ProxySettings {
  const read = (name: string) => env(name.toLowerCase()) || env(name.toUpperCase()) || undefined;
  const noProxy = (read("no_proxy") ?? "").split(",").map((e) => e.trim().toLowerCase())
    .filter((e) => e !== "");
  return { https: proxyUrl(read("https_proxy")), http: proxyUrl(read("http_proxy")), noProxy };
}

function proxyUrl(text: string | undefined): URL | undefined {
  if (text === undefined) return undefined;
  const url = URL.parse(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`);
  if (!url || url.hostname === "") {
    throw new FatalError("The proxy URL in HTTPS_PROXY/HTTP_PROXY is not a URL");
  }
  if (url.protocol !== "http:") {
    throw new FatalError(
      `Proxy ${
        describeProxy(url)
      }: only http:// proxies are supported (HTTPS goes through CONNECT)`,
    );
  }
  return url;
}

/** The proxy a request to `target` goes through, or undefined for a direct connection. */
export function proxyFor(target: URL, settings: ProxySettings): URL | undefined {
  const proxy = target.protocol === "https:" ? settings.https : settings.http;
  if (!proxy) return undefined;
  const host = target.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (NEVER_PROXIED.has(host)) return undefined;
  const port = target.port || (target.protocol === "https:" ? "443" : "80");
  for (const entry of settings.noProxy) {
    if (entry === "*") return undefined;
    const { name, port: only } = noProxyEntry(entry);
    if (only !== undefined && only !== port) continue;
    if (host === name || host.endsWith(`.${name}`)) return undefined;
  }
  return proxy;
}

/** A NO_PROXY entry's host (without a leading `*.` or `.`) and port, if any. */
function noProxyEntry(entry: string): { name: string; port?: string } {
  const bracketed = /^\[([^\]]*)\](?::(\d+))?$/.exec(entry);
  if (bracketed) return { name: bracketed[1]!, ...(bracketed[2] ? { port: bracketed[2] } : {}) };
  // An IPv6 address without brackets has no port.
  if ((entry.match(/:/g) ?? []).length > 1) return { name: entry };
  const [host, port] = entry.split(":");
  return { name: host!.replace(/^\*?\./, ""), ...(port ? { port } : {}) };
}

/** How a proxy is named in logs and errors: never its credentials. */
export function describeProxy(proxy: URL): string {
  return `${proxy.hostname}${proxy.port ? `:${proxy.port}` : ""}`;
}

/** The `Proxy-Authorization` of a proxy URL with credentials. */
export function proxyAuthorization(proxy: URL): string | undefined {
  if (proxy.username === "" && proxy.password === "") return undefined;
  const user = decodeURIComponent(proxy.username);
  const password = decodeURIComponent(proxy.password);
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

/** A TCP connection to the proxy itself. */
export async function connectProxy(proxy: URL, signal: AbortSignal): Promise<Deno.TcpConn> {
  try {
    const conn = await Deno.connect({
      hostname: proxy.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: Number(proxy.port || 80),
      signal,
    });
    conn.setNoDelay(true);
    return conn;
  } catch (err) {
    const code = err instanceof Deno.errors.ConnectionRefused ? "ECONNREFUSED" : "ECONNRESET";
    throw networkError(
      `Connecting to proxy ${describeProxy(proxy)} failed: ${messageOf(err)}`,
      err,
      code,
    );
  }
}

/** A CONNECT tunnel through `proxy` to `host:port`, ready for TLS. */
export async function tunnel(
  proxy: URL,
  host: string,
  port: number,
  signal: AbortSignal,
): Promise<Deno.TcpConn> {
  const conn = await connectProxy(proxy, signal);
  const authority = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const auth = proxyAuthorization(proxy);
  const request = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n` +
    (auth ? `Proxy-Authorization: ${auth}\r\n` : "") + "\r\n";
  const onAbort = () => conn.close();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    await writeAll(conn, new TextEncoder().encode(request));
    const status = await readConnectAnswer(conn);
    if (status === 200) return conn;
    conn.close();
    const text = `Proxy ${describeProxy(proxy)} refused a tunnel to ${authority}: HTTP ${status}`;
    // Refused for who we are: waiting will not help. Anything else may pass.
    if (status === 407 || status === 403) {
      throw new FatalError(`${text}${status === 407 ? " (proxy authentication required)" : ""}`);
    }
    throw networkError(text);
  } catch (err) {
    try {
      conn.close();
    } catch {
      // closed already
    }
    if (err instanceof FatalError || (err as { code?: unknown }).code !== undefined) throw err;
    throw networkError(`Proxy ${describeProxy(proxy)} failed: ${messageOf(err)}`, err);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/**
 * The status of the proxy's answer to CONNECT. Read in small pieces: the
 * proxy sends nothing after its head until the client speaks TLS.
 */
async function readConnectAnswer(conn: Deno.Conn): Promise<number> {
  const buffer = new Uint8Array(8192);
  let end = 0;
  for (;;) {
    const n = await conn.read(buffer.subarray(end));
    if (n === null) throw new Error("the proxy closed the connection");
    end += n;
    const blank = indexOfBlankLine(buffer, 0, end);
    if (blank >= 0) return parseHead(latin1(buffer.subarray(0, blank))).status;
    if (end === buffer.byteLength) throw new Error("the proxy's answer is too long");
  }
}
