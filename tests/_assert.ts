/**
 * The few assertions the tests need. `@std/assert` lives on JSR, which our
 * build hosts cannot reach, so these wrap `node:assert` (same semantics as
 * the std versions for our uses).
 */
import assert from "node:assert/strict";

export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  assert.deepStrictEqual(actual, expected, message);
}

export function assertNotEquals<T>(actual: T, expected: T, message?: string): void {
  assert.notDeepStrictEqual(actual, expected, message);
}

export function assert_(condition: unknown, message = "Assertion failed"): asserts condition {
  assert.ok(condition, message);
}
export { assert_ as assert };

export function assertMatch(actual: string, pattern: RegExp, message?: string): void {
  assert.match(actual, pattern, message);
}

export function assertStringIncludes(actual: string, expected: string, message?: string): void {
  if (!actual.includes(expected)) {
    throw new assert.AssertionError({
      message: message ??
        `Expected ${JSON.stringify(actual)} to include ${JSON.stringify(expected)}`,
    });
  }
}

// deno-lint-ignore no-explicit-any
type ErrorClass = new (...args: any[]) => Error;

export function assertThrows(fn: () => unknown, errorClass?: ErrorClass, includes?: string): Error {
  try {
    fn();
  } catch (err) {
    checkError(err, errorClass, includes);
    return err as Error;
  }
  throw new assert.AssertionError({ message: "Expected function to throw" });
}

export async function assertRejects(
  fn: () => Promise<unknown>,
  errorClass?: ErrorClass,
  includes?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    checkError(err, errorClass, includes);
    return err as Error;
  }
  throw new assert.AssertionError({ message: "Expected promise to reject" });
}

function checkError(err: unknown, errorClass?: ErrorClass, includes?: string): void {
  if (errorClass && !(err instanceof errorClass)) {
    throw new assert.AssertionError({
      message: `Expected ${errorClass.name}, got ${
        err instanceof Error ? err.name : typeof err
      }: ${err}`,
    });
  }
  if (includes && !(err instanceof Error && err.message.includes(includes))) {
    throw new assert.AssertionError({
      message: `Expected error message to include ${JSON.stringify(includes)}, got ${
        JSON.stringify((err as Error)?.message)
      }`,
    });
  }
}
