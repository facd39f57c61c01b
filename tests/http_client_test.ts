/**
 * The restore's HTTP/1.1 client (lib/store/s3/transport/http_client.ts) against a
 * scripted server on 127.0.0.1: the framings S3 and S3-compatible servers
 * use, connection reuse, a pooled connection the server closed, a server
 * gone silent mid-body, and bodies read straight into the caller's buffer.
 * (Real S3 answers go through it in store_contract_test.ts and, with
 * signatures checked, s3_signing_test.ts.)
 */
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { ChunkReader } from "../lib/common/chunk_reader.ts";
import { directReadOf } from "../lib/common/direct_read.ts";
import { failureReason } from "../lib/store/failure.ts";
import { Buffer } from "node:buffer";
import { Readable } from "node:stream";
import { HttpClient, type HttpResponse } from "../lib/store/s3/transport/http_client.ts";
import { SdkHttpHandler } from "../lib/store/s3/transport/sdk_handler.ts";

/** What the scripted server does with one request on one connection. */
type Script = (conn: Deno.Conn, request: string, connection: number) => Promise<"keep" | "close">;

/** A server answering by script; counts the connections it accepted. */
function scriptedServer(script: Script) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let connections = 0;
  const open = new Set<Deno.Conn>();
  const serving = (async () => {
    const handlers: Promise<void>[] = [];
    for await (const conn of listener) {
      const id = ++connections;
      open.add(conn);
      handlers.push((async () => {
        const buffer = new Uint8Array(64 * 1024);
        let text = "";
        try {
          for (;;) {
            const n = await conn.read(buffer);
            if (n === null) break;
            text += new TextDecoder().decode(buffer.subarray(0, n));
            const end = text.indexOf("\r\n\r\n");
            if (end < 0) continue;
            const request = text.slice(0, end);
            text = text.slice(end + 4);
            if (await script(conn, request, id) === "close") break;
          }
        } catch {
          // the client went away
        } finally {
          open.delete(conn);
          try {
            conn.close();
          } catch {
            // already closed
          }
        }
      })());
    }
    await Promise.all(handlers);
  })();
  return {
    url: new URL(`http://127.0.0.1:${port}`),
    connections: () => connections,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      await serving;
    },
  };
}

async function send(conn: Deno.Conn, text: string | Uint8Array): Promise<void> {
  let bytes = typeof text === "string" ? new TextEncoder().encode(text) : text;
  while (bytes.length > 0) bytes = bytes.subarray(await conn.write(bytes));
}

function get(client: HttpClient, url: URL, target: string): Promise<HttpResponse> {
  return client.request({ url, method: "GET", target, headers: { host: url.host } });
}

Deno.test("HttpClient reads sized and chunked bodies over one kept-alive connection", async () => {
  await using server = scriptedServer(async (conn, request) => {
    if (request.startsWith("GET /sized ")) {
      await send(conn, 'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nETag: "x"\r\n\r\nhello world');
    } else {
      // S3 sends error bodies chunked; a chunk extension and a trailer are legal too.
      await send(
        conn,
        "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n" +
          "5;ext=1\r\n<Err>\r\n3\r\nabc\r\n0\r\nTrailer: t\r\n\r\n",
      );
    }
    return "keep";
  });
  const client = new HttpClient({ idleTimeoutMs: 10_000 });
  try {
    for (let i = 0; i < 3; i++) {
      const sized = await get(client, server.url, "/sized");
      assertEquals(sized.status, 200);
      assertEquals(sized.headers.get("etag"), '"x"');
      assertEquals(await new Response(sized.body).text(), "hello world");
      const chunked = await get(client, server.url, "/chunked");
      assertEquals(chunked.status, 404);
      assertEquals(await new Response(chunked.body).text(), "<Err>abc");
    }
    assertEquals(server.connections(), 1, "every answer read to its end frees the connection");
  } finally {
    client.close();
  }
});

Deno.test("HttpClient sends again on a new connection when a pooled one was closed", async () => {
  await using server = scriptedServer(async (conn) => {
    // Keep-alive promised, then closed anyway (as servers do to idle connections).
    await send(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    return "close";
  });
  const client = new HttpClient({ idleTimeoutMs: 10_000 });
  try {
    for (let i = 0; i < 3; i++) {
      const res = await get(client, server.url, "/x");
      assertEquals(await new Response(res.body).text(), "ok");
    }
    assertEquals(server.connections(), 3);
  } finally {
    client.close();
  }
});

Deno.test("HttpClient gives up a silent server as a network error, not a hang", async () => {
  await using server = scriptedServer(async (conn) => {
    // Half the body, then silence.
    await send(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + "a".repeat(50));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    return "close";
  });
  const client = new HttpClient({ idleTimeoutMs: 300 });
  try {
    const res = await get(client, server.url, "/slow");
    const err = await assertRejects(() => new Response(res.body).arrayBuffer());
    assertEquals(failureReason(err), "network", String(err));
  } finally {
    client.close();
  }
});

Deno.test("HttpClient refuses a connection that ends mid-body, and a refused port", async () => {
  await using server = scriptedServer(async (conn) => {
    await send(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
    return "close";
  });
  const client = new HttpClient({ idleTimeoutMs: 10_000 });
  try {
    const res = await get(client, server.url, "/cut");
    const err = await assertRejects(() => new Response(res.body).arrayBuffer());
    assertEquals(failureReason(err), "network", String(err));
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closedPort = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const refused = await assertRejects(() =>
      get(client, new URL(`http://127.0.0.1:${closedPort}`), "/")
    );
    assertEquals(failureReason(refused), "network", String(refused));
  } finally {
    client.close();
  }
});

Deno.test("a body is read into the reader's own buffer, in full chunks", async () => {
  const body = new Uint8Array(3 * 1024 * 1024 + 7).map((_, i) => (i * 13) % 251);
  await using server = scriptedServer(async (conn) => {
    await send(conn, `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`);
    // Small writes: the reader still hands out whole chunks.
    for (let at = 0; at < body.length; at += 100_000) {
      await send(conn, body.subarray(at, at + 100_000));
    }
    return "keep";
  });
  const client = new HttpClient({ idleTimeoutMs: 10_000 });
  try {
    const res = await get(client, server.url, "/big");
    const reader = new ChunkReader(res.body, 1024 * 1024);
    const sizes: number[] = [];
    const got = new Uint8Array(body.length);
    let at = 0;
    for (let chunk = await reader.next(); chunk; chunk = await reader.next()) {
      sizes.push(chunk.byteLength);
      got.set(chunk, at);
      at += chunk.byteLength;
      // The reader's one buffer, handed back each time (not a new chunk per socket read).
      assertEquals(chunk.buffer.byteLength, 1024 * 1024);
    }
    assertEquals(sizes, [1024 * 1024, 1024 * 1024, 1024 * 1024, 7]);
    assert(got.every((b, i) => b === body[i]), "bytes differ");
    // A body read to its end leaves the connection for the next request.
    const again = await get(client, server.url, "/big");
    await again.body.cancel();
    assertEquals(server.connections(), 1);
  } finally {
    client.close();
  }
});

Deno.test("a chunked body is read without the streams machinery, then the connection reused", async () => {
  const body = new Uint8Array(300_000).map((_, i) => (i * 7) % 253);
  await using server = scriptedServer(async (conn) => {
    await send(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (let at = 0; at < body.length; at += 70_000) {
      const piece = body.subarray(at, at + 70_000);
      await send(conn, `${piece.length.toString(16)}\r\n`);
      await send(conn, piece);
      await send(conn, "\r\n");
    }
    await send(conn, "0\r\n\r\n");
    return "keep";
  });
  const client = new HttpClient({ idleTimeoutMs: 10_000 });
  try {
    const res = await get(client, server.url, "/chunked");
    assert(directReadOf(res.body) !== undefined, "the body has no direct read");
    const reader = new ChunkReader(res.body, 128 * 1024);
    const got = new Uint8Array(body.length);
    let at = 0;
    for (let chunk = await reader.next(); chunk; chunk = await reader.next()) {
      got.set(chunk, at);
      at += chunk.byteLength;
    }
    assertEquals(at, body.length);
    assert(got.every((b, i) => b === body[i]), "bytes differ");
    // Read through the connection's own read: no stream reader ever took it.
    assertEquals(res.body.locked, false);
    const again = await get(client, server.url, "/chunked");
    await again.body.cancel();
    assertEquals(server.connections(), 1);
  } finally {
    client.close();
  }
});

Deno.test("a body read to its end, then cancelled, leaves its connection to the next request", async () => {
  await using server = scriptedServer(async (conn) => {
    await send(conn, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall");
    return "keep";
  });
  const client = new HttpClient({ idleTimeoutMs: 10_000 });
  try {
    const res = await get(client, server.url, "/small");
    const reader = new ChunkReader(res.body, 64 * 1024);
    const chunk = await reader.next();
    assertEquals(new TextDecoder().decode(chunk!), "small");
    // A restore cancels its body when writing the file fails, even one read whole.
    await reader.cancel();
    const again = await get(client, server.url, "/small");
    assertEquals(await new Response(again.body).text(), "small");
    assertEquals(server.connections(), 1, "the cancel closed a connection handed back for reuse");
  } finally {
    client.close();
  }
});

/** A server that reads one request's head, then hands the connection to `handle`. */
function rawServer(handle: (conn: Deno.Conn, head: string, rest: Uint8Array) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of listener) {
      (async () => {
        const buffer = new Uint8Array(256 * 1024);
        let got = new Uint8Array(0);
        try {
          for (;;) {
            const n = await conn.read(buffer);
            if (n === null) return;
            got = new Uint8Array([...got, ...buffer.subarray(0, n)]);
            const text = new TextDecoder().decode(got);
            const end = text.indexOf("\r\n\r\n");
            if (end >= 0) {
              await handle(conn, text.slice(0, end), got.subarray(end + 4));
              return;
            }
          }
        } catch {
          // the client went away
        } finally {
          try {
            conn.close();
          } catch {
            // closed
          }
        }
      })();
    }
  })();
  return {
    url: new URL(`http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`),
    async [Symbol.asyncDispose]() {
      listener.close();
      await serving.catch(() => {});
    },
  };
}

/** Reads exactly `length` body bytes after `rest`. */
async function readBody(conn: Deno.Conn, rest: Uint8Array, length: number): Promise<Uint8Array> {
  const body = new Uint8Array(length);
  body.set(rest.subarray(0, length));
  for (let at = Math.min(rest.byteLength, length); at < length;) {
    const n = await conn.read(body.subarray(at));
    if (n === null) throw new Error("short body");
    at += n;
  }
  return body;
}

Deno.test("a file range is sent intact in reused buffers, counted by onBytes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = new Uint8Array(1_300_000).map((_, i) => (i * 11) % 253);
    await Deno.writeFile(`${dir}/f`, file);
    let received: Uint8Array | undefined;
    let head = "";
    await using server = rawServer(async (conn, h, rest) => {
      head = h;
      received = await readBody(conn, rest, 1_000_000);
      await send(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    });
    const client = new HttpClient({ idleTimeoutMs: 10_000, userAgent: "tablesnap/test" });
    let counted = 0;
    try {
      const res = await client.request({
        url: server.url,
        method: "PUT",
        target: "/k",
        headers: {},
        body: {
          path: `${dir}/f`,
          start: 200_000,
          length: 1_000_000,
          onBytes: (n) => void (counted += n),
        },
      });
      assertEquals(res.status, 200);
      await res.body.cancel();
    } finally {
      client.close();
    }
    assert(
      /content-length: 1000000/i.test(head) && /user-agent: tablesnap\/test/i.test(head),
      head,
    );
    assertEquals(counted, 1_000_000);
    assert(received!.every((b, i) => b === file[200_000 + i]), "bytes differ");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an answer before the whole body is sent is read, not a broken pipe", async () => {
  // As S3 refuses a PUT early (a bad signature, a missing bucket): it answers
  // at once, then reads and drops the rest until the client hangs up.
  const answer = "<Error><Code>AccessDenied</Code></Error>";
  await using server = rawServer(async (conn) => {
    await send(conn, `HTTP/1.1 403 Forbidden\r\nContent-Length: ${answer.length}\r\n\r\n${answer}`);
    const sink = new Uint8Array(64 * 1024);
    while (await conn.read(sink) !== null) {
      // dropped
    }
  });
  const client = new HttpClient({ idleTimeoutMs: 10_000 });
  try {
    const res = await client.request({
      url: server.url,
      method: "PUT",
      target: "/k",
      headers: {},
      body: new Uint8Array(32 * 1024 * 1024),
    });
    assertEquals(res.status, 403);
    assertEquals(await new Response(res.body).text(), answer);
  } finally {
    client.close();
  }
});

Deno.test("a stream of unknown length goes chunked", async () => {
  let received = "";
  let head = "";
  await using server = rawServer(async (conn, h, rest) => {
    head = h;
    let text = new TextDecoder().decode(rest);
    const buffer = new Uint8Array(4096);
    while (!text.endsWith("0\r\n\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    received = text;
    await send(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  });
  const client = new HttpClient({ idleTimeoutMs: 10_000 });
  async function* parts() {
    yield new TextEncoder().encode("hello ");
    yield new Uint8Array(0);
    yield new TextEncoder().encode("world");
  }
  try {
    const res = await client.request({
      url: server.url,
      method: "POST",
      target: "/",
      headers: { "content-length": "99" },
      body: parts(),
    });
    assertEquals(res.status, 200);
    await res.body.cancel();
  } finally {
    client.close();
  }
  assert(/transfer-encoding: chunked/i.test(head) && !/content-length/i.test(head), head);
  assertEquals(received, "6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n");
});

Deno.test("the SDK's stream body with a Content-Length goes as it is, not chunked", async () => {
  let head = "";
  let received = "";
  await using server = rawServer(async (conn, h, rest) => {
    head = h;
    received = new TextDecoder().decode(await readBody(conn, rest, 11));
    await send(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  });
  const client = new HttpClient({ idleTimeoutMs: 10_000 });
  try {
    const handler = new SdkHttpHandler(client);
    const { response } = await handler.handle({
      method: "PUT",
      protocol: "http:",
      hostname: "127.0.0.1",
      port: Number(server.url.port),
      path: "/bucket/a%3Ab",
      query: { partNumber: "1", uploadId: "x/y" },
      headers: { "content-length": "11", expect: "100-continue" },
      body: Readable.from([Buffer.from("hello "), Buffer.from("world")]),
    });
    assertEquals(response.statusCode, 200);
    assertEquals(await new Response(response.body).text(), "ok");
  } finally {
    client.close();
  }
  assert(head.startsWith("PUT /bucket/a%3Ab?partNumber=1&uploadId=x%2Fy HTTP/1.1"), head);
  assert(/content-length: 11/i.test(head), head);
  assert(!/transfer-encoding|expect/i.test(head), head);
  assertEquals(received, "hello world");
});
