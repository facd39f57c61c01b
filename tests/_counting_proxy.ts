/**
 * A TCP proxy on 127.0.0.1 that counts the bytes a client sends through it:
 * put between a watcher and its S3 server, it measures what the watcher
 * really sent, independently of the watcher's own accounting: every byte,
 * and the request bodies alone (HTTP/1.1 framed by Content-Length, which is
 * how tablesnap sends file bytes), including those of requests cut short.
 */

export interface CountingProxy extends AsyncDisposable {
  /** The endpoint to give the client instead of the server's. */
  endpoint: string;
  /** Bytes sent by clients since the start or the last `reset()`. */
  sent(): number;
  /** Of those, the bytes of request bodies; with `matching`, of requests whose request line matches. */
  bodyBytes(matching?: RegExp): number;
  reset(): void;
  stop(): Promise<void>;
}

/** Starts a proxy to `127.0.0.1:targetPort`. */
export function startCountingProxy(
  targetPort: number,
  options: { classify?: RegExp[] } = {},
): CountingProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const open = new Set<Deno.Conn>();
  const pumps = new Set<Promise<void>>();
  let sent = 0;
  let body = 0;
  // Body bytes of the requests each of `classify` matches (by request line).
  const classes = new Map<RegExp, number>((options.classify ?? []).map((r) => [r, 0]));
  const onBody = (requestLine: string, n: number) => {
    body += n;
    for (const [pattern, bytes] of classes) {
      if (pattern.test(requestLine)) classes.set(pattern, bytes + n);
    }
  };

  const pump = async (from: Deno.Conn, to: Deno.Conn, count: boolean) => {
    const buffer = new Uint8Array(64 * 1024);
    const framing = new RequestFraming(onBody);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        if (count) {
          sent += n;
          framing.feed(buffer.subarray(0, n));
        }
        let offset = 0;
        while (offset < n) offset += await to.write(buffer.subarray(offset, n));
      }
      await to.closeWrite().catch(() => {});
    } catch {
      // a side went away (a killed client): close both
      close(from);
      close(to);
    }
  };
  const close = (conn: Deno.Conn) => {
    if (!open.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // already closed
    }
  };
  const track = (p: Promise<void>) => {
    pumps.add(p);
    p.finally(() => pumps.delete(p));
  };
  const accepting = (async () => {
    for await (const client of listener) {
      open.add(client);
      let server: Deno.Conn;
      try {
        server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      } catch {
        close(client);
        continue;
      }
      open.add(server);
      const both = Promise.all([pump(client, server, true), pump(server, client, false)]);
      track(both.then(() => {
        close(client);
        close(server);
      }));
    }
  })().catch(() => {});

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    listener.close();
    await accepting;
    for (const conn of [...open]) close(conn);
    await Promise.all([...pumps]);
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    sent: () => sent,
    bodyBytes: (matching) => {
      if (!matching) return body;
      const bytes = classes.get(matching);
      if (bytes === undefined) throw new Error(`${matching} is not one of the classify patterns`);
      return bytes;
    },
    reset: () => {
      sent = 0;
      body = 0;
      for (const pattern of classes.keys()) classes.set(pattern, 0);
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** Follows one connection's requests: head, then Content-Length bytes of body. */
class RequestFraming {
  readonly #onBody: (requestLine: string, bytes: number) => void;
  #head = "";
  #requestLine = "";
  #bodyLeft = 0;

  constructor(onBody: (requestLine: string, bytes: number) => void) {
    this.#onBody = onBody;
  }

  feed(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.#bodyLeft > 0) {
        const n = Math.min(this.#bodyLeft, chunk.length - i);
        this.#bodyLeft -= n;
        this.#onBody(this.#requestLine, n);
        i += n;
        continue;
      }
      this.#head += String.fromCharCode(chunk[i++]!);
      if (this.#head.endsWith("\r\n\r\n")) {
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(this.#head)?.[1];
        this.#bodyLeft = length === undefined ? 0 : Number(length);
        this.#requestLine = this.#head.slice(0, this.#head.indexOf("\r\n"));
        this.#head = "";
      }
    }
  }
}
