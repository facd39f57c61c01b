// Placeholder while the job is being written (issue 3); not committed as done.
import { FatalError } from "./errors.ts";

export function slurpMain(_args: string[]): Promise<number> {
  return Promise.reject(new FatalError("'slurp' is not implemented yet"));
}
