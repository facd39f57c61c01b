/**
 * Every file naming scheme Cassandra has used, against the pure rules of
 * lib/bucket/sstable.ts (which generation a file belongs to, which files
 * get an index, which may change, how generations order) and the default
 * filter of lib/watch/detect/path_filter.ts. The watcher over a real tree of all of
 * them is in tests/lifecycle_test.ts.
 */
import { assert, assertEquals } from "../_assert.ts";
import {
  generationOf,
  generationPrefix,
  isMutableComponent,
  parseComponentName,
  wantsIndex,
} from "../../lib/bucket/sstable.ts";
import { makePathFilter } from "../../lib/watch/detect/path_filter.ts";

const UUID_ID = "3g1m_0oe5_2kxx42qmnomqc4sx6a";

/** The generation prefix of a Data.db, and the names that must and must not share it. */
const SCHEMES: { scheme: string; data: string; prefix: string; members: string[] }[] = [
  {
    scheme: "3.0+ BIG, decimal generation",
    data: "nb-7-big-Data.db",
    prefix: "nb-7-big-",
    members: ["nb-7-big-Index.db", "nb-7-big-Summary.db", "nb-7-big-TOC.txt", "nb-7-big-CRC.db"],
  },
  {
    scheme: "3.x BIG (ma..me)",
    data: "md-12-big-Data.db",
    prefix: "md-12-big-",
    members: ["md-12-big-Digest.crc32"],
  },
  {
    scheme: "UUID identifiers",
    data: `nb-${UUID_ID}-big-Data.db`,
    prefix: `nb-${UUID_ID}-big-`,
    members: [`nb-${UUID_ID}-big-Statistics.db`, `nb-${UUID_ID}-big-TOC.txt`],
  },
  {
    scheme: "Cassandra 5 BTI",
    data: "da-1-bti-Data.db",
    prefix: "da-1-bti-",
    members: ["da-1-bti-Partitions.db", "da-1-bti-Rows.db", "da-1-bti-Statistics.db"],
  },
  {
    scheme: "BTI with a UUID id",
    data: `da-${UUID_ID}-bti-Data.db`,
    prefix: `da-${UUID_ID}-bti-`,
    members: [`da-${UUID_ID}-bti-Rows.db`],
  },
  {
    scheme: "SAI components of a BIG SSTable",
    data: "nb-1-big-Data.db",
    prefix: "nb-1-big-",
    members: [
      "nb-1-big-SAI+aa+idx+TermsData.db",
      "nb-1-big-SAI+aa+idx+Meta.db",
      "nb-1-big-SAI+aa+GroupComplete.db",
      "nb-1-big-SAI+aa+TokenValues.db",
    ],
  },
  {
    scheme: "2.x legacy",
    data: "ks-users-ka-7-Data.db",
    prefix: "ks-users-ka-7-",
    members: ["ks-users-ka-7-Index.db", "ks-users-ka-7-Digest.sha1", "ks-users-ka-7-TOC.txt"],
  },
  {
    scheme: "2.x legacy, names with underscores and digits",
    data: "system_auth-roles_2-jb-123-Data.db",
    prefix: "system_auth-roles_2-jb-123-",
    members: ["system_auth-roles_2-jb-123-CompressionInfo.db"],
  },
  {
    scheme: "2.x legacy whose keyspace looks like a version and table like a generation",
    data: "ab-12-ka-7-Data.db",
    prefix: "ab-12-ka-7-",
    members: ["ab-12-ka-7-Index.db"],
  },
  {
    scheme: "2.x legacy secondary index (table.index)",
    data: "ks-users.users_email_idx-ka-3-Data.db",
    prefix: "ks-users.users_email_idx-ka-3-",
    members: ["ks-users.users_email_idx-ka-3-Filter.db"],
  },
  {
    scheme: "1.0/1.1 legacy, no keyspace",
    data: "users-hc-5-Data.db",
    prefix: "users-hc-5-",
    members: ["users-hc-5-Index.db"],
  },
];

Deno.test("generationPrefix() and wantsIndex() know every naming scheme", async (t) => {
  for (const { scheme, data, prefix, members } of SCHEMES) {
    await t.step(scheme, () => {
      assertEquals(generationPrefix(data), prefix, data);
      assert(parseComponentName(data).id !== null, `${data} is of a known scheme`);
      assert(wantsIndex(`/var/lib/cassandra/data/ks/t-1b2c/${data}`), `${data} gets an index`);
      for (const member of members) {
        assertEquals(parseComponentName(member).prefix, prefix, member);
        assert(member.startsWith(prefix), `${member} is in the generation of ${data}`);
        assertEquals(generationPrefix(member), null, `${member} is not a Data.db`);
        assert(!wantsIndex(`/d/${member}`), `${member} gets no index`);
      }
    });
  }
});

Deno.test("SAI's ...TermsData.db is a component, not a Data.db", () => {
  for (
    const name of [
      "nb-1-big-SAI+aa+idx+TermsData.db",
      "nb-1-big-SAI+aa+idx_v+TermsData.db",
      `nb-${UUID_ID}-big-SAI+aa+idx+TermsData.db`,
      "da-1-bti-SAI+aa+idx+TermsData.db",
    ]
  ) {
    assertEquals(generationPrefix(name), null, name);
    assertEquals(wantsIndex(`/d/ks/t-1/${name}`), false, name);
    assertEquals(parseComponentName(name).component.startsWith("SAI+aa+"), true, name);
  }
  // The generation prefix is exact: generation 1 does not swallow 10 or 11.
  assert(!"nb-10-big-Index.db".startsWith(generationPrefix("nb-1-big-Data.db")!));
});

Deno.test("temporary copies of a Data.db get no index", () => {
  for (
    const name of [
      "nb-1-big-Data.db.tmp",
      "nb-1-big-Data.db.3a5b0c20-0d3e-11ef-9f49-5b1e0a3c6f11.tmp",
      "nb-1-big-Data.db-listdir.json",
    ]
  ) {
    assertEquals(wantsIndex(`/d/${name}`), false, name);
  }
});

Deno.test("names of no Cassandra scheme keep the original's loose rule", () => {
  // Tools and tests write such names; they group by what precedes "Data.db".
  assertEquals(generationPrefix("a-Data.db"), "a-");
  assertEquals(generationPrefix("Data.db"), "");
  assertEquals(wantsIndex("/d/manifest.json"), false);
  assertEquals(wantsIndex("/d/schema.cql"), false);
  assertEquals(parseComponentName("manifest.json").id, null);
});

Deno.test("isMutableComponent(): Statistics.db, Summary.db and TOC.txt of every scheme, nothing else", () => {
  const mutable = [
    "nb-1-big-Statistics.db",
    "nb-1-big-Summary.db",
    "nb-1-big-TOC.txt",
    `nb-${UUID_ID}-big-Statistics.db`,
    "da-1-bti-Statistics.db",
    "da-1-bti-TOC.txt",
    "ks-users-ka-7-Statistics.db",
    "ks-users-ka-7-Summary.db",
  ];
  const immutable = [
    "nb-1-big-Data.db",
    "nb-1-big-Index.db",
    "nb-1-big-Filter.db",
    "nb-1-big-CompressionInfo.db",
    "nb-1-big-Digest.crc32",
    "nb-1-big-SAI+aa+idx+TermsData.db",
    "nb-1-big-SAI+aa+GroupComplete.db",
    "da-1-bti-Partitions.db",
    "da-1-bti-Rows.db",
    "ks-users-ka-7-Data.db",
    "manifest.json",
    "schema.cql",
    "CommitLog-7-1712345678901.log",
    // A temporary copy is not the component (it is also filtered out by default).
    "nb-1-big-Statistics.db.tmp",
  ];
  for (const name of mutable) assert(isMutableComponent(`/d/ks/t-1/${name}`), name);
  for (const name of immutable) assert(!isMutableComponent(`/d/ks/t-1/${name}`), name);
});

/** Index keys of these Data.db names, sorted by generationOf (then key, as compareIndexes does). */
function byGeneration(names: string[]): string[] {
  const keys = names.map((n) => `h:/d/ks/t-1/${n}-listdir.json`);
  return keys.sort((a, b) => {
    const ga = generationOf(a);
    const gb = generationOf(b);
    if (ga !== null && gb !== null && ga !== gb) return ga < gb ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }).map((k) => k.slice("h:/d/ks/t-1/".length, -"-listdir.json".length));
}

Deno.test("generationOf() orders decimal generations numerically, UUID ids by creation, decimal first", () => {
  // Decimal: numerically, whatever the format or version.
  assertEquals(
    byGeneration([
      "nb-10-big-Data.db",
      "nb-9-big-Data.db",
      "da-2-bti-Data.db",
      "nb-100-big-Data.db",
    ]),
    ["da-2-bti-Data.db", "nb-9-big-Data.db", "nb-10-big-Data.db", "nb-100-big-Data.db"],
  );
  // UUID ids: as strings, which is creation order (base 36, fixed width, time first).
  const older = "3g1m_0oe5_2kxx42qmnomqc4sx6a";
  const sameDayLater = "3g1m_0oe6_0aaaa2qmnomqc4sx6a";
  const nextDay = "3g1n_0000_0000000000000000aa";
  assertEquals(
    byGeneration([
      `nb-${nextDay}-big-Data.db`,
      `nb-${older}-big-Data.db`,
      `nb-${sameDayLater}-big-Data.db`,
    ]),
    [`nb-${older}-big-Data.db`, `nb-${sameDayLater}-big-Data.db`, `nb-${nextDay}-big-Data.db`],
  );
  // A table that switched to UUID ids: every decimal generation came before.
  assertEquals(
    byGeneration([`nb-${older}-big-Data.db`, "nb-99999-big-Data.db"]),
    ["nb-99999-big-Data.db", `nb-${older}-big-Data.db`],
  );
  // Legacy names order by their generation too, beyond 2^53.
  assertEquals(
    byGeneration(["ks-t-ka-9007199254740993-Data.db", "ks-t-ka-9007199254740992-Data.db"]),
    ["ks-t-ka-9007199254740992-Data.db", "ks-t-ka-9007199254740993-Data.db"],
  );
  assert(generationOf("h:/d/ks-users-ka-12-Data.db-listdir.json") !== null);
  // Nothing to order by: not an index, an SAI part, a name of no scheme.
  assertEquals(generationOf("h:/d/nb-1-big-Data.db"), null);
  assertEquals(generationOf("h:/d/nb-1-big-SAI+aa+idx+TermsData.db-listdir.json"), null);
  assertEquals(generationOf("h:/d/a-Data.db-listdir.json"), null);
});

Deno.test("the default filter skips Cassandra's transient files and nothing else", () => {
  const filter = makePathFilter({});
  const table = "/var/lib/cassandra/data/ks/users-1b2c3d4e5f60718293a4b5c6d7e8f901";
  const skipped = [
    `${table}/nb-1-big-Statistics.db.tmp`,
    `${table}/nb-1-big-Data.db.3a5b0c20-0d3e-11ef-9f49-5b1e0a3c6f11.tmp`,
    `${table}/nb_txn_flush_3a5b0c20-0d3e-11ef-9f49-5b1e0a3c6f11.log`,
    `${table}/nb_txn_compaction_3a5b0c20-0d3e-11ef-9f49-5b1e0a3c6f11.log`,
    `${table}/oa_txn_stream_3a5b0c20-0d3e-11ef-9f49-5b1e0a3c6f11.log`,
    `${table}/ks-users-tmp-ka-2-Data.db`,
    `${table}/ks-users-tmplink-ka-2-Data.db`,
    `${table}/tmplink-ka-2-Index.db`,
    `/data/ks-tmp/t/nb-1-big-Data.db`,
  ];
  const kept = [
    `${table}/nb-1-big-Data.db`,
    `${table}/nb-1-big-Statistics.db`,
    `${table}/nb-1-big-SAI+aa+idx+TermsData.db`,
    `${table}/nb-${UUID_ID}-big-Data.db`,
    `${table}/da-1-bti-Partitions.db`,
    `${table}/ks-users-ka-7-Data.db`,
    `${table}/.users_email_idx/nb-1-big-Data.db`,
    `${table}/backups/nb-1-big-Data.db`,
    `${table}/snapshots/1712345678901/manifest.json`,
    `${table}/snapshots/1712345678901/schema.cql`,
    `${table}/snapshots/before.tmp.upgrade/nb-1-big-Data.db`,
    "/var/lib/cassandra/commitlog/CommitLog-7-1712345678901.log",
  ];
  for (const path of skipped) assert(!filter.accepts(path), `skipped: ${path}`);
  for (const path of kept) assert(filter.accepts(path), `kept: ${path}`);
  // -e and -i replace the default entirely, as in the original.
  const exclude = makePathFilter({ exclude: ["/backups/"] });
  assert(exclude.accepts(`${table}/nb-1-big-Statistics.db.tmp`));
  assert(exclude.accepts(`${table}/nb_txn_flush_x.log`));
  assert(!exclude.accepts(`${table}/backups/nb-1-big-Data.db`));
  const include = makePathFilter({ include: ["_txn_"] });
  assert(include.accepts(`${table}/nb_txn_flush_x.log`));
});
