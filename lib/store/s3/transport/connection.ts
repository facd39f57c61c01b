/**
 * One HTTP/1.1 connection: writes a request (its body streamed, while the
 * answer's head is awaited, so an early refusal is seen rather than a broken
 * pipe), reads the answer's head, and hands out its body as a byte stream
 * that reads from the socket straight into the buffer the caller gives (a
 * BYOB reader): a restored byte is copied once, from the kernel into that
 * buffer.
 */
import {
  type Framing,
  framingOf,
  indexOfBlankLine,
  indexOfCrlf,
  latin1,
  messageOf,
  networkError,
  parseHead,
  type ResponseHead,
  writeAll,
} from "./http_wire.ts";
import { type RequestBody, writeBody } from "./request_body.ts";
import { withDirectRead } from "../../../common/direct_read.ts";

/** An answer's status and headers, and its body as a byte stream. */
export interface HttpResponse {
  status: number;
  /** Header names in lower case; repeated headers joined with ", ". */
  headers: Map<string, string>;
  /** A byte stream (BYOB readers read into their own buffer). Read it to its end or cancel it. */
  body: ReadableStream<Uint8Array>;
}

/** Largest status line and header block accepted. */
const MAX_HEAD_BYTES = 64 * 1024;
/** Bytes read at once when the caller gives no buffer (default readers, header reads). */
export const READ_BYTES = 64 * 1024;

/** Thrown when a connection ended before any byte of an answer: safe to send again. */
export class StaleConnection extends Error {}

/** What one exchange sends. */
export interface Exchange {
  method: string;
  head: Uint8Array;
  body?: RequestBody | undefined;
  /** The body is a stream of unknown length: sent with chunked framing. */
  chunked?: boolean;
  signal?: AbortSignal | undefined;
}

export class Connection {
  readonly #conn: Deno.Conn;
  readonly #idleTimeoutMs: number;
  /** Read-ahead: header bytes, and body bytes that arrived with them. */
  #buffer = new Uint8Array(READ_BYTES);
  #start = 0;
  #end = 0;
  #closed = false;
  #lastActivity = 0;
  /** Bytes read since the current request was sent: none means it may be sent again. */
  #answered = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timedOut = false;
  idleSince = 0;

  constructor(conn: Deno.Conn, idleTimeoutMs: number) {
    this.#conn = conn;
    this.#idleTimeoutMs = idleTimeoutMs;
  }

  get closed(): boolean {
    return this.#closed;
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
  async exchange(req: Exchange, done: (reusable: boolean) => void): Promise<HttpResponse> {
    const { signal } = req;
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
        await writeAll(this.#conn, req.head);
      } catch (err) {
        throw new StaleConnection(`Sending a request failed: ${messageOf(err)}`, { cause: err });
      }
      const { status, headers, keepAlive } = await this.#sendBodyReadHead(req);
      const framing = framingOf(req.method, status, headers);
      const reusable = keepAlive && framing.kind !== "close" && !this.#bodyCut;
      const body = this.#bodyStream(framing, signal, () => finish(reusable), () => finish(false));
      if (framing.kind === "length" && framing.left === 0) finish(reusable);
      return { status, headers, body };
    } catch (err) {
      finish(false);
      if (signal?.aborted) throw signal.reason;
      throw err;
    }
  }

  /** Set when an answer came before the whole body was sent: the connection cannot be reused. */
  #bodyCut = false;

  async #sendBodyReadHead(req: Exchange): Promise<ResponseHead> {
    this.#bodyCut = false;
    if (req.body === undefined) return await this.#readHead(req.signal);
    let sent = false;
    let stop = false;
    let writeError: unknown;
    let bodyFailed = false;
    const writing = writeBody(
      this.#conn,
      req.body,
      req.chunked ?? false,
      () => stop || this.#closed,
      () => this.#lastActivity = performance.now(),
    ).then(() => sent = true, (err) => {
      writeError = err;
      // The body failed, not the socket (a file that changed, one gone):
      // the server waits for the rest, so close rather than wait for it.
      bodyFailed = isBodyFailure(err);
      if (bodyFailed) this.close();
    });
    try {
      const head = await this.#readHead(req.signal);
      if (!sent) {
        // S3 refused before taking the whole body: stop sending it.
        stop = true;
        this.#bodyCut = true;
      }
      return head;
    } catch (err) {
      await writing;
      // A body that could not be read (a file gone) says more than the socket.
      if (bodyFailed) throw writeError;
      throw err;
    }
  }

  async #readHead(signal: AbortSignal | undefined): Promise<ResponseHead> {
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
    this.#lastActivity = performance.now();
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
    /** The next body bytes into `into`; null at the end (the exchange then ends). */
    const readInto = async (into: Uint8Array): Promise<number | null> => {
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
        if (!finished) {
          finished = true;
          ended();
        }
        return null;
      }
      if (framing.kind === "length" && framing.left === 0) {
        finished = true;
        ended();
      }
      return n;
    };
    const stream = new ReadableStream({
      type: "bytes",
      autoAllocateChunkSize: READ_BYTES,
      pull: async (controller) => {
        const request = controller.byobRequest!;
        const view = request.view!;
        const n = await readInto(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
        if (n === null) {
          controller.close();
          request.respond(0);
          return;
        }
        request.respond(n);
      },
      cancel: () => {
        // A body read to its end (directly, so the stream never closed) has
        // handed the connection back for reuse: another exchange may hold it.
        if (finished) return;
        this.close();
        failed();
      },
    });
    // A restore reads bodies without the streams machinery (direct_read.ts).
    return withDirectRead(stream, readInto);
  }

  /** Closes the socket once it has been silent (neither read nor written) for the idle timeout. */
  #startTimer(): void {
    this.#lastActivity = performance.now();
    this.#timedOut = false;
    const check = () => {
      const silent = performance.now() - this.#lastActivity;
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

/** Errors of the socket a body is written to, rather than of the body. */
const SOCKET_ERRORS = [
  Deno.errors.BadResource,
  Deno.errors.BrokenPipe,
  Deno.errors.ConnectionReset,
  Deno.errors.ConnectionAborted,
  Deno.errors.NotConnected,
  Deno.errors.TimedOut,
  Deno.errors.Interrupted,
];

/** An error of making the body (its source failed), not of the socket it was written to. */
function isBodyFailure(err: unknown): boolean {
  if (err === undefined || SOCKET_ERRORS.some((kind) => err instanceof kind)) return false;
  return (err as { code?: unknown }).code === undefined;
}
