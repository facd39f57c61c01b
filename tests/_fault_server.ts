/**
 * An S3 front that answers as real S3 does where local servers do not: a
 * bucket in another region (301 with `x-amz-bucket-region`, or 400
 * `AuthorizationHeaderMalformed` naming it), a 307 to another host, a clock
 * far from ours (403 `RequestTimeTooSkewed`), throttling and server errors,
 * connections cut mid-answer. Everything else is passed on to a plain-HTTP
 * S3 server behind it (moto), virtual-hosted requests rewritten to path
 * style. Serves HTTPS with a test authority's certificate.
 */
import type { Authority } from "./_network.ts";

/** What the front saw of one request. */
export interface SeenRequest {
  method: string;
  host: string;
  path: string;
  /** The region of the signature's credential scope. */
  region: string;
  accessKey: string;
  /** x-amz-date, as a time. */
  signedAt: number;
}

export interface FaultOptions {
  /** Requests signed for another region are refused as S3 does. */
  bucketRegion?: { region: string; as: "301" | "400" };
  /**
   * S3's clock minus ours, ms (or as a function of the request's index: a
   * clock that jumps mid-run): requests signed more than 15 minutes off are
   * refused.
   */
  clockOffsetMs?: number | ((index: number, last: SeenRequest | undefined) => number);
  /** Called for each request that passed the checks above: a fault to answer with, or none. */
  fault?: (seen: SeenRequest, index: number) => Fault | undefined;
}

export type Fault =
  | { status: number; code: string; headers?: Record<string, string> }
  | { cut: true };

export interface FaultServer extends AsyncDisposable {
  port: number;
  seen: SeenRequest[];
  /** Faults answered, by description ("503 SlowDown", "cut", "301"...). */
  faults: string[];
}

const SKEW_LIMIT_MS = 15 * 60_000;

export function startFaultServer(
  ca: Authority,
  upstream: string,
  options: FaultOptions,
): Promise<FaultServer> {
  const seen: SeenRequest[] = [];
  const faults: string[] = [];
  const offset = options.clockOffsetMs;
  const now = () =>
    new Date(
      Date.now() +
        (typeof offset === "function" ? offset(seen.length - 1, seen.at(-1)) : offset ?? 0),
    );
  const error = (status: number, code: string, headers: Record<string, string> = {}, extra = "") =>
    new Response(
      `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${code}</Message>${extra}</Error>`,
      {
        status,
        headers: { "content-type": "application/xml", date: now().toUTCString(), ...headers },
      },
    );
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const host = req.headers.get("host") ?? "";
    const scope = /Credential=([^/]+)\/\d{8}\/([^/]+)\/s3\//.exec(
      req.headers.get("authorization") ?? "",
    );
    const amzDate = req.headers.get("x-amz-date") ?? "";
    const signedAt = Date.parse(
      amzDate.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, "$1-$2-$3T$4:$5:$6Z"),
    );
    const request: SeenRequest = {
      method: req.method,
      host,
      path: url.pathname + url.search,
      region: scope?.[2] ?? "",
      accessKey: scope?.[1] ?? "",
      signedAt,
    };
    seen.push(request);
    const index = seen.length - 1;
    const drop = () => req.body?.cancel().catch(() => {});
    if (
      options.clockOffsetMs !== undefined && !(Math.abs(signedAt - now().getTime()) < SKEW_LIMIT_MS)
    ) {
      faults.push("RequestTimeTooSkewed");
      await drop();
      return error(403, "RequestTimeTooSkewed");
    }
    const wanted = options.bucketRegion;
    if (wanted && request.region !== wanted.region) {
      faults.push(wanted.as);
      await drop();
      const header = { "x-amz-bucket-region": wanted.region };
      if (wanted.as === "400") {
        return error(400, "AuthorizationHeaderMalformed", {}, `<Region>${wanted.region}</Region>`);
      }
      return req.method === "HEAD"
        ? new Response(null, { status: 301, headers: header })
        : error(301, "PermanentRedirect", header);
    }
    const fault = options.fault?.(request, index);
    if (fault && "cut" in fault) {
      faults.push("cut");
      await drop();
      // Half an answer, then the connection goes away.
      const body = new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode("<?xml"));
          setTimeout(() => c.error(new Error("cut")), 20);
        },
      });
      return new Response(body, { status: 200, headers: { "content-length": "1000" } });
    }
    if (fault) {
      faults.push(`${fault.status} ${fault.code}`);
      await drop();
      return error(fault.status, fault.code, fault.headers ?? {});
    }
    const res = await forward(req, upstream, host, url);
    // S3's own clock in every answer, as the SDK reads it from successes too.
    res.headers.set("date", now().toUTCString());
    return res;
  };
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: Deno.readTextFileSync(ca.certFile),
      key: Deno.readTextFileSync(ca.keyFile),
      onListen: () => {},
    }, handler);
    resolve({
      port: server.addr.port,
      seen,
      faults,
      [Symbol.asyncDispose]: () => server.shutdown(),
    });
  });
}

/** Passes a request on to the upstream server, path style. */
async function forward(req: Request, upstream: string, host: string, url: URL): Promise<Response> {
  const bucket = /^(.+)\.s3[.-][a-z0-9.-]*amazonaws\.com(:\d+)?$/.exec(host)?.[1];
  const path = bucket ? `/${bucket}${url.pathname}` : url.pathname;
  const headers = new Headers(req.headers);
  for (const h of ["host", "connection", "transfer-encoding", "expect"]) headers.delete(h);
  // Buffered: a streamed body would go chunked, which moto reads as empty.
  const body = req.body ? new Uint8Array(await req.arrayBuffer()) : undefined;
  const res = await fetch(`${upstream}${path}${url.search}`, {
    method: req.method,
    headers,
    ...(body ? { body } : {}),
    redirect: "manual",
  });
  const out = new Headers(res.headers);
  out.delete("content-encoding");
  return new Response(req.method === "HEAD" ? null : res.body, {
    status: res.status,
    headers: out,
  });
}
