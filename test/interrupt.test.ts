/**
 * Interrupting `ptq4vit quantize` (issue 9): killed with SIGKILL at random moments — including while
 * the output is being written — the destination is never half-written (absent, or byte-identical to a
 * complete run's, the output being deterministic); interrupted with SIGINT or SIGTERM it leaves no
 * temporary file behind. Several runs per case, moments drawn from a seeded generator.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { repoRoot, scratchDir } from './helpers.js';
import { seededRandom } from '../src/grad/loss.js';

const ARGS = ['quantize', '--model', 'assets/models/vit_tiny_c10.safetensors', '--config', 'assets/models/vit_tiny_c10.json',
  '--calib', 'assets/cifar10-calib32/calib32.json', '--method', 'base', '--calib-size', '4', '--n', '2'];
const scratch = scratchDir('interrupt');

/** A seeded generator (the one the loss uses), so the "random" moments are the same on every run. */
const rng = seededRandom;

interface Ended {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  ms: number;
}

/**
 * Run quantize into `dir`; send `signal` either `afterMs` after the start or as soon as the temporary
 * output file appears (`whenTemp`, plus `extraMs`).
 */
function runQuantize(dir: string, kill?: { signal: NodeJS.Signals; afterMs?: number; whenTemp?: boolean; extraMs?: number }): Promise<Ended> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(process.execPath, ['bin/ptq4vit.js', ...ARGS, '--out', path.join(dir, 'q.safetensors')], { cwd: repoRoot, env: { ...process.env, PTQ4VIT_DEBUG: '' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    let timer: NodeJS.Timeout | undefined;
    let watcher: fs.FSWatcher | undefined;
    const send = () => child.exitCode === null && child.signalCode === null && child.kill(kill!.signal);
    if (kill?.whenTemp) {
      watcher = fs.watch(dir, (_event, name) => {
        if (name && String(name).endsWith('.tmp')) {
          watcher?.close();
          if (kill.extraMs) setTimeout(send, kill.extraMs);
          else send();
        }
      });
    } else if (kill) {
      timer = setTimeout(send, kill.afterMs ?? 0);
    }
    const guard = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(guard);
      if (timer) clearTimeout(timer);
      watcher?.close();
      resolve({ code, signal, stderr, ms: performance.now() - start });
    });
  });
}

let reference: Buffer;
let fullMs = 0;

before(async () => {
  const dir = scratch.next();
  const r = await runQuantize(dir);
  assert.equal(r.code, 0, r.stderr);
  reference = fs.readFileSync(path.join(dir, 'q.safetensors'));
  fullMs = r.ms;
});

const temps = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'));

/** The destination is absent or complete: never a prefix, never different bytes. */
function assertWholeOrAbsent(dir: string, what: string): 'absent' | 'complete' {
  const out = path.join(dir, 'q.safetensors');
  if (!fs.existsSync(out)) return 'absent';
  assert.ok(fs.readFileSync(out).equals(reference), `${what}: ${out} exists but differs from a complete run's output (${fs.statSync(out).size} vs ${reference.length} bytes)`);
  return 'complete';
}

describe('interrupting quantize', () => {
  test('SIGKILL at 6 random moments of the run: the destination is absent or complete', async () => {
    const random = rng(9);
    const outcomes: string[] = [];
    for (let i = 0; i < 6; i++) {
      const dir = scratch.next();
      const afterMs = Math.round(random() * fullMs * 1.2);
      const r = await runQuantize(dir, { signal: 'SIGKILL', afterMs });
      outcomes.push(`${afterMs} ms: ${r.signal ?? `exit ${r.code}`}, ${assertWholeOrAbsent(dir, `SIGKILL after ${afterMs} ms`)}`);
    }
    assert.ok(outcomes.some((o) => o.includes('SIGKILL')), `at least one run was killed: ${outcomes.join('; ')}`);
  });

  test('SIGKILL while the output is being written (3 runs): never half a file; a stale temporary is cleaned by the next write', async () => {
    const random = rng(10);
    for (let i = 0; i < 3; i++) {
      const dir = scratch.next();
      const r = await runQuantize(dir, { signal: 'SIGKILL', whenTemp: true, extraMs: Math.floor(random() * 4) });
      const state = assertWholeOrAbsent(dir, `SIGKILL during the write (${r.signal ?? r.code})`);
      if (process.env.PTQ4VIT_TEST_VERBOSE) console.log(`SIGKILL during the write: destination ${state}, temporaries ${temps(dir).length}`);
      // The next run into the same directory writes a complete file and leaves no temporary, stale or not.
      const again = await runQuantize(dir);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(assertWholeOrAbsent(dir, 'the run after'), 'complete');
      assert.deepEqual(temps(dir), [], 'no temporary file left');
    }
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    test(`${signal} while the output is being written (3 runs) or mid-calibration (1 run): no temporary file survives`, async () => {
      const random = rng(signal === 'SIGINT' ? 11 : 12);
      for (let i = 0; i < 4; i++) {
        const dir = scratch.next();
        const during = i < 3;
        const r = await runQuantize(dir, during ? { signal, whenTemp: true } : { signal, afterMs: Math.round(200 + random() * fullMs * 0.4) });
        assert.deepEqual(temps(dir), [], `${signal} ${during ? 'during the write' : 'mid-run'}: no temporary left (${r.signal ?? `exit ${r.code}`})\n${r.stderr}`);
        assertWholeOrAbsent(dir, signal);
        assert.ok(r.signal === signal || r.code === 0, `ended by the signal or finished first: ${r.signal ?? r.code}`);
        assert.ok(!r.stderr.includes('internal error'), r.stderr);
      }
    });
  }
});
