/**
 * HTTP/1.1 as bytes on the wire (RFC 9112): the request head we write, the
 * answer head we parse, and how an answer's body is framed. Pure functions.
 */

/** How the end of a body is known (RFC 9112 section 6.3). */
export type Framing =
  | { kind: "length"; left: number }
  | { kind: "chunked"; left: number; last: boolean }
  | { kind: "close" };

/** An answer's status line and headers. */
export interface ResponseHead {
  status: number;
  /** Header names in lower case; repeated headers joined with ", ". */
  headers: Map<string, string>;
  /** Whether the connection may carry another request. */
  keepAlive: boolean;
}

/** The request line and headers, as bytes; refuses a header that would split the head. */
export function requestHead(
  method: string,
  target: string,
  headers: Record<string, string>,
): Uint8Array {
  if (/[\s]/.test(target)) throw new Error("A request target holds white space");
  let text = `${method} ${target} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (/[\r\n:]/.test(name) || /[\r\n]/.test(value)) {
      throw new Error(`Header '${name.replace(/[\r\n]/g, " ")}' holds a line break`);
    }
    text += `${name}: ${value}\r\n`;
  }
  return new TextEncoder().encode(`${text}\r\n`);
}

/** Status, headers, and whether the connection may carry another request. */
export function parseHead(text: string): ResponseHead {
  const lines = text.split("\r\n");
  const statusLine = /^HTTP\/1\.([01]) (\d{3})/.exec(lines[0] ?? "");
  if (!statusLine) {
    throw new Error(`Not an HTTP/1.1 answer: '${JSON.stringify((lines[0] ?? "").slice(0, 80))}'`);
  }
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

/** How the body of an answer to `method` ends. */
export function framingOf(method: string, status: number, headers: Map<string, string>): Framing {
  if (method === "HEAD" || status === 204 || status === 304) return { kind: "length", left: 0 };
  const encoding = headers.get("transfer-encoding");
  if (encoding !== undefined) {
    if (encoding.toLowerCase().split(",").at(-1)!.trim() === "chunked") {
      return { kind: "chunked", left: 0, last: false };
    }
    return { kind: "close" };
  }
  const length = headers.get("content-length");
  if (length !== undefined) {
    if (!/^\d+$/.test(length)) throw new Error(`Invalid Content-Length '${length.slice(0, 40)}'`);
    return { kind: "length", left: Number(length) };
  }
  return { kind: "close" };
}

export function indexOfBlankLine(buffer: Uint8Array, start: number, end: number): number {
  for (let i = start; i + 3 < end; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

export function indexOfCrlf(buffer: Uint8Array, start: number, end: number): number {
  for (let i = start; i + 1 < end; i++) if (buffer[i] === 13 && buffer[i + 1] === 10) return i;
  return -1;
}

/** Header bytes as ISO-8859-1, as HTTP defines them (each byte one character). */
export function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.byteLength; i += 4096) {
    text += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return text;
}

/** A socket failure, shaped as `failureReason` knows network errors (retried). */
export function networkError(message: string, cause?: unknown, code = "ECONNRESET"): Error {
  return Object.assign(new Error(message, cause === undefined ? {} : { cause }), { code });
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.byteLength;) at += await conn.write(bytes.subarray(at));
}
