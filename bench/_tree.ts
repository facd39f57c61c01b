/**
 * Cassandra-shaped test data: `data/<keyspace>/<table>-<id>/nb-<gen>-big-<Component>`,
 * eight components per SSTable generation, filled with incompressible
 * bytes. Sizes come from a seeded generator, so a size option always gives
 * the same tree shape. Requires `--allow-write` on the target directory.
 */

const MiB = 1024 * 1024;

/** Pseudo-random numbers in [0, 1), repeatable from a seed (mulberry32). */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 2 MiB of random bytes; files are windows into it at random offsets. */
const noise = (() => {
  const buf = new Uint8Array(2 * MiB);
  for (let i = 0; i < buf.length; i += 65536) crypto.getRandomValues(buf.subarray(i, i + 65536));
  return buf;
})();

/** What Cassandra writes in TOC.txt: the generation's component names. */
const TOC = "Data.db\nIndex.db\nFilter.db\nSummary.db\nStatistics.db\n" +
  "CompressionInfo.db\nDigest.crc32\nTOC.txt\n";

/**
 * Writes a file: a TOC.txt gets the component list, a Digest.crc32 a
 * checksum in decimal, anything else `size` incompressible bytes.
 */
export async function writeRandomFile(path: string, size: number, rand: () => number) {
  if (path.endsWith("-TOC.txt")) return await Deno.writeTextFile(path, TOC);
  if (path.endsWith("-Digest.crc32")) {
    return await Deno.writeTextFile(path, String(Math.floor(rand() * 2 ** 32)).padStart(10, "0"));
  }
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  let left = size;
  while (left > 0) {
    const n = Math.min(left, MiB);
    const offset = Math.floor(rand() * MiB);
    let chunk = noise.subarray(offset, offset + n);
    while (chunk.length > 0) chunk = chunk.subarray(await file.write(chunk));
    left -= n;
  }
}

/** The eight components of one SSTable, with sizes derived from Data.db's. */
export function components(dataBytes: number, rand: () => number): [string, number][] {
  return [
    ["Data.db", dataBytes],
    ["Index.db", Math.max(1024, Math.round(dataBytes / 20))],
    ["Filter.db", Math.max(16, Math.round(dataBytes / 500))],
    ["Summary.db", Math.max(64, Math.round(dataBytes / 2000))],
    ["Statistics.db", 4096 + Math.floor(rand() * 8192)],
    ["CompressionInfo.db", Math.max(43, Math.round(dataBytes / 2048))],
    ["Digest.crc32", 10],
    ["TOC.txt", TOC.length],
  ];
}

export interface TreeFile {
  path: string;
  size: number;
}

export interface Tree {
  root: string;
  files: TreeFile[];
  bytes: number;
  /** Table directories, each holding some generations. */
  tables: string[];
}

/** Keyspace/table directories under `root/data` (created). */
export async function makeTables(
  root: string,
  count: number,
  rand: () => number,
): Promise<string[]> {
  const tables: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = Array.from({ length: 32 }, () => Math.floor(rand() * 16).toString(16)).join("");
    const dir = `${root}/data/ks${(i % 3) + 1}/table${i + 1}-${id}`;
    await Deno.mkdir(dir, { recursive: true });
    tables.push(dir);
  }
  return tables;
}

/**
 * Plans a tree of about `totalBytes`: half in two large generations (a
 * quarter each: hundreds of MB at 1 GiB), half in many generations whose
 * Data.db is log-uniform between 256 KiB and 32 MiB before scaling, about
 * 60 generations (480 files) per GiB.
 */
export function planTree(totalBytes: number, rand: () => number): number[] {
  const big = Math.round(totalBytes * 0.24);
  const generations = Math.max(6, Math.round((58 * totalBytes) / 1024 ** 3));
  const raw = Array.from(
    { length: generations },
    () => Math.exp(Math.log(256 * 1024) + rand() * Math.log(128)),
  );
  // Companions add about 8% to each Data.db.
  const want = (totalBytes - 2 * big * 1.08) / 1.08;
  const scale = want / raw.reduce((a, b) => a + b, 0);
  return [big, ...raw.map((r) => Math.max(1024, Math.round(r * scale))), big];
}

/** Generates a tree from Data.db sizes (see `planTree`) under `root`. */
export async function generateTree(
  root: string,
  dataSizes: number[],
  options: { seed?: number; tables?: number } = {},
): Promise<Tree> {
  const rand = seeded(options.seed ?? 1);
  const tables = await makeTables(root, options.tables ?? 12, rand);
  const files: TreeFile[] = [];
  let generation = 1;
  for (const [i, dataBytes] of dataSizes.entries()) {
    const dir = tables[i % tables.length]!;
    for (const [component, size] of components(dataBytes, rand)) {
      const path = `${dir}/nb-${generation}-big-${component}`;
      await writeRandomFile(path, size, rand);
      files.push({ path, size });
    }
    generation++;
  }
  return { root, files, bytes: files.reduce((a, f) => a + f.size, 0), tables };
}

/** Parses "20M", "1G", "1.5G", "500K", "123" into bytes (powers of 1024). */
export function parseSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)([KMGT]?)i?B?$/i.exec(text.trim());
  if (!match) throw new Error(`Invalid size '${text}': use e.g. 20M, 1G`);
  const unit = { "": 1, K: 1024, M: MiB, G: 1024 ** 3, T: 1024 ** 4 }[
    match[2]!.toUpperCase() as "" | "K" | "M" | "G" | "T"
  ];
  return Math.round(Number(match[1]) * unit);
}

/** Plans files of SSTable generations for the watcher: [dir, name, size][]. */
export function sstableFiles(
  tables: string[],
  count: number,
  dataBytes: () => number,
  rand: () => number,
  firstGeneration: number,
): TreeFile[] {
  const files: TreeFile[] = [];
  for (let g = firstGeneration; files.length < count; g++) {
    const dir = tables[g % tables.length]!;
    for (const [component, size] of components(dataBytes(), rand)) {
      if (files.length < count) files.push({ path: `${dir}/nb-${g}-big-${component}`, size });
    }
  }
  return files;
}
