/**
 * Twin uniform quantization of a post-GELU input (the paper's §3.2): GELU's outputs are a short negative tail
 * (down to ≈ −0.17) and a long positive side, so each gets its own range and scale, with a range flag and
 * k−1 bits each:
 *
 *   R1 (negative side):  clamp(round(x/Δ_R1), −2^(k−1), 0)·Δ_R1     Δ_R1 = deltaNeg, fixed to reach the activation's minimum
 *                        (GELU ≈ −0.1700, gelu_tanh ≈ −0.1700, QuickGELU ≈ −0.1636: QuantPoint.activation)
 *   R2 (positive side):  clamp(round(x/Δ_R2), 0, 2^(k−1)−1)·Δ_R2    Δ_R2 = deltaPos, searched
 *
 * Aligned (the default), Δ_R2 = 2^m·Δ_R1, so both ranges can share one accumulator after a shift.
 * Only fc2's input (post-GELU) may use it. Integer graph: two uint8 code tensors with zero point 128, each 128
 * (zero) outside its range.
 */
import { z } from 'zod';
import { UINT8, quantizeCodes } from '../integer.js';
import { roundToGrid, scalar } from '../onnxquant.js';
import { fakeQuantTwinGelu, geluNegativeDelta, maxAbsDelta, qmax, twinGeluCodesU8 } from '../quantizers.js';
import { bitsSchema, deltaSchema, type ActivationKind, type QuantOf } from './kind.js';

const disk = z.strictObject({ kind: z.literal('twin-gelu'), bits: bitsSchema, delta_neg: deltaSchema, delta_pos: deltaSchema });

export const twinGelu: ActivationKind<QuantOf<'twin-gelu'>, typeof disk> = {
  disk,
  toDisk: (q) => ({ kind: q.kind, bits: q.bits, delta_neg: q.deltaNeg, delta_pos: q.deltaPos }),
  fromDisk: (d) => ({ kind: d.kind, bits: d.bits, deltaNeg: d.delta_neg, deltaPos: d.delta_pos }),

  // Only fc2's input comes out of a GELU: its ranges (a tail down to GELU_MIN, a long positive side) fit no other.
  misfit(q, slot) {
    return twinGelu.fits(slot) ? null : `${slot.field} is ${q.kind}, but it is not a post-GELU input`;
  },

  fits: ({ field, feeds }) => field === 'input' && feeds === 'post-gelu',

  /** Δ_R2 = factor·Δ_maxabs of the positive side (its maximum, not max|x|); Δ_R1 follows from Δ_R2 (geluNegativeDelta). */
  searchSpace({ data, bits, factors, geluAligned, negativeReach }) {
    let max = -Infinity;
    for (let i = 0; i < data.length; i++) if (data[i] > max) max = data[i];
    const d0 = maxAbsDelta(max, bits);
    const quant = (deltaPos: number): QuantOf<'twin-gelu'> => ({ kind: 'twin-gelu', bits, deltaPos, deltaNeg: geluNegativeDelta(deltaPos, bits, geluAligned, negativeReach) });
    return {
      count: factors.length,
      groups: 1,
      initial: quant(d0),
      scales: (cands) => {
        const deltas = cands.map((c) => factors[c] * d0);
        return { scales: Float32Array.from(deltas), scales2: Float32Array.from(deltas.map((d) => geluNegativeDelta(d, bits, geluAligned, negativeReach))) };
      },
      chosen: ([best]) => quant(factors[best] * d0),
    };
  },

  partScales: (q) => [[q.deltaNeg], [q.deltaPos]],

  fakeQuant: (x, q) => fakeQuantTwinGelu(x, q, q.bits),

  /** Scale inputs: `${prefix}s` = Δ_R2 (positive side, the searched one), `${prefix}s2` = Δ_R1 (negative side). */
  fakeQuantNodes(bits, x, out, prefix) {
    const q = qmax(bits);
    const [lo, hi, zero] = [`${prefix}qlo`, `${prefix}qhi`, `${prefix}zero`];
    return {
      nodes: [...roundToGrid(x, `${prefix}s`, zero, hi, `${prefix}pos`), ...roundToGrid(x, `${prefix}s2`, lo, zero, `${prefix}neg`), { op: 'Add', inputs: [`${prefix}pos`, `${prefix}neg`], outputs: [out] }],
      inits: [scalar(lo, -q), scalar(hi, q - 1), scalar(zero, 0)],
      scaleInputs: [`${prefix}s`, `${prefix}s2`],
    };
  },
  scoringScales: (q) => ({ scales: Float32Array.of(q.deltaPos), scales2: Float32Array.of(q.deltaNeg) }),

  codesU8(x, q, shape) {
    const [r1, r2] = twinGeluCodesU8(x, q, q.bits);
    return [{ codes: r1, shape, delta: q.deltaNeg }, { codes: r2, shape, delta: q.deltaPos }];
  },

  integerCodes(g, x, q, hint) {
    const half = qmax(q.bits);
    const zp = g.uint8(`${hint}_zp128`, 128);
    return {
      parts: [
        { codes: quantizeCodes(g, x, [q.deltaNeg], UINT8, 128, 128 - half, 128, `${hint}_r1`), zeroPoint: zp, scales: [q.deltaNeg] },
        { codes: quantizeCodes(g, x, [q.deltaPos], UINT8, 128, 128, 128 + half - 1, `${hint}_r2`), zeroPoint: zp, scales: [q.deltaPos] },
      ],
    };
  },

  simulationCodes(q, sim) {
    const half = qmax(q.bits);
    const s1 = sim.scale('s1'), s2 = sim.scale('s2');
    return { parts: [sim.grid(s1.name, -half, 0, `${sim.prefix}c1`), sim.grid(s2.name, 0, half - 1, `${sim.prefix}c2`)], inputs: [s1, s2] };
  },
  simulationFeeds: (q, prefix) => ({
    [`${prefix}s1`]: { data: Float32Array.of(q.deltaNeg), shape: [1] },
    [`${prefix}s2`]: { data: Float32Array.of(q.deltaPos), shape: [1] },
  }),
  cacheKey: (q) => `${q.kind}${q.bits}`,

  picture(q) {
    const Q = qmax(q.bits);
    return {
      ranges: [
        { name: 'R1', from: -Q * q.deltaNeg, to: 0 },
        { name: 'R2', from: 0, to: (Q - 1) * q.deltaPos },
      ],
      marks: [
        { name: 'R1 clip', value: -Q * q.deltaNeg },
        { name: 'R2 clip', value: (Q - 1) * q.deltaPos },
      ],
    };
  },
  describe: (q, num) => `twin: R1 = [${num(-qmax(q.bits) * q.deltaNeg)}, 0) Δ_R1 ${num(q.deltaNeg)} · R2 = [0, ${num((qmax(q.bits) - 1) * q.deltaPos)}] Δ_R2 ${num(q.deltaPos)}`,
};
