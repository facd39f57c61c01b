/**
 * How requests reach S3, from the flags, the environment and the AWS
 * config file, as the AWS CLI reads them: which CAs to trust, which proxy
 * to go through, and how to address the bucket.
 */
import { UsageError } from "../../common/errors.ts";
import { profileSettings } from "./aws_config.ts";
import { proxySettings } from "./transport/proxy.ts";
import { readCaBundles } from "./transport/trust.ts";
import type { S3Options } from "./s3_options.ts";

export interface NetworkFlags {
  caBundle?: string | undefined;
  forcePathStyle?: boolean | undefined;
}

/**
 * The trust, proxy and addressing options. The CA bundle is the first of
 * `--ca-bundle`, `AWS_CA_BUNDLE` and the profile's `ca_bundle` (as the AWS
 * CLI picks one); `NODE_EXTRA_CA_CERTS` is added to it, and both to the
 * system roots.
 */
export function networkOptions(
  flags: NetworkFlags,
  env: (name: string) => string | undefined,
  hasEndpoint: boolean,
): Pick<S3Options, "caCerts" | "proxy" | "forcePathStyle"> {
  const profile = profileSettings(env);
  const bundles: { path: string; from: string }[] = [];
  if (flags.caBundle === "") throw new UsageError("Option '--ca-bundle' needs a file path");
  const bundle = flags.caBundle !== undefined
    ? { path: flags.caBundle, from: "--ca-bundle" }
    : env("AWS_CA_BUNDLE") !== undefined
    ? { path: env("AWS_CA_BUNDLE")!, from: "AWS_CA_BUNDLE" }
    : profile.caBundle !== undefined
    ? { path: expandHome(profile.caBundle, env), from: "the profile's ca_bundle" }
    : undefined;
  if (bundle) bundles.push(bundle);
  const nodeExtra = env("NODE_EXTRA_CA_CERTS");
  if (nodeExtra !== undefined) bundles.push({ path: nodeExtra, from: "NODE_EXTRA_CA_CERTS" });
  const style = profile.addressingStyle?.toLowerCase();
  const forced = flags.forcePathStyle === true ||
    /^(1|true|yes)$/i.test(env("AWS_S3_FORCE_PATH_STYLE") ?? "") || style === "path";
  // An endpoint of its own is addressed in the path unless the profile says virtual.
  const pathStyle = forced || (hasEndpoint && style !== "virtual");
  return {
    caCerts: readCaBundles(bundles),
    proxy: proxySettings(env),
    forcePathStyle: pathStyle,
  };
}

function expandHome(path: string, env: (name: string) => string | undefined): string {
  const home = env("HOME");
  return path.startsWith("~/") && home ? `${home}${path.slice(1)}` : path;
}
