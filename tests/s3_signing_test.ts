/**
 * Signatures, checked by a server that verifies them. s3rver does not, so a
 * mistake in how `S3Store` signs its direct HEAD/PUT/GET requests (lib/store/s3/direct_requests.ts)
 * or its SDK requests would pass every other test. moto does when told to:
 * its first few requests are let through unauthenticated (to create an IAM
 * user with an access key and an S3 policy, and the bucket, via boto3), and
 * every later request must carry a valid SigV4 signature of that key.
 */
import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { tempDir } from "./_helpers.ts";
import { spawnMoto } from "./_moto.ts";
import { digestFile } from "../lib/common/digest.ts";
import { S3Store } from "../lib/store/s3/s3_store.ts";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";

const SETUP = `
import boto3, json, sys
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1",
          aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="tablesnap")
key = iam.create_access_key(UserName="tablesnap")["AccessKey"]
iam.put_user_policy(UserName="tablesnap", PolicyName="s3", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
boto3.client("s3", **kw).create_bucket(Bucket="signed")
print(key["AccessKeyId"], key["SecretAccessKey"])
`;

Deno.test("S3Store's requests carry valid signatures (moto verifying SigV4)", async (t) => {
  // spawnMoto waits for the port without an HTTP request: each would use up
  // one of the four unauthenticated actions.
  await using moto = await spawnMoto({ env: { INITIAL_NO_AUTH_ACTION_COUNT: "4" } });
  const { endpoint } = moto;
  await using scratch = await tempDir();
  const setup = await new Deno.Command("python3", {
    args: ["-c", SETUP, endpoint],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(setup.success, new TextDecoder().decode(setup.stderr));
  const [accessKeyId, secretAccessKey] = new TextDecoder().decode(setup.stdout).trim().split(" ");
  const store = new S3Store({
    bucket: "signed",
    endpoint,
    accessKeyId: accessKeyId!,
    secretAccessKey: secretAccessKey!,
  });
  try {
    assertEquals(await store.usesDirectRequests(), true, "the direct path is under test");
    await t.step("direct requests are accepted exactly where the SDK's are", async () => {
      // moto itself refuses many encoded characters (':', '+', '%',
      // non-ASCII... even from the SDK, while AWS accepts them): what must hold is that our
      // signing agrees with the SDK's for every key, and that plain
      // keys, metadata and content types go through.
      const sdk = new S3Client({
        region: "us-east-1",
        endpoint,
        forcePathStyle: true,
        credentials: { accessKeyId: accessKeyId!, secretAccessKey: secretAccessKey! },
        requestChecksumCalculation: "WHEN_REQUIRED",
      });
      const keys = [
        "var/lib/cassandra/data/ks/t-1/nb-1-big-Data.db",
        "data/a b/nb-2-big-Data.db",
        "data/a b+c=d&e?f#g;h,i$j@k/file (1)!*'~.db",
        "p/x//y/%2e",
        "host:/var/lib/cassandra/data/ks/t-1/nb-1-big-Data.db",
        "data/ü/é-Data.db",
      ];
      let accepted = 0;
      try {
        for (const [i, key] of keys.entries()) {
          const body = new TextEncoder().encode(`body ${i}`);
          const viaSdk = await sdk.send(
            new PutObjectCommand({ Bucket: "signed", Key: `sdk/${key}`, Body: body }),
          ).then(() => "ok", (err) => String(err?.name));
          const direct = await store.putBytes(`direct/${key}`, body, {
            metadata: { stat: '{"uid": 0, "gid": 0, "mode": 33188}', md5sum: "m" },
            contentType: "application/json",
          }).then(() => "ok", (err) => String(err?.name));
          assertEquals(direct, viaSdk, key);
          if (direct !== "ok") continue;
          accepted++;
          const head = await store.head(`direct/${key}`);
          assertEquals(head?.size, body.length, key);
          assertEquals(head?.etag, createHash("md5").update(body).digest("hex"), key);
          assertEquals(head?.metadata.stat, '{"uid": 0, "gid": 0, "mode": 33188}', key);
          assertEquals(head?.contentType, "application/json", key);
          const got = await store.get(`direct/${key}`);
          assertEquals(await new Response(got?.body).text(), `body ${i}`, key);
          assertEquals(got?.head.metadata.md5sum, "m", key);
        }
      } finally {
        sdk.destroy();
      }
      assert(accepted >= 2, `only ${accepted} keys accepted`);
      assertEquals(await store.head("direct/no such key"), null);
      assertEquals(await store.get("direct/no such key"), null);
    });

    await t.step("files sent from memory, streamed and in parts all verify", async () => {
      const path = `${scratch.path}/f`;
      const bytes = new Uint8Array(11 * 1024 * 1024 + 5).map((_, i) => (i * 7) % 251);
      await Deno.writeFile(path, bytes);
      const partSize = 5 * 1024 * 1024;
      const d = await digestFile(path, bytes.length, partSize);
      const upload = { path, size: bytes.length, md5: d.md5, metadata: { md5sum: d.md5 } };
      await store.putFile("host/in memory", { ...upload, body: bytes });
      await store.putFile("host/streamed", upload);
      await store.putFile("host/in parts", {
        ...upload,
        parts: { partSize, md5s: d.partMd5s! },
      });
      for (const key of ["host/in memory", "host/streamed", "host/in parts"]) {
        const got = await store.get(key);
        const data = new Uint8Array(await new Response(got!.body).arrayBuffer());
        assertEquals(createHash("md5").update(data).digest("hex"), d.md5, key);
        assertEquals(got!.head.metadata.md5sum, d.md5, key);
      }
      assertEquals((await store.head("host/in parts"))?.etag.endsWith("-3"), true);
      // A ranged GET (large restores): the range's bytes, the whole object's size.
      const range = await store.get("host/in parts", { range: { offset: 5000, length: 70_000 } });
      assertEquals(range!.head.size, bytes.length);
      assertEquals(
        new Uint8Array(await new Response(range!.body).arrayBuffer()),
        bytes.subarray(5000, 75_000),
      );
    });

    await t.step("a wrong secret is refused on the direct and the SDK paths", async () => {
      const wrong = new S3Store({
        bucket: "signed",
        endpoint,
        accessKeyId,
        secretAccessKey: "x",
      });
      try {
        const err = await assertRejects(() => wrong.head("host/streamed"));
        assertEquals(
          (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode,
          403,
        );
        await assertRejects(() => wrong.putBytes("host/nope", new Uint8Array(1), {}));
        const refused = await assertRejects(() => wrong.get("host/streamed"));
        assertEquals(
          (refused as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode,
          403,
        );
        // A streamed body refused by the server: the request ends, it does not hang.
        const path = `${scratch.path}/f`;
        const size = (await Deno.stat(path)).size;
        await assertRejects(() =>
          wrong.putFile("host/nope", { path, size, md5: "00", metadata: {} })
        );
        await assertRejects(() => wrong.check());
      } finally {
        wrong.close();
      }
      assertEquals(await store.head("host/nope"), null);
    });
  } finally {
    store.close();
  }
});
