// TEMPORARY minimal stand-in written by the lead so the watcher runs; helper-2 replaces this file.
export class Metrics {
  fileUploaded(_root: string, _bytes: number, _seconds: number): void {}
  uploadFailed(_reason: string): void {}
  uploadRetried(_reason: string): void {}
  setPending(_files: number, _bytes: number, _oldestSinceMs: number | null): void {}
  indexWritten(_root: string): void {}
  s3Request(_operation: string, _seconds: number, _failed: boolean): void {}
  setWatching(_ok: boolean): void {}
  setS3Reachable(_ok: boolean): void {}
  healthy(): boolean {
    return true;
  }
  render(): string {
    return "";
  }
}
export function serveMetrics(_m: Metrics, _listen: string): { port: number; shutdown(): Promise<void> } {
  return { port: 0, shutdown: () => Promise.resolve() };
}
export function failureReason(_err: unknown): string {
  return "other";
}
