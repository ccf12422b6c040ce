import assert from 'node:assert/strict';
import { test } from 'node:test';
import { allocateBits, type AllocationItem } from '../src/quant/allocate.js';
import { Ptq4vitError } from '../src/errors.js';

function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

/** Every combination: the reference optimum. */
function bruteForce(items: AllocationItem[], budget: number): number {
  let best = Infinity;
  const walk = (i: number, cost: number, error: number): void => {
    if (cost > budget) return;
    if (i === items.length) {
      best = Math.min(best, error);
      return;
    }
    for (const o of items[i].options) walk(i + 1, cost + items[i].size * o.bits, error + o.sensitivity);
  };
  walk(0, 0, 0);
  return best;
}

test('allocateBits is exact on random instances (brute force) and never exceeds the budget', () => {
  const r = rng(7);
  let checked = 0;
  for (let trial = 0; trial < 300; trial++) {
    const n = 1 + Math.floor(r() * 7);
    const widths = [3, 4, 5, 6, 8];
    const items: AllocationItem[] = Array.from({ length: n }, (_, i) => ({
      name: `p${i}`,
      size: 1 + Math.floor(r() * 1000),
      // Sensitivity falls with width, with random steepness (and sometimes not monotone).
      options: widths.filter(() => r() < 0.8).map((bits) => ({ bits, sensitivity: (r() < 0.1 ? r() : 1) * 2 ** -bits * (1 + 50 * r()) })),
    })).filter((it) => it.options.length > 0);
    if (items.length === 0) continue;
    const lo = items.reduce((c, it) => c + it.size * Math.min(...it.options.map((o) => o.bits)), 0);
    const hi = items.reduce((c, it) => c + it.size * Math.max(...it.options.map((o) => o.bits)), 0);
    const budget = lo + Math.floor(r() * (hi - lo + 1));
    const a = allocateBits(items, budget);
    const cost = a.bits.reduce((c, b, i) => c + items[i].size * b, 0);
    assert.equal(cost, a.cost);
    assert.ok(cost <= budget, `cost ${cost} > budget ${budget}`);
    const err = a.bits.reduce((e, b, i) => e + items[i].options.find((o) => o.bits === b)!.sensitivity, 0);
    assert.ok(Math.abs(err - a.sensitivity) < 1e-12);
    assert.ok(Math.abs(a.sensitivity - bruteForce(items, budget)) <= 1e-12 * Math.max(1, a.sensitivity), `trial ${trial}: ${a.sensitivity} vs brute force`);
    checked++;
  }
  assert.ok(checked > 250);
});

test('a greedy choice is not optimal, the allocator is: hand-made instance', () => {
  // Greedy by largest error reduction would raise A first (10 > 7) and then afford nothing else (error 14);
  // the optimum spends the same budget on B and C (error 10).
  const items: AllocationItem[] = [
    { name: 'A', size: 10, options: [{ bits: 4, sensitivity: 10 }, { bits: 8, sensitivity: 0 }] },
    { name: 'B', size: 6, options: [{ bits: 4, sensitivity: 7 }, { bits: 8, sensitivity: 0 }] },
    { name: 'C', size: 6, options: [{ bits: 4, sensitivity: 7 }, { bits: 8, sensitivity: 0 }] },
  ];
  const a = allocateBits(items, 4 * 22 + 48);
  assert.deepEqual(a.bits, [4, 8, 8]);
  assert.equal(a.sensitivity, 10);
});

test('a budget below the cheapest choice is a clear error', () => {
  const items: AllocationItem[] = [{ name: 'A', size: 10, options: [{ bits: 4, sensitivity: 1 }] }];
  assert.throws(() => allocateBits(items, 39), (e: unknown) => e instanceof Ptq4vitError && /below the cheapest choice/.test(e.message));
  assert.deepEqual(allocateBits(items, 40).bits, [4]);
});
