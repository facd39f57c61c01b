/** Step 5, the server's own ingest limit: unsigned PUTs with curl, one large and many at once. */
import type { Config } from "./_config.ts";
import { log, MB } from "./_context.ts";
import { fmt, markdownTable, median } from "./_report.ts";
import { dropS3rverPrefix, type Server } from "./_servers.ts";
import { seeded, type Tree, writeRandomFile } from "./_tree.ts";

export interface LimitResult {
  label: string;
  wallS: number;
  mbps: number;
  serverCpuS: number;
}

async function curlPut(file: string, url: string): Promise<void> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", file, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const code = new TextDecoder().decode(out.stdout);
  if (!out.success || code !== "200") {
    throw new Error(`curl -T '${file}' got ${code}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Unsigned PUTs straight to the server: a single large one, then many at once. */
export async function serverLimit(cfg: Config, server: Server, tree: Tree, work: string) {
  const results: LimitResult[] = [];
  const base = `${server.endpoint}/${server.bucket}`;
  const one = `${work}/limit-one.bin`;
  await writeRandomFile(one, tree.bytes, seeded(7));
  for (let i = 0; i < cfg.runs; i++) {
    const cpu0 = await server.cpu();
    const started = performance.now();
    await curlPut(one, `${base}/limit-one-${i}/one.bin`);
    const wallS = (performance.now() - started) / 1000;
    results.push({
      label: "1 × `curl -T`, one file of the tree's size",
      wallS,
      mbps: tree.bytes / MB / wallS,
      serverCpuS: (await server.cpu()) - cpu0,
    });
    await dropS3rverPrefix(server, `limit-one-${i}/`);
  }
  await Deno.remove(one);
  for (const parallel of [4, 16]) {
    const cpu0 = await server.cpu();
    const started = performance.now();
    const queue = [...tree.files];
    const worker = async () => {
      for (let f = queue.shift(); f; f = queue.shift()) {
        await curlPut(f.path, `${base}/limit-par${parallel}${f.path}`);
      }
    };
    await Promise.all(Array.from({ length: parallel }, worker));
    const wallS = (performance.now() - started) / 1000;
    results.push({
      label: `${parallel} × \`curl -T\` at once, the tree's files`,
      wallS,
      mbps: tree.bytes / MB / wallS,
      serverCpuS: (await server.cpu()) - cpu0,
    });
    await dropS3rverPrefix(server, `limit-par${parallel}/`);
  }
  for (const r of results) log(`limit ${r.label}: ${fmt(r.mbps)} MB/s`);
  return results;
}

/** The limit: the best throughput of any client. */
export function limitMbps(limit: LimitResult[]): number {
  return Math.max(...limit.map((l) => l.mbps));
}

/** The detail of step 5 (`bytes`: the size of the bulk tree). */
export function limitReport(limit: LimitResult[], bytes: number): string[] {
  const byLabel = new Map<string, LimitResult[]>();
  for (const l of limit) byLabel.set(l.label, [...(byLabel.get(l.label) ?? []), l]);
  return [
    `**5. Server limit**: unsigned PUTs of the same ${fmt(bytes / MB, 0)} MB with curl ` +
    `(limit = best: ${fmt(limitMbps(limit))} MB/s):`,
    "",
    markdownTable(
      ["Client", "MB/s per run", "server CPU s per GB"],
      [...byLabel].map(([label, ls]) => [
        label,
        ls.map((l) => fmt(l.mbps)).join(", "),
        fmt(median(ls.map((l) => l.serverCpuS)) / (bytes / 1e9), 2),
      ]),
    ),
    "",
  ];
}
