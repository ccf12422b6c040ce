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

/**
 * Writes `bytes` as `file` and runs `ptq4vit eval` on it over `data`: it must end with exit 2 and one line,
 * `ptq4vit: error: FILE: …`, matching `pattern` (a bad quantized file is named, never an internal error).
 */
export function assertEvalRefusesFile(file: string, bytes: Uint8Array, data: string, pattern: RegExp): void {
  fs.writeFileSync(file, bytes);
  const r = runCli(['eval', '--model', file, '--data', data, '--limit', '4', '--json'], 120_000);
  assert.equal(r.status, 2, showRun(r));
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, showRun(r));
  assert.ok(lines[0].startsWith(`ptq4vit: error: ${file}: `), showRun(r));
  assert.match(lines[0], pattern, showRun(r));
}

/** Initializers of an ONNX model: name, data type and raw byte length (a minimal protobuf walk, for counting). */
export function onnxInitializers(bytes: Uint8Array): { name: string; type: number; bytes: number }[] {
  const fields = (buf: Uint8Array, visit: (field: number, wire: number, value: number | Uint8Array) => void) => {
    let i = 0;
    const varint = () => {
      let v = 0, s = 1;
      for (;;) {
        const b = buf[i++];
        v += (b & 0x7f) * s;
        s *= 128;
        if (b < 0x80) return v;
      }
    };
    while (i < buf.length) {
      const key = varint(), field = Math.floor(key / 8), wire = key % 8;
      if (wire === 0) visit(field, wire, varint());
      else if (wire === 2) {
        const n = varint();
        visit(field, wire, buf.subarray(i, i + n));
        i += n;
      } else if (wire === 5) i += 4;
      else if (wire === 1) i += 8;
      else throw new Error(`wire type ${wire}`);
    }
  };
  const out: { name: string; type: number; bytes: number }[] = [];
  fields(bytes, (f, w, graph) => {
    if (f !== 7 || w !== 2) return; // ModelProto.graph
    fields(graph as Uint8Array, (g, gw, tensor) => {
      if (g !== 5 || gw !== 2) return; // GraphProto.initializer
      const t = { name: '', type: 0, bytes: 0 };
      fields(tensor as Uint8Array, (k, _kw, v) => {
        if (k === 2) t.type = v as number;
        if (k === 8) t.name = new TextDecoder().decode(v as Uint8Array);
        if (k === 9) t.bytes = (v as Uint8Array).length;
      });
      out.push(t);
    });
  });
  return out;
}
