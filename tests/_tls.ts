/**
 * A private certificate authority made for one test server (openssl, EC
 * P-256: a few milliseconds), and a server certificate it signs for the
 * names the server answers to. The program is told to trust the CA the way
 * an operator would (`AWS_CA_BUNDLE`); the tests' own clients get it
 * through `caAgent`/`caFetchClient`.
 */
import * as https from "node:https";
import * as tls from "node:tls";

export interface TestTls {
  /** The CA's certificate (PEM file): what `AWS_CA_BUNDLE` points at. */
  caFile: string;
  /** The server's certificate (PEM file) and its private key. */
  certFile: string;
  keyFile: string;
  caPem: string;
}

/** The names every test server's certificate covers. */
export const LOOPBACK_NAMES = ["IP:127.0.0.1", "DNS:localhost"];

/**
 * AWS's S3 host names in us-east-1, for tests that map them to a local
 * server: path style (`s3.…`) and virtual-hosted style (`bucket.s3.…`).
 */
export const AWS_S3_NAMES = [
  "DNS:s3.amazonaws.com",
  "DNS:*.s3.amazonaws.com",
  "DNS:s3.us-east-1.amazonaws.com",
  "DNS:*.s3.us-east-1.amazonaws.com",
];

async function openssl(args: string[], cwd: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("openssl", {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error("openssl not found: install it with 'apt-get install -y openssl' (Debian)");
    }
    throw err;
  }
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/**
 * Makes a CA and a server certificate for `names` (openssl subjectAltName
 * entries, `IP:…`/`DNS:…`) in `dir`, which the caller owns and removes.
 */
export async function makeTestTls(dir: string, names = LOOPBACK_NAMES): Promise<TestTls> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await openssl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    `/CN=tablesnap test CA ${crypto.randomUUID()}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
  await Deno.writeTextFile(
    `${dir}/server.ext`,
    `subjectAltName=${names.join(",")}\nbasicConstraints=critical,CA:FALSE\n` +
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
  );
  await openssl(
    ["req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=tablesnap test"],
    dir,
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "server.ext",
    "-out",
    "server.pem",
  ], dir);
  return {
    caFile: `${dir}/ca.pem`,
    certFile: `${dir}/server.pem`,
    keyFile: `${dir}/server.key`,
    caPem: await Deno.readTextFile(`${dir}/ca.pem`),
  };
}

/** An `https.Agent` trusting the system roots and the test CA (for the tests' SDK clients). */
export function caAgent(caPem: string): https.Agent {
  return new https.Agent({ ca: [...tls.rootCertificates, caPem], keepAlive: true });
}

/** A `fetch` client trusting the test CA (in addition to the default roots). */
export function caFetchClient(caPem: string): Deno.HttpClient {
  return Deno.createHttpClient({ caCerts: [caPem] });
}

export interface TlsFront extends AsyncDisposable {
  port: number;
  stop(): Promise<void>;
}

/**
 * Serves TLS on 127.0.0.1:`port` (0: a free one) and relays each connection
 * to a plain server on 127.0.0.1:`targetPort`: HTTPS in front of s3rver,
 * whose own TLS mode (node:https under Deno) leaves some responses unsent.
 */
export function startTlsFront(targetPort: number, tls: TestTls, port = 0): Promise<TlsFront> {
  return Promise.all([Deno.readTextFile(tls.certFile), Deno.readTextFile(tls.keyFile)])
    .then(([cert, key]) => {
      const listener = Deno.listenTls({ hostname: "127.0.0.1", port, cert, key });
      const open = new Set<Deno.Conn>();
      const relays = new Set<Promise<void>>();
      const close = (conn: Deno.Conn) => {
        if (!open.delete(conn)) return;
        try {
          conn.close();
        } catch {
          // already closed
        }
      };
      const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
        const buffer = new Uint8Array(64 * 1024);
        try {
          for (;;) {
            const n = await from.read(buffer);
            if (n === null) break;
            let offset = 0;
            while (offset < n) offset += await to.write(buffer.subarray(offset, n));
          }
          await to.closeWrite().catch(() => {});
        } catch {
          close(from);
          close(to);
        }
      };
      const relay = async (client: Deno.TlsConn) => {
        open.add(client);
        let server: Deno.TcpConn;
        try {
          await client.handshake();
          server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
        } catch {
          close(client);
          return;
        }
        open.add(server);
        await Promise.all([pipe(client, server), pipe(server, client)]);
        close(client);
        close(server);
      };
      const accepting = (async () => {
        for await (const client of listener) {
          const p = relay(client);
          relays.add(p);
          p.finally(() => relays.delete(p));
        }
      })().catch(() => {});
      let stopped = false;
      const stop = async () => {
        if (stopped) return;
        stopped = true;
        listener.close();
        await accepting;
        for (const conn of [...open]) close(conn);
        await Promise.all([...relays]);
      };
      return {
        port: (listener.addr as Deno.NetAddr).port,
        stop,
        [Symbol.asyncDispose]: stop,
      };
    });
}
