/**
 * What every step of the benchmark shares: how tablesnap is started (with
 * the runtime flags of the binary, from deno.json's compile task), the
 * children's environment, the bench's naming, logging and small checks.
 */
import { walkTree } from "../lib/common/tree.ts";
import { runFlagsOf } from "../tests/_run_flags.ts";
import type { RunStats } from "./_proc.ts";
import { fmt } from "./_report.ts";
import type { Server } from "./_servers.ts";

export const BUCKET = "bench";
export const NAME = "bench";
export const MB = 1e6;

/** The program measured: main.ts and the repository it is in (`--main` moves both). */
let MAIN = new URL("../main.ts", import.meta.url).pathname;
let REPO = new URL("..", import.meta.url).pathname;
/** The flags the released binary is compiled with: tablesnap is measured as it ships. */
let RUN_FLAGS: string[] = [];

/** Points the bench at `main` (or the repository's own) and reads its runtime flags. */
export async function loadProgram(main: string | undefined): Promise<void> {
  if (main) {
    MAIN = await Deno.realPath(main);
    REPO = MAIN.replace(/\/[^/]*$/, "/");
  }
  const config = JSON.parse(await Deno.readTextFile(`${REPO}deno.json`));
  RUN_FLAGS = runFlagsOf(config.tasks.compile);
}

/** The entry point measured, the working directory of its runs, and its flags. */
export function program(): { main: string; repo: string; flags: string[] } {
  return { main: MAIN, repo: REPO, flags: RUN_FLAGS };
}

/** Environment of every child: credentials for the local server, no user config. */
export function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Deno.env.toObject();
  for (const name of Object.keys(env)) {
    if (name.startsWith("AWS_")) delete env[name];
  }
  return {
    ...env,
    AWS_ACCESS_KEY_ID: "S3RVER",
    AWS_SECRET_ACCESS_KEY: "S3RVER",
    AWS_REGION: "us-east-1",
    AWS_DEFAULT_REGION: "us-east-1",
    AWS_CONFIG_FILE: "/nonexistent/aws-config",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/aws-credentials",
    NO_COLOR: "1",
    ...extra,
  };
}

/** `tablesnap` (the watcher) with the bench's naming, `prefix` and the server's endpoint. */
export function tablesnapArgs(
  server: { endpoint: string },
  prefix: string,
  extra: string[] = [],
): string[] {
  return jobArgs("", server.endpoint, prefix, extra);
}

/** `tablesnap JOB` ("" for the watcher) with the bench's naming, prefix and endpoint. */
export function jobArgs(job: string, endpoint: string, prefix: string, extra: string[]): string[] {
  return ["run", ...RUN_FLAGS, MAIN, ...(job ? [job] : [])]
    .concat(["-n", NAME, "--prefix", prefix, "--endpoint-url", endpoint], extra);
}

/** The `aws` program itself (not a pyenv shim, whose start-up would be measured). */
export async function findAws(): Promise<string | undefined> {
  const run = async (cmd: string, args: string[]) => {
    try {
      const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
      return out.success ? new TextDecoder().decode(out.stdout).trim() : "";
    } catch {
      return "";
    }
  };
  const found = await run("sh", ["-c", "command -v aws"]);
  if (!found) return undefined;
  if (found.includes("/shims/")) return (await run("pyenv", ["which", "aws"])) || found;
  return found;
}

export async function commandOutput(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return text.trim().split("\n")[0] ?? "";
  } catch {
    return "";
  }
}

export function log(message: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
}

/** Counts the objects s3rver holds under a top-level prefix (walks its directory). */
export async function s3rverObjects(server: Server, prefix: string): Promise<number> {
  const top = `${server.dir}/${server.bucket}/${prefix.replace(/\/.*$/, "")}`;
  let count = 0;
  for await (const { files } of walkTree([top])) {
    count += files.filter((path) => path.endsWith("._S3rver_object")).length;
  }
  return count;
}

export function failIfBad(what: string, stats: RunStats): void {
  if (stats.code !== 0) {
    throw new Error(`${what} exited with ${stats.code}:\n${stats.tail.slice(-3000)}`);
  }
}

export function fmtBytes(n: number): string {
  if (n >= 1024 ** 3) return `${fmt(n / 1024 ** 3)} GiB`;
  if (n >= 1024 ** 2) return `${fmt(n / 1024 ** 2)} MiB`;
  return `${fmt(n / 1024)} KiB`;
}
