/**
 * The paths events named, looked at one at a time (file_watcher.ts): a
 * path queued twice is looked at once, with the stronger of its two kinds.
 */
import { errorMessage } from "../../common/errors.ts";
import { log } from "../../common/log.ts";
import { type ProbeKind, strongerProbe } from "./watch_rules.ts";

/** A path to look at, and what its event said. */
interface Probe {
  path: string;
  kind: ProbeKind;
}

export class ProbeQueue {
  readonly #queue: Probe[] = [];
  readonly #queued = new Map<string, Probe>();
  #draining = false;
  readonly #look: (path: string, kind: ProbeKind) => Promise<void>;

  /** `look`: what is done with each path, awaited before the next. */
  constructor(look: (path: string, kind: ProbeKind) => Promise<void>) {
    this.#look = look;
  }

  add(path: string, kind: ProbeKind): void {
    const queued = this.#queued.get(path);
    if (queued) {
      queued.kind = strongerProbe(queued.kind, kind);
      return;
    }
    const probe = { path, kind };
    this.#queued.set(path, probe);
    this.#queue.push(probe);
    if (!this.#draining) this.#drain();
  }

  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#queue.length > 0) {
        const { path, kind } = this.#queue.shift()!;
        this.#queued.delete(path);
        try {
          await this.#look(path, kind);
        } catch (err) {
          log.repeated(`inspect ${path}`, "warn", "could not inspect path", {
            path,
            error: errorMessage(err),
          });
        }
      }
    } finally {
      this.#draining = false;
    }
  }
}
