/**
 * Symmetric uniform k-bit quantization, one Δ per tensor or one per attention head:
 *
 *   code = clamp(round(x/Δ), −2^(k−1), 2^(k−1)−1),   x̂ = code·Δ
 *
 * Any operand may be uniform: linear inputs (one Δ), attention operands (one Δ, or one per head).
 * Integer graph: code + 128 as uint8 (zero point 128).
 */
import { z } from 'zod';
import { UINT8, quantizeCodes } from '../integer.js';
import { roundToGrid, scalar } from '../onnxquant.js';
import { maxAbs } from '../../numeric.js';
import { fakeQuantGrouped, maxAbsDelta, qmax, uniformCoder } from '../quantizers.js';
import { bitsSchema, deltasSchema, type ActivationKind, type QuantOf } from './kind.js';

const disk = z.strictObject({ kind: z.literal('uniform'), bits: bitsSchema, deltas: deltasSchema });

export const uniform: ActivationKind<QuantOf<'uniform'>, typeof disk> = {
  disk,
  toDisk: (q) => ({ kind: q.kind, bits: q.bits, deltas: [...q.deltas] }),
  fromDisk: (d) => ({ kind: d.kind, bits: d.bits, deltas: d.deltas }),

  misfit(q, { field, heads }) {
    if (q.deltas.length === 1 || q.deltas.length === heads) return null;
    return `${field}.deltas has ${q.deltas.length} entries, expected 1${heads > 1 ? ` or ${heads} (one per head)` : ''}`;
  },

  fits: () => true,

  /** Δ = factor·Δ_maxabs with Δ_maxabs = max|x|/(2^(k−1) − 0.5), per head for a per-head operand. */
  searchSpace({ data, heads, groupSize, bits, factors }) {
    const max = new Array<number>(heads).fill(0);
    for (let g = 0, start = 0; start < data.length; g++, start += groupSize) max[g % heads] = Math.max(max[g % heads], maxAbs(data, start, start + groupSize));
    const d0 = max.map((m) => maxAbsDelta(m, bits));
    return {
      count: factors.length,
      groups: heads,
      initial: { kind: 'uniform', bits, deltas: d0 },
      scales: (cands) => {
        const scales = new Float32Array(cands.length * heads);
        for (let c = 0; c < cands.length; c++) for (let h = 0; h < heads; h++) scales[c * heads + h] = factors[cands[c]] * d0[h];
        return { scales };
      },
      chosen: (best) => ({ kind: 'uniform', bits, deltas: best.map((b, h) => factors[b] * d0[h]) }),
    };
  },

  partScales: (q) => [q.deltas],

  fakeQuant: (x, q, groupSize) => fakeQuantGrouped(x, q.deltas, q.deltas.length === 1 ? x.length : groupSize, q.bits),

  fakeQuantNodes(bits, x, out, prefix) {
    const q = qmax(bits);
    const [lo, hi, s] = [`${prefix}qlo`, `${prefix}qhi`, `${prefix}s`];
    return { nodes: roundToGrid(x, s, lo, hi, out), inits: [scalar(lo, -q), scalar(hi, q - 1)], scaleInputs: [s] };
  },
  scoringScales: (q) => ({ scales: Float32Array.from(q.deltas) }),

  codesU8(x, q, shape) {
    const codes = new Uint8Array(x.length);
    const code = uniformCoder(q.bits), delta = q.deltas[0];
    for (let i = 0; i < x.length; i++) codes[i] = code(x[i], delta) + 128;
    return [{ codes, shape, delta }];
  },

  integerCodes(g, x, q, hint) {
    const half = qmax(q.bits);
    const zp = g.uint8(`${hint}_zp128`, 128);
    return { parts: [{ codes: quantizeCodes(g, x, q.deltas, UINT8, 128, 128 - half, 128 + half - 1, hint), zeroPoint: zp, scales: q.deltas }] };
  },

  simulationCodes(q, sim) {
    const half = qmax(q.bits);
    const s1 = sim.scale('s1', q.deltas.length > 1 ? sim.perHeadShape : [1]);
    return { parts: [sim.grid(s1.name, -half, half - 1, `${sim.prefix}c`)], inputs: [s1] };
  },
  simulationFeeds: (q, prefix, perHeadShape) => ({ [`${prefix}s1`]: { data: Float32Array.from(q.deltas), shape: q.deltas.length > 1 ? perHeadShape : [1] } }),
  // Per-head Δs are a differently shaped input, hence a different graph.
  cacheKey: (q) => `${q.kind}${q.bits}${q.deltas.length > 1 ? 'h' : ''}`,

  // Per head for attention operands: the widest head's range.
  picture(q, feeds) {
    const Q = qmax(q.bits);
    const delta = Math.max(...q.deltas);
    return {
      ranges: [{ name: 'uniform', from: feeds === 'post-softmax' ? 0 : -Q * delta, to: (Q - 1) * delta }],
      marks: [
        ...(feeds === 'post-softmax' ? [{ name: '→ 0 below Δ/2', value: Math.min(...q.deltas) / 2 }] : [{ name: 'clip −2^(k−1)·Δ', value: -Q * delta }]),
        { name: 'clip (2^(k−1)−1)·Δ', value: (Q - 1) * delta },
      ],
    };
  },
  describe: (q, _num, list) => `uniform Δ ${list(q.deltas)}`,
};
