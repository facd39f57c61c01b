/**
 * Local S3 servers for the benchmark (s3rver from npm, moto_server from
 * pip) on 127.0.0.1, and a counting reverse proxy to put in front of one.
 * Requires `--allow-run`, `--allow-net=127.0.0.1` and `--allow-read=/proc`.
 */
import { s3rverObjects } from "./_context.ts";
import { type Background, background, processCpu, sleep } from "./_proc.ts";
import { s3rverRun } from "../tests/_helpers.ts";

export interface Server extends AsyncDisposable {
  kind: "s3rver" | "moto" | "rgw";
  endpoint: string;
  bucket: string;
  /** Where s3rver keeps objects (`<dir>/<bucket>/<key>...`); empty for moto. */
  dir: string;
  /** What the clients' environment needs besides `childEnv()`'s (credentials, CA). */
  env?: Record<string, string>;
  /** CPU seconds the server has used so far. */
  cpu(): Promise<number>;
  /** Objects stored under a top-level key prefix ("run1/"). */
  objects(prefix: string): Promise<number>;
  /** Deletes everything stored under a top-level key prefix. */
  drop(prefix: string): Promise<void>;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Starts s3rver or moto with one bucket; resolves once it answers. */
export async function startServer(kind: "s3rver" | "moto", bucket: string): Promise<Server> {
  const port = freePort();
  const dir = kind === "s3rver" ? await Deno.makeTempDir({ prefix: "bench-s3rver-" }) : "";
  const args = kind === "s3rver"
    ? [...s3rverRun(dir), "--silent", "-a", "127.0.0.1", "-p", String(port), "-d", dir]
      .concat(["--configure-bucket", bucket])
    : ["-H", "127.0.0.1", "-p", String(port)];
  // Output is discarded: nobody reads it, and an unread pipe stalls the server.
  const proc: Background = background(kind === "s3rver" ? Deno.execPath() : "moto_server", args, {
    env: Deno.env.toObject(),
    keepOutput: false,
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      if (kind === "moto") {
        const res = await fetch(`${endpoint}/${bucket}`, { method: "PUT" });
        await res.body?.cancel();
      }
      const res = await fetch(`${endpoint}/${bucket}?list-type=2&max-keys=1`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await proc.stop("SIGKILL");
      throw new Error(`${kind} did not start on ${endpoint} within 120 s`);
    }
    await sleep(100);
  }
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await proc.stop("SIGTERM");
    if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const server: Server = {
    kind,
    endpoint,
    bucket,
    dir,
    cpu: () => processCpu(proc.child.pid),
    objects: (prefix) => s3rverObjects(server, prefix),
    drop: (prefix) => dropS3rverPrefix(server, prefix),
    stop,
    [Symbol.asyncDispose]: stop,
  };
  return server;
}

/** Deletes everything s3rver stores under a top-level key prefix ("run1/"). */
export async function dropS3rverPrefix(server: Server, prefix: string): Promise<void> {
  const top = prefix.replace(/\/.*$/, "");
  if (!server.dir || !top) return;
  await Deno.remove(`${server.dir}/${server.bucket}/${top}`, { recursive: true }).catch(() => {});
}

/** What a counting proxy has seen, by S3 operation. */
export type RequestCounts = Record<string, number>;

export interface CountingProxy extends AsyncDisposable {
  endpoint: string;
  counts: RequestCounts;
  stop(): Promise<void>;
}

/** The S3 operation of a path-style request, from its method, path and query. */
export function operationOf(method: string, url: URL): string {
  const path = url.pathname.replace(/^\/+/, "");
  const slash = path.indexOf("/");
  const bucketOnly = slash === -1 || slash === path.length - 1;
  const q = url.searchParams;
  switch (method) {
    case "GET":
      if (bucketOnly) return q.has("uploads") ? "ListMultipartUploads" : "ListObjects";
      return q.has("uploadId") ? "ListParts" : "GetObject";
    case "HEAD":
      return bucketOnly ? "HeadBucket" : "HeadObject";
    case "PUT":
      return q.has("partNumber") ? "UploadPart" : "PutObject";
    case "POST":
      if (q.has("delete")) return "DeleteObjects";
      if (q.has("uploads")) return "CreateMultipartUpload";
      if (q.has("uploadId")) return "CompleteMultipartUpload";
      return "POST";
    case "DELETE":
      return q.has("uploadId") ? "AbortMultipartUpload" : "DeleteObject";
    default:
      return method;
  }
}

/**
 * A reverse proxy on 127.0.0.1 that forwards every request to `upstream`
 * and counts it. Bodies are buffered (fine for the small objects it is
 * used with). The Host header changes, so use it only with servers that
 * do not check signatures (moto).
 */
export function startCountingProxy(upstream: string): CountingProxy {
  const counts: RequestCounts = {};
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      const op = operationOf(req.method, url);
      counts[op] = (counts[op] ?? 0) + 1;
      const headers = new Headers(req.headers);
      for (const name of ["host", "content-length", "connection", "transfer-encoding"]) {
        headers.delete(name);
      }
      const body = req.body ? new Uint8Array(await req.arrayBuffer()) : undefined;
      const res = await fetch(upstream + url.pathname + url.search, {
        method: req.method,
        headers,
        ...(body && req.method !== "GET" && req.method !== "HEAD" ? { body } : {}),
        redirect: "manual",
      });
      const nullBody = req.method === "HEAD" || res.status === 204 || res.status === 304;
      const payload = nullBody ? null : new Uint8Array(await res.arrayBuffer());
      if (nullBody) await res.body?.cancel();
      return new Response(payload, { status: res.status, headers: res.headers });
    },
  );
  const port = server.addr.port;
  const stop = async () => {
    await server.shutdown();
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    counts,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
