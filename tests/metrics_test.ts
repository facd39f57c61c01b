/**
 * lib/watch/metrics.ts: the text exposition format (parsed by a strict reader
 * written from the format's rules), the scrape-time age from an injected
 * clock, the failure classification, and /metrics + /healthz over real HTTP.
 */
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { FatalError, UsageError } from "../lib/common/errors.ts";
import { log } from "../lib/common/log.ts";
import { VERSION } from "../lib/common/version.ts";
import { failureReason } from "../lib/store/failure.ts";
import { Metrics } from "../lib/watch/metrics/metrics.ts";
import { serveMetrics } from "../lib/watch/metrics/metrics_server.ts";
import { promtool } from "./_helpers.ts";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/**
 * Parses the Prometheus text format 0.0.4 and throws on anything the format
 * does not allow: unknown escapes, samples before their TYPE, a family given
 * twice, a counter not ending in _total, a histogram without +Inf, _sum or
 * _count, or with buckets that are not cumulative or whose +Inf is not _count.
 */
function parseExposition(text: string): Map<string, Family> {
  assert(text.endsWith("\n"), "output must end with a newline");
  const families = new Map<string, Family>();
  let current: Family | undefined;
  const lines = text.slice(0, -1).split("\n");
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    if (line.startsWith("# HELP ") || line.startsWith("# TYPE ")) {
      const [, kind, name, rest] = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line) ?? [];
      assert(name && NAME.test(name) && rest !== undefined, `bad comment ${where}`);
      if (!current || current.name !== name) {
        assert(!families.has(name), `family ${name} given twice, ${where}`);
        current = { name, type: "untyped", help: "", samples: [] };
        families.set(name, current);
      }
      if (kind === "HELP") {
        assert(/^(?:[^\\]|\\[\\n])*$/.test(rest), `bad escape in HELP ${where}`);
        current.help = rest.replace(/\\(.)/g, (_, c) => c === "n" ? "\n" : c);
      } else {
        assert(TYPES.has(rest), `bad type ${where}`);
        assertEquals(current.samples.length, 0, `TYPE after samples, ${where}`);
        current.type = rest;
      }
      continue;
    }
    assert(line !== "" && !line.startsWith("#"), `unexpected ${where}`);
    const sample = parseSample(line, where);
    assert(current, `sample before any HELP/TYPE, ${where}`);
    const suffixes = current.type === "histogram" ? ["_bucket", "_sum", "_count"] : [""];
    assert(
      suffixes.some((s) => sample.name === current!.name + s),
      `sample ${sample.name} outside its family ${current.name}, ${where}`,
    );
    current.samples.push(sample);
  }
  for (const family of families.values()) {
    assert(family.help !== "", `${family.name} has no HELP`);
    if (family.type === "counter") {
      assert(family.name.endsWith("_total"), `counter ${family.name} must end in _total`);
      for (const s of family.samples) assert(s.value >= 0, `negative counter ${family.name}`);
    }
    if (family.type === "histogram") checkHistogram(family);
  }
  return families;
}

function parseSample(line: string, where: string): Sample {
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  assert(nameMatch, `bad metric name ${where}`);
  const name = nameMatch[0];
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith("{")) {
    rest = rest.slice(1);
    while (!rest.startsWith("}")) {
      const pair = /^([^=]*)="((?:[^"\\]|\\[\\"n])*)"(,?)/.exec(rest);
      assert(pair, `bad label syntax ${where}`);
      const [whole, labelName = "", raw = "", comma] = pair;
      assert(LABEL_NAME.test(labelName), `bad label name ${where}`);
      assert(!(labelName in labels), `repeated label ${where}`);
      labels[labelName] = raw.replace(/\\(.)/g, (_, c) => c === "n" ? "\n" : c);
      rest = rest.slice(whole.length);
      assert(comma === "," || rest.startsWith("}"), `missing comma ${where}`);
    }
    rest = rest.slice(1);
  }
  const valueMatch = /^ (\S+)$/.exec(rest);
  assert(valueMatch?.[1], `bad value ${where}`);
  const text = valueMatch[1];
  const value = text === "+Inf" ? Infinity : text === "-Inf" ? -Infinity : Number(text);
  assert(text === "NaN" || !Number.isNaN(value), `value is not a float ${where}`);
  return { name, labels, value };
}

function checkHistogram(family: Family): void {
  const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const s of family.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(rest);
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (s.name.endsWith("_bucket")) {
      assert(le !== undefined, `${s.name} without le`);
      entry.buckets.push([le === "+Inf" ? Infinity : Number(le), s.value]);
    } else if (s.name.endsWith("_sum")) entry.sum = s.value;
    else entry.count = s.value;
  }
  for (const [key, { buckets, sum, count }] of series) {
    const what = `${family.name}${key}`;
    assert(sum !== undefined && count !== undefined, `${what} lacks _sum or _count`);
    assert(buckets.length > 0 && buckets.at(-1)![0] === Infinity, `${what} lacks +Inf last`);
    for (let i = 1; i < buckets.length; i++) {
      assert(buckets[i]![0] > buckets[i - 1]![0], `${what} buckets out of order`);
      assert(buckets[i]![1] >= buckets[i - 1]![1], `${what} buckets not cumulative`);
    }
    assertEquals(buckets.at(-1)![1], count, `${what}: +Inf bucket must equal _count`);
  }
}

function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}) {
  const familyName = name.replace(/_(bucket|sum|count)$/, "");
  const family = families.get(name) ?? families.get(familyName);
  assert(family, `no family for ${name}`);
  const found = family.samples.find((s) =>
    s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels)
  );
  assert(found, `no sample ${name} ${JSON.stringify(labels)}`);
  return found.value;
}

Deno.test("render() writes valid exposition format with every metric", () => {
  let now = 1_700_000_000_000;
  const metrics = new Metrics({ now: () => now });
  metrics.fileUploaded("/data", 100, 0.2);
  now += 1000;
  metrics.fileUploaded("/data", 50, 2);
  metrics.uploadFailed("network");
  metrics.uploadRetried("throttled");
  metrics.uploadRetried("throttled");
  metrics.indexWritten("/data");
  metrics.s3Request("PutObject", 0.03, false);
  metrics.s3Request("PutObject", 7, true);
  metrics.s3Request("HeadObject", 0.001, false);
  const since = now - 5000;
  metrics.pendingFrom(() => ({ files: 3, bytes: 4096, oldestSince: since }));

  const families = parseExposition(metrics.render());
  assertEquals(value(families, "tablesnap_uploaded_files_total"), 2);
  assertEquals(value(families, "tablesnap_uploaded_bytes_total"), 150);
  assertEquals(value(families, "tablesnap_upload_failures_total", { reason: "network" }), 1);
  assertEquals(value(families, "tablesnap_upload_failures_total", { reason: "other" }), 0);
  assertEquals(value(families, "tablesnap_upload_retries_total", { reason: "throttled" }), 2);
  assertEquals(value(families, "tablesnap_pending_files"), 3);
  assertEquals(value(families, "tablesnap_pending_bytes"), 4096);
  assertEquals(value(families, "tablesnap_oldest_pending_age_seconds"), 5);
  assertEquals(
    value(families, "tablesnap_last_upload_timestamp_seconds", { path: "/data" }),
    1_700_000_001,
  );
  assertEquals(
    value(families, "tablesnap_last_index_timestamp_seconds", { path: "/data" }),
    1_700_000_001,
  );
  const put = { operation: "PutObject" };
  assertEquals(value(families, "tablesnap_s3_request_duration_seconds_count", put), 2);
  assertEquals(value(families, "tablesnap_s3_request_duration_seconds_sum", put), 7.03);
  assertEquals(
    value(families, "tablesnap_s3_request_duration_seconds_bucket", { ...put, le: "0.05" }),
    1,
  );
  assertEquals(
    value(families, "tablesnap_s3_request_duration_seconds_bucket", { ...put, le: "10" }),
    2,
  );
  assertEquals(value(families, "tablesnap_s3_request_failures_total", put), 1);
  assertEquals(value(families, "tablesnap_upload_duration_seconds_count"), 2);
  assert(value(families, "tablesnap_process_resident_memory_bytes") > 1_000_000);
  assertEquals(value(families, "tablesnap_process_start_time_seconds"), 1_700_000_000);
  assertEquals(value(families, "tablesnap_build_info", { version: VERSION }), 1);
  assertEquals(families.get("tablesnap_s3_request_duration_seconds")?.type, "histogram");
  assertEquals(families.get("tablesnap_pending_files")?.type, "gauge");
  assertEquals(families.get("tablesnap_uploaded_files_total")?.type, "counter");
});

Deno.test("render() escapes backslash, double quote and newline in label values", () => {
  const metrics = new Metrics();
  const path = 'C:\\data\\"quoted"\nnext line';
  metrics.fileUploaded(path, 1, 0.1);
  metrics.s3Request('Put"Object\\\n', 0.1, false);
  const text = metrics.render();
  assert(
    text.includes('{path="C:\\\\data\\\\\\"quoted\\"\\nnext line"}'),
    "label value escaped on one line",
  );
  const families = parseExposition(text);
  assert(value(families, "tablesnap_last_upload_timestamp_seconds", { path }) > 0);
  assertEquals(
    value(families, "tablesnap_s3_request_duration_seconds_count", {
      operation: 'Put"Object\\\n',
    }),
    1,
  );
});

function throwsOn(text: string): boolean {
  try {
    parseExposition(text);
    return false;
  } catch {
    return true;
  }
}

Deno.test("the exposition parser rejects what the format forbids", () => {
  const bad = [
    '# HELP x_total h\n# TYPE x_total counter\nx_total{a="b\\t"} 1\n', // unknown escape
    'x_total{a="b"} 1\n', // no HELP and TYPE
    "# HELP x h\n# TYPE x gauge\nx 1", // no final newline
    "# HELP x h\n# TYPE x counter\nx 1\n", // counter without _total
    "# HELP x h\n# TYPE x gauge\nx one\n",
    '# HELP x h\n# TYPE x gauge\nx{a="1" b="2"} 1\n',
    '# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    '# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 2\n',
    '# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
  ];
  for (const text of bad) {
    assert(throwsOn(text), `parser accepted ${JSON.stringify(text)}`);
  }
  parseExposition('# HELP x a\\\\b\\n\n# TYPE x gauge\nx{a="\\"",b="\\\\"} +Inf\n');
});

/** promtool (Debian package `prometheus`; .ci/run installs it) lints the format too. */
Deno.test("render() passes promtool check metrics", async () => {
  const metrics = new Metrics();
  metrics.fileUploaded("/data", 1, 0.1);
  metrics.indexWritten("/data");
  metrics.s3Request("PutObject", 0.1, true);
  const since = Date.now() - 1000;
  metrics.pendingFrom(() => ({ files: 1, bytes: 1, oldestSince: since }));
  const { code, output } = await promtool(["check", "metrics"], metrics.render());
  assertEquals(code, 0, output);
  assertEquals(output.trim(), "");
});

Deno.test("oldest pending age is computed from the clock at scrape time", () => {
  let now = 1_000_000;
  const metrics = new Metrics({ now: () => now });
  const age = () =>
    value(parseExposition(metrics.render()), "tablesnap_oldest_pending_age_seconds");
  assertEquals(age(), 0);
  const since = now - 2500; // fixed when the file became complete
  metrics.pendingFrom(() => ({ files: 1, bytes: 10, oldestSince: since }));
  assertEquals(age(), 2.5);
  now += 60_000; // nothing calls in: the age still grows
  assertEquals(age(), 62.5);
  metrics.pendingFrom(() => ({ files: 0, bytes: 0, oldestSince: null }));
  assertEquals(age(), 0);
  const future = now + 5000; // a clock step backwards never gives a negative age
  metrics.pendingFrom(() => ({ files: 1, bytes: 10, oldestSince: future }));
  assertEquals(age(), 0);
});

Deno.test("healthy() needs both watching and S3 reachable", () => {
  const metrics = new Metrics();
  assertEquals(metrics.healthy(), false);
  metrics.setWatching(true);
  assertEquals(metrics.healthy(), false);
  metrics.setS3Reachable(true);
  assertEquals(metrics.healthy(), true);
  assertEquals(value(parseExposition(metrics.render()), "tablesnap_healthy"), 1);
  metrics.setS3Reachable(false);
  assertEquals(metrics.healthy(), false);
  assertEquals(value(parseExposition(metrics.render()), "tablesnap_healthy"), 0);
});

function sdkError(name: string, status?: number, extra: Record<string, unknown> = {}) {
  return Object.assign(new Error(`${name} happened`), {
    name,
    $metadata: status === undefined ? {} : { httpStatusCode: status },
    ...extra,
  });
}

Deno.test("failureReason() classifies SDK, network and local errors", () => {
  const cases: [unknown, string][] = [
    [
      Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }),
      "network",
    ],
    [Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }), "network"],
    [Object.assign(new Error("getaddrinfo"), { code: "ENOTFOUND" }), "network"],
    [sdkError("TimeoutError"), "network"],
    [new Deno.errors.ConnectionRefused("refused"), "network"],
    [new Deno.errors.TimedOut("timed out"), "network"],
    [
      new Error("wrapped", { cause: Object.assign(new Error("x"), { code: "ETIMEDOUT" }) }),
      "network",
    ],
    [sdkError("SlowDown", 503), "throttled"],
    [sdkError("ServiceUnavailable", 503), "throttled"],
    [sdkError("Unknown", 503), "throttled"],
    [sdkError("TooManyRequests", 429), "throttled"],
    [sdkError("InternalError", 500), "server_error"],
    [sdkError("Unknown", 502), "server_error"],
    [sdkError("AccessDenied", 403), "access_denied"],
    [sdkError("InvalidAccessKeyId", 403), "access_denied"],
    [sdkError("SignatureDoesNotMatch", 403), "access_denied"],
    [sdkError("Unknown", 403), "access_denied"],
    [sdkError("CredentialsProviderError"), "access_denied"],
    [sdkError("BadDigest", 400), "changed"],
    [sdkError("FileChangedError"), "changed"],
    [sdkError("DigestMismatchError"), "changed"],
    [sdkError("NoSuchKey", 404), "other"],
    [new Error("boom"), "other"],
    ["a string", "other"],
    [null, "other"],
  ];
  for (const [err, reason] of cases) {
    assertEquals(failureReason(err), reason, `for ${String((err as Error)?.name ?? err)}`);
  }
  const loop: Error & { cause?: unknown } = new Error("self");
  loop.cause = loop;
  assertEquals(failureReason(loop), "other");
});

async function quiet<T>(fn: () => Promise<T>): Promise<T> {
  // serveMetrics logs its address; keep test output clean.
  const info = log.info;
  log.info = () => {};
  try {
    return await fn();
  } finally {
    log.info = info;
  }
}

Deno.test("serveMetrics() serves /metrics and /healthz over HTTP", async () => {
  await quiet(async () => {
    const metrics = new Metrics();
    metrics.fileUploaded("/data", 10, 0.1);
    const server = serveMetrics(metrics, "127.0.0.1:0");
    try {
      assert(server.port > 0);
      const base = `http://127.0.0.1:${server.port}`;
      const res = await fetch(`${base}/metrics`);
      assertEquals(res.status, 200);
      assertEquals(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
      const families = parseExposition(await res.text());
      assertEquals(value(families, "tablesnap_uploaded_files_total"), 1);

      const sick = await fetch(`${base}/healthz`);
      assertEquals(sick.status, 503);
      await sick.body?.cancel();
      metrics.setWatching(true);
      metrics.setS3Reachable(true);
      const well = await fetch(`${base}/healthz`);
      assertEquals(well.status, 200);
      assertEquals(await well.text(), "ok\n");
      metrics.setS3Reachable(false);
      const down = await fetch(`${base}/healthz`);
      assertEquals(down.status, 503);
      await down.body?.cancel();

      const missing = await fetch(`${base}/`);
      assertEquals(missing.status, 404);
      await missing.body?.cancel();
      const post = await fetch(`${base}/metrics`, { method: "POST" });
      assertEquals(post.status, 405);
      await post.body?.cancel();
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("serveMetrics() listens on [::1] and on :PORT", async () => {
  await quiet(async () => {
    for (const [listen, url] of [["[::1]:0", "http://[::1]"], [":0", "http://127.0.0.1"]]) {
      let server: { port: number; shutdown(): Promise<void> };
      try {
        server = serveMetrics(new Metrics(), listen!);
      } catch (err) {
        // A host without IPv6 cannot bind ::1; that is the host, not us.
        if (listen!.startsWith("[") && err instanceof FatalError) continue;
        throw err;
      }
      try {
        const res = await fetch(`${url}:${server.port}/metrics`);
        assertEquals(res.status, 200);
        await res.body?.cancel();
      } finally {
        await server.shutdown();
      }
    }
  });
});

Deno.test("serveMetrics() rejects malformed listen values with a UsageError", () => {
  for (
    const bad of [
      "",
      "9108",
      "127.0.0.1",
      "127.0.0.1:",
      "host:port",
      ":65536",
      "::1:9108",
      "[::1]9108",
      "a b:1",
      "127.0.0.1:-1",
    ]
  ) {
    assertThrows(() => serveMetrics(new Metrics(), bad), UsageError, "--metrics-listen");
  }
});

Deno.test("serveMetrics() reports an address in use as a one-line error", async () => {
  await quiet(async () => {
    const first = serveMetrics(new Metrics(), "127.0.0.1:0");
    try {
      assertThrows(
        () => serveMetrics(new Metrics(), `127.0.0.1:${first.port}`),
        Error,
        `Cannot listen on '127.0.0.1:${first.port}' for metrics`,
      );
    } finally {
      await first.shutdown();
    }
  });
});
