import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { verify } from "../lib/maintenance/verify.ts";
import { assertEquals, assertStringIncludes } from "./_assert.ts";
import {
  contentOf,
  DAY,
  generation,
  key,
  localStore,
  localWriter,
  md5Hex,
  NAMING,
  putIndex,
  putTable,
  s3Writer,
  statJson,
} from "./_bucket_fixture.ts";
import { runCli, startS3Server, tempDir } from "./_helpers.ts";

const HOST = NAMING.name;

/** The keys of verify's `PROBLEM <key>: <what>` lines (its documented report), in order. */
function problems(stdout: string): string[] {
  return [...stdout.matchAll(/^PROBLEM (.+?): /gm)].map((m) => m[1]!);
}

Deno.test("verify finds missing and truncated objects in a local store", async (t) => {
  await using dir = await tempDir();
  const store = await localStore(`${dir.path}/bucket`);
  const w = localWriter(store);
  const ago = (days: number) => new Date(Date.now() - days * DAY);
  const written = new Set<string>();
  await putTable(w, "/data/ks/t", generation(1), { mtime: ago(3), written });
  await putTable(w, "/data/ks/t", generation(2), { mtime: ago(1), written });
  await putTable(w, "/data/ks/u", generation(1), { mtime: ago(1) });
  const args = ["verify", "-n", HOST, `file://${store.root}`, "/data"];

  await t.step("a complete bucket passes", async () => {
    const out = await runCli(args);
    assertEquals(out.code, 0, out.stdout + out.stderr);
    assertEquals(problems(out.stdout), []);
    const md5 = await runCli(["verify", "--md5", "--all", ...args.slice(1)]);
    assertEquals(md5.code, 0, md5.stdout + md5.stderr);
    assertEquals(problems(md5.stdout), []);
  });

  await t.step("an object of an old index only counts with --all", async () => {
    const gone = key(NAMING, "/data/ks/t/nb-1-big-Index.db");
    await store.deleteMany([gone]);
    assertEquals((await runCli(args)).code, 0);
    const out = await runCli(["verify", "--all", ...args.slice(1)]);
    assertEquals(out.code, 1);
    assertEquals(problems(out.stdout), [gone]);
  });

  await t.step("a missing object of a newest index fails", async () => {
    const gone = key(NAMING, "/data/ks/u/nb-1-big-Filter.db");
    await store.deleteMany([gone]);
    const out = await runCli(args);
    assertEquals(out.code, 1);
    assertEquals(problems(out.stdout), [gone]);
  });

  await t.step("--md5 catches a truncated object", async () => {
    const truncated = key(NAMING, "/data/ks/t/nb-2-big-Data.db");
    await Deno.truncate(store.dataPath(truncated), 10);
    const result = await verify({
      store,
      naming: NAMING,
      path: "/data/ks/t",
      md5: true,
      print: () => {},
    });
    assertEquals(result.problems.map((p) => p.key), [truncated]);
    assertStringIncludes(result.problems[0]!.problem, "MD5 ");
  });

  await t.step("a broken index is a problem", async () => {
    const broken = await putIndex(w, "/data/ks/v/nb-1-big-Data.db", "[]");
    const result = await verify({ store, naming: NAMING, path: "/data/ks/v", print: () => {} });
    assertEquals(result.problems.length, 1);
    assertEquals(result.problems[0]!.key, broken);
    const none = await verify({ store, naming: NAMING, path: "/nothing", print: () => {} });
    assertEquals(none.problems.map((p) => p.problem), ["no index under this prefix"]);
  });
});

Deno.test("verify on S3 catches a truncated object without downloading; --md5 catches a multipart one", async () => {
  await using s3 = await startS3Server("test-bucket", { server: "moto" });
  const w = s3Writer(s3);
  const table = "/var/lib/cassandra/data/ks/t";
  await putTable(w, table, generation(1));
  const args = ["verify", "-n", HOST, s3.bucket, "/var/lib/cassandra/data"];
  const good = await runCli(args, { env: s3.env });
  assertEquals(good.code, 0, good.stdout + good.stderr);

  // Overwritten with fewer bytes, keeping the original metadata.
  const victim = key(NAMING, `${table}/nb-1-big-Index.db`);
  const original = contentOf("nb-1-big-Index.db");
  await s3.client.send(
    new PutObjectCommand({
      Bucket: s3.bucket,
      Key: victim,
      Body: original.subarray(0, 20),
      Metadata: { md5sum: md5Hex(original), stat: statJson() },
    }),
  );
  const plain = await runCli(args, { env: s3.env });
  assertEquals(plain.code, 1, plain.stdout + plain.stderr);
  assertEquals(problems(plain.stdout), [victim]);

  // The same bytes as a multipart object (on moto: s3rver gives multipart
  // objects a plain MD5 ETag, S3 and moto do not): its ETag is no MD5, so only
  // --md5, which downloads the object, can tell it from the file.
  const { UploadId } = await s3.client.send(
    new CreateMultipartUploadCommand({
      Bucket: s3.bucket,
      Key: victim,
      Metadata: { md5sum: md5Hex(original), stat: statJson() },
    }),
  );
  const part = await s3.client.send(
    new UploadPartCommand({
      Bucket: s3.bucket,
      Key: victim,
      UploadId,
      PartNumber: 1,
      Body: original.subarray(0, 20),
    }),
  );
  await s3.client.send(
    new CompleteMultipartUploadCommand({
      Bucket: s3.bucket,
      Key: victim,
      UploadId,
      MultipartUpload: { Parts: [{ ETag: part.ETag!, PartNumber: 1 }] },
    }),
  );
  const unseen = await runCli(args, { env: s3.env });
  assertEquals(unseen.code, 0, unseen.stdout + unseen.stderr);
  assertEquals(problems(unseen.stdout), []);
  const withMd5 = await runCli(["verify", "--md5", ...args.slice(1)], { env: s3.env });
  assertEquals(withMd5.code, 1, withMd5.stdout + withMd5.stderr);
  assertEquals(problems(withMd5.stdout), [victim]);
});
