/**
 * Paths (or keys) numbered by dense slots, each directory held once: the
 * index of the compact per-file tables (a node's 100,000 files, a bucket's
 * listing). A path costs its base name and one map entry instead of its
 * whole text, and the slot numbers index typed arrays of the facts kept
 * about it (see `Float64Column`). A freed slot is reused by the next path.
 */

export class PathSlots {
  /** Directory -> base name -> slot. */
  readonly #dirs = new Map<string, Map<string, number>>();
  readonly #free: number[] = [];
  #next = 0;
  #size = 0;

  /** Paths held. */
  get size(): number {
    return this.#size;
  }

  /** One past the highest slot ever handed out (the length columns need). */
  get capacity(): number {
    return this.#next;
  }

  /** The path's slot, or undefined when it is not held. */
  slotOf(path: string): number | undefined {
    const slash = path.lastIndexOf("/");
    return this.#dirs.get(path.slice(0, slash))?.get(path.slice(slash + 1));
  }

  /** The path's slot, a new one when it was not held. */
  add(path: string): number {
    const slash = path.lastIndexOf("/");
    const dir = path.slice(0, slash);
    let names = this.#dirs.get(dir);
    if (!names) this.#dirs.set(dir, names = new Map());
    const name = path.slice(slash + 1);
    let slot = names.get(name);
    if (slot === undefined) {
      slot = this.#free.pop() ?? this.#next++;
      names.set(name, slot);
      this.#size++;
    }
    return slot;
  }

  /** Lets the path go; returns the slot it had (free for reuse now), or undefined. */
  delete(path: string): number | undefined {
    const slash = path.lastIndexOf("/");
    const dir = path.slice(0, slash);
    const names = this.#dirs.get(dir);
    const name = path.slice(slash + 1);
    const slot = names?.get(name);
    if (slot === undefined) return undefined;
    names!.delete(name);
    if (names!.size === 0) this.#dirs.delete(dir);
    this.#free.push(slot);
    this.#size--;
    return slot;
  }

  /** Every path held with its slot (paths rebuilt, one at a time). */
  *entries(): IterableIterator<[string, number]> {
    for (const [dir, names] of this.#dirs) {
      for (const [name, slot] of names) yield [`${dir}/${name}`, slot];
    }
  }

  /** The directories of the paths held (a snapshot). */
  directories(): string[] {
    return [...this.#dirs.keys()];
  }

  /** The base names held directly in `dir` (a snapshot). */
  namesIn(dir: string): string[] {
    return [...this.#dirs.get(dir)?.keys() ?? []];
  }
}

/** Numbers by slot, in a typed array that grows by doubling. */
export class Float64Column {
  #values = new Float64Array(64);

  get(slot: number): number {
    return this.#values[slot] ?? 0;
  }

  set(slot: number, value: number): void {
    if (slot >= this.#values.length) {
      let length = this.#values.length * 2;
      while (length <= slot) length *= 2;
      const grown = new Float64Array(length);
      grown.set(this.#values);
      this.#values = grown;
    }
    this.#values[slot] = value;
  }
}

/** Fixed-width byte values (MD5 digests) by slot, in one growing byte array. */
export class BytesColumn {
  readonly #width: number;
  #bytes: Uint8Array;

  constructor(width: number) {
    this.#width = width;
    this.#bytes = new Uint8Array(64 * width);
  }

  /** The slot's bytes (a view: copy to keep). */
  get(slot: number): Uint8Array {
    const start = slot * this.#width;
    return this.#bytes.subarray(start, start + this.#width);
  }

  set(slot: number, value: Uint8Array): void {
    const start = slot * this.#width;
    if (start + this.#width > this.#bytes.length) {
      let length = this.#bytes.length * 2;
      while (length < start + this.#width) length *= 2;
      const grown = new Uint8Array(length);
      grown.set(this.#bytes);
      this.#bytes = grown;
    }
    this.#bytes.set(value.subarray(0, this.#width), start);
  }
}
