/**
 * The integer graph's pieces against the arithmetic they replace, bit for bit (issue 23's faster graph):
 * - each kind's uint8 codes minus their zero point are the simulation's float codes (qkernels.ts), also at the
 *   range boundaries where saturation, not a Clip, now bounds the twin-softmax codes;
 * - an attention product as MatMulIntegerToFloat (per-head rescale as per-column scales, twin parts summed in
 *   f32, a power-of-two factor folded into the rescale) equals MatMulInteger → int32 P1 + 2^m·P2 → Cast → Mul → Mul.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GraphBuilder } from '../src/onnx/builder.js';
import { OnnxType, type ValueInfo } from '../src/onnx/proto.js';
import { integerProduct, rescaleConstant, type IntegerOperand } from '../src/quant/integer.js';
import { activationCodes, kindOf, partScales } from '../src/quant/kinds/index.js';
import type { ActivationQuant } from '../src/quant/params.js';
import { qmax } from '../src/quant/quantizers.js';
import { runGraph } from '../src/tensor/ort.js';

const f32 = OnnxType.FLOAT;

/** Deterministic samples in [0, 1) (mulberry32). */
function uniforms(count: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: count }, () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  });
}

/** Values around every rounding and range boundary of the quantizer's parts: k·Δ, (k ± ½)·Δ and their f32 neighbours. */
function boundaries(q: ActivationQuant, lo: number, hi: number): number[] {
  const out: number[] = [];
  const half = qmax(q.bits);
  for (const [delta] of partScales(q)) {
    for (let k = -half - 1; k <= half + 1; k++) {
      for (const v of [k * delta, (k + 0.5) * delta, (k - 0.5) * delta]) {
        const f = Math.fround(v);
        out.push(f, f * (1 + 2 ** -23), f * (1 - 2 ** -23));
      }
    }
  }
  if (q.kind === 'twin-softmax') {
    const split = Math.fround(half * q.deltaR1);
    out.push(split, split * (1 - 2 ** -24), split * (1 + 2 ** -23), 1, Math.fround(1 - 2 ** -24));
  }
  return out.filter((v) => v >= lo && v <= hi);
}

const CASES: { name: string; q: ActivationQuant; lo: number; hi: number }[] = [
  { name: 'uniform 8-bit', q: { kind: 'uniform', bits: 8, deltas: [0.0371] }, lo: -6, hi: 6 },
  { name: 'uniform 5-bit', q: { kind: 'uniform', bits: 5, deltas: [2 ** -4] }, lo: -2, hi: 2 },
  { name: 'twin-gelu 8-bit', q: { kind: 'twin-gelu', bits: 8, deltaNeg: 0.17 / 128, deltaPos: (0.17 / 128) * 16 }, lo: -0.17, hi: 8 },
  { name: 'twin-gelu 6-bit', q: { kind: 'twin-gelu', bits: 6, deltaNeg: 2 ** -7, deltaPos: 2 ** -3 }, lo: -0.17, hi: 6 },
  // Softmax outputs: [0, 1]. Δ_R1 = 2^−10 and 2^−9 (m = 3, 4: what calibrations choose), Δ_R2 = 1/2^(k−1).
  { name: 'twin-softmax 8-bit', q: { kind: 'twin-softmax', bits: 8, deltaR1: 2 ** -10, deltaR2: 2 ** -7 }, lo: 0, hi: 1 },
  { name: 'twin-softmax 4-bit', q: { kind: 'twin-softmax', bits: 4, deltaR1: 2 ** -9, deltaR2: 2 ** -3 }, lo: 0, hi: 1 },
  { name: 'twin-softmax 8-bit, Δ_R2 = 1/(2^(k−1) − 1)', q: { kind: 'twin-softmax', bits: 8, deltaR1: 2 ** -11, deltaR2: 1 / 127 }, lo: 0, hi: 1 },
];

describe('integer codes − zero point = the simulation codes', () => {
  for (const { name, q, lo, hi } of CASES) {
    test(name, async () => {
      const r = uniforms(3000, name.length);
      const x = Float32Array.from([...r.map((u) => lo + (hi - lo) * (q.kind === 'twin-softmax' ? u ** 6 : u)), ...boundaries(q, lo, hi)]);
      const kind = kindOf(q);
      const parts = partScales(q).length;
      for (let p = 0; p < parts; p++) {
        // The integer graph's part p as float: Cast(codes) − Cast(zero point).
        const integer = await runGraph(`integer-codes:${name}:${p}`, () => {
          const g = new GraphBuilder();
          const xs = g.reserve('x');
          const part = activationCodes(g, xs, q, 'c').parts[p];
          const codes = g.op('Cast', [part.codes], { to: f32 });
          const value = part.zeroPoint ? g.op('Sub', [codes, g.op('Cast', [part.zeroPoint], { to: f32 })]) : codes;
          g.reserve('y');
          g.opInto('y', 'Identity', [value]);
          return g.finish('codes', [{ name: 'x', elemType: f32, shape: ['N'] }], [{ name: 'y', elemType: f32, shape: ['N'] }], 17);
        }, { x: { data: x, shape: [x.length] } });
        // The simulation's part p (qkernels.ts codeParts: Clip(Round(x / Δ), lo, hi), then the kind's masking).
        const feeds = kind.simulationFeeds(q, 's_', []);
        const simulated = await runGraph(`simulation-codes:${name}:${p}`, () => {
          const g = new GraphBuilder();
          const xs = g.reserve('x');
          const grid = (s: string, gl: number, gh: number, hint: string): string =>
            g.op('Clip', [g.op('Round', [g.op('Div', [xs, s])]), g.float(`${hint}_lo`, gl), g.float(`${hint}_hi`, gh)], undefined, hint);
          const scale = (n: string, shape: (string | number)[] = [1]): ValueInfo => ({ name: g.reserve(`s_${n}`), elemType: f32, shape });
          const { parts: codes, inputs } = kind.simulationCodes(q, { g, x: xs, prefix: 's_', perHeadShape: [], grid, scale });
          g.reserve('y');
          g.opInto('y', 'Identity', [codes[p]]);
          return g.finish('sim', [{ name: 'x', elemType: f32, shape: ['N'] }, ...inputs], [{ name: 'y', elemType: f32, shape: ['N'] }], 17);
        }, { x: { data: x, shape: [x.length] }, ...feeds });
        const mismatches = [...x.keys()].filter((i) => integer.data[i] + 0 !== simulated.data[i] + 0);
        assert.equal(mismatches.length, 0, `part ${p + 1}: ${mismatches.length} of ${x.length} codes differ, e.g. x = ${mismatches.slice(0, 3).map((i) => `${x[i]} → ${integer.data[i]} vs ${simulated.data[i]}`).join(', ')}`);
        // The values reach both ends of the part's code range, so saturation and clipping are exercised.
        const codes = Array.from(simulated.data);
        assert.ok(new Set(codes).size > 4, `part ${p + 1} takes few codes: ${[...new Set(codes)].slice(0, 5)}`);
      }
    });
  }
});

describe('attention product: MatMulIntegerToFloat plan = MatMulInteger → int32 sum → Cast → Mul', () => {
  const [O, H, M, K, N] = [2, 3, 5, 40, 7];
  const a = (() => {
    const r = uniforms(O * H * M * K, 11);
    // Softmax-like rows in [0, 1]: mostly small, some large.
    return Float32Array.from(r, (u, i) => (i % 9 === 0 ? u : u ** 8 * 0.05));
  })();
  const b = Int8Array.from(uniforms(O * H * K * N, 12), (u) => Math.floor(u * 256) - 128);
  const bScales = [0.011, 0.0173, 0.009];
  const cases: { name: string; q: ActivationQuant }[] = [
    { name: 'uniform per-head left operand', q: { kind: 'uniform', bits: 8, deltas: [0.004, 0.0071, 0.0052] } },
    { name: 'twin-softmax left operand (shared accumulator, m = 3)', q: { kind: 'twin-softmax', bits: 8, deltaR1: 2 ** -10, deltaR2: 2 ** -7 } },
    { name: 'twin-softmax, Δ_R2 not a power-of-two multiple (one rescale per part)', q: { kind: 'twin-softmax', bits: 8, deltaR1: 2 ** -11, deltaR2: 1 / 127 } },
  ];
  for (const { name, q } of cases) {
    for (const factor of [1, 0.125]) {
      test(`${name}, factor ${factor}`, async () => {
        const rescale = (scales: number[]): Float32Array => Float32Array.from({ length: H }, (_, h) => rescaleConstant(scales.length > 1 ? scales[h] : scales[0], bScales[h]));
        const inputs = [{ name: 'a', elemType: f32, shape: [O, H, M, K] }, { name: 'b', elemType: OnnxType.INT8, shape: [O, H, K, N] }];
        const outputs = [{ name: 'y', elemType: f32, shape: [O, H, M, N] }];
        const feeds = { a: { data: a, shape: [O, H, M, K] }, b: { data: b, shape: [O, H, K, N] } };
        const fast = await runGraph(`product-fast:${name}:${factor}`, () => {
          const g = new GraphBuilder();
          const left: IntegerOperand = activationCodes(g, g.reserve('a'), q, 'a');
          const y = integerProduct(g, left, g.reserve('b'), K, (part) => rescale(part.scales), 'p', factor);
          g.reserve('y');
          g.opInto('y', 'Identity', [y]);
          return g.finish('fast', inputs, outputs, 17);
        }, feeds);
        const reference = await runGraph(`product-reference:${name}:${factor}`, () => {
          const g = new GraphBuilder();
          const left = activationCodes(g, g.reserve('a'), q, 'a');
          const bs = g.reserve('b');
          const products = left.parts.map((p) => g.op('MatMulInteger', [p.codes, bs, ...(p.zeroPoint ? [p.zeroPoint] : [])]));
          const scaled = (v: string, scales: number[]) => g.op('Mul', [g.op('Cast', [v], { to: f32 }), g.floats('r', rescale(scales), [1, H, 1, 1])]);
          const parts = left.parts.map((p) => p.scales);
          let y: string;
          const ratio = parts.length > 1 ? parts[1][0] / parts[0][0] : 1;
          if (parts.length === 1) y = scaled(products[0], parts[0]);
          else if (Number.isInteger(Math.log2(ratio))) y = scaled(g.op('Add', [products[0], g.op('Mul', [products[1], g.int32('shift', ratio)])]), parts[0]);
          else y = g.op('Add', [scaled(products[0], parts[0]), scaled(products[1], parts[1])]);
          if (factor !== 1) y = g.op('Mul', [y, g.float('factor', factor)]);
          g.reserve('y');
          g.opInto('y', 'Identity', [y]);
          return g.finish('reference', inputs, outputs, 17);
        }, feeds);
        assert.ok(reference.data.some((v) => v !== 0));
        const differ = [...reference.data.keys()].filter((i) => fast.data[i] !== reference.data[i]);
        assert.equal(differ.length, 0, `${differ.length} of ${reference.data.length} outputs differ, e.g. ${differ.slice(0, 3).map((i) => `${fast.data[i]} vs ${reference.data[i]}`)}`);
      });
    }
  }
});
