/**
 * The program as a new user runs it: no --endpoint-url, AWS's own S3 host
 * names served over HTTPS by a local server with a private CA (given by
 * AWS_CA_BUNDLE), credentials from a profile file; directly and through a
 * CONNECT proxy while S3 is not reachable directly. The scenario
 * (tests/_aws_names_scenario.ts) runs in a private network and mount
 * namespace with its own /etc/hosts; a pid namespace ends every process it
 * started with it.
 */
import { assertEquals, assertStringIncludes } from "./_assert.ts";
import { REPO, tempDir } from "./_helpers.ts";
import { TEST_FLAGS } from "./_run_flags.ts";

const SCENARIO = `${REPO}tests/_aws_names_scenario.ts`;

Deno.test("no --endpoint-url: AWS host names over HTTPS, direct and through a CONNECT proxy", async () => {
  await using work = await tempDir("tablesnap-aws-names-");
  // Nothing of the caller's AWS set-up leaks in (keys, endpoints, profiles).
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("AWS_")),
  );
  const out = await new Deno.Command("unshare", {
    args: [
      ...(Deno.uid() === 0 ? [] : ["--map-root-user"]),
      "--net",
      "--mount",
      "--pid",
      "--fork",
      "--kill-child",
      "--mount-proc",
      Deno.execPath(),
      "run",
      ...TEST_FLAGS,
      SCENARIO,
    ],
    env: { ...env, NO_COLOR: "1", TABLESNAP_PRIVATE_NETNS_DIR: work.path },
    clearEnv: true,
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  const stdout = d.decode(out.stdout);
  assertEquals(out.code, 0, `${stdout}\n${d.decode(out.stderr)}`);
  for (const line of ["direct tablesnap-e2e: ok", "direct tablesnap.e2e.dotted: ok"]) {
    assertStringIncludes(stdout, line);
  }
  for (const line of ["proxy tablesnap-e2e: ok", "proxy tablesnap.e2e.dotted: ok"]) {
    assertStringIncludes(stdout, line);
  }
});
