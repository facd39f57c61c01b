/**
 * Keys rotated under a running process. The SDK's credential chain reads a
 * profile file (`AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`) once
 * per process and keeps static keys for good, even when asked to refresh;
 * an operator who rotates the key (a new one written to the file, the old
 * one deleted in IAM) would see every later request refused. So when S3
 * refuses the credentials a request was signed with, the chain is built
 * anew with the files read again (`ignoreCache`) and the request is sent
 * once more, if that gave other keys. Keys given on the command line have
 * no source to re-read: they stay as they are.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { defaultProvider } from "@aws-sdk/credential-provider-node";
import { log } from "../../common/log.ts";
import { httpStatus, isCredentialError, namesNoCode } from "./errors.ts";

type ChainInput = Parameters<typeof defaultProvider>[0];
type IdentityProvider = ReturnType<typeof defaultProvider>;

/**
 * The client's `credentialDefaultProvider`: the SDK's default chain, built
 * anew over freshly read files whenever a refresh is forced.
 */
export function rereadableChain(input: ChainInput): IdentityProvider {
  let chain = defaultProvider(input);
  return (options) => {
    if (options?.forceRefresh) {
      chain = defaultProvider({ ...input, ignoreCache: true });
    }
    return chain(options);
  };
}

const renewals = new WeakMap<S3Client, CredentialRenewal>();

/** The one renewal of a client's credentials, shared by its SDK and direct requests. */
export function renewalOf(client: S3Client): CredentialRenewal {
  let renewal = renewals.get(client);
  if (!renewal) {
    renewal = new CredentialRenewal(client);
    renewals.set(client, renewal);
  }
  return renewal;
}

export class CredentialRenewal {
  readonly #client: S3Client;
  #rereading: Promise<string | undefined> | undefined;

  constructor(client: S3Client) {
    this.#client = client;
  }

  /** The access key id requests are signed with now (undefined: none yet). */
  async current(): Promise<string | undefined> {
    try {
      return (await (this.#client.config.credentials as IdentityProvider)()).accessKeyId;
    } catch {
      return undefined;
    }
  }

  /**
   * After `error`: true when S3 refused the credentials a request was signed
   * with (`signedWith`) and reading their source again gave other ones.
   * Concurrent refusals share one re-read.
   */
  async renewed(error: unknown, signedWith: string | undefined): Promise<boolean> {
    const name = (error as { name?: string }).name ?? "";
    if (signedWith === undefined || !isRefusal(name, error)) return false;
    this.#rereading ??= this.#reread(name).finally(() => this.#rereading = undefined);
    const now = await this.#rereading;
    return now !== undefined && now !== signedWith;
  }

  async #reread(refusal: string): Promise<string | undefined> {
    const before = await this.current();
    let now: string | undefined;
    try {
      const provider = this.#client.config.credentials as IdentityProvider;
      now = (await provider({ forceRefresh: true })).accessKeyId;
    } catch {
      return undefined;
    }
    if (now !== before) {
      log.info("S3 refused the credentials: read them again, retrying with the new ones", {
        refusal,
      });
    }
    return now;
  }
}

/** A refusal of the keys themselves, or a 403 without a word (a HEAD's answer has no body). */
function isRefusal(name: string, error: unknown): boolean {
  return isCredentialError(name) || (httpStatus(error) === 403 && namesNoCode(name));
}
