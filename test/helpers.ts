/** Shared test utilities: where ../shared lives, and tolerance checks that say where they failed. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
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

/**
 * A scratch directory for one test file, removed when its tests end; `next()` makes a fresh
 * subdirectory for one case.
 */
export function scratchDir(prefix: string): { root: string; next(): string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `ptq4vit-${prefix}-`));
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  let count = 0;
  return {
    root,
    next() {
      const dir = path.join(root, String(count++));
      fs.mkdirSync(dir);
      return dir;
    },
  };
}

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run `ptq4vit <args>` from the repository root, as a user would (no debug stack traces). */
export function runCli(args: string[], timeoutMs = 600_000): CliRun {
  const r = spawnSync(process.execPath, ['bin/ptq4vit.js', ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: timeoutMs,
    env: { ...process.env, PTQ4VIT_DEBUG: '' },
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export const showRun = (r: CliRun): string => `exit ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
