/**
 * Property tests of the parsers of untrusted input: index bodies, TOC.txt,
 * object metadata (`stat`, `md5sum`, exact times), journal lines and file
 * names and keys. Each gets thousands of random and mutated inputs (from
 * a fixed seed: a failure names its input and replays). For every one: the
 * parser returns or rejects with the error it documents, never anything
 * else; what it accepts never leads outside the restore target; and every
 * rejection reaches the operator as one line with no control byte.
 */
import { posix } from "node:path";
import { assert, assertEquals } from "../_assert.ts";
import { checkFileName, parseIndex, unsafeNameReason } from "../../lib/bucket/index_body.ts";
import { generationOf, parseComponentName, readToc, wantsIndex } from "../../lib/bucket/sstable.ts";
import {
  expectedMd5,
  mtimeOf,
  parseStatMetadata,
  pythonJson,
} from "../../lib/bucket/object_meta.ts";
import { keyDirectory, objectKey, pathOfKey, unusableNameReason } from "../../lib/bucket/keys.ts";
import { errorMessage, FatalError } from "../../lib/common/errors.ts";
import { escapeOutputLine, hasControl } from "../../lib/common/escape.ts";
import { parseJournal } from "../../lib/watch/durable/journal_format.ts";

const RUNS = 3_000;

/** xorshift32: a seeded generator, so any failure replays. */
function random(seed: number) {
  let x = seed || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  return { next, int, pick };
}
type Random = ReturnType<typeof random>;

/** Pieces an attacker, a torn write or a bit flip would produce. */
const HOSTILE = [
  "/",
  "..",
  ".",
  "\0",
  "\n",
  "\r\n",
  "\t",
  "\x1b]0;PWNED\x07",
  "\x1b[2J",
  "\u009b",
  "\x7f",
  "\ufffd",
  "\ud800",
  "\u202e",
  '"',
  "\\",
  "{",
  "}",
  "[",
  "]",
  ":",
  ",",
  "-",
  "_",
  "+",
  "Data.db",
  "TOC.txt",
  "nb-1-big-",
  "ks-users-ka-7-",
  "listdir.json",
  "null",
  "true",
  "1e999",
  "-1",
  "0",
  "\u00e9",
  "\u65e5",
  "x".repeat(300),
  " ",
];

function hostileString(r: Random, max = 12): string {
  let s = "";
  const n = r.int(max);
  for (let i = 0; i < n; i++) {
    s += r.next() < 0.6 ? r.pick(HOSTILE) : String.fromCharCode(r.int(0x3000));
  }
  return s;
}

/** `valid` with a few random edits: characters inserted, removed, replaced, cut short. */
function mutate(r: Random, valid: string): string {
  let s = valid;
  const edits = 1 + r.int(4);
  for (let i = 0; i < edits; i++) {
    const at = r.int(s.length + 1);
    switch (r.int(5)) {
      case 0:
        s = s.slice(0, at) + hostileString(r, 3) + s.slice(at);
        break;
      case 1:
        s = s.slice(0, at) + s.slice(at + 1 + r.int(4));
        break;
      case 2:
        s = s.slice(0, at) + String.fromCharCode(r.int(0x100)) + s.slice(at + 1);
        break;
      case 3:
        s = s.slice(0, at);
        break;
      default:
        s = s.slice(0, at) + s.slice(r.int(s.length + 1));
    }
  }
  return s;
}

function randomBytes(r: Random): Uint8Array {
  const out = new Uint8Array(r.int(200));
  for (let i = 0; i < out.length; i++) out[i] = r.int(256);
  return out;
}

/** What an operator sees of a rejection: one line, nothing a terminal obeys. */
function assertOneLine(err: unknown, input: unknown): void {
  const shown = escapeOutputLine(errorMessage(err));
  assert(!shown.includes("\n") && !hasControl(shown.replaceAll("\t", "")), `${input}: ${shown}`);
}

/** Where `name` (and directory `segments`) would be restored under `target`, if it stays there. */
function staysInside(target: string, segments: string[], name: string): boolean {
  const path = posix.normalize([target, ...segments, name].join("/"));
  return path.startsWith(target + "/") && path !== target;
}

Deno.test("index bodies: parsed or refused with a FatalError; accepted names stay in the target", () => {
  const r = random(19);
  const valid = (names: string[]) => `{${pythonJson("/data/ks/t-1")}: ${pythonJson(names)}}`;
  let accepted = 0;
  for (let i = 0; i < RUNS; i++) {
    const names = Array.from(
      { length: r.int(5) },
      () => r.next() < 0.5 ? hostileString(r) : "nb-1-big-Data.db",
    );
    const body = r.next() < 0.3
      ? hostileString(r, 30)
      : r.next() < 0.5
      ? valid(names)
      : mutate(r, valid(names));
    const key = `h:/data/ks/${hostileString(r, 3)}/nb-1-big-Data.db-listdir.json`;
    let listing;
    try {
      listing = parseIndex(key, body);
    } catch (err) {
      assert(err instanceof FatalError, `${JSON.stringify(body)}: ${err}`);
      assertOneLine(err, JSON.stringify(body));
      continue;
    }
    for (const name of listing.names) {
      try {
        checkFileName(name, key);
      } catch (err) {
        assert(err instanceof FatalError);
        assertOneLine(err, JSON.stringify(name));
        continue;
      }
      accepted++;
      assert(staysInside("/restore", ["ks", "t-1"], name), JSON.stringify(name));
    }
  }
  assert(accepted > 100, `only ${accepted} names accepted: the generator tests too little`);
});

Deno.test("directory segments and names a restore accepts never lead outside the target", () => {
  const r = random(7);
  for (let i = 0; i < RUNS * 3; i++) {
    const segments = [hostileString(r, 4), hostileString(r, 4)];
    const name = hostileString(r, 5);
    if ([...segments, name].some((s) => unsafeNameReason(s) !== null)) continue;
    assert(staysInside("/restore", segments, name), JSON.stringify([segments, name]));
  }
});

Deno.test("TOC.txt: never throws; components are plain names, rejections one line", () => {
  const r = random(23);
  const valid = "Data.db\nIndex.db\nFilter.db\nStatistics.db\nTOC.txt\n";
  let readable = 0;
  for (let i = 0; i < RUNS; i++) {
    const bytes = r.next() < 0.3
      ? randomBytes(r)
      : new TextEncoder().encode(r.next() < 0.2 ? valid : mutate(r, valid));
    const toc = readToc(bytes);
    if ("unreadable" in toc) {
      assertOneLine(toc.unreadable, bytes);
      continue;
    }
    readable++;
    for (const c of toc.components) {
      assert(unsafeNameReason(c) === null && !hasControl(c) && c.length <= 255, JSON.stringify(c));
      assertEquals(unusableNameReason(c), null);
    }
  }
  assert(readable > 100, `only ${readable} readable`);
});

Deno.test("object metadata: stat, md5sum and exact times never throw and give typed values", () => {
  const r = random(29);
  const validStat =
    '{"uid": 999, "gid": 999, "mode": 33188, "user": "cassandra", "group": "cassandra"}';
  for (let i = 0; i < RUNS; i++) {
    const text = r.next() < 0.2 ? hostileString(r) : mutate(r, validStat);
    const stat = parseStatMetadata(text);
    if (stat !== null) {
      for (const f of ["uid", "gid", "mode"] as const) {
        const v = stat[f];
        assert(v === undefined || (Number.isInteger(v) && v >= 0), `${text}: ${f}=${v}`);
      }
      for (const f of ["user", "group"] as const) {
        assert(stat[f] === undefined || typeof stat[f] === "string");
      }
    }
    const time = r.next() < 0.5 ? mutate(r, "2026-12-01T14:30:00.123Z") : hostileString(r);
    const ms = mtimeOf({ mtime: time });
    assert(ms === undefined || Number.isFinite(ms), `${time}: ${ms}`);
    const md5 = expectedMd5({
      etag: r.next() < 0.5 ? mutate(r, "0123456789abcdef0123456789abcdef") : hostileString(r),
      metadata: {
        md5sum: r.next() < 0.5 ? mutate(r, "0123456789ABCDEF0123456789abcdef") : hostileString(r),
      },
    });
    assert(md5 === null || /^[0-9a-f]{32}$/.test(md5), `md5 ${md5}`);
  }
});

Deno.test("journal lines: never throw; damage is one line; only absolute paths come back", () => {
  const r = random(31);
  const valid = [
    '{"journal":"tablesnap","version":1}',
    '{"op":"pending","path":"/data/ks/t-1/nb-1-big-Data.db","since":1765000000000}',
    '{"op":"upload","path":"/data/a","key":"h:/data/a","uploadId":"u1","partSize":5242880,"size":12000000,"mtime":1}',
    '{"op":"part","path":"/data/a","n":1,"etag":"\\"abc\\""}',
    '{"op":"done","path":"/data/ks/t-1/nb-1-big-Data.db"}',
    '{"op":"checkpoint","at":1765000000001}',
    "",
  ].join("\n");
  let damaged = 0;
  for (let i = 0; i < RUNS; i++) {
    const text = r.next() < 0.2 ? hostileString(r, 20) : mutate(r, valid);
    const contents = parseJournal(text);
    if (contents.damage !== undefined) {
      damaged++;
      assertOneLine(contents.damage, JSON.stringify(text));
    }
    for (const path of [...contents.pending.keys(), ...contents.uploads.keys()]) {
      assert(path.startsWith("/"), JSON.stringify(path));
    }
    for (const since of contents.pending.values()) assert(Number.isFinite(since) && since >= 0);
  }
  assert(damaged > 100 && damaged < RUNS, `damaged ${damaged} of ${RUNS}`);
});

Deno.test("file names and keys: split without loss, never throw", () => {
  const r = random(37);
  const naming = { prefix: "", name: "cass1", separator: ":" };
  for (let i = 0; i < RUNS; i++) {
    const name = r.next() < 0.5
      ? mutate(r, "nb-3g1m_0oe5_2kxx42qmnomqc4sx6a-big-Data.db")
      : hostileString(r);
    const parsed = parseComponentName(name);
    assertEquals(parsed.prefix + parsed.component, name);
    wantsIndex(`/data/${name}`);
    const generation = generationOf(`h:/data/${name}-listdir.json`);
    assert(generation === null || /^[du]/.test(generation), String(generation));
    // deno-lint-ignore no-control-regex
    const control = /[\u0000-\u001f\u007f-\u009f\ufffd]/.test(name);
    assertEquals(unusableNameReason(name) !== null, control, JSON.stringify(name));
    const path = `/data/${name}`;
    assertEquals(pathOfKey(naming, objectKey(naming, path)), path);
    const key = hostileString(r, 6);
    const back = pathOfKey(naming, key);
    assert(back === null || objectKey(naming, back) === key);
    assert(key.startsWith(keyDirectory(key)));
  }
});
