/**
 * An HTTPS proxy on 127.0.0.1 that passes requests on to an HTTPS server
 * byte for byte (so SigV4 signatures, which cover the Host it sends, still
 * hold) and can flip one byte of a request body on the way: what a server
 * that verifies bodies must refuse. It records every request head it saw.
 * Requests are framed by Content-Length, as tablesnap sends them.
 */
import { makeTestTls } from "./_tls.ts";

export interface TamperingProxy extends AsyncDisposable {
  /** The endpoint to give the client instead of the server's. */
  endpoint: string;
  /** The CA of the proxy's certificate. */
  caPem: string;
  /** The heads (request line and headers) of the requests seen, in order. */
  heads: string[];
  /**
   * The next request whose request line matches has byte `at` of its body
   * flipped (then this is cleared); null: nothing is altered.
   */
  tamper: { requestLine: RegExp; at: number } | null;
}

const HEAD_END = new TextEncoder().encode("\r\n\r\n");

function indexOfHeadEnd(bytes: Uint8Array): number {
  outer: for (let i = 0; i + HEAD_END.length <= bytes.length; i++) {
    for (let j = 0; j < HEAD_END.length; j++) if (bytes[i + j] !== HEAD_END[j]) continue outer;
    return i;
  }
  return -1;
}

/** Starts a proxy to `https://127.0.0.1:targetPort`, whose certificate `targetCa` signed. */
export async function startTamperingProxy(
  targetPort: number,
  targetCa: string,
  dir: string,
): Promise<TamperingProxy> {
  const tls = await makeTestTls(await Deno.makeTempDir({ dir, prefix: "tamper-" }));
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(tls.certFile),
    key: await Deno.readTextFile(tls.keyFile),
  });
  const conns = new Set<Deno.Conn>();
  const pumps = new Set<Promise<void>>();
  const proxy: TamperingProxy = {
    endpoint: `https://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    caPem: tls.caPem,
    heads: [],
    tamper: null,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) c.close();
      await Promise.allSettled([...pumps]);
    },
  };

  // Client to server: heads parsed, bodies counted by Content-Length.
  const requests = async (from: Deno.Conn, to: Deno.Conn) => {
    let head = new Uint8Array(0);
    let bodyLeft = 0;
    let bodyAt = 0;
    let flipAt = -1;
    for await (const piece of from.readable) {
      let at = 0;
      while (at < piece.length) {
        if (bodyLeft > 0) {
          const n = Math.min(bodyLeft, piece.length - at);
          const part = piece.slice(at, at + n);
          if (flipAt >= bodyAt && flipAt < bodyAt + n) part[flipAt - bodyAt]! ^= 0x01;
          await to.write(part);
          bodyAt += n;
          bodyLeft -= n;
          at += n;
          continue;
        }
        const joined = new Uint8Array(head.length + piece.length - at);
        joined.set(head);
        joined.set(piece.subarray(at), head.length);
        const end = indexOfHeadEnd(joined);
        if (end < 0) {
          head = joined;
          at = piece.length;
          continue;
        }
        const headBytes = joined.subarray(0, end + HEAD_END.length);
        const text = new TextDecoder().decode(headBytes);
        proxy.heads.push(text);
        await to.write(headBytes);
        at += headBytes.length - head.length;
        head = new Uint8Array(0);
        bodyLeft = Number(/\r\ncontent-length:\s*(\d+)/i.exec(text)?.[1] ?? 0);
        bodyAt = 0;
        flipAt = -1;
        const tamper = proxy.tamper;
        if (tamper && tamper.requestLine.test(text.split("\r\n")[0]!)) {
          flipAt = tamper.at;
          proxy.tamper = null;
        }
      }
    }
  };
  const responses = async (from: Deno.Conn, to: Deno.Conn) => {
    for await (const piece of from.readable) await to.write(piece);
  };
  const serve = async (client: Deno.Conn) => {
    const server = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: targetPort,
      caCerts: [targetCa],
    });
    conns.add(client).add(server);
    const close = () => {
      for (const c of [client, server]) {
        conns.delete(c);
        try {
          c.close();
        } catch {
          // already closed
        }
      }
    };
    // Either direction ending (or failing once the other closed) ends both.
    const up = requests(client, server).catch(() => {});
    const down = responses(server, client).catch(() => {});
    await Promise.race([up, down]);
    close();
    await Promise.all([up, down]);
  };
  (async () => {
    for await (const client of listener) {
      const pump = serve(client).catch(() => {});
      pumps.add(pump);
      pump.finally(() => pumps.delete(pump));
    }
  })().catch(() => {});
  return proxy;
}
