/**
 * The quantizers pinned down: hand-computed codes and values of uniform, per-group, twin softmax and
 * twin GELU quantization at k = 4, 6, 8 (ties to even, clamping at both ends, twin ranges, the
 * power-of-two scale relation); the ORT fake-quant graphs agree with the TypeScript quantizers; and the
 * scale search picks the known-best candidate on synthetic data.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ActivationQuant } from '../src/quant/params.js';
import { quantLinear, quantMatmul } from '../src/quant/qkernels.js';
import {
  fakeQuantGrouped,
  fakeQuantTwinGelu,
  fakeQuantTwinSoftmax,
  fakeQuantUniform,
  GELU_MIN,
  geluNegativeDelta,
  qmax,
  roundHalfEven,
  twinGeluCode,
  twinGeluValue,
  twinSoftmaxCode,
  twinSoftmaxValue,
  uniformCode,
  type TwinGelu,
  type TwinSoftmax,
} from '../src/quant/quantizers.js';
import { searchLinear, searchMatmul, type SearchConfig } from '../src/quant/search.js';
import { Tensor } from '../src/tensor/tensor.js';

const BITS = [4, 6, 8] as const;

/** Deterministic uniform numbers in [0, 1) (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** −0 and 0 are the same code. */
const norm = (v: number): number => (v === 0 ? 0 : v);

/** Every element equals the float32 rounding of the expected value. */
function assertF32(actual: Float32Array, expected: readonly number[], what: string, inputs?: ArrayLike<number>): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const e = Math.fround(expected[i]);
    assert.ok(actual[i] === e, `${what}[${i}]${inputs ? ` (x = ${inputs[i]})` : ''}: got ${actual[i]}, expected ${e}`);
  }
}

describe('roundHalfEven', () => {
  test('ties go to the even neighbour, everything else to the nearest', () => {
    const cases: [number, number][] = [
      [0.5, 0], [1.5, 2], [2.5, 2], [3.5, 4], [4.5, 4], [-0.5, 0], [-1.5, -2], [-2.5, -2], [-3.5, -4],
      [2.4999999999999996, 2], [2.5000000000000004, 3], [-2.5000000000000004, -3], [0.49999999999999994, 0],
      [7, 7], [-7, -7], [0, 0], [1e9 + 0.5, 1e9], [1e9 + 1.5, 1e9 + 2],
    ];
    for (const [v, r] of cases) assert.equal(norm(roundHalfEven(v)), r, `roundHalfEven(${v})`);
  });
});

describe('uniform symmetric quantizer', () => {
  // Δ = 0.25 makes every x/Δ below exact, so the ties are real ties.
  const delta = 0.25;

  test('qmax is 2^(k−1)', () => {
    assert.deepEqual(BITS.map(qmax), [8, 32, 128]);
  });

  test('ties to even: x/Δ = 2.5 → 2, 3.5 → 4, −2.5 → −2, −3.5 → −4, ±0.5 → 0, 1.5 → 2', () => {
    for (const bits of BITS) {
      const x = [0.625, 0.875, -0.625, -0.875, 0.125, -0.125, 0.375, -0.375, 0.3, -0.3, 0.2, 1.1];
      const codes = [2, 4, -2, -4, 0, 0, 2, -2, 1, -1, 1, 4];
      x.forEach((v, i) => assert.equal(norm(uniformCode(v, delta, bits)), codes[i], `k=${bits}: code of ${v}`));
      assertF32(fakeQuantUniform(Float32Array.from(x), delta, bits), codes.map((c) => c * delta), `k=${bits} values`, x);
    }
  });

  test('clamping at −2^(k−1) and 2^(k−1)−1, k = 4, 6, 8', () => {
    // [x, code] with Δ = 0.25, worked out by hand for each k.
    const table: Record<number, [number, number][]> = {
      4: [[1.75, 7], [1.8, 7], [1.875, 7], [2, 7], [100, 7], [-2, -8], [-2.1, -8], [-2.125, -8], [-2.25, -8], [-1e9, -8], [-1.875, -8], [-1.625, -6]],
      6: [[7.75, 31], [7.875, 31], [8, 31], [9, 31], [-8, -32], [-8.125, -32], [-8.25, -32], [-50, -32], [-7.875, -32], [-7.625, -30], [7.625, 30]],
      8: [[31.75, 127], [31.875, 127], [32, 127], [40, 127], [-32, -128], [-32.125, -128], [-32.25, -128], [-1000, -128], [-31.875, -128], [-31.625, -126], [31.625, 126]],
    };
    for (const bits of BITS) {
      const rows = table[bits];
      for (const [x, code] of rows) assert.equal(uniformCode(x, delta, bits), code, `k=${bits}: code of ${x}`);
      const xs = Float32Array.from(rows.map((r) => r[0]));
      assertF32(fakeQuantUniform(xs, delta, bits), rows.map((r) => r[1] * delta), `k=${bits} clamped values`, xs);
    }
  });

  test('a non-power-of-two Δ: codes are round(x/Δ), values code·Δ in float32', () => {
    const d = 0.3;
    const x = [0.7, -0.7, 0.44, 0.46, -0.46, 2.0, -2.5];
    const codes = [2, -2, 1, 2, -2, 7, -8];
    x.forEach((v, i) => assert.equal(uniformCode(v, d, 4), codes[i], `code of ${v}`));
    assertF32(fakeQuantUniform(Float32Array.from(x), d, 4), codes.map((c) => c * d), 'values', x);
  });

  test('fakeQuantUniform is uniformCode·Δ on random data', () => {
    const r = rng(1);
    const x = Float32Array.from({ length: 2000 }, () => (r() - 0.5) * 12);
    for (const bits of BITS) {
      const d = 0.0371;
      const y = fakeQuantUniform(x, d, bits);
      for (let i = 0; i < x.length; i++) assert.equal(y[i], Math.fround(uniformCode(x[i], d, bits) * d), `k=${bits} x=${x[i]}`);
    }
  });
});

describe('grouped / per-head uniform quantizer', () => {
  test('per output channel: one Δ per group of consecutive elements', () => {
    // 3 rows of 4 inputs, Δ per row.
    const x = Float32Array.of(0.5, 0.75, -0.25, 5, /* Δ 0.5 */ 0.5, 0.75, -0.25, 5, /* Δ 0.25 */ 0.5, 0.75, -0.25, 5 /* Δ 1 */);
    const y = fakeQuantGrouped(x, [0.5, 0.25, 1], 4, 4);
    // 0.75/0.5 = 1.5 → 2; −0.25/0.5 = −0.5 → 0; 5/0.5 = 10 → 7 · 0.5 = 3.5 … 0.5/1 = 0.5 → 0; 0.75 → 1; 5 → 5.
    assertF32(y, [0.5, 1, 0, 3.5, 0.5, 0.75, -0.25, 1.75, 0, 1, 0, 5], 'per-row values', x);
  });

  test('per head over [outer, heads, rows·cols]: the group index wraps around the heads', () => {
    // outer = 2, heads = 3, 2 elements per head; the same values in every slot.
    const base = [0.3, -0.9];
    const x = Float32Array.from({ length: 12 }, (_, i) => base[i % 2]);
    const deltas = [0.125, 0.5, 0.0625];
    const y = fakeQuantGrouped(x, deltas, 2, 4);
    // head 0 (Δ 1/8): 0.3 → 2.4 → 2 → 0.25; −0.9 → −7.2 → −7 → −0.875
    // head 1 (Δ 1/2): 0.3 → 0.6 → 1 → 0.5;  −0.9 → −1.8 → −2 → −1
    // head 2 (Δ 1/16): 0.3 → 4.8 → 5 → 0.3125; −0.9 → −14.4 → −8 (clamped) → −0.5
    const perHead = [[0.25, -0.875], [0.5, -1], [0.3125, -0.5]];
    assertF32(y, [0, 1].flatMap(() => perHead.flat()), 'per-head values', x);
  });

  test('matches fakeQuantUniform group by group on random data', () => {
    const r = rng(2);
    const heads = 4, per = 50, outer = 3;
    const x = Float32Array.from({ length: outer * heads * per }, () => (r() - 0.5) * 4);
    const deltas = [0.01, 0.03, 0.1, 0.002];
    for (const bits of BITS) {
      const y = fakeQuantGrouped(x, deltas, per, bits);
      for (let g = 0; g < outer * heads; g++) {
        const slice = x.subarray(g * per, (g + 1) * per);
        assert.deepEqual(y.subarray(g * per, (g + 1) * per), fakeQuantUniform(slice, deltas[g % heads], bits), `k=${bits} group ${g}`);
      }
    }
  });
});

describe('twin uniform, post-softmax', () => {
  // Hand-computed at k = 4: Δ_R1 = 1/64, so the split is 8/64 = 0.125.
  const paper4: TwinSoftmax = { deltaR1: 1 / 64, deltaR2: 1 / 8 };
  const exact4: TwinSoftmax = { deltaR1: 1 / 64, deltaR2: 1 / 7 };

  test('k=4, Δ_R2 = 1/2^(k−1): R1 below the split, R2 from the split on, 1 clamps to (2^(k−1)−1)·Δ_R2', () => {
    const rows: [number, [number, number], number][] = [
      [0, [0, 0], 0],
      [1 / 128, [0, 0], 0], // 0.5·Δ_R1 → tie → 0
      [3 / 128, [0, 2], 2 / 64], // 1.5 → 2
      [5 / 128, [0, 2], 2 / 64], // 2.5 → 2
      [0.1, [0, 6], 6 / 64], // 6.4 → 6
      [0.12, [0, 7], 7 / 64], // 7.68 → 8 → clamped to the top R1 code 7
      [0.124, [0, 7], 7 / 64], // just below the split
      [0.125, [1, 1], 0.125], // exactly at the split: R2
      [0.3, [1, 2], 0.25], // 2.4 → 2
      [0.5, [1, 4], 0.5],
      [0.6875, [1, 6], 0.75], // 5.5 → 6
      [0.8125, [1, 6], 0.75], // 6.5 → 6
      [0.9, [1, 7], 0.875],
      [1, [1, 7], 0.875], // 8 → clamped to 7
    ];
    for (const [x, code, value] of rows) {
      assert.deepEqual(twinSoftmaxCode(x, paper4, 4).map(norm), code, `code of ${x}`);
      assert.equal(twinSoftmaxValue(code[0], code[1], paper4), value, `value of ${x}`);
    }
    const xs = Float32Array.from(rows.map((r) => r[0]));
    assertF32(fakeQuantTwinSoftmax(xs, paper4, 4), rows.map((r) => r[2]), 'values', xs);
  });

  test("k=4, Δ_R2 = 1/(2^(k−1)−1) ('exact-one'): 1 is exact", () => {
    const rows: [number, [number, number], number][] = [
      [0.1, [0, 6], 6 / 64], // R1 unchanged
      [0.125, [1, 1], 1 / 7], // 0.875 → 1
      [0.3, [1, 2], 2 / 7], // 2.1 → 2
      [0.9, [1, 6], 6 / 7], // 6.3 → 6
      [1, [1, 7], 1], // 7 → 7
    ];
    for (const [x, code, value] of rows) {
      assert.deepEqual(twinSoftmaxCode(x, exact4, 4), code, `code of ${x}`);
      assert.equal(Math.fround(twinSoftmaxValue(code[0], code[1], exact4)), Math.fround(value), `value of ${x}`);
    }
    const xs = Float32Array.from(rows.map((r) => r[0]));
    assertF32(fakeQuantTwinSoftmax(xs, exact4, 4), rows.map((r) => r[2]), 'values', xs);
  });

  test('k = 6, 8: both sides of the split, the split itself, 0 and 1, both Δ_R2 choices', () => {
    for (const bits of [6, 8]) {
      const q = qmax(bits);
      const deltaR1 = 2 ** -(bits + 4); // split = 2^(k−1)·Δ_R1 = 1/32
      const split = 1 / 32;
      for (const mode of ['paper', 'exact-one'] as const) {
        const deltaR2 = mode === 'paper' ? 1 / q : 1 / (q - 1);
        const p = { deltaR1, deltaR2 };
        const below = split - deltaR1 / 4; // (q − 1/4)·Δ_R1 → q → clamped to q − 1
        const cases: [number, [number, number], number][] = [
          [0, [0, 0], 0],
          [3 * deltaR1, [0, 3], 3 * deltaR1],
          [2.5 * deltaR1, [0, 2], 2 * deltaR1],
          [below, [0, q - 1], (q - 1) * deltaR1],
          [split, [1, 1], deltaR2], // k = 6: (1/32)/Δ_R2 = 1 (paper) or 31/32 → 1 (exact-one); k = 8 below
          [1, [1, q - 1], mode === 'paper' ? 1 - 1 / q : 1],
        ];
        if (bits === 8) cases[4] = [split, [1, 4], 4 * deltaR2]; // 128/32 = 4; 127/32 = 3.97 → 4
        for (const [x, code, value] of cases) {
          assert.deepEqual(twinSoftmaxCode(x, p, bits).map(norm), code, `k=${bits} ${mode}: code of ${x}`);
          assert.equal(Math.fround(twinSoftmaxValue(code[0], code[1], p)), Math.fround(value), `k=${bits} ${mode}: value of ${x}`);
        }
        const xs = Float32Array.from(cases.map((c) => c[0]));
        assertF32(fakeQuantTwinSoftmax(xs, p, bits), cases.map((c) => c[2]), `k=${bits} ${mode} values`, xs);
      }
    }
  });

  test('codes stay within k−1 bits; code/value round trip reproduces fakeQuantTwinSoftmax', () => {
    const r = rng(3);
    const xs = Float32Array.from({ length: 4000 }, (_, i) => (i < 3000 ? r() ** 4 : r()));
    xs[0] = 0;
    xs[1] = 1;
    for (const bits of BITS) {
      const q = qmax(bits);
      for (const j of [0, 3, 8]) {
        const deltaR1 = 2 ** -(bits - 1 + j);
        for (const deltaR2 of [1 / q, 1 / (q - 1)]) {
          const p = { deltaR1, deltaR2 };
          const y = fakeQuantTwinSoftmax(xs, p, bits);
          for (let i = 0; i < xs.length; i++) {
            const [flag, code] = twinSoftmaxCode(xs[i], p, bits);
            assert.ok(flag === 0 || flag === 1, 'flag');
            assert.ok(Number.isInteger(code) && code >= 0 && code <= q - 1, `k=${bits}: code ${code} of ${xs[i]} outside [0, ${q - 1}]`);
            assert.equal(flag, xs[i] < q * deltaR1 ? 0 : 1, `k=${bits}: range of ${xs[i]}`);
            assert.equal(Math.fround(twinSoftmaxValue(flag, code, p)), y[i], `k=${bits} Δ_R1=${deltaR1} Δ_R2=${deltaR2}: round trip of ${xs[i]}`);
          }
        }
      }
    }
  });
});

describe('twin uniform, post-GELU', () => {
  test('k=4, aligned with Δ_R2 = 0.25: Δ_R1 = 1/32, hand-computed codes on both sides', () => {
    const p: TwinGelu = { deltaPos: 0.25, deltaNeg: geluNegativeDelta(0.25, 4, true) };
    assert.equal(p.deltaNeg, 1 / 32);
    const rows: [number, [number, number], number][] = [
      [-0.25, [0, 7], -0.25], // −8 → the most negative code
      [-1, [0, 7], -0.25], // clamped
      [-GELU_MIN, [0, 4], -5 / 32], // −5.44 → −5
      [-0.17, [0, 4], -5 / 32],
      [-0.15625, [0, 4], -5 / 32], // exact
      [-3 / 64, [0, 1], -2 / 32], // −1.5 → −2
      [-5 / 64, [0, 1], -2 / 32], // −2.5 → −2
      [-1 / 64, [1, 0], 0], // −0.5 → 0: a tiny negative is zero, in R2
      [-0.01, [1, 0], 0],
      [-1e-30, [1, 0], 0],
      [0, [1, 0], 0],
      [0.125, [1, 0], 0], // 0.5 → 0
      [0.375, [1, 2], 0.5], // 1.5 → 2
      [0.625, [1, 2], 0.5], // 2.5 → 2
      [1.75, [1, 7], 1.75],
      [1.875, [1, 7], 1.75], // 7.5 → 8 → clamped
      [100, [1, 7], 1.75],
    ];
    for (const [x, code, value] of rows) {
      assert.deepEqual(twinGeluCode(x, p, 4), code, `code of ${x}`);
      assert.equal(norm(twinGeluValue(code[0], code[1], p)), value, `value of ${x}`);
    }
    const xs = Float32Array.from(rows.map((r) => r[0]));
    assertF32(fakeQuantTwinGelu(xs, p, 4), rows.map((r) => r[2]), 'values', xs);
  });

  test('unaligned: Δ_R1 = GELU_MIN/2^(k−1), so −GELU_MIN is the most negative value, exactly', () => {
    for (const bits of BITS) {
      const q = qmax(bits);
      const deltaNeg = geluNegativeDelta(0.1, bits, false);
      assert.equal(deltaNeg, GELU_MIN / q, `k=${bits}`);
      assert.equal(geluNegativeDelta(3.7, bits, false), GELU_MIN / q, 'independent of Δ_R2');
      const p = { deltaPos: 0.1, deltaNeg };
      assert.deepEqual(twinGeluCode(-GELU_MIN, p, bits), [0, q - 1]);
      assert.deepEqual(twinGeluCode(-0.17, p, bits), [0, q - 1]);
      assert.equal(twinGeluValue(0, q - 1, p), -GELU_MIN);
      assert.deepEqual(twinGeluCode(-deltaNeg, p, bits), [0, 0]);
      assert.deepEqual(twinGeluCode(-0.4 * deltaNeg, p, bits), [1, 0]);
      assertF32(fakeQuantTwinGelu(Float32Array.of(-0.17, -GELU_MIN, -2 * deltaNeg), p, bits), [-GELU_MIN, -GELU_MIN, -2 * deltaNeg], `k=${bits}`);
    }
  });

  test('the negative side covers [−0.17, 0] without clamping; positives clamp at (2^(k−1)−1)·Δ_R2', () => {
    for (const bits of BITS) {
      const q = qmax(bits);
      for (const aligned of [true, false]) {
        for (const deltaPos of [0.001, 0.0123, 0.05, 0.25, 1.3]) {
          const p = { deltaPos, deltaNeg: geluNegativeDelta(deltaPos, bits, aligned) };
          const xs = Float32Array.from({ length: 341 }, (_, i) => -GELU_MIN * (i / 340));
          const y = fakeQuantTwinGelu(xs, p, bits);
          for (let i = 0; i < xs.length; i++) {
            assert.ok(Math.abs(y[i] - xs[i]) <= p.deltaNeg / 2 + 1e-7, `k=${bits} aligned=${aligned} Δ_R2=${deltaPos}: ${xs[i]} → ${y[i]} (Δ_R1 ${p.deltaNeg})`);
          }
          assert.ok(-q * p.deltaNeg <= -GELU_MIN, 'R1 reaches GELU_MIN');
          const big = Float32Array.of((q - 1) * deltaPos, (q - 0.5) * deltaPos, (q + 3) * deltaPos, 1e6);
          const top = Math.fround((q - 1) * deltaPos);
          for (const v of fakeQuantTwinGelu(big, p, bits)) assert.equal(v, top, `k=${bits}: clamped positive`);
        }
      }
    }
  });

  test('code/value round trip reproduces fakeQuantTwinGelu; codes stay within k−1 bits', () => {
    const r = rng(4);
    const xs = Float32Array.from({ length: 3000 }, (_, i) => (i % 3 === 0 ? -r() * 0.2 : r() * 6 - 0.05));
    for (const bits of BITS) {
      const q = qmax(bits);
      for (const aligned of [true, false]) {
        const p = { deltaPos: 5 / (q - 0.5), deltaNeg: geluNegativeDelta(5 / (q - 0.5), bits, aligned) };
        const y = fakeQuantTwinGelu(xs, p, bits);
        for (let i = 0; i < xs.length; i++) {
          const [flag, code] = twinGeluCode(xs[i], p, bits);
          assert.ok(Number.isInteger(code) && code >= 0 && code <= q - 1, `k=${bits}: code ${code} of ${xs[i]}`);
          if (flag === 0) assert.ok(xs[i] < 0, `R1 holds negatives only: ${xs[i]}`);
          assert.equal(Math.fround(twinGeluValue(flag, code, p)), norm(y[i]), `k=${bits} aligned=${aligned}: round trip of ${xs[i]}`);
        }
      }
    }
  });

  test('geluNegativeDelta aligned: Δ_R2/Δ_R1 = 2^m exactly and Δ_R1 ≥ GELU_MIN/2^(k−1) > Δ_R1/2', () => {
    for (const bits of BITS) {
      const finest = GELU_MIN / qmax(bits);
      const deltas: number[] = [];
      for (let e = -24; e <= 6; e++) deltas.push(2 ** e); // exact powers of two
      for (let e = -12; e <= 8; e++) {
        const edge = finest * 2 ** e; // Δ_R1 would be exactly the finest…
        deltas.push(edge, edge * (1 + Number.EPSILON), edge * (1 - Number.EPSILON / 2), edge * 1.5, edge * 0.75);
      }
      for (let i = 0; i < 400; i++) deltas.push(10 ** (-7 + (i / 399) * 9)); // 1e−7 … 100, logarithmically
      deltas.push(finest / 3, finest / 1000, finest * 0.999999); // below the finest: Δ_R1 = 2^m·Δ_R2
      for (const deltaPos of deltas) {
        const d1 = geluNegativeDelta(deltaPos, bits, true);
        const ratio = deltaPos / d1;
        const m = Math.log2(ratio);
        assert.ok(Number.isInteger(m) && 2 ** m === ratio, `k=${bits} Δ_R2=${deltaPos}: Δ_R2/Δ_R1 = ${ratio} is not a power of two`);
        assert.ok(d1 >= finest, `k=${bits} Δ_R2=${deltaPos}: Δ_R1 ${d1} < ${finest} does not cover −GELU_MIN`);
        assert.ok(finest > d1 / 2, `k=${bits} Δ_R2=${deltaPos}: Δ_R1 ${d1} is not the finest (${d1 / 2} would do)`);
      }
      assert.equal(geluNegativeDelta(finest * 16, bits, true), finest, `k=${bits}: Δ_R2 = 16·finest gives Δ_R1 = finest`);
      assert.equal(geluNegativeDelta(finest / 2, bits, true), finest, `k=${bits}: Δ_R2 = finest/2 gives Δ_R1 = finest`);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// The ORT fake-quant graphs (quantized inference) against the TypeScript quantizers.

function identity(k: number): Tensor {
  const t = Tensor.zeros([k, k]);
  for (let i = 0; i < k; i++) t.data[i * k + i] = 1;
  return t;
}

/** Identity matrices [G, K, K]. */
function identities(g: number, k: number): Tensor {
  const t = Tensor.zeros([g, k, k]);
  for (let i = 0; i < g; i++) for (let j = 0; j < k; j++) t.data[i * k * k + j * k + j] = 1;
  return t;
}

/**
 * ORT output vs TypeScript fake quantization: equal everywhere except where x/Δ is within 1e-6 of a .5
 * tie (ORT divides in float32), and there at most one step apart.
 */
function assertSameQuant(ort: Float32Array, ts: Float32Array, x: Float32Array, deltaOf: (i: number) => number, what: string): number {
  assert.equal(ort.length, ts.length, `${what}: length`);
  let ties = 0;
  for (let i = 0; i < ts.length; i++) {
    if (ort[i] === ts[i]) continue;
    const t = Math.abs(x[i] / deltaOf(i));
    const nearTie = Math.abs(t - Math.floor(t) - 0.5) < 1e-6;
    assert.ok(nearTie && Math.abs(ort[i] - ts[i]) <= deltaOf(i) * 1.000001, `${what}[${i}]: ORT ${ort[i]} vs TypeScript ${ts[i]} for x = ${x[i]} (x/Δ = ${x[i] / deltaOf(i)})`);
    ties++;
  }
  return ties;
}

/** Values with exact ties, clamping on both ends and random values, for a grid Δ. */
function uniformInputs(delta: number, bits: number, count: number, seed: number): Float32Array {
  const q = qmax(bits);
  const r = rng(seed);
  const special = [0, 0.5, 1.5, 2.5, -2.5, -3.5, q - 1, q - 0.5, q + 7, -q, -q - 0.5, -q - 9].map((c) => c * delta);
  return Float32Array.from({ length: count }, (_, i) => (i < special.length ? special[i] : (r() - 0.5) * 2.4 * q * delta));
}

describe('ORT fake-quant graphs agree with the TypeScript quantizers', () => {
  test('quantLinear with W = I: uniform per tensor, k = 4, 6, 8', async () => {
    const K = 16;
    for (const bits of BITS) {
      for (const delta of [0.25, Math.fround(0.0371), Math.fround(1.37e-3)]) {
        const x = uniformInputs(delta, bits, 64 * K, bits * 7);
        const q: ActivationQuant = { kind: 'uniform', bits, deltas: [delta] };
        const y = await quantLinear(new Tensor(x, [64, K]), q, { codes: identity(K), rowDeltas: new Float64Array(K).fill(1) }, null);
        assert.deepEqual(y.shape, [64, K]);
        assertSameQuant(y.data, fakeQuantUniform(x, delta, bits), x, () => delta, `k=${bits} Δ=${delta}`);
      }
    }
  });

  test('quantLinear with W = I: twin GELU (aligned and not), k = 4, 6, 8', async () => {
    const K = 8;
    for (const bits of BITS) {
      for (const aligned of [true, false]) {
        const deltaPos = Math.fround(3.1 / (qmax(bits) - 0.5));
        const deltaNeg = Math.fround(geluNegativeDelta(deltaPos, bits, aligned));
        const p: TwinGelu = { deltaPos, deltaNeg };
        const r = rng(bits);
        const x = Float32Array.from({ length: 40 * K }, (_, i) => (i % 2 ? -r() * 0.2 : r() * 3.5));
        x.set([0, -0.17, -GELU_MIN, -1e-6, -0.5 * deltaNeg, -1.5 * deltaNeg, 0.5 * deltaPos, 2.5 * deltaPos, (qmax(bits) - 0.5) * deltaPos, 1e3]);
        const q: ActivationQuant = { kind: 'twin-gelu', bits, ...p };
        const y = await quantLinear(new Tensor(x, [40, K]), q, { codes: identity(K), rowDeltas: new Float64Array(K).fill(1) }, null);
        assertSameQuant(y.data, fakeQuantTwinGelu(x, p, bits), x, (i) => (x[i] < 0 ? deltaNeg : deltaPos), `k=${bits} aligned=${aligned}`);
      }
    }
  });

  test('quantMatmul with B = I: per-head uniform A, k = 4, 6, 8, transB or not', async () => {
    const O = 2, H = 3, M = 4, K = 8;
    const deltas = [0.125, Math.fround(0.0173), Math.fround(0.41)];
    for (const bits of BITS) {
      const r = rng(10 + bits);
      const a = new Float32Array(O * H * M * K);
      for (let g = 0; g < O * H; g++) {
        const d = deltas[g % H];
        for (let i = 0; i < M * K; i++) a[g * M * K + i] = (r() - 0.5) * 2.3 * qmax(bits) * d;
        a[g * M * K] = 2.5 * d;
        a[g * M * K + 1] = -(qmax(bits) + 0.5) * d;
      }
      const qa: ActivationQuant = { kind: 'uniform', bits, deltas };
      const qb: ActivationQuant = { kind: 'uniform', bits, deltas: [1] }; // Q(I) = I
      const expected = fakeQuantGrouped(a, deltas, M * K, bits);
      for (const transB of [false, true]) {
        const y = await quantMatmul(new Tensor(a, [O * H, M, K]), identities(O * H, K), transB, qa, qb, H);
        assert.deepEqual(y.shape, [O * H, M, K]);
        assertSameQuant(y.data, expected, a, (i) => deltas[Math.floor(i / (M * K)) % H], `k=${bits} transB=${transB}`);
      }
      // Per-head B as well: Δ = 1 in every head keeps B = I.
      const y = await quantMatmul(new Tensor(a, [O * H, M, K]), identities(O * H, K), false, qa, { kind: 'uniform', bits, deltas: [1, 1, 1] }, H);
      assertSameQuant(y.data, expected, a, (i) => deltas[Math.floor(i / (M * K)) % H], `k=${bits} per-head B`);
    }
  });

  test('quantMatmul with B = I: twin softmax A, both Δ_R2 choices, k = 4, 6, 8', async () => {
    const O = 2, H = 2, M = 5, K = 16;
    for (const bits of BITS) {
      const q = qmax(bits);
      const deltaR1 = 2 ** -(bits - 1 + 4);
      const r = rng(20 + bits);
      // Softmax rows, plus 0, 1, the split and values either side of it.
      const a = new Float32Array(O * H * M * K);
      for (let row = 0; row < O * H * M; row++) {
        const e = Array.from({ length: K }, () => Math.exp(r() * 6));
        const s = e.reduce((u, v) => u + v, 0);
        e.forEach((v, i) => (a[row * K + i] = v / s));
      }
      a.set([0, 1, q * deltaR1, q * deltaR1 - deltaR1 / 4, q * deltaR1 + deltaR1 / 4, 0.5, 2.5 * deltaR1, 0.999]);
      for (const deltaR2 of [1 / q, 1 / (q - 1)]) {
        const qa: ActivationQuant = { kind: 'twin-softmax', bits, deltaR1, deltaR2 };
        const y = await quantMatmul(new Tensor(a, [O * H, M, K]), identities(O * H, K), false, qa, { kind: 'uniform', bits, deltas: [1] }, H);
        const ts = fakeQuantTwinSoftmax(a, { deltaR1, deltaR2 }, bits);
        if (deltaR2 === 1 / q) {
          assertSameQuant(y.data, ts, a, (i) => (a[i] < q * deltaR1 ? deltaR1 : deltaR2), `k=${bits} Δ_R2=1/${q}`);
        } else {
          // 1/(2^(k−1)−1) is not a float32: ORT's constant is float32(Δ_R2), so R2 values may be an ulp or
          // two apart, and a tie in exact arithmetic (0.5·(2^(k−1)−1) at a = 0.5) may round either way.
          for (let i = 0; i < a.length; i++) {
            if (y.data[i] === ts[i]) continue;
            const inR2 = a[i] >= q * deltaR1;
            const t = a[i] * (q - 1);
            const nearTie = Math.abs(t - Math.floor(t) - 0.5) < 1e-6;
            const diff = Math.abs(y.data[i] - ts[i]);
            const ok = inR2 && (diff <= 2 * Math.abs(ts[i]) * 2 ** -23 || (nearTie && diff <= deltaR2 * 1.000001));
            assert.ok(ok, `k=${bits} Δ_R2=1/${q - 1}: ORT ${y.data[i]} vs ${ts[i]} for ${a[i]}`);
          }
        }
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// The search on synthetic data with a known answer.

/**
 * Candidates (α + i·(β−α)/n)·Δ_maxabs with α = 0.5, β = 0.5 + 8/7, n = 8: candidate i = 4 is
 * (15/14)·Δ_maxabs, which is exactly the grid step δ of data whose largest code is 7 at k = 4
 * (Δ_maxabs = 7δ/7.5). Neighbouring candidates are 13/15·δ and 17/15·δ.
 */
function searchConfig(metric: 'hessian' | 'cosine', rounds = 2): SearchConfig {
  return {
    metric, alpha: 0.5, beta: 0.5 + 8 / 7, n: 8, rounds, weightBits: 4, activationBits: 4,
    twinSoftmax: false, twinGelu: false, geluAligned: true, softmaxDeltaR2: 'paper',
  };
}

/** Integer codes in [−7, 7] that include ±7 in every block of `block` values, irregular elsewhere. */
function gridCodes(count: number, block: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: count }, (_, i) => (i % block === 0 ? 7 : i % block === 1 ? -7 : Math.floor(r() * 15) - 7));
}

/** y = x·wᵀ (+ b) in double; exact for these small dyadic numbers. */
function matmulT(x: Float32Array, w: Float32Array, M: number, K: number, N: number, bias?: Float32Array): Float32Array {
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = s;
    }
  }
  return y;
}

const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-9 * Math.abs(b);

describe('search', () => {
  for (const metric of ['hessian', 'cosine'] as const) {
    test(`searchLinear (${metric}): data on exact grids → the zero-error scales, per q/k/v group`, async () => {
      const M = 24, K = 8, N = 6;
      const xStep = 1 / 4, wSteps = [1 / 16, 1 / 8, 1 / 32]; // three weight groups (q, k, v) with their own grids
      const x = Float32Array.from(gridCodes(M * K, K, 5), (c) => c * xStep);
      const w = Float32Array.from(gridCodes(N * K, K, 6), (c, i) => c * wSteps[Math.floor(i / ((N / 3) * K))]);
      const bias = Float32Array.from({ length: N }, (_, i) => (i - 2) / 8);
      const out = matmulT(x, w, M, K, N, bias);
      const r = rng(7);
      const grad = new Tensor(Float32Array.from({ length: M * N }, () => 0.5 + r()), [M, N]);
      const result = await searchLinear(
        { point: 't', kind: 'linear', x: new Tensor(x, [M, K]), weight: new Tensor(w, [N, K]), bias: new Tensor(bias, [N]), out: new Tensor(out, [M, N]), grad: metric === 'hessian' ? grad : null, weightGroups: 3, postGelu: false },
        searchConfig(metric),
      );
      assert.equal(result.weightDeltas.length, 3);
      result.weightDeltas.forEach((d, g) => assert.ok(close(d, wSteps[g]), `weight group ${g}: Δ ${d}, expected ${wSteps[g]}`));
      assert.ok(result.input?.kind === 'uniform', 'uniform input');
      assert.ok(close(result.input.deltas[0], xStep), `input Δ ${result.input.deltas[0]}, expected ${xStep}`);
      // And the choice really is lossless.
      const xq = fakeQuantUniform(x, result.input.deltas[0], 4);
      const wq = fakeQuantGrouped(w, result.weightDeltas, (N / 3) * K, 4);
      assert.deepEqual(matmulT(xq, wq, M, K, N, bias), out);
    });
  }

  test('searchLinear on a conv (float input): per-channel weight scales, each channel on its own grid', async () => {
    const M = 16, K = 8, N = 4;
    const steps = [1 / 64, 1 / 4, 1 / 16, 1 / 2];
    const x = Float32Array.from(gridCodes(M * K, K, 8), (c) => c * 0.3);
    const w = Float32Array.from(gridCodes(N * K, K, 9), (c, i) => c * steps[Math.floor(i / K)]);
    const out = matmulT(x, w, M, K, N);
    for (const metric of ['hessian', 'cosine'] as const) {
      const grad = new Tensor(new Float32Array(M * N).fill(1), [M, N]);
      const result = await searchLinear(
        { point: 'c', kind: 'conv', x: new Tensor(x, [M, K]), weight: new Tensor(w, [N, K]), bias: null, out: new Tensor(out, [M, N]), grad: metric === 'hessian' ? grad : null, weightGroups: N, postGelu: false },
        searchConfig(metric, 1),
      );
      assert.equal(result.input, null, 'the conv input stays float');
      result.weightDeltas.forEach((d, n) => assert.ok(close(d, steps[n]), `${metric}: channel ${n}: Δ ${d}, expected ${steps[n]}`));
    }
  });

  for (const metric of ['hessian', 'cosine'] as const) {
    test(`searchMatmul (${metric}): per-head scales follow each head's range`, async () => {
      const O = 2, H = 3, M = 6, K = 8, N = 5;
      const aSteps = [1 / 64, 1 / 4, 1 / 16], bSteps = [1 / 8, 1 / 32, 1 / 2];
      const a = Float32Array.from(gridCodes(O * H * M * K, K, 11), (c, i) => c * aSteps[Math.floor(i / (M * K)) % H]);
      const b = Float32Array.from(gridCodes(O * H * K * N, N, 12), (c, i) => c * bSteps[Math.floor(i / (K * N)) % H]);
      const out = new Float32Array(O * H * M * N);
      for (let g = 0; g < O * H; g++) {
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            let s = 0;
            for (let k = 0; k < K; k++) s += a[g * M * K + m * K + k] * b[g * K * N + k * N + n];
            out[g * M * N + m * N + n] = s;
          }
        }
      }
      const r = rng(13);
      const grad = new Tensor(Float32Array.from({ length: out.length }, () => 0.5 + r()), [O * H, M, N]);
      const result = await searchMatmul(
        { point: 'mm', heads: H, a: new Tensor(a, [O * H, M, K]), b: new Tensor(b, [O * H, K, N]), out: new Tensor(out, [O * H, M, N]), grad: metric === 'hessian' ? grad : null, postSoftmax: false },
        searchConfig(metric),
      );
      assert.equal(result.heads, H);
      assert.ok(result.a.kind === 'uniform' && result.b.kind === 'uniform');
      assert.equal(result.a.deltas.length, H);
      result.a.deltas.forEach((d, h) => assert.ok(close(d, aSteps[h]), `A head ${h}: Δ ${d}, expected ${aSteps[h]}`));
      result.b.deltas.forEach((d, h) => assert.ok(close(d, bSteps[h]), `B head ${h}: Δ ${d}, expected ${bSteps[h]}`));
      assert.equal(new Set(result.a.deltas).size, H, 'different scales per head');
    });
  }

  test('searchMatmul post-softmax: the twin keeps Δ_R2 fixed and picks a power-of-two Δ_R1', async () => {
    const O = 1, H = 2, M = 4, K = 8, N = 4;
    const r = rng(14);
    const a = new Float32Array(O * H * M * K);
    for (let row = 0; row < O * H * M; row++) {
      const e = Array.from({ length: K }, () => Math.exp(r() * 5));
      const s = e.reduce((u, v) => u + v, 0);
      e.forEach((v, i) => (a[row * K + i] = v / s));
    }
    const b = Float32Array.from({ length: O * H * K * N }, () => r() - 0.5);
    const out = new Float32Array(O * H * M * N);
    for (let g = 0; g < O * H; g++) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[g * M * K + m * K + k] * b[g * K * N + k * N + n];
      out[g * M * N + m * N + n] = s;
    }
    const cfg = { ...searchConfig('cosine', 1), twinSoftmax: true, activationBits: 6 };
    for (const softmaxDeltaR2 of ['paper', 'exact-one'] as const) {
      const result = await searchMatmul({ point: 'mm2', heads: H, a: new Tensor(a, [O * H, M, K]), b: new Tensor(b, [O * H, K, N]), out: new Tensor(out, [O * H, M, N]), grad: null, postSoftmax: true }, { ...cfg, softmaxDeltaR2 });
      assert.ok(result.a.kind === 'twin-softmax', 'twin softmax');
      assert.equal(result.a.deltaR2, softmaxDeltaR2 === 'paper' ? 1 / 32 : 1 / 31);
      const j = -Math.log2(result.a.deltaR1);
      assert.ok(Number.isInteger(j) && j >= 5 && j < 25, `Δ_R1 = ${result.a.deltaR1} is 2^−j with split ≤ 1`);
    }
  });
});
