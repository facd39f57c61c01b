/**
 * TABLESNAP_SYSLOG: lines reach a real syslog datagram socket (a small
 * Python listener stands in for syslogd) with facility DAEMON and tag
 * tablesnap; with no socket they stay on stderr, with a warning.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./_assert.ts";
import { runCli, tempDir, waitFor } from "./_helpers.ts";

const LISTENER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as out:
    print("ready", flush=True)
    while True:
        out.write(s.recv(65536) + b"\\n")
`;

Deno.test("TABLESNAP_SYSLOG sends lines to syslog as daemon.* tagged tablesnap", async () => {
  await using dir = await tempDir();
  await using store = await tempDir("tablesnap-store-");
  const socket = `${dir.path}/log.sock`;
  const received = `${dir.path}/received.txt`;
  const listener = new Deno.Command("python3", {
    args: ["-c", LISTENER, socket, received],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    const reader = listener.stdout.getReader();
    await reader.read(); // "ready"
    reader.releaseLock();
    await Deno.mkdir(`${dir.path}/data`);
    await Deno.writeTextFile(`${dir.path}/data/f1`, "x");
    const { code, stderr } = await runCli(
      ["-B", "--once", "-n", "h", `file://${store.path}`, `${dir.path}/data`],
      { env: { TABLESNAP_SYSLOG: "1", TABLESNAP_SYSLOG_SOCKET: socket } },
    );
    assertEquals(code, 0, stderr);
    assertEquals(stderr, "", "nothing on stderr when syslog works");
    const text = await waitFor("syslog lines", async () => {
      const t = await Deno.readTextFile(received).catch(() => "");
      return t.includes("tablesnap stopped") ? t : undefined;
    });
    // <30> = facility DAEMON (3) * 8 + severity INFO (6)
    assertMatch(text, /^<30>.*tablesnap(\[\d+\])?: uploaded key=h:.*\/data\/f1 bytes=1/m);
  } finally {
    listener.kill();
    await listener.status;
    await listener.stdout.cancel().catch(() => {});
  }
});

Deno.test("TABLESNAP_SYSLOG without a syslog socket keeps logging to stderr, with a warning", async () => {
  await using dir = await tempDir();
  await using store = await tempDir("tablesnap-store-");
  await Deno.writeTextFile(`${dir.path}/nb-1-big-Data.db`, "x");
  const { code, stderr } = await runCli(
    ["-B", "--once", "--index-wait", "0", "-n", "h", `file://${store.path}`, dir.path],
    { env: { TABLESNAP_SYSLOG: "1", TABLESNAP_SYSLOG_SOCKET: `${dir.path}/missing.sock` } },
  );
  assertEquals(code, 0, stderr);
  assertStringIncludes(stderr, "syslog socket is missing; logging to stderr");
  assertEquals(stderr.split("syslog socket is missing").length, 2, "warned once");
  assert(stderr.includes("uploaded key=h:"), stderr);
  // The other jobs read the same environment (TDEBUG too: verify's debug line).
  const verify = await runCli(
    ["verify", "-n", "h", `file://${store.path}`, dir.path],
    {
      env: {
        TABLESNAP_SYSLOG: "1",
        TABLESNAP_SYSLOG_SOCKET: `${dir.path}/missing.sock`,
        TDEBUG: "1",
      },
    },
  );
  assertEquals(verify.code, 0, verify.stderr);
  assertStringIncludes(verify.stderr, "syslog socket is missing; logging to stderr");
  assertStringIncludes(verify.stderr, "DEBUG index verified");
});

Deno.test("--log-format json writes one JSON object per line with numeric fields", async () => {
  await using dir = await tempDir();
  await using store = await tempDir("tablesnap-store-");
  await Deno.writeTextFile(`${dir.path}/f1`, "hello");
  const { code, stderr } = await runCli(
    ["-B", "--once", "--log-format", "json", "-n", "h", `file://${store.path}`, dir.path],
  );
  assertEquals(code, 0, stderr);
  const records = stderr.trim().split("\n").map((line) => JSON.parse(line));
  const uploaded = records.find((r) => r.message === "uploaded");
  assertEquals(uploaded.level, "info");
  assertEquals(uploaded.key, `h:${dir.path}/f1`);
  assertEquals(uploaded.bytes, 5);
  assertEquals(typeof uploaded.seconds, "number");
  assert(!Number.isNaN(Date.parse(uploaded.time)));
});
