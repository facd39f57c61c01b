// Placeholder while the job is being written (issue 3); not committed as done.
import { FatalError } from "./errors.ts";

export function chopMain(_args: string[]): Promise<number> {
  return Promise.reject(new FatalError("'chop' is not implemented yet"));
}
