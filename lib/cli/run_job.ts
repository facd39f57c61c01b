/**
 * What the restore, retention and verify jobs share around their work:
 * BUCKET and the other arguments, then a resolved key naming and a store
 * proven reachable, closed after.
 */
import { UsageError } from "../common/errors.ts";
import type { KeyNaming } from "../bucket/keys.ts";
import type { AgeIdentities } from "../store/age_keys.ts";
import { checkBucketArgument, type Connection, openStore } from "../store/open_store.ts";
import { wrapStore } from "../store/wrapped_store.ts";
import type { Store } from "../store/store.ts";
import { type NamingFlags, resolveNaming } from "./shared_options.ts";

/** How to reach the bucket and name keys, as parsed. */
export interface BucketFlags {
  bucket: string;
  connection: Connection;
  naming: NamingFlags;
  /** `--identity` (slurp, verify): decrypts encrypted objects; without it they are refused. */
  identities?: AgeIdentities | undefined;
}

/** A job's options as parsed: everything but the store and the resolved naming. */
export type JobFlags<Options> = Omit<Options, "store" | "naming"> & BucketFlags;

/**
 * The positional arguments, exactly as many as `names` (BUCKET first, which
 * is checked), or a usage error that says what was expected.
 */
export function jobArguments<const Names extends readonly string[]>(
  positionals: string[],
  names: Names,
): { [K in keyof Names]: string } {
  if (positionals.length !== names.length) {
    throw new UsageError(`Expected ${names.join(" ")}, got ${positionals.length} arguments`);
  }
  checkBucketArgument(positionals[0]!);
  return positionals as { [K in keyof Names]: string };
}

/**
 * Prints `help`, or resolves the naming (DNS), opens and checks the store,
 * runs `job` and closes the store. Returns the job's exit code.
 */
export async function runJob<Flags extends BucketFlags>(
  parsed: Flags | "help",
  help: string,
  job: (options: Omit<Flags, "naming"> & { store: Store; naming: KeyNaming }) => Promise<number>,
): Promise<number> {
  if (parsed === "help") {
    console.log(help);
    return 0;
  }
  const naming = await resolveNaming(parsed.naming);
  const store = wrapStore(openStore(parsed.bucket, parsed.connection), {
    encryption: { identities: parsed.identities },
  });
  try {
    await store.check();
    return await job({ ...parsed, store, naming });
  } finally {
    store.close();
  }
}
