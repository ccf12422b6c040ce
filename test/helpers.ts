/** Shared test utilities: where ../shared lives, and tolerance checks that say where they failed. */
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Repository root (tests run from dist/test). */
export const repoRoot = path.resolve(here, '..', '..');
export const sharedDir = path.resolve(repoRoot, '..', 'shared');
export const fixturesDir = path.join(sharedDir, 'fixtures');

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; at: number } {
  assert.equal(a.length, b.length, `lengths differ: ${a.length} vs ${b.length}`);
  let max = 0, at = -1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= max)) { max = d; at = i; } // NaN counts as a failure
  }
  return { max, at };
}

/** |actual − expected| ≤ tol·(1 + max|expected|) everywhere: the parity criterion of the foundation issue. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol = 1e-4): void {
  const { max, at } = maxAbsDiff(actual, expected);
  const bound = tol * (1 + maxAbs(expected));
  assert.ok(max <= bound, `${what}: max abs error ${max} at ${at} (actual ${actual[at]}, expected ${expected[at]}) exceeds ${bound}`);
}
