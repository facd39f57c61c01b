/** This host's name as the Python tablesnap put it in keys. */
import { lookup, lookupService } from "node:dns/promises";

/**
 * The fully qualified host name, as Python's `socket.getfqdn()` gives it:
 * resolve the short name, then reverse-resolve the address; fall back to the
 * short name when either step fails or yields nothing better.
 * Requires `--allow-sys=hostname` and `--allow-net` (DNS).
 */
export async function fullyQualifiedHostname(): Promise<string> {
  const short = Deno.hostname();
  try {
    const { address } = await lookup(short);
    const { hostname } = await lookupService(address, 0);
    if (hostname && hostname.includes(".") && hostname !== "localhost") return hostname;
  } catch {
    // No resolver or no entry: the short name is what getfqdn() returns too.
  }
  return short;
}
