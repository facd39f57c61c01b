import { assertEquals, assertThrows } from "../_assert.ts";
import { indexBody } from "../../lib/bucket/index_body.ts";
import { indexKey, objectKey, pathOfKey } from "../../lib/bucket/keys.ts";
import { pythonJson, statMetadata } from "../../lib/bucket/object_meta.ts";
import { generationPrefix, wantsIndex } from "../../lib/bucket/sstable.ts";
import { UsageError } from "../../lib/common/errors.ts";
import { parseRate } from "../../lib/common/format.ts";
import { keyToSegments, segmentsToKey } from "../../lib/store/local_store.ts";
import { makePathFilter } from "../../lib/watch/detect/path_filter.ts";

const naming = { prefix: "", name: "cass1.example.com", separator: ":" };

Deno.test("objectKey() joins prefix, name, separator and the absolute path", () => {
  assertEquals(
    objectKey(naming, "/var/lib/cassandra/data/ks/users-1b2c/nb-7-big-Data.db"),
    "cass1.example.com:/var/lib/cassandra/data/ks/users-1b2c/nb-7-big-Data.db",
  );
  assertEquals(
    objectKey({ prefix: "prod/", name: "h", separator: "|" }, "/d/f"),
    "prod/h|/d/f",
  );
  assertEquals(
    indexKey(naming, "/d/nb-1-big-Data.db"),
    "cass1.example.com:/d/nb-1-big-Data.db-listdir.json",
  );
  assertEquals(pathOfKey(naming, "cass1.example.com:/d/f"), "/d/f");
  assertEquals(pathOfKey(naming, "other:/d/f"), null);
});

Deno.test("indexBody() is byte for byte Python's json.dumps({dir: names})", () => {
  assertEquals(
    indexBody("/var/lib/cassandra/data/ks/t-1", ["nb-7-big-Data.db", "nb-7-big-Index.db"]),
    '{"/var/lib/cassandra/data/ks/t-1": ["nb-7-big-Data.db", "nb-7-big-Index.db"]}',
  );
  assertEquals(indexBody("/d", []), '{"/d": []}');
  // ensure_ascii: non-ASCII escaped as \uXXXX, DEL (0x7f) kept, quotes escaped
  assertEquals(pythonJson('é\u007f"x'), '"\\u00e9\u007f\\"x"');
  assertEquals(pythonJson("😀"), '"\\ud83d\\ude00"');
});

Deno.test("generationPrefix() finds the SSTable generation in both namings", () => {
  assertEquals(generationPrefix("nb-7-big-Data.db"), "nb-7-big-");
  assertEquals(generationPrefix("ks-users-ka-7-Data.db"), "ks-users-ka-7-");
  assertEquals(generationPrefix("nb-7-big-Index.db"), null);
  assertEquals(wantsIndex("/d/ks-users-ka-7-Data.db"), true);
  assertEquals(wantsIndex("/d/nb-7-big-TOC.txt"), false);
});

Deno.test("statMetadata() writes uid, gid, full st_mode and names like the original", () => {
  const info = { uid: 0, gid: 0, mode: 0o100644 } as Deno.FileInfo;
  const names = {
    userName: (id: number) => id === 0 ? "root" : undefined,
    groupName: () => undefined,
  };
  assertEquals(
    statMetadata(info, names),
    '{"uid": 0, "gid": 0, "mode": 33188, "user": "root"}',
  );
});

Deno.test("makePathFilter() skips -tmp by default and searches full paths", () => {
  const byDefault = makePathFilter({});
  assertEquals(byDefault.accepts("/d/ks/t/nb-1-big-Data.db"), true);
  assertEquals(byDefault.accepts("/d/ks/t/ks-t-tmp-ka-1-Data.db"), false);
  assertEquals(byDefault.accepts("/d/ks-tmp/t/x"), false);
  const exclude = makePathFilter({ exclude: ["snapshots", "\\.log$"] });
  assertEquals(exclude.accepts("/d/ks/t/snapshots/1/x"), false);
  assertEquals(exclude.accepts("/d/CommitLog-7-1.log"), false);
  assertEquals(exclude.accepts("/d/ks/t/-tmp-x"), true); // the default applies only with neither
  const include = makePathFilter({ include: ["Data\\.db$", "(?P<ks>system)/"] });
  assertEquals(include.accepts("/d/ks/t/nb-1-big-Data.db"), true);
  assertEquals(include.accepts("/d/system/t/x"), true);
  assertEquals(include.accepts("/d/ks/t/nb-1-big-Index.db"), false);
});

Deno.test("makePathFilter() refuses bad regexes and -e with -i as usage errors", () => {
  assertThrows(() => makePathFilter({ exclude: ["(unclosed"] }), UsageError, "'(unclosed'");
  assertThrows(
    () => makePathFilter({ include: ["a"], exclude: ["b"] }),
    UsageError,
    "cannot be used together",
  );
});

Deno.test("keyToSegments() maps every key to safe path segments and back", () => {
  for (
    const key of [
      "h:/var/lib/x/f",
      "../../etc/passwd",
      "a//b/./c/../%25/%",
      "/abs",
      "%",
      "%.",
      "trailing/",
    ]
  ) {
    const segments = keyToSegments(key);
    for (const s of segments) {
      if (s === "" || s === "." || s === ".." || s.includes("/")) {
        throw new Error(`unsafe segment ${JSON.stringify(s)} for ${key}`);
      }
    }
    assertEquals(segmentsToKey(segments), key);
  }
  assertThrows(() => keyToSegments("a\0b"), Error, "NUL");
});

Deno.test("parseRate() reads K/M/G suffixes as powers of 1024", () => {
  assertEquals(parseRate("1048576"), 1048576);
  assertEquals(parseRate("500K"), 512000);
  assertEquals(parseRate("10M"), 10 * 1024 * 1024);
  assertEquals(parseRate("1.5G"), 1.5 * 1024 ** 3);
  assertEquals(parseRate("10MB/s"), 10 * 1024 * 1024);
  assertEquals(parseRate("fast"), null);
  assertEquals(parseRate("0"), null);
});
