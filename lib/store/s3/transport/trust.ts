/**
 * Which certificate authorities a server's certificate may chain to: the
 * system's roots (Deno's default), plus the PEM bundles named by
 * `--ca-bundle`, `AWS_CA_BUNDLE`, the profile's `ca_bundle` and
 * `NODE_EXTRA_CA_CERTS`, read here and handed to every TLS connection as
 * `caCerts` (which adds to the roots rather than replacing them). Reading
 * them ourselves keeps `node:https`, which needs full `--allow-sys` as soon
 * as `NODE_EXTRA_CA_CERTS` is set, out of the process.
 */
import { FatalError } from "../../../common/errors.ts";

/** The certificates of each named bundle file, in PEM; a file that holds none is an error. */
export function readCaBundles(files: { path: string; from: string }[]): string[] {
  const certs = new Set<string>();
  for (const { path, from } of files) {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (err) {
      const why = err instanceof Deno.errors.NotFound ? "no such file" : (err as Error).message;
      throw new FatalError(`CA bundle '${path}' (${from}) cannot be read: ${why}`);
    }
    const found = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
    if (!found) throw new FatalError(`CA bundle '${path}' (${from}) holds no PEM certificate`);
    for (const cert of found) certs.add(cert);
  }
  return [...certs];
}

/** A certificate (or TLS) failure: one line naming the host and the reason, never retried. */
export function tlsError(host: string, err: unknown): FatalError {
  const reason = (err instanceof Error ? err.message : String(err)).replace(/\s+/g, " ");
  const hint = /certificate|UnknownIssuer|CertNotValid|NotValidForName/i.test(reason)
    ? " (a private CA: give its bundle with --ca-bundle or AWS_CA_BUNDLE)"
    : "";
  return new FatalError(`TLS connection to ${host} failed: ${reason}${hint}`);
}
