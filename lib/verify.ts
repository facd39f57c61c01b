// Placeholder while the job is being written (issue 3); not committed as done.
import { FatalError } from "./errors.ts";

export function verifyMain(_args: string[]): Promise<number> {
  return Promise.reject(new FatalError("'verify' is not implemented yet"));
}
