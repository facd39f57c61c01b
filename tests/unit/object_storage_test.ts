/**
 * The storage options, parsed (pure): which class each object gets, what is
 * refused and why, and how the original's -R and --with-sse map onto them.
 */
import { parseWatchArgs } from "../../lib/cli/watch.ts";
import { UsageError } from "../../lib/common/errors.ts";
import {
  type ObjectStorage,
  SMALL_OBJECT_BYTES,
  storageClassFor,
} from "../../lib/store/object_storage.ts";
import { assertEquals, assertThrows } from "../_assert.ts";

function storageOf(...args: string[]): ObjectStorage {
  const flags = parseWatchArgs([...args, "bucket", "/data"]);
  if (typeof flags === "string") throw new Error(flags);
  return flags.objectStorage;
}

Deno.test("--storage-class is for file objects of 128 KiB or more; the rest stay STANDARD", () => {
  const storage = storageOf("--storage-class", "standard_ia");
  assertEquals(storage, { storageClass: "STANDARD_IA" });
  assertEquals(SMALL_OBJECT_BYTES, 131_072);
  assertEquals(storageClassFor(storage, { file: SMALL_OBJECT_BYTES }), "STANDARD_IA");
  assertEquals(storageClassFor(storage, { file: 5 << 30 }), "STANDARD_IA");
  // undefined: no header, S3's STANDARD.
  assertEquals(storageClassFor(storage, { file: SMALL_OBJECT_BYTES - 1 }), undefined);
  assertEquals(storageClassFor(storage, { file: 0 }), undefined);
  assertEquals(storageClassFor(storage, "index"), undefined);
  const both = storageOf("--storage-class", "GLACIER_IR", "--small-object-class", "ONEZONE_IA");
  assertEquals(storageClassFor(both, { file: 1000 }), "ONEZONE_IA");
  assertEquals(storageClassFor(both, "index"), "ONEZONE_IA");
  assertEquals(storageClassFor(both, { file: 1 << 20 }), "GLACIER_IR");
  assertEquals(
    storageClassFor(storageOf("--storage-class", "STANDARD"), { file: 1 << 20 }),
    undefined,
  );
  for (const c of ["STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"]) {
    assertEquals(storageOf("--storage-class", c).storageClass, c);
  }
  assertEquals(storageOf(), {});
});

Deno.test("the archive classes are refused with one line saying why; unknown ones listed", () => {
  for (const flag of ["--storage-class", "--small-object-class"]) {
    for (const archive of ["GLACIER", "deep_archive"]) {
      const err = assertThrows(() => storageOf(flag, archive), UsageError);
      assertEquals(
        err.message,
        `Option '${flag}' refuses ${archive.toUpperCase()}: its objects need a restore request ` +
          "(hours) before any GET, so slurp could not read them; GLACIER_IR is the archive " +
          "class read at once",
      );
    }
    assertThrows(
      () => storageOf(flag, "EXPRESS_ONEZONE"),
      UsageError,
      "takes STANDARD, STANDARD_IA",
    );
  }
});

Deno.test("-R is every object in REDUCED_REDUNDANCY, as before; not with --storage-class", () => {
  const legacy = storageOf("-R");
  assertEquals(legacy, {
    storageClass: "REDUCED_REDUNDANCY",
    smallObjectClass: "REDUCED_REDUNDANCY",
  });
  assertEquals(storageClassFor(legacy, "index"), "REDUCED_REDUNDANCY");
  assertEquals(storageClassFor(legacy, { file: 10 }), "REDUCED_REDUNDANCY");
  assertEquals(storageOf("-R", "--small-object-class", "STANDARD").smallObjectClass, "STANDARD");
  assertThrows(() => storageOf("-R", "--storage-class", "STANDARD_IA"), UsageError, "exclude");
});

Deno.test("--sse AES256 | aws:kms, --sse-kms-key-id, and --with-sse meaning AES256", () => {
  assertEquals(storageOf("--with-sse").sse, { kind: "AES256" });
  assertEquals(storageOf("--sse", "AES256").sse, { kind: "AES256" });
  assertEquals(storageOf("--sse", "aes256", "--with-sse").sse, { kind: "AES256" });
  assertEquals(storageOf("--sse", "aws:kms").sse, { kind: "aws:kms" });
  const arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
  for (const keyId of [arn, "alias/backups", "mrk-1234abcd12ab34cd56ef1234567890ab"]) {
    assertEquals(storageOf("--sse", "aws:kms", "--sse-kms-key-id", keyId).sse, {
      kind: "aws:kms",
      keyId,
    });
  }
  assertThrows(() => storageOf("--sse", "aws:kms:dsse"), UsageError, "takes AES256 or aws:kms");
  assertThrows(() => storageOf("--sse-kms-key-id", arn), UsageError, "needs '--sse aws:kms'");
  assertThrows(
    () => storageOf("--sse", "AES256", "--sse-kms-key-id", arn),
    UsageError,
    "needs '--sse aws:kms'",
  );
  assertThrows(() => storageOf("--with-sse", "--sse", "aws:kms"), UsageError, "not with");
  // A key id goes into a request header: nothing that could split it.
  for (const bad of ["", "key\r\nx-amz-acl: public-read", "a key"]) {
    assertThrows(
      () => storageOf("--sse", "aws:kms", `--sse-kms-key-id=${bad}`),
      UsageError,
      "needs a KMS key id",
    );
  }
});

Deno.test("the new options need an S3 bucket; -R and --with-sse are ignored by a local store", () => {
  const local = (...args: string[]) => parseWatchArgs([...args, "file:///tmp/b", "/data"]);
  for (const args of [["--storage-class", "STANDARD_IA"], ["--sse", "AES256"]]) {
    assertThrows(() => local(...args), UsageError, "needs an S3 bucket, not a local store");
  }
  assertEquals(typeof local("-R", "--with-sse"), "object");
});
