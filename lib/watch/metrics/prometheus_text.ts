/**
 * The Prometheus text exposition format 0.0.4 (metrics.ts renders with it):
 * histograms, and a writer that escapes HELP texts and label values.
 */
/** One histogram series: cumulative counts are computed when rendering. */
export class Histogram {
  readonly bounds: readonly number[];
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = bounds.map(() => 0);
  }

  observe(value: number): void {
    const i = this.bounds.findIndex((bound) => value <= bound);
    if (i >= 0) this.counts[i] = (this.counts[i] ?? 0) + 1;
    this.sum += value;
    this.count += 1;
  }
}

export type Labels = Record<string, string>;
export type Sample = [Labels, number];

/** Writes metric families in the text format 0.0.4. */
export class Writer {
  #lines: string[] = [];

  metric(name: string, type: "counter" | "gauge", help: string, samples: Sample[]): void {
    this.#header(name, type, help);
    for (const [labels, value] of samples) this.#sample(name, labels, value);
  }

  histogram(name: string, help: string, series: [Labels, Histogram][]): void {
    this.#header(name, "histogram", help);
    for (const [labels, h] of series) {
      let cumulative = 0;
      h.bounds.forEach((bound, i) => {
        cumulative += h.counts[i] ?? 0;
        this.#sample(`${name}_bucket`, { ...labels, le: formatValue(bound) }, cumulative);
      });
      this.#sample(`${name}_bucket`, { ...labels, le: "+Inf" }, h.count);
      this.#sample(`${name}_sum`, labels, h.sum);
      this.#sample(`${name}_count`, labels, h.count);
    }
  }

  text(): string {
    return this.#lines.join("\n") + "\n";
  }

  #header(name: string, type: string, help: string): void {
    this.#lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  }

  #sample(name: string, labels: Labels, value: number): void {
    const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
    const labelText = pairs.length > 0 ? `{${pairs.join(",")}}` : "";
    this.#lines.push(`${name}${labelText} ${formatValue(value)}`);
  }
}

export function increment(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

export function labelled(map: Map<string, number>, label: string): Sample[] {
  return [...map].map(([value, count]) => [{ [label]: value }, count]);
}

export function timestamps(map: Map<string, number>): Sample[] {
  return [...map].map(([path, ms]) => [{ path }, ms / 1000]);
}

/** HELP text: backslash and newline are escaped. */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Label values: backslash, double quote and newline are escaped. */
function escapeLabelValue(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
