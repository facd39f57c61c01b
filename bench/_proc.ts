/**
 * Child processes with their cost measured: wall time, CPU seconds of the
 * whole process tree and peak resident memory.
 *
 * With GNU time at `/usr/bin/time` the figures come from the kernel's
 * rusage of the child (exact). Without it (a fresh CI machine) they come
 * from `/proc`: the peak RSS is the highest `VmHWM` seen while polling the
 * child and its descendants every 100 ms (a spike in the last 100 ms can be
 * missed), and CPU seconds are the growth of this process's
 * `cutime + cstime` (children reaped while it ran). Both need Linux.
 *
 * Deno refuses to read `/proc` without `--allow-all`, and the `bench` task
 * runs with named permissions: `/proc` files are read by a `cat` child.
 * Requires `--allow-run`.
 */

/** Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux). */
const TICKS = 100;
/** Bytes in the bench's MB (10^6, as its report says): rusage and VmHWM count KiB. */
const BYTES_PER_MB = 1e6;

/** A peak in KiB (rusage's `%M`, `/proc`'s VmHWM) in the report's MB. */
function kibToMB(kib: number): number {
  return (kib * 1024) / BYTES_PER_MB;
}

export interface RunStats {
  code: number;
  wallS: number;
  cpuS: number;
  /** Peak resident memory in MB (10^6 bytes), as the report prints it. */
  peakRssMB: number;
  /** The last few KB of the child's stderr and stdout, for error reports. */
  tail: string;
}

export interface RunOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Measure through `/proc` even when GNU time is installed. */
  forceProc?: boolean;
}

let gnuTime: boolean | undefined;

/** True when `/usr/bin/time` is GNU time (understands `-f` and `-o`). */
export async function hasGnuTime(): Promise<boolean> {
  if (gnuTime !== undefined) return gnuTime;
  try {
    const out = await new Deno.Command("/usr/bin/time", {
      args: ["-f", "%M", "true"],
      stdout: "null",
      stderr: "piped",
    }).output();
    gnuTime = out.success && /^\d+\s*$/.test(new TextDecoder().decode(out.stderr));
  } catch {
    gnuTime = false;
  }
  return gnuTime;
}

/** Runs `cmd` to completion and measures it. */
export async function measure(cmd: string, args: string[], options: RunOptions = {}) {
  const useTime = !options.forceProc && await hasGnuTime();
  const statsFile = useTime ? await Deno.makeTempFile({ prefix: "bench-time-" }) : "";
  const [program, argv] = useTime
    ? ["/usr/bin/time", ["-f", "%e %U %S %M", "-o", statsFile, cmd, ...args]]
    : [cmd, args];
  const cpuBefore = useTime ? 0 : await childrenCpu();
  const started = performance.now();
  const child = new Deno.Command(program, {
    args: argv,
    env: options.env ?? {},
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tail = new Tail();
  const drains = [drain(child.stdout, tail), drain(child.stderr, tail)];
  let peakKB = 0;
  let polling = !useTime;
  const poller = (async () => {
    while (polling) {
      peakKB = Math.max(peakKB, await treeHighWaterKB(child.pid));
      await sleep(100);
    }
  })();
  const status = await child.status;
  const wallS = (performance.now() - started) / 1000;
  polling = false;
  await poller;
  await Promise.all(drains);
  let cpuS: number;
  if (useTime) {
    const text = await Deno.readTextFile(statsFile);
    await Deno.remove(statsFile);
    // GNU time writes "Command exited with non-zero status N" first on failure.
    const last = text.trim().split("\n").at(-1) ?? "";
    const [, user, system, maxKB] = last.split(/\s+/).map(Number);
    cpuS = (user ?? 0) + (system ?? 0);
    peakKB = maxKB ?? 0;
  } else {
    cpuS = (await childrenCpu()) - cpuBefore;
  }
  const result: RunStats = {
    code: status.code,
    wallS,
    cpuS,
    peakRssMB: kibToMB(peakKB),
    tail: tail.text(),
  };
  return result;
}

/** A long-running child whose output is read and discarded (a kept tail). */
export interface Background extends AsyncDisposable {
  child: Deno.ChildProcess;
  /** Resolves when the output contains `text`; rejects after `timeoutMs`. */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  /** Highest VmHWM of the process tree seen so far (MB = 10^6 bytes), sampled every 100 ms. */
  peakRssMB(): number;
  stop(signal?: Deno.Signal): Promise<number>;
}

/** Starts a background child, draining stdout and stderr so it never stalls. */
export function background(
  cmd: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; keepOutput?: boolean } = {},
): Background {
  const keep = options.keepOutput ?? true;
  const child = new Deno.Command(cmd, {
    args,
    env: options.env ?? {},
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdin: "null",
    stdout: keep ? "piped" : "null",
    stderr: keep ? "piped" : "null",
  }).spawn();
  const tail = new Tail(64 * 1024);
  const drains = keep ? [drain(child.stdout, tail), drain(child.stderr, tail)] : [];
  let peakKB = 0;
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s.code;
  });
  const sampler = setInterval(async () => {
    if (!exited) peakKB = Math.max(peakKB, await treeHighWaterKB(child.pid));
  }, 100);
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    clearInterval(sampler);
    if (!exited) {
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
    }
    const code = await status;
    await Promise.all(drains);
    return code;
  };
  return {
    child,
    async waitFor(text, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (!tail.text().includes(text)) {
        if (exited) throw new Error(`'${cmd}' exited before printing '${text}':\n${tail.text()}`);
        if (Date.now() > deadline) {
          throw new Error(`'${cmd}' did not print '${text}' within ${timeoutMs} ms`);
        }
        await sleep(20);
      }
    },
    peakRssMB: () => kibToMB(peakKB),
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop("SIGKILL");
    },
  };
}

/** CPU seconds (user + system) a running process has used so far. */
export async function processCpu(pid: number): Promise<number> {
  try {
    const fields = statFields(await readProc(`/proc/${pid}/stat`));
    return (Number(fields[11]) + Number(fields[12])) / TICKS;
  } catch {
    return 0;
  }
}

/** CPU seconds of this process's reaped children (`cutime + cstime`). */
async function childrenCpu(): Promise<number> {
  const fields = statFields(await readProc(`/proc/${Deno.pid}/stat`));
  return (Number(fields[13]) + Number(fields[14])) / TICKS;
}

/** The fields after "(comm)" of a /proc stat line, from `state` on (index 0). */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/** Sum of VmHWM over a process and its live descendants, in KB (one `sh` child). */
async function treeHighWaterKB(pid: number): Promise<number> {
  const script =
    'walk() { grep VmHWM "/proc/$1/status"; for c in $(cat /proc/$1/task/*/children); ' +
    'do walk "$c"; done; }; walk "$1"';
  const text = await runText("sh", ["-c", script, "sh", String(pid)]);
  return [...text.matchAll(/VmHWM:\s+(\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
}

/** The text of a `/proc` file, read by `cat` (see the module comment). */
export async function readProc(path: string): Promise<string> {
  const text = await runText("cat", [path]);
  if (!text) throw new Error(`Reading '${path}' failed`);
  return text;
}

/** A command's stdout ("" when it fails to start or exits non-zero). */
async function runText(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout) : "";
  } catch {
    return "";
  }
}

/** Keeps the last `limit` characters written to it. */
class Tail {
  #text = "";
  readonly #limit: number;
  constructor(limit = 8192) {
    this.#limit = limit;
  }
  add(chunk: string): void {
    this.#text += chunk;
    if (this.#text.length > 2 * this.#limit) this.#text = this.#text.slice(-this.#limit);
  }
  text(): string {
    return this.#text.slice(-this.#limit);
  }
}

async function drain(stream: ReadableStream<Uint8Array>, tail: Tail): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of stream) tail.add(decoder.decode(chunk, { stream: true }));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
