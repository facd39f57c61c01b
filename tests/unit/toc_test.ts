/**
 * TOC.txt is what Cassandra wrote, or what anyone with write access to the
 * data directory or the bucket put there: `readToc` accepts lists of
 * component names (a partial one included: Cassandra appends) and calls
 * everything else unreadable, without throwing. `readSmallRegularFile`
 * reads a TOC without ever blocking on a FIFO.
 */
import { assert, assertEquals } from "../_assert.ts";
import { readSmallRegularFile } from "../../lib/common/fs.ts";
import { MAX_TOC_BYTES, readToc } from "../../lib/bucket/sstable.ts";

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("readToc lists the components of Cassandra's TOCs, partial ones too", () => {
  assertEquals(readToc(text("Data.db\nIndex.db\r\nDigest.crc32\nTOC.txt\n\n")), {
    components: ["Data.db", "Index.db", "Digest.crc32", "TOC.txt"],
  });
  assertEquals(readToc(text("Data.db\nSAI+aa+idx+TermsData.db\nFilt")), {
    components: ["Data.db", "SAI+aa+idx+TermsData.db", "Filt"],
  });
  assertEquals(readToc(text("")), { components: [] });
});

Deno.test("readToc calls binary, NUL bytes, paths, escapes and over-long lines unreadable", () => {
  const cases: [Uint8Array, string][] = [
    [new Uint8Array([0x44, 0x61, 0xff, 0xfe, 0x0a]), "not UTF-8 text"],
    [text("Data.db\n\0Index.db\n"), "line 2 is not a component name"],
    [text("../../etc/passwd\n"), "line 1 is not a component name"],
    [text("Data.db\n\x1b]0;PWNED\x07Index.db\n"), "line 2 is not a component name"],
    [text("x".repeat(300)), "line 1 is longer than 255 characters"],
    [new Uint8Array(MAX_TOC_BYTES + 1).fill(0x41), `larger than ${MAX_TOC_BYTES} bytes`],
  ];
  for (const [bytes, reason] of cases) assertEquals(readToc(bytes), { unreadable: reason });
});

Deno.test("readSmallRegularFile refuses a FIFO, a symlink and a directory without blocking", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fifo = `${dir}/nb-1-big-TOC.txt`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert(made.success);
    assertEquals(readSmallRegularFile(fifo, 100), { notRegular: true });
    // Deno's permission check resolves symlinks unless --allow-all, so
    // O_NOFOLLOW may not hold; a symlink to a FIFO is still never waited on.
    await Deno.symlink(fifo, `${dir}/link`);
    assertEquals(readSmallRegularFile(`${dir}/link`, 100), { notRegular: true });
    await Deno.mkdir(`${dir}/sub`);
    assertEquals(readSmallRegularFile(`${dir}/sub`, 100), { notRegular: true });
    assertEquals(readSmallRegularFile(`${dir}/missing`, 100), { gone: true });
    await Deno.writeTextFile(`${dir}/f`, "Data.db\n");
    assertEquals(readSmallRegularFile(`${dir}/f`, 100), { bytes: text("Data.db\n") });
    assertEquals(readSmallRegularFile(`${dir}/f`, 3), { tooLarge: true });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
