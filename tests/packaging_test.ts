/**
 * packaging/: the systemd unit passes `systemd-analyze verify` (a hard
 * requirement: without systemd-analyze this fails, it does not skip; .ci/run
 * installs Debian's `systemd` package), keeps the settings operators rely on,
 * and /etc/default/tablesnap's example options are ones the CLI knows.
 */
import { assert, assertEquals, assertStringIncludes } from "./_assert.ts";
import { REPO, runCli, tempDir } from "./_helpers.ts";

const UNIT = `${REPO}packaging/tablesnap.service`;
const DEFAULTS = `${REPO}packaging/tablesnap.default`;
const INSTALLED_PATH = "/usr/local/bin/tablesnap";

interface VerifyResult {
  code: number;
  output: string;
}

/**
 * Runs `systemd-analyze verify` on `unitText` as tablesnap.service. The only
 * change made: the binary's install path, which does not exist here, is
 * replaced by a stand-in executable (verify checks that ExecStart is one).
 */
async function verifyUnit(unitText: string): Promise<VerifyResult> {
  await using dir = await tempDir("tablesnap-unit-");
  const standIn = `${dir.path}/tablesnap`;
  await Deno.writeTextFile(standIn, "#!/bin/sh\nexit 0\n");
  await Deno.chmod(standIn, 0o755);
  assertStringIncludes(unitText, `ExecStart=${INSTALLED_PATH} `);
  const unitPath = `${dir.path}/tablesnap.service`;
  await Deno.writeTextFile(unitPath, unitText.replaceAll(INSTALLED_PATH, standIn));
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("systemd-analyze", {
      args: ["verify", "--man=no", unitPath],
      env: { SYSTEMD_LOG_COLOR: "0", SYSTEMD_PAGER: "" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(
        "systemd-analyze not found: install it with " +
          "'apt-get update && apt-get install -y systemd' (Debian)",
      );
    }
    throw err;
  }
  const decoder = new TextDecoder();
  return { code: out.code, output: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

/** `Key=value` settings of the unit, by section; repeated keys keep every value. */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const eq = line.indexOf("=");
    assert(current && eq > 0, `unexpected line ${JSON.stringify(line)}`);
    const key = line.slice(0, eq);
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}

Deno.test("tablesnap.service passes systemd-analyze verify", async () => {
  const result = await verifyUnit(await Deno.readTextFile(UNIT));
  // Unknown keys and bad values are warnings with exit code 0: any output fails.
  assertEquals(result.output.trim(), "", `systemd-analyze verify reported:\n${result.output}`);
  assertEquals(result.code, 0, result.output);
});

Deno.test("systemd-analyze verify catches a misspelled directive or a bad value", async () => {
  const unit = await Deno.readTextFile(UNIT);
  const broken = [
    unit.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
    unit.replace("Restart=on-failure", "Restart=on-failur"),
    unit.replace("ProtectSystem=strict", "ProtectSystem=strictly"),
  ];
  for (const text of broken) {
    assert(text !== unit, "the mutation must change the unit");
    const result = await verifyUnit(text);
    assert(result.output.trim() !== "" || result.code !== 0, "verify did not notice");
  }
});

Deno.test("tablesnap.service keeps the settings operators rely on", async () => {
  const unit = parseUnit(await Deno.readTextFile(UNIT));
  const service = unit.get("Service");
  assert(service, "no [Service] section");
  const one = (key: string) => {
    const values = service.get(key);
    assertEquals(values?.length, 1, `${key} must be set once`);
    return values![0]!;
  };
  assertEquals(one("ExecStart"), `${INSTALLED_PATH} $DAEMON_OPTS`);
  assertEquals(one("EnvironmentFile"), "/etc/default/tablesnap");
  assertEquals(one("User"), "cassandra");
  assertEquals(one("Restart"), "on-failure");
  assertEquals(one("KillSignal"), "SIGTERM");
  assertEquals(one("NoNewPrivileges"), "yes");
  assertEquals(one("ProtectSystem"), "strict");
  assertEquals(one("ReadOnlyPaths"), "/var/lib/cassandra");
  assertEquals(one("PrivateTmp"), "yes");
  // The only writable place besides /tmp: --state-dir in tablesnap.default points there.
  assertEquals(one("StateDirectory"), "tablesnap");
  assertEquals(one("ProtectHome"), "yes");
  assertEquals(unit.get("Install")?.get("WantedBy"), ["multi-user.target"]);

  // systemd must wait longer than the watcher's drain before SIGKILL.
  const help = await runCli(["--help"]);
  assertEquals(help.code, 0, help.stderr);
  const grace = /--shutdown-grace SEC.*\(default (\d+)\)/.exec(help.stdout);
  assert(grace, "--help does not state the --shutdown-grace default");
  const timeout = Number(one("TimeoutStopSec"));
  assert(timeout > Number(grace[1]) + 10, `TimeoutStopSec=${timeout} vs grace ${grace[1]} s`);
});

Deno.test("tablesnap.default sets DAEMON_OPTS with options the CLI knows", async () => {
  // For a file this simple, a shell reads it as systemd does (unbraced $X splits on spaces).
  const out = await new Deno.Command("bash", {
    args: ["-c", `set -a; . "$1"; printf '%s\\n' $DAEMON_OPTS`, "bash", DEFAULTS],
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  const words = new TextDecoder().decode(out.stdout).trim().split("\n");
  assertEquals(words.slice(-2), ["my-bucket", "/var/lib/cassandra/data"]);
  const help = await runCli(["--help"]);
  for (const word of words.filter((w) => w.startsWith("-"))) {
    const pattern = word.startsWith("--") ? `${word} ` : `${word},`;
    assertStringIncludes(help.stdout, pattern, `--help does not know ${word}`);
  }
  assert(words.includes("--metrics-listen"), "the example enables metrics");
  // The unit's StateDirectory=tablesnap.
  assertEquals(words[words.indexOf("--state-dir") + 1], "/var/lib/tablesnap");
});
