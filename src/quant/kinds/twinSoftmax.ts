/**
 * Twin uniform quantization of a post-softmax attention matrix (the paper's §3.2): most attention weights are
 * tiny and need a fine scale, a few are large and matter most, so values in [0, 1] are split at 2^(k−1)·Δ_R1
 * into two ranges, each with a range flag and k−1 unsigned bits:
 *
 *   R1 = [0, 2^(k−1)·Δ_R1):  clamp(round(x/Δ_R1), 0, 2^(k−1)−1)·Δ_R1     Δ_R1 searched over powers of two
 *   R2 = the rest:           clamp(round(x/Δ_R2), 0, 2^(k−1)−1)·Δ_R2     Δ_R2 = 1/2^(k−1) (paper), fixed
 *
 * With Δ_R2 = 2^m·Δ_R1 both ranges share one accumulator after a shift (the paper's hardware argument).
 * Only the left operand of softmax·v may use it. Integer graph: two uint8 code tensors with zero point
 * 256 − 2^(k−1), each at its zero point (value 0) outside its range.
 */
import { z } from 'zod';
import { UINT8, quantizeCodes } from '../integer.js';
import { roundToGrid, scalar } from '../onnxquant.js';
import { fakeQuantTwinSoftmax, qmax } from '../quantizers.js';
import { bitsSchema, deltaSchema, type ActivationKind, type QuantOf } from './kind.js';

/** Powers of two the search tries for Δ_R1, and the one the other operand's first half-step sees (2^−(k−1+8)). */
const SOFTMAX_R1_STEPS = 20;
const SOFTMAX_R1_START = 8;

const disk = z.strictObject({ kind: z.literal('twin-softmax'), bits: bitsSchema, delta_r1: deltaSchema, delta_r2: deltaSchema });

export const twinSoftmax: ActivationKind<QuantOf<'twin-softmax'>, typeof disk> = {
  disk,
  toDisk: (q) => ({ kind: q.kind, bits: q.bits, delta_r1: q.deltaR1, delta_r2: q.deltaR2 }),
  fromDisk: (d) => ({ kind: d.kind, bits: d.bits, deltaR1: d.delta_r1, deltaR2: d.delta_r2 }),

  // Only softmax·v's left operand holds attention weights: values in [0, 1], the split point's premise.
  misfit(q, slot) {
    return twinSoftmax.fits(slot) ? null : `${slot.field} is ${q.kind}, but it is not a post-softmax operand`;
  },

  fits: ({ field, feeds }) => field === 'a' && feeds === 'post-softmax',

  /**
   * Δ_R1 = 2^−j over SOFTMAX_R1_STEPS powers of two, the split 2^(k−1)·Δ_R1 going from 1 down (the grid of α, β
   * and n is not used: Δ_R1 stays a power of two, so R1 and R2 differ by a shift); one Δ_R1 for all heads.
   */
  searchSpace({ bits, softmaxDeltaR2 }) {
    const deltaR2 = softmaxDeltaR2 === 'paper' ? 1 / qmax(bits) : 1 / (qmax(bits) - 1);
    const ladder = Array.from({ length: SOFTMAX_R1_STEPS }, (_, j) => 2 ** -(bits - 1 + j));
    const quant = (deltaR1: number): QuantOf<'twin-softmax'> => ({ kind: 'twin-softmax', bits, deltaR1, deltaR2 });
    return {
      count: ladder.length,
      groups: 1,
      initial: quant(ladder[SOFTMAX_R1_START]),
      scales: (cands) => {
        const r1 = cands.map((c) => ladder[c]);
        return { scales: Float32Array.from(r1), splits: Float32Array.from(r1.map((d) => d * qmax(bits))), deltaR2 };
      },
      chosen: ([best]) => quant(ladder[best]),
    };
  },

  partScales: (q) => [[q.deltaR1], [q.deltaR2]],

  fakeQuant: (x, q) => fakeQuantTwinSoftmax(x, q, q.bits),

  /** Scale inputs: `${prefix}s` = Δ_R1 and `${prefix}split` = 2^(k−1)·Δ_R1 (searched together); Δ_R2 is a constant. */
  fakeQuantNodes(bits, x, out, prefix, deltaR2) {
    const q = qmax(bits);
    const [hi, zero] = [`${prefix}qhi`, `${prefix}zero`];
    return {
      nodes: [
        ...roundToGrid(x, `${prefix}s`, zero, hi, `${prefix}r1`),
        ...roundToGrid(x, `${prefix}dr2`, zero, hi, `${prefix}r2`),
        { op: 'Less', inputs: [x, `${prefix}split`], outputs: [`${prefix}inR1`] },
        { op: 'Where', inputs: [`${prefix}inR1`, `${prefix}r1`, `${prefix}r2`], outputs: [out] },
      ],
      inits: [scalar(hi, q - 1), scalar(zero, 0), scalar(`${prefix}dr2`, deltaR2)],
      scaleInputs: [`${prefix}s`, `${prefix}split`],
    };
  },
  scoringScales: (q) => ({ scales: Float32Array.of(q.deltaR1), splits: Float32Array.of(q.deltaR1 * qmax(q.bits)), deltaR2: q.deltaR2 }),

  /**
   * Zero point 256 − 2^(k−1): QuantizeLinear's saturation at 255 is then the code range's top (2^(k−1) − 1), and
   * x ≥ 0 (a softmax output) keeps codes at or above the zero point — so neither range needs a Clip pass.
   */
  integerCodes(g, x, q, hint) {
    const half = qmax(q.bits);
    const zero = 256 - half;
    const zp = g.uint8(`${hint}_zp`, zero);
    const inR1 = g.op('Less', [x, g.float(`${hint}_split`, half * q.deltaR1)], undefined, `${hint}_in_r1`);
    const none = g.uint8(`${hint}_none`, zero);
    const r1 = quantizeCodes(g, x, [q.deltaR1], UINT8, zero, UINT8.min, UINT8.max, `${hint}_r1`);
    const r2 = quantizeCodes(g, x, [q.deltaR2], UINT8, zero, UINT8.min, UINT8.max, `${hint}_r2`);
    return {
      parts: [
        { codes: g.op('Where', [inR1, r1, none], undefined, `${hint}_r1_only`), zeroPoint: zp, scales: [q.deltaR1] },
        { codes: g.op('Where', [inR1, none, r2], undefined, `${hint}_r2_only`), zeroPoint: zp, scales: [q.deltaR2] },
      ],
    };
  },

  simulationCodes(q, { g, x, prefix: p, grid, scale }) {
    const half = qmax(q.bits);
    const s1 = scale('s1'), s2 = scale('s2'), split = scale('split');
    const inR1 = g.op('Less', [x, split.name], undefined, `${p}in_r1`);
    const zero = g.float(`${p}zero`, 0);
    return {
      parts: [
        g.op('Where', [inR1, grid(s1.name, 0, half - 1, `${p}r1`), zero], undefined, `${p}c1`),
        g.op('Where', [inR1, zero, grid(s2.name, 0, half - 1, `${p}r2`)], undefined, `${p}c2`),
      ],
      inputs: [s1, s2, split],
    };
  },
  simulationFeeds: (q, prefix) => ({
    [`${prefix}s1`]: { data: Float32Array.of(q.deltaR1), shape: [1] },
    [`${prefix}s2`]: { data: Float32Array.of(q.deltaR2), shape: [1] },
    [`${prefix}split`]: { data: Float32Array.of(qmax(q.bits) * q.deltaR1), shape: [1] },
  }),
  cacheKey: (q) => `${q.kind}${q.bits}`,

  picture(q) {
    const Q = qmax(q.bits);
    const split = Q * q.deltaR1;
    return {
      ranges: [
        { name: 'R1', from: 0, to: split },
        { name: 'R2', from: split, to: (Q - 1) * q.deltaR2 },
      ],
      marks: [
        { name: 'R1 → 0 below Δ_R1/2', value: q.deltaR1 / 2 },
        { name: 'R1 | R2 split 2^(k−1)·Δ_R1', value: split },
        { name: 'R2 clip', value: (Q - 1) * q.deltaR2 },
      ],
    };
  },
  describe: (q, num) => `twin: R1 = [0, ${num(qmax(q.bits) * q.deltaR1)}) Δ_R1 ${num(q.deltaR1)} · R2 Δ_R2 ${num(q.deltaR2)}`,
};
