/**
 * The AWS SDK's S3 client as the store uses it: its requests go out through
 * our transport (sdk_handler.ts), in the bucket's current region (followed
 * after a redirect, bucket_region.ts), counted by the store's request
 * metrics, its warnings in our log format.
 */
import { S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import { VERSION } from "../../common/version.ts";
import { type BucketRegion, temporaryRedirectHost } from "./bucket_region.ts";
import { renewalOf, rereadableChain } from "./credential_renewal.ts";
import { ATTEMPTS, SdkRetryStrategy } from "./request_retry.ts";
import type { S3Options } from "./s3_options.ts";
import type { HttpClient } from "./transport/http_client.ts";
import { SdkHttpHandler } from "./transport/sdk_handler.ts";

/**
 * The user agent, computed once per client: the SDK's default builds it for
 * every request and asks the OS for its release each time (about 40 us per
 * request in Deno, measurable with many small files).
 */
function userAgent(): [string, string?][] {
  return [
    ["tablesnap", VERSION],
    ["ua", "2.1"],
    [`os/${Deno.build.os}`, Deno.osRelease()],
    ["lang/js"],
    ["md/deno", Deno.version.deno],
  ];
}

/** Where a 307's Location sends the next try of a command (set per command). */
const REDIRECT_HOST = "tablesnapRedirectHost";

export function createSdkClient(
  options: S3Options,
  http: HttpClient,
  region: BucketRegion,
): S3Client {
  const agent = userAgent();
  const config: S3ClientConfig = {
    region: () => Promise.resolve(region.current),
    // Strict servers (Ceph RGW answers 411 MissingContentLength) and many
    // S3-compatible ones reject the SDK's default CRC32 trailers in an
    // aws-chunked body; we send Content-MD5 ourselves instead.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    maxAttempts: ATTEMPTS,
    retryStrategy: new SdkRetryStrategy(),
    defaultUserAgentProvider: () => Promise.resolve(agent),
    requestHandler: new SdkHttpHandler(http),
    forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
    // The SDK would print some warnings with console.warn, breaking our
    // one-line log format: route them to debug logs instead.
    logger: {
      trace: () => {},
      debug: () => {},
      info: () => {},
      warn: (...args: unknown[]) => log.debug("aws-sdk warning", { message: sdkText(args) }),
      error: (...args: unknown[]) => log.debug("aws-sdk error", { message: sdkText(args) }),
    },
  };
  if (options.endpoint) config.endpoint = options.endpoint;
  if (options.accessKeyId && options.secretAccessKey) {
    config.credentials = {
      accessKeyId: options.accessKeyId,
      secretAccessKey: options.secretAccessKey,
      ...(options.sessionToken ? { sessionToken: options.sessionToken } : {}),
    };
  } else {
    // The default chain, with its files read again when keys are refused.
    config.credentialDefaultProvider = rereadableChain;
  }
  const client = new S3Client(config);
  addMiddleware(client, options, region);
  return client;
}

/** Request metrics, redirects followed, and no logging middleware. */
function addMiddleware(client: S3Client, options: S3Options, region: BucketRegion): void {
  const stack = client.middlewareStack;
  stack.add(
    (next, context) => async (args) => {
      const operation = String(context.commandName ?? "unknown").replace(/Command$/, "");
      const started = performance.now();
      let failed = false;
      try {
        return await next(args);
      } catch (err) {
        failed = true;
        throw err;
      } finally {
        options.onRequest?.(operation, (performance.now() - started) / 1000, failed);
      }
    },
    { step: "initialize", name: "tablesnapRequestCounter" },
  );
  // Refused keys: the command once more with keys read anew (credential_renewal.ts).
  const renewal = renewalOf(client);
  stack.add(
    (next) => async (args) => {
      const signedWith = await renewal.current();
      try {
        return await next(args);
      } catch (err) {
        if (!await renewal.renewed(err, signedWith)) throw err;
        return await next(args);
      }
    },
    { step: "initialize", name: "tablesnapCredentialRenewal", priority: "low" },
  );
  // A redirect: the command once more, in the bucket's region or at the 307's host.
  stack.add(
    (next, context) => async (args) => {
      try {
        return await next(args);
      } catch (err) {
        if (region.follow(err)) return await next(args);
        const host = temporaryRedirectHost(err);
        if (host === undefined) throw err;
        (context as Record<string, unknown>)[REDIRECT_HOST] = host;
        return await next(args);
      }
    },
    { step: "initialize", name: "tablesnapRedirects", priority: "low" },
  );
  stack.add(
    (next, context) => (args) => {
      const host = (context as Record<string, unknown>)[REDIRECT_HOST];
      const request = args.request as { hostname?: string; headers?: Record<string, string> };
      if (typeof host === "string" && request.headers) {
        request.hostname = new URL(`http://${host}`).hostname;
        request.headers["host"] = host;
      }
      return next(args);
    },
    { step: "build", name: "tablesnapRedirectHost", priority: "low" },
  );
  // Its only job would be an info() call with a filtered copy of every
  // request and response, which we discard anyway.
  stack.remove("loggerMiddleware");
}

function sdkText(args: unknown[]): string {
  return args.map((a) => typeof a === "string" ? a : errorMessage(a)).join(" ");
}
