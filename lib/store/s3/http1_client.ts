/**
 * A small HTTP/1.1 client over `Deno.connect` / `Deno.connectTls`, for the
 * one request whose cost grows with the bytes: the GET of a restore. Its
 * response body is a byte stream that reads from the socket straight into
 * the buffer the caller hands it (a BYOB reader), so a restored byte is
 * copied once from the kernel into that buffer and nowhere else.
 *
 * Why not `fetch` or `node:http`: against a local server, reading 1 GiB cost
 * 0.93 CPU s through `fetch` (a new 60 KB chunk per read) and about 3 s
 * through the SDK's `node:http` path (an HTTP parser and Node streams in
 * JavaScript), against 0.34 s here; the MD5 every restore must compute costs
 * 2.3 s, so the client's share decided whether restores beat the AWS CLI.
 *
 * Keep-alive connections are pooled per origin. A pooled connection the
 * server closed meanwhile fails before any answer arrives: the request is
 * then sent again once on a new connection (GET is idempotent). Proxies
 * (`HTTPS_PROXY`) are not supported: `TABLESNAP_DIRECT_REQUESTS=0` uses the
 * SDK for everything.
 */
import { writeAll } from "../../common/chunk_reader.ts";

/** An answer's status line and headers, and its body as a byte stream. */
export interface Http1Response {
  status: number;
  /** Header names in lower case; repeated headers joined with ", ". */
  headers: Map<string, string>;
  /** A byte stream (BYOB readers read into their own buffer). Cancel it to give up. */
  body: ReadableStream<Uint8Array>;
}

export interface Http1Request {
  /** Origin of the server: scheme, host and port are used. */
  url: URL;
  method: "GET";
  /** Path and query, already encoded as they are to be sent. */
  target: string;
  headers: Record<string, string>;
  signal?: AbortSignal | undefined;
}

/** Largest status line and header block accepted. */
const MAX_HEAD_BYTES = 64 * 1024;
/** Bytes read at once when the caller gives no buffer (default readers, header reads). */
const READ_BYTES = 64 * 1024;
/** Idle pooled connections kept per origin, and for how long. */
const MAX_IDLE = 64;
const IDLE_MS = 15_000;

/** A socket failure, shaped as `failureReason` knows network errors (retried). */
function networkError(message: string, cause?: unknown, code = "ECONNRESET"): Error {
  return Object.assign(new Error(message, cause === undefined ? {} : { cause }), { code });
}

export class Http1Client {
  readonly #idleTimeoutMs: number;
  readonly #idle = new Map<string, Connection[]>();
  #closed = false;

  /** `idleTimeoutMs`: how long a socket may stay silent mid-answer before it is given up. */
  constructor(options: { idleTimeoutMs: number }) {
    this.#idleTimeoutMs = options.idleTimeoutMs;
  }

  /**
   * Sends a request and resolves once the answer's headers are in. The body
   * must be read to its end (the connection then goes back to the pool) or
   * cancelled (the connection is closed).
   */
  async request(req: Http1Request): Promise<Http1Response> {
    req.signal?.throwIfAborted();
    const origin = `${req.url.protocol}//${req.url.host}`;
    const head = requestHead(req);
    for (;;) {
      const pooled = this.#takeIdle(origin);
      const connection = pooled ?? await this.#connect(req.url);
      try {
        return await connection.exchange(head, req.signal, (reusable) => {
          if (reusable) this.#putIdle(origin, connection);
          else connection.close();
        });
      } catch (err) {
        connection.close();
        // A pooled connection the server had closed: nothing was answered, try a fresh one.
        if (pooled && err instanceof StaleConnection) continue;
        if (err instanceof StaleConnection) throw networkError(err.message, err.cause);
        throw err;
      }
    }
  }

  /** Closes every pooled connection; connections in use close when their answer ends. */
  close(): void {
    this.#closed = true;
    for (const list of this.#idle.values()) for (const c of list) c.close();
    this.#idle.clear();
  }

  async #connect(url: URL): Promise<Connection> {
    const https = url.protocol === "https:";
    const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = url.port ? Number(url.port) : https ? 443 : 80;
    try {
      const conn = https
        ? await Deno.connectTls({ hostname, port, alpnProtocols: ["http/1.1"] })
        : await Deno.connect({ hostname, port });
      if (!https) (conn as Deno.TcpConn).setNoDelay(true);
      return new Connection(conn, this.#idleTimeoutMs);
    } catch (err) {
      const code = err instanceof Deno.errors.ConnectionRefused ? "ECONNREFUSED" : "ECONNRESET";
      throw networkError(`Connecting to ${url.host} failed: ${messageOf(err)}`, err, code);
    }
  }

  #takeIdle(origin: string): Connection | undefined {
    const list = this.#idle.get(origin);
    for (let c = list?.pop(); c; c = list?.pop()) {
      if (performance.now() - c.idleSince < IDLE_MS) return c;
      c.close();
    }
    return undefined;
  }

  #putIdle(origin: string, connection: Connection): void {
    const list = this.#idle.get(origin) ?? [];
    if (this.#closed || list.length >= MAX_IDLE) return connection.close();
    connection.idleSince = performance.now();
    list.push(connection);
    this.#idle.set(origin, list);
  }
}

/** Thrown when a connection ended before any byte of an answer: safe to send again. */
class StaleConnection extends Error {}

/** The request line and headers, as bytes. */
function requestHead(req: Http1Request): Uint8Array {
  let text = `${req.method} ${req.target} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(req.headers)) {
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) {
      throw new Error(`Header '${name}' holds a line break`);
    }
    text += `${name}: ${value}\r\n`;
  }
  return new TextEncoder().encode(`${text}\r\n`);
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** How the end of a body is known (RFC 9112 section 6.3). */
type Framing =
  | { kind: "length"; left: number }
  | { kind: "chunked"; left: number; last: boolean }
  | { kind: "close" };

/** One socket, and the bytes read from it but not yet handed out. */
class Connection {
  readonly #conn: Deno.Conn;
  readonly #idleTimeoutMs: number;
  /** Read-ahead: header bytes, and body bytes that arrived with them. */
  #buffer = new Uint8Array(READ_BYTES);
  #start = 0;
  #end = 0;
  #closed = false;
  #lastRead = 0;
  /** Bytes read since the current request was sent: none means it may be sent again. */
  #answered = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timedOut = false;
  idleSince = 0;

  constructor(conn: Deno.Conn, idleTimeoutMs: number) {
    this.#conn = conn;
    this.#idleTimeoutMs = idleTimeoutMs;
  }

  close(): void {
    this.#stopTimer();
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed by a failed read
    }
  }

  /**
   * Writes the request, reads the answer's head; the body streams from the
   * socket. `done(reusable)` is called once the body is finished or given up.
   */
  async exchange(
    head: Uint8Array,
    signal: AbortSignal | undefined,
    done: (reusable: boolean) => void,
  ): Promise<Http1Response> {
    const onAbort = () => this.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    let finished = false;
    const finish = (reusable: boolean) => {
      if (finished) return;
      finished = true;
      this.#stopTimer();
      signal?.removeEventListener("abort", onAbort);
      done(reusable && !this.#closed);
    };
    try {
      this.#answered = 0;
      if (this.#start === this.#end) this.#start = this.#end = 0;
      this.#startTimer();
      try {
        await writeAll(this.#conn, head);
      } catch (err) {
        throw new StaleConnection(`Sending a request failed: ${messageOf(err)}`, { cause: err });
      }
      const { status, headers, keepAlive } = await this.#readHead(signal);
      const framing = framingOf(status, headers);
      const reusable = keepAlive && framing.kind !== "close";
      const body = this.#bodyStream(framing, signal, () => finish(reusable), () => finish(false));
      if (framing.kind === "length" && framing.left === 0) finish(reusable);
      return { status, headers, body };
    } catch (err) {
      finish(false);
      if (signal?.aborted) throw signal.reason;
      throw err;
    }
  }

  async #readHead(
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; headers: Map<string, string>; keepAlive: boolean }> {
    for (;;) {
      const end = indexOfBlankLine(this.#buffer, this.#start, this.#end);
      if (end >= 0) {
        const text = latin1(this.#buffer.subarray(this.#start, end));
        this.#start = end + 4;
        const parsed = parseHead(text);
        // 1xx answers (100 Continue) precede the real one.
        if (parsed.status >= 100 && parsed.status < 200) continue;
        return parsed;
      }
      if (this.#end - this.#start >= MAX_HEAD_BYTES) {
        throw new Error(`An answer's header block exceeds ${MAX_HEAD_BYTES} bytes`);
      }
      let n: number | null;
      try {
        n = await this.#fill();
      } catch (err) {
        // Reset before anything came back: the request can be sent again.
        if (this.#answered === 0 && !this.#timedOut) {
          throw new StaleConnection(`Reading an answer failed: ${messageOf(err)}`, { cause: err });
        }
        throw err;
      }
      if (n === null) {
        if (signal?.aborted) throw signal.reason;
        const message = "The connection closed before an answer";
        if (this.#answered === 0) throw new StaleConnection(message);
        throw networkError(message);
      }
    }
  }

  /** Reads more into the read-ahead buffer (compacted, grown up to the header limit). */
  async #fill(): Promise<number | null> {
    if (this.#start > 0) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    if (this.#end === this.#buffer.byteLength) {
      const grown = new Uint8Array(Math.min(MAX_HEAD_BYTES + 4, this.#buffer.byteLength * 2));
      grown.set(this.#buffer.subarray(0, this.#end));
      this.#buffer = grown;
    }
    const n = await this.#read(this.#buffer.subarray(this.#end));
    if (n !== null) this.#end += n;
    return n;
  }

  /** One socket read into `view`; failures become network errors. */
  async #read(view: Uint8Array): Promise<number | null> {
    let n: number | null;
    try {
      n = await this.#conn.read(view);
    } catch (err) {
      if (this.#timedOut) {
        throw networkError("S3 request timed out", err, "ETIMEDOUT");
      }
      if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
        return null; // closed by us (abort, cancel)
      }
      throw networkError(`Reading an answer failed: ${messageOf(err)}`, err);
    }
    this.#lastRead = performance.now();
    if (n !== null) this.#answered += n;
    return n;
  }

  /** Body bytes into `view`: the read-ahead first, then the socket directly. */
  async #readBody(view: Uint8Array): Promise<number | null> {
    const ahead = this.#end - this.#start;
    if (ahead > 0) {
      const n = Math.min(ahead, view.byteLength);
      view.set(this.#buffer.subarray(this.#start, this.#start + n));
      this.#start += n;
      return n;
    }
    return await this.#read(view);
  }

  /** A line (without its CRLF) from the read-ahead buffer, for chunk sizes and trailers. */
  async #readLine(): Promise<string> {
    for (;;) {
      const at = indexOfCrlf(this.#buffer, this.#start, this.#end);
      if (at >= 0) {
        const line = latin1(this.#buffer.subarray(this.#start, at));
        this.#start = at + 2;
        return line;
      }
      if (this.#end - this.#start >= MAX_HEAD_BYTES) throw new Error("A chunk line is too long");
      if (await this.#fill() === null) throw networkError("The connection closed mid-answer");
    }
  }

  /** The next bytes of the body into `view`; null at its end. */
  async #nextBody(framing: Framing, view: Uint8Array): Promise<number | null> {
    if (framing.kind === "close") return await this.#readBody(view);
    if (framing.kind === "chunked" && framing.left === 0) {
      if (framing.last) return null;
      const size = parseInt((await this.#readLine()).split(";")[0]!.trim(), 16);
      if (!Number.isSafeInteger(size) || size < 0) throw new Error("A malformed chunk size");
      if (size === 0) {
        while ((await this.#readLine()) !== "") {
          // trailer fields: not used
        }
        framing.last = true;
        return null;
      }
      framing.left = size;
    }
    if (framing.left === 0) return null;
    const want = view.subarray(0, Math.min(view.byteLength, framing.left));
    const n = await this.#readBody(want);
    if (n === null) throw networkError("The connection closed mid-answer");
    framing.left -= n;
    if (framing.kind === "chunked" && framing.left === 0 && (await this.#readLine()) !== "") {
      throw new Error("A chunk does not end with CRLF");
    }
    return n;
  }

  #bodyStream(
    framing: Framing,
    signal: AbortSignal | undefined,
    ended: () => void,
    failed: () => void,
  ): ReadableStream<Uint8Array> {
    let finished = framing.kind === "length" && framing.left === 0;
    return new ReadableStream({
      type: "bytes",
      autoAllocateChunkSize: READ_BYTES,
      pull: async (controller) => {
        const request = controller.byobRequest!;
        const view = request.view!;
        const into = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
        let n: number | null;
        try {
          n = finished ? null : await this.#nextBody(framing, into);
        } catch (err) {
          failed();
          throw signal?.aborted ? signal.reason : err;
        }
        if (n === null) {
          if (signal?.aborted) {
            failed();
            throw signal.reason;
          }
          if (this.#closed && framing.kind !== "close" && !finished) {
            failed();
            throw networkError("The connection closed mid-answer");
          }
          finished = true;
          ended();
          controller.close();
          request.respond(0);
          return;
        }
        if (framing.kind === "length" && framing.left === 0) {
          finished = true;
          ended();
        }
        request.respond(n);
      },
      cancel: () => {
        this.close();
        failed();
      },
    });
  }

  /** Closes the socket once it has been silent for the idle timeout. */
  #startTimer(): void {
    this.#lastRead = performance.now();
    this.#timedOut = false;
    const check = () => {
      const silent = performance.now() - this.#lastRead;
      if (silent >= this.#idleTimeoutMs) {
        this.#timedOut = true;
        this.#timer = undefined;
        this.close();
        return;
      }
      this.#timer = setTimeout(check, this.#idleTimeoutMs - silent);
      Deno.unrefTimer(this.#timer);
    };
    this.#timer = setTimeout(check, this.#idleTimeoutMs);
    // A pending read keeps the process alive, not the watchdog: an answer
    // nobody reads any more must not delay the exit.
    Deno.unrefTimer(this.#timer);
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/** Status, headers, and whether the connection may carry another request. */
function parseHead(
  text: string,
): { status: number; headers: Map<string, string>; keepAlive: boolean } {
  const lines = text.split("\r\n");
  const statusLine = /^HTTP\/1\.([01]) (\d{3})/.exec(lines[0] ?? "");
  if (!statusLine) throw new Error(`Not an HTTP/1.1 answer: '${(lines[0] ?? "").slice(0, 80)}'`);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const before = headers.get(name);
    headers.set(name, before === undefined ? value : `${before}, ${value}`);
  }
  const connection = (headers.get("connection") ?? "").toLowerCase();
  const keepAlive = statusLine[1] === "1"
    ? !connection.includes("close")
    : connection.includes("keep-alive");
  return { status: Number(statusLine[2]), headers, keepAlive };
}

function framingOf(status: number, headers: Map<string, string>): Framing {
  if (status === 204 || status === 304) return { kind: "length", left: 0 };
  const encoding = headers.get("transfer-encoding");
  if (encoding !== undefined) {
    if (encoding.toLowerCase().split(",").at(-1)!.trim() === "chunked") {
      return { kind: "chunked", left: 0, last: false };
    }
    return { kind: "close" };
  }
  const length = headers.get("content-length");
  if (length !== undefined) {
    if (!/^\d+$/.test(length)) throw new Error(`Invalid Content-Length '${length}'`);
    return { kind: "length", left: Number(length) };
  }
  return { kind: "close" };
}

function indexOfBlankLine(buffer: Uint8Array, start: number, end: number): number {
  for (let i = start; i + 3 < end; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

function indexOfCrlf(buffer: Uint8Array, start: number, end: number): number {
  for (let i = start; i + 1 < end; i++) if (buffer[i] === 13 && buffer[i + 1] === 10) return i;
  return -1;
}

/** Header bytes as ISO-8859-1, as HTTP defines them (each byte one character). */
function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.byteLength; i += 4096) {
    text += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return text;
}
