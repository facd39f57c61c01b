/**
 * Where direct requests go (lib/store/s3/direct_requests.ts): the SDK's own endpoint rules,
 * resolved once per bucket, so AWS buckets get the same URLs the SDK uses.
 * No server needed: resolving an endpoint sends nothing.
 */
import { S3Client } from "@aws-sdk/client-s3";
import { assertEquals } from "../_assert.ts";
import { BucketRegion } from "../../lib/store/s3/bucket_region.ts";
import { DirectS3 } from "../../lib/store/s3/direct_requests.ts";
import { HttpClient } from "../../lib/store/s3/transport/http_client.ts";

const credentials = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" };

async function baseUrl(bucket: string, config: ConstructorParameters<typeof S3Client>[0]) {
  const client = new S3Client({ credentials, ...config });
  const http = new HttpClient({ idleTimeoutMs: 1000 });
  const region = new BucketRegion(bucket, String(config?.region ?? "us-east-1"));
  const direct = new DirectS3({ client, bucket, http, region });
  try {
    return await direct.baseUrl();
  } finally {
    http.close();
    client.destroy();
  }
}

Deno.test("direct requests use the SDK's endpoint for the bucket", async () => {
  assertEquals(
    await baseUrl("backups", { region: "eu-west-1" }),
    "https://backups.s3.eu-west-1.amazonaws.com/",
  );
  // Dots do not fit a TLS wildcard certificate: path style, as the SDK does.
  assertEquals(
    await baseUrl("my.backups", { region: "us-west-2" }),
    "https://s3.us-west-2.amazonaws.com/my.backups",
  );
  assertEquals(
    await baseUrl("backups", {
      region: "us-east-1",
      endpoint: "http://127.0.0.1:9000",
      forcePathStyle: true,
    }),
    "http://127.0.0.1:9000/backups",
  );
  // Buckets that need more than plain SigV4 stay entirely on the SDK.
  assertEquals(
    await baseUrl("arn:aws:s3::123456789012:accesspoint/mfzwi23gnjvgw.mrap", {
      region: "us-east-1",
    }),
    null,
    "multi-region access point (SigV4a)",
  );
  assertEquals(await baseUrl("b--use1-az4--x-s3", { region: "us-east-1" }), null, "S3 Express");
});
