/**
 * The AWS SDK's request handler (a smithy `HttpHandler`) over our one
 * transport: the SDK builds and signs its requests as always, and they go
 * out through the same connections, trust, proxy and timeouts as ours.
 * Given to the S3 client as `requestHandler`; nested clients (STS, for web
 * identity credentials) inherit it.
 */
import { Buffer } from "node:buffer";
import type { HttpClient, RequestBody } from "./http_client.ts";

/** The parts of the SDK's `HttpRequest` a handler reads. */
export interface SdkHttpRequest {
  method: string;
  protocol: string;
  hostname: string;
  port?: number | undefined;
  path: string;
  query?: Record<string, string | string[] | null | undefined> | undefined;
  headers: Record<string, string>;
  body?: unknown;
}

export interface SdkHttpResponse {
  statusCode: number;
  headers: Record<string, string>;
  body: ReadableStream<Uint8Array>;
}

export class SdkHttpHandler {
  readonly metadata = { handlerProtocol: "http/1.1" };
  readonly #client: HttpClient;

  constructor(client: HttpClient) {
    this.#client = client;
  }

  async handle(
    request: SdkHttpRequest,
    options: { abortSignal?: AbortSignal | { aborted: boolean } | undefined } = {},
  ): Promise<{ response: SdkHttpResponse }> {
    const protocol = request.protocol.endsWith(":") ? request.protocol : `${request.protocol}:`;
    const host = request.hostname.includes(":") && !request.hostname.startsWith("[")
      ? `[${request.hostname}]`
      : request.hostname;
    const url = new URL(`${protocol}//${host}${request.port ? `:${request.port}` : ""}`);
    const query = queryString(request.query ?? {});
    const signal = options.abortSignal instanceof AbortSignal ? options.abortSignal : undefined;
    const res = await this.#client.request({
      url,
      method: request.method,
      target: `${request.path || "/"}${query ? `?${query}` : ""}`,
      headers: request.headers,
      body: requestBody(request.body, contentLength(request.headers)),
      signal,
    });
    return {
      response: {
        statusCode: res.status,
        headers: Object.fromEntries(res.headers),
        body: res.body,
      },
    };
  }

  updateHttpClientConfig(): void {}

  httpHandlerConfigs(): Record<string, never> {
    return {};
  }

  /** The transport belongs to the store, which closes it. */
  destroy(): void {}
}

/** The SDK's query encoding: RFC 3986, a key without value bare, arrays repeated. */
function queryString(query: Record<string, string | string[] | null | undefined>): string {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(query)) {
    const key = escapeUri(name);
    if (Array.isArray(value)) { for (const v of value) parts.push(`${key}=${escapeUri(v)}`); }
    else parts.push(typeof value === "string" ? `${key}=${escapeUri(value)}` : key);
  }
  return parts.join("&");
}

export function escapeUri(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** The Content-Length the SDK set, if any. */
function contentLength(headers: Record<string, string>): number | undefined {
  const entry = Object.entries(headers).find(([name]) => name.toLowerCase() === "content-length");
  return entry && /^\d+$/.test(entry[1]) ? Number(entry[1]) : undefined;
}

/**
 * What the SDK gives as a body, as the transport takes it: a stream with a
 * Content-Length is sent as it is (S3 refuses chunked uploads), one
 * without goes chunked.
 */
function requestBody(body: unknown, length: number | undefined): RequestBody | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === "string") return new TextEncoder().encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) {
    return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  }
  if (typeof (body as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function") {
    const chunks = bytesOf(body as AsyncIterable<unknown>);
    return length === undefined ? chunks : { chunks, length };
  }
  throw new Error(`An SDK request body of an unknown kind (${typeof body})`);
}

async function* bytesOf(stream: AsyncIterable<unknown>): AsyncIterable<Uint8Array> {
  for await (const chunk of stream) {
    if (typeof chunk === "string") yield Buffer.from(chunk);
    else if (chunk instanceof Uint8Array) yield chunk;
    else throw new Error("An SDK request body stream yielded a non-byte chunk");
  }
}
