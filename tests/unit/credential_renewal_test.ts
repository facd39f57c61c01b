/**
 * Which refusals make the keys be read again: S3's codes for bad keys, and a
 * 403 that names no code whichever way it is named (a HEAD's answer has no
 * body; the SDK calls it "Unknown", our own requests "Forbidden"). A denial
 * by policy (AccessDenied) is not about the keys.
 */
import { S3Client } from "@aws-sdk/client-s3";
import { renewalOf } from "../../lib/store/s3/credential_renewal.ts";
import { assertEquals } from "../_assert.ts";

/** A client whose keys change each time a refresh is forced. */
function rotatingClient(): S3Client {
  let generation = 1;
  return new S3Client({
    region: "us-east-1",
    credentials: (options?: { forceRefresh?: boolean }) => {
      if (options?.forceRefresh) generation++;
      return Promise.resolve({ accessKeyId: `KEY${generation}`, secretAccessKey: "secret" });
    },
  });
}

function refusal(name: string, status: number, message = ""): Error {
  return Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });
}

Deno.test("keys are read again after a refusal of the keys, not after a policy denial", async () => {
  const cases: [Error, boolean][] = [
    [refusal("Unknown", 403, "UnknownError"), true], // the SDK's bodiless 403 (HEAD)
    [refusal("Forbidden", 403), true], // our direct requests' bodiless 403
    [refusal("403", 403), true],
    [refusal("InvalidAccessKeyId", 403), true],
    [refusal("SignatureDoesNotMatch", 403), true],
    [refusal("AccessDenied", 403), false],
    [refusal("Unknown", 500), false],
    [refusal("NotFound", 404), false],
  ];
  for (const [error, expected] of cases) {
    const renewal = renewalOf(rotatingClient());
    const signedWith = await renewal.current();
    assertEquals(
      await renewal.renewed(error, signedWith),
      expected,
      `${error.name} ${JSON.stringify(error)}`,
    );
  }
});
