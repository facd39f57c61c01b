/**
 * One `FileKeyUnwrapper` opens the headers of many objects (the identities
 * are parsed once), and a bad identity still fails a read, not the store's
 * construction.
 */
import { generateIdentity, identityToRecipient } from "age-encryption";
import { assertEquals, assertRejects } from "../_assert.ts";
import { FileKeyUnwrapper, newHeader } from "../../lib/store/age_header.ts";

Deno.test("one unwrapper opens the headers of several files, for any of its identities", async () => {
  const [mine, other] = [await generateIdentity(), await generateIdentity()];
  const unwrapper = new FileKeyUnwrapper([other, mine]);
  for (let i = 0; i < 3; i++) {
    const { header, fileKey } = await newHeader([await identityToRecipient(mine)]);
    assertEquals(await unwrapper.fileKeyOf(header), fileKey);
  }
  const stranger = await newHeader([await identityToRecipient(await generateIdentity())]);
  await assertRejects(() => unwrapper.fileKeyOf(stranger.header), Error, "no identity matched");
});

Deno.test("a bad identity fails the header it is asked to open, every time", async () => {
  const unwrapper = new FileKeyUnwrapper(["AGE-SECRET-KEY-1NOTAKEY"]);
  const { header } = await newHeader([await identityToRecipient(await generateIdentity())]);
  for (let i = 0; i < 2; i++) {
    await assertRejects(async () => await unwrapper.fileKeyOf(header));
  }
});
