/**
 * The small HTTP server of `--metrics-listen`: `/metrics` in the Prometheus
 * text exposition format 0.0.4, `/healthz` for liveness checks.
 */
import { errorMessage, FatalError, UsageError } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import type { Metrics } from "./metrics.ts";

const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Serves `/metrics` and `/healthz` on `listen` (`HOST:PORT`, `:PORT` for all
 * IPv4 interfaces, `[IPv6]:PORT`). Throws `UsageError` on a malformed value
 * and `FatalError` when the address cannot be bound. Requires `--allow-net`.
 */
export function serveMetrics(
  metrics: Metrics,
  listen: string,
): { port: number; shutdown(): Promise<void> } {
  const { hostname, port } = parseListen(listen);
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname, port, onListen: () => {} }, (request) => {
      return respond(metrics, request);
    });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse || err instanceof Deno.errors.AddrNotAvailable) {
      throw new FatalError(`Cannot listen on '${listen}' for metrics: ${errorMessage(err)}`);
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new FatalError(`Cannot listen on '${listen}' for metrics: permission denied`);
    }
    throw err;
  }
  const address = server.addr;
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  log.info("serving metrics", { address: `${host}:${address.port}` });
  return {
    port: address.port,
    async shutdown() {
      await server.shutdown();
    },
  };
}

function respond(metrics: Metrics, request: Request): Response {
  const { pathname } = new URL(request.url);
  if (pathname !== "/metrics" && pathname !== "/healthz") {
    return new Response("Not found: try /metrics or /healthz\n", { status: 404 });
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("Method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  if (pathname === "/metrics") {
    return new Response(metrics.render(), { headers: { "content-type": CONTENT_TYPE } });
  }
  const ok = metrics.healthy();
  return new Response(ok ? "ok\n" : "unhealthy\n", {
    status: ok ? 200 : 503,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

/** Parses `HOST:PORT`, `:PORT` or `[IPV6]:PORT`. */
function parseListen(listen: string): { hostname: string; port: number } {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(listen);
  const port = Number(match?.[3]);
  if (!match || !(port <= 65535)) {
    throw new UsageError(
      `Option '--metrics-listen' takes HOST:PORT, :PORT or [IPV6]:PORT, got '${listen}'`,
    );
  }
  const hostname = match[1] ?? (match[2] || "0.0.0.0");
  return { hostname, port };
}
