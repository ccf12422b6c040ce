/**
 * Mixed precision (src/quant/mixed.ts, `quantize --avg-bits/--w-avg-bits/--a-avg-bits/--size-mb`):
 *  - the allocation never exceeds its budget (random operands and sensitivities, every kind of budget),
 *    pinned operands stay at 8 bits, a side without a budget keeps its uniform width;
 *  - a mixed-precision file round-trips: `eval` of the file = the in-memory evaluation of quantize, every
 *    point carries the widths of the policy in the provenance, and the widths meet the budget;
 *  - bad budgets (below the lowest width, above 16, not a number, impossible) end with exit 2 and one line,
 *    before any calibration.
 * The CLI runs use tiny settings (8 calibration images, --n 4, one round, widths 3,4,8).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { SafeTensors } from '../src/io/safetensors.js';
import { DequantizedSource, parseMetadata } from '../src/quant/file.js';
import { weightCodeBytes } from '../src/quant/packing.js';
import { allocatePolicy, calibrateMixed, checkBudget, type MixedRequest, type OperandItem, type Sensitivities } from '../src/quant/mixed.js';
import { openDataset } from '../src/data/datasets.js';
import { openModel } from '../src/open.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { methodConfig } from '../src/quant/methods.js';
import type { Operand } from '../src/quant/search.js';
import { runCli, scratchDir, showRun, type CliRun } from './helpers.js';

const MODEL = 'assets/models/vit_tiny_c10.safetensors';
const CARD = 'assets/models/vit_tiny_c10.json';
const CALIB = 'assets/cifar10-calib32/calib32.json';
const TEST = 'assets/cifar10-test500';
const scratch = scratchDir('mixed');

function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

/** A random model's operands: points of linear layers and attention products, some pinnable. */
function randomItems(r: () => number, points: number): OperandItem[] {
  const items: OperandItem[] = [];
  for (let p = 0; p < points; p++) {
    const name = `p${p}`;
    const pinnable = p === 0 || p === points - 1;
    if (r() < 0.3 && !pinnable) {
      for (const operand of ['a', 'b'] as Operand[]) items.push({ point: name, operand, side: 'activation', size: 1 + Math.floor(r() * 5000), pinnable: false });
    } else {
      items.push({ point: name, operand: 'weight', side: 'weight', size: 1 + Math.floor(r() * 100000), pinnable });
      items.push({ point: name, operand: 'input', side: 'activation', size: 1 + Math.floor(r() * 5000), pinnable });
    }
  }
  return items;
}

function randomSensitivities(r: () => number, items: OperandItem[], widths: number[]): Sensitivities {
  return new Map(items.map((i) => [`${i.point}:${i.operand}`, new Map(widths.map((b) => [b, (1 + 30 * r()) * 4 ** -b]))]));
}

describe('allocation under a budget', () => {
  const widths = [3, 4, 5, 6, 8];
  test('never exceeds the budget: averages, MB, both sides; pinned at 8; a free side stays uniform', () => {
    const r = rng(11);
    let checked = 0;
    for (let trial = 0; trial < 60; trial++) {
      const items = randomItems(r, 3 + Math.floor(r() * 10));
      const sens = randomSensitivities(r, items, widths);
      const pin = r() < 0.5;
      const kind = trial % 3;
      const avg = 3 + r() * 5;
      const weights = items.filter((i) => i.side === 'weight');
      const params = weights.reduce((s, i) => s + i.size, 0);
      const request: MixedRequest = {
        budget: kind === 0 ? { wAvgBits: avg, aAvgBits: avg } : kind === 1 ? { aAvgBits: avg } : { sizeMb: (params * avg) / 8e6 },
        pin,
        weightBits: 6,
        activationBits: 7,
      };
      try {
        checkBudget(items, request, widths);
      } catch (e) {
        assert.ok(e instanceof Ptq4vitError, String(e));
        continue; // pinned operands made this budget impossible: checked below
      }
      const { policy, summary } = allocatePolicy(items, sens, request, widths);
      const bitsOf = (i: OperandItem) => policy[i.point][i.operand]!;
      const avgOf = (side: 'weight' | 'activation') => {
        const its = items.filter((i) => i.side === side);
        return its.reduce((s, i) => s + i.size * bitsOf(i), 0) / its.reduce((s, i) => s + i.size, 0);
      };
      assert.ok(Math.abs(avgOf('weight') - summary.wAvgBits) < 1e-12 && Math.abs(avgOf('activation') - summary.aAvgBits) < 1e-12);
      if (request.budget.wAvgBits !== undefined) assert.ok(summary.wAvgBits <= request.budget.wAvgBits, `weights ${summary.wAvgBits} > ${request.budget.wAvgBits}`);
      if (request.budget.aAvgBits !== undefined) assert.ok(summary.aAvgBits <= request.budget.aAvgBits, `activations ${summary.aAvgBits} > ${request.budget.aAvgBits}`);
      if (request.budget.sizeMb !== undefined) assert.ok(summary.weightMb <= request.budget.sizeMb, `${summary.weightMb} MB > ${request.budget.sizeMb} MB`);
      for (const i of items) {
        const budgeted = i.side === 'weight' ? kind !== 1 : kind !== 2;
        if (!budgeted) assert.equal(bitsOf(i), i.side === 'weight' ? 6 : 7, 'a side without a budget keeps its uniform width');
        else if (pin && i.pinnable) assert.equal(bitsOf(i), 8, `${i.point} ${i.operand} pinned at 8 bits`);
        else assert.ok(widths.includes(bitsOf(i)));
      }
      checked++;
    }
    assert.ok(checked > 30, `only ${checked} feasible trials`);
  });

  test('a budget below what the pinned operands allow is refused, naming the lowest possible average', () => {
    const items: OperandItem[] = [
      { point: 'patch_embed.proj', operand: 'weight', side: 'weight', size: 100, pinnable: true },
      { point: 'blocks.0.fc', operand: 'weight', side: 'weight', size: 900, pinnable: false },
    ];
    const request = (pin: boolean): MixedRequest => ({ budget: { wAvgBits: 3 }, pin, weightBits: 8, activationBits: 8 });
    // 100·8 + 900·3 = 3500 > 3·1000.
    assert.throws(() => checkBudget(items, request(true), widths), /weight average of 3 bits is impossible: the lowest is 3\.500 bits/);
    checkBudget(items, request(false), widths);
    const { policy } = allocatePolicy(items, new Map([['patch_embed.proj:weight', new Map(widths.map((b) => [b, 2 ** -b]))], ['blocks.0.fc:weight', new Map(widths.map((b) => [b, 2 ** -b]))]]), request(false), widths);
    assert.deepEqual(policy, { 'patch_embed.proj': { weight: 3 }, 'blocks.0.fc': { weight: 3 } });
  });
});

const run = (...args: string[]): CliRun => runCli(args, 600_000);

function lastJson(r: CliRun): Record<string, unknown> {
  assert.equal(r.status, 0, showRun(r));
  return JSON.parse(r.stdout.trimEnd().split('\n').at(-1)!) as Record<string, unknown>;
}

describe('sensitivities', () => {
  test('every operand has a finite error per width, larger at 3 bits than at 8; the allocation is the knapsack of them', async () => {
    const { model } = openModel({ weights: MODEL, config: CARD });
    const { images, labels } = await loadCalibration(await openDataset(CALIB), 4, 0, model.spec.preprocess);
    const base = methodConfig('ptq4vit', { weightBits: 8, activationBits: 8, n: 2, rounds: 1 });
    const request: MixedRequest = { budget: { wAvgBits: 5, aAvgBits: 5 }, pin: true, weightBits: 8, activationBits: 8 };
    const { results, items, sensitivities, scores, timing } = await calibrateMixed(model, images, labels, base, [request], { candidates: [3, 8], sensitivityN: 2 });
    const varying = items.filter((i) => !i.pinnable);
    assert.equal(sensitivities.size, varying.length, 'one entry per operand that is not pinned');
    let larger = 0;
    for (const i of varying) {
      const s = scores.get(`${i.point}:${i.operand}`)!;
      for (const bits of [3, 8]) assert.ok(Number.isFinite(s.get(bits)!.perImage) && s.get(bits)!.perImage >= 0 && s.get(bits)!.diagonal >= 0, `${i.point} ${i.operand} ${bits}`);
      if (s.get(3)!.perImage > s.get(8)!.perImage && s.get(3)!.diagonal > s.get(8)!.diagonal) larger++;
    }
    assert.ok(larger >= 0.9 * varying.length, `3 bits worse than 8 for ${larger} of ${varying.length} operands`);
    assert.equal(timing.passes, 1);
    // The result is exactly the allocation of these sensitivities.
    assert.deepEqual(results[0].policy, allocatePolicy(items, sensitivities, request, [3, 8]).policy);
    assert.ok(results[0].summary.wAvgBits <= 5 && results[0].summary.aAvgBits <= 5);
  });

  test('a failure during the sensitivities closes the session: no record or boundary file left open', async () => {
    const { model } = openModel({ weights: MODEL, config: CARD });
    const { images, labels } = await loadCalibration(await openDataset(CALIB), 8, 0, model.spec.preprocess);
    // A 1 MiB memory budget with record files: the groups after the first go to unlinked temporary files, and so
    // do recompute's boundaries — descriptors that stay open until the session is closed.
    const base = { ...methodConfig('ptq4vit', { weightBits: 8, activationBits: 8, n: 2, rounds: 1 }), groupBytes: 2 ** 20, recordFileBytes: 8 * 2 ** 20, searchWorkers: 0 };
    const request: MixedRequest = { budget: { wAvgBits: 5, aAvgBits: 5 }, pin: true, weightBits: 8, activationBits: 8 };
    const openTempFiles = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return /ptq4vit-(records|boundaries)-.*\(deleted\)$/.test(fs.readlinkSync(`/proc/self/fd/${fd}`));
      } catch {
        return false; // the directory's own descriptor, gone by now
      }
    }).length;
    const before = openTempFiles();
    let files = 0, sensitivities = 0;
    const onProgress = (e: { phase: string }) => {
      if (e.phase !== 'sensitivity') return;
      files = Math.max(files, openTempFiles() - before);
      if (++sensitivities === 20) throw new Error('stop here');
    };
    await assert.rejects(calibrateMixed(model, images, labels, base, [request], { candidates: [3, 8], sensitivityN: 2, onProgress }), /stop here/);
    assert.ok(files >= 1, `the calibration had ${files} temporary files open (expected record or boundary files)`);
    assert.equal(openTempFiles() - before, 0, 'every temporary file closed after the failure');
  });
});

describe('quantize with a budget', () => {
  test('--avg-bits 4: the file round-trips (eval of the file = in memory), carries the policy, meets the budget', () => {
    const dir = scratch.next();
    const out = path.join(dir, 'mixed.safetensors');
    const q = lastJson(run('quantize', '--model', MODEL, '--config', CARD, '--calib', CALIB, '--calib-size', '8', '--n', '4', '--rounds', '1', '--avg-bits', '4', '--widths', '3,4,8', '--out', out, '--eval', TEST, '--limit', '100', '--json'));
    assert.deepEqual(fs.readdirSync(dir), ['mixed.safetensors']);
    const e = lastJson(run('eval', '--model', out, '--data', TEST, '--limit', '100', '--json'));
    assert.equal(e.top1, q.top1, 'top-1 of the file = top-1 in memory');
    assert.equal(e.top5, q.top5, 'top-5 of the file = top-5 in memory');

    const st = SafeTensors.read(out);
    const { points, provenance } = parseMetadata(st.metadata, out);
    const mixed = provenance.mixed_precision as { budget: Record<string, number>; pinned: string[]; candidate_bits: number[]; policy: Record<string, Record<string, number>>; w_avg_bits: number; a_avg_bits: number; weight_mb: number };
    assert.deepEqual(mixed.budget, { w_avg_bits: 4, a_avg_bits: 4 });
    assert.deepEqual(mixed.pinned, ['patch_embed.proj', 'head']);
    assert.deepEqual(mixed.candidate_bits, [3, 4, 8]);
    assert.equal(provenance.w_bits, undefined, 'a mixed file has no uniform width');
    // Every point carries the policy's widths; the weights' codes are within them; the averages meet the budget.
    let params = 0, weightBits = 0, deployedBytes = 0;
    const float = SafeTensors.read(MODEL);
    const source = openModel({ weights: out }).weights as DequantizedSource;
    const widthsSeen = new Set<number>();
    for (const p of points) {
      const w = mixed.policy[p.point];
      if (p.kind === 'matmul') {
        assert.deepEqual({ a: p.a.bits, b: p.b.bits }, w, p.point);
        widthsSeen.add(p.a.bits).add(p.b.bits);
        continue;
      }
      assert.equal(p.weightBits, w.weight, `${p.point} weight`);
      assert.equal(p.input?.bits, w.input, `${p.point} input`);
      // Unpacked codes (format /3 packs 2- to 4-bit weights), and the deployed bytes of their container.
      const shape = float.info(`${p.point}.weight`).shape;
      const codes = source.codes(`${p.point}.weight`, shape);
      deployedBytes += weightCodeBytes(shape[0], codes.length / shape[0], p.weightBits) + 4 * shape[0];
      const hi = 2 ** (p.weightBits - 1);
      assert.ok(codes.every((c) => c >= -hi && c < hi), `${p.point}: codes within ${p.weightBits} bits`);
      params += codes.length;
      weightBits += codes.length * p.weightBits;
      widthsSeen.add(p.weightBits);
      if (mixed.pinned.includes(p.point)) assert.equal(p.weightBits, 8, `${p.point} pinned`);
    }
    assert.ok(weightBits / params <= 4, `average weight bits ${weightBits / params}`);
    assert.ok(Math.abs(weightBits / params - mixed.w_avg_bits) < 1e-9);
    assert.ok(mixed.a_avg_bits <= 4);
    assert.ok(Math.abs(deployedBytes / 1e6 - mixed.weight_mb) < 1e-9, `weight_mb ${mixed.weight_mb} is the deployed ${deployedBytes / 1e6} MB`);
    assert.ok(widthsSeen.size >= 2, `mixed widths: ${[...widthsSeen]}`);
    // 8 images fit one group: the final search reused the records of the sensitivity pass.
    assert.equal(q.record_passes, 1, 'one recording pass for sensitivities and final search');
  });
});

describe('bad budgets: exit 2, one line, before calibrating', () => {
  function refused(pattern: RegExp, args: string[]): void {
    const dir = scratch.next();
    const out = path.join(dir, 'q.safetensors');
    const r = run('quantize', '--model', MODEL, '--config', CARD, '--calib', CALIB, '--n', '2', '--rounds', '1', '--out', out, ...args);
    assert.equal(r.status, 2, showRun(r));
    assert.match(r.stderr, /^ptq4vit: error: /, showRun(r));
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line:\n${showRun(r)}`);
    assert.ok(!r.stderr.includes('    at '), showRun(r));
    assert.match(r.stderr, pattern, showRun(r));
    assert.deepEqual(fs.readdirSync(dir), []);
  }

  test('below the lowest width, above 16, not a number', () => {
    refused(/--avg-bits must be a number from 3 to 16, got '2\.5'/, ['--avg-bits', '2.5']);
    refused(/--avg-bits must be a number from 3 to 16, got '17'/, ['--avg-bits', '17']);
    refused(/--avg-bits must be a number from 3 to 16, got 'four'/, ['--avg-bits', 'four']);
    refused(/--w-avg-bits must be a number from 4 to 16, got '3'/, ['--w-avg-bits', '3', '--widths', '4,6,8']);
    refused(/--a-avg-bits must be a number from 3 to 16, got 'NaN'/, ['--a-avg-bits', 'NaN']);
    refused(/--size-mb must be greater than 0/, ['--size-mb', '0']);
  });

  test('impossible with the pinned layers, or too small in MB: the lowest possible is named', () => {
    refused(/--avg-bits 3: weight average of 3 bits is impossible: the lowest is 3\.\d+ bits .*pinned at 8 bits.*--no-pin/, ['--avg-bits', '3']);
    refused(/--size-mb 1: weights of 1 MB are impossible: the smallest is [\d.]+ MB \(every weight at 4 bits\)/, ['--size-mb', '1', '--no-pin']);
  });

  test('conflicting flags, the cosine metric, and mixed-precision options without a budget', () => {
    refused(/give either --bits or a mixed-precision budget \(--avg-bits\)/, ['--avg-bits', '4', '--bits', '4']);
    refused(/give either --avg-bits or --size-mb/, ['--avg-bits', '4', '--size-mb', '2']);
    refused(/give either --w-bits or --w-avg-bits/, ['--w-avg-bits', '4', '--w-bits', '4']);
    refused(/mixed precision needs the Hessian-guided metric/, ['--avg-bits', '4', '--method', 'base']);
    refused(/--widths must be distinct integers from 2 to 16/, ['--avg-bits', '4', '--widths', '3,3,8']);
    refused(/--no-pin only applies to mixed precision/, ['--no-pin']);
  });
});
