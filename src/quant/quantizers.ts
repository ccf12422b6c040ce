/**
 * The quantizers of PTQ4ViT, as plain functions on float32 arrays.
 *
 * Uniform symmetric k-bit:   code = clamp(round(x/Δ), −2^(k−1), 2^(k−1)−1),   x̂ = code·Δ
 *
 * Twin uniform (a range flag + k−1 bits): two ranges R1, R2 with their own scales,
 *   post-softmax: R1 = [0, 2^(k−1)·Δ_R1), R2 = [2^(k−1)·Δ_R1, 1], Δ_R2 = 1/2^(k−1) (paper) — values in R1
 *                 keep the fine scale Δ_R1, the few large attention weights get the coarse Δ_R2;
 *   post-GELU:    R1 = negative side with a fixed Δ_R1 covering GELU's minimum (≈ −0.17),
 *                 R2 = positive side with the searched Δ_R2.
 * With Δ_R2 = 2^m·Δ_R1 both ranges share one accumulator after a shift (the paper's hardware argument).
 *
 * Rounding is half-to-even, as torch.round and ONNX Round, so our codes match the reference implementation's.
 */
import { roundHalfEven } from '../numeric.js';

/** 2^(k−1): the number of codes in one sign (or one twin range). */
export function qmax(bits: number): number {
  return 2 ** (bits - 1);
}

export { roundHalfEven };

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** Signed k-bit code of one value. */
export function uniformCode(x: number, delta: number, bits: number): number {
  return uniformCoder(bits)(x, delta);
}

/** uniformCode with the width fixed once, for loops over whole tensors. */
export function uniformCoder(bits: number): (x: number, delta: number) => number {
  const q = qmax(bits);
  return (x, delta) => clamp(roundHalfEven(x / delta), -q, q - 1);
}

/** x̂ for every element: symmetric uniform with one Δ (per tensor). */
export function fakeQuantUniform(x: Float32Array, delta: number, bits: number, out = new Float32Array(x.length)): Float32Array {
  const q = qmax(bits);
  for (let i = 0; i < x.length; i++) out[i] = clamp(roundHalfEven(x[i] / delta), -q, q - 1) * delta;
  return out;
}

/**
 * Symmetric uniform with one Δ per group, where group = floor(i / groupSize) mod deltas.length.
 * Covers per-output-channel weights (groupSize = in features) and per-head operands of the attention
 * products laid out [..., heads, rows, cols] (groupSize = rows·cols).
 */
export function fakeQuantGrouped(x: Float32Array, deltas: ArrayLike<number>, groupSize: number, bits: number, out = new Float32Array(x.length)): Float32Array {
  const q = qmax(bits);
  const groups = deltas.length;
  for (let start = 0, g = 0; start < x.length; start += groupSize, g = (g + 1) % groups) {
    const delta = deltas[g];
    const end = Math.min(x.length, start + groupSize);
    for (let i = start; i < end; i++) out[i] = clamp(roundHalfEven(x[i] / delta), -q, q - 1) * delta;
  }
  return out;
}

export interface TwinSoftmax {
  deltaR1: number;
  deltaR2: number;
}

/** Twin code of a post-softmax value: [range flag (0 = R1, 1 = R2), unsigned k−1-bit magnitude]. */
export function twinSoftmaxCode(x: number, p: TwinSoftmax, bits: number): [number, number] {
  const top = qmax(bits) - 1;
  const split = qmax(bits) * p.deltaR1;
  return x < split ? [0, clamp(roundHalfEven(x / p.deltaR1), 0, top)] : [1, clamp(roundHalfEven(x / p.deltaR2), 0, top)];
}

export function fakeQuantTwinSoftmax(x: Float32Array, p: TwinSoftmax, bits: number, out = new Float32Array(x.length)): Float32Array {
  const top = qmax(bits) - 1;
  const split = qmax(bits) * p.deltaR1;
  const { deltaR1, deltaR2 } = p;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    out[i] = v < split ? clamp(roundHalfEven(v / deltaR1), 0, top) * deltaR1 : clamp(roundHalfEven(v / deltaR2), 0, top) * deltaR2;
  }
  return out;
}

export interface TwinGelu {
  /** Δ of R1, the negative side [−2^(k−1)·Δ_R1, 0]. */
  deltaNeg: number;
  /** Δ of R2, the positive side [0, (2^(k−1)−1)·Δ_R2]. */
  deltaPos: number;
}

/**
 * Twin code of a post-GELU value: [range flag, k−1 bits]. Flag 0 (R1) holds the negative values
 * −(c+1)·Δ_R1 for c = 0 … 2^(k−1)−1; flag 1 (R2) holds c·Δ_R2, including zero, so the k bits cover
 * exactly the 2^k values clamp(round(x/Δ), −2^(k−1), 0)·Δ_R1 ∪ clamp(round(x/Δ), 0, 2^(k−1)−1)·Δ_R2.
 */
export function twinGeluCode(x: number, p: TwinGelu, bits: number): [number, number] {
  const q = qmax(bits);
  const negative = x < 0 ? clamp(roundHalfEven(x / p.deltaNeg), -q, 0) : 0;
  return negative < 0 ? [0, -negative - 1] : [1, clamp(roundHalfEven(Math.max(x, 0) / p.deltaPos), 0, q - 1)];
}

/**
 * twinGeluCode of every element as the two uint8 operands of integer products (zero point 128): R1 holds
 * clamp(round(x/Δ_R1), −2^(k−1), 0) + 128 where x < 0, R2 holds clamp(round(x/Δ_R2), 0, 2^(k−1)−1) + 128
 * elsewhere, and each is 128 (zero) outside its range.
 */
export function twinGeluCodesU8(x: Float32Array, p: TwinGelu, bits: number): [Uint8Array, Uint8Array] {
  const r1 = new Uint8Array(x.length).fill(128), r2 = new Uint8Array(x.length).fill(128);
  for (let i = 0; i < x.length; i++) {
    const [flag, code] = twinGeluCode(x[i], p, bits);
    if (flag === 0) r1[i] = 128 - (code + 1); // R1 value −(code + 1)·Δ_R1
    else r2[i] = 128 + code;
  }
  return [r1, r2];
}

export function twinGeluValue(flag: number, code: number, p: TwinGelu): number {
  return flag === 0 ? -(code + 1) * p.deltaNeg : code * p.deltaPos;
}

export function twinSoftmaxValue(flag: number, code: number, p: TwinSoftmax): number {
  return code * (flag === 0 ? p.deltaR1 : p.deltaR2);
}

export function fakeQuantTwinGelu(x: Float32Array, p: TwinGelu, bits: number, out = new Float32Array(x.length)): Float32Array {
  const q = qmax(bits);
  const { deltaNeg, deltaPos } = p;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    out[i] = v < 0 ? clamp(roundHalfEven(v / deltaNeg), -q, 0) * deltaNeg : clamp(roundHalfEven(v / deltaPos), 0, q - 1) * deltaPos;
  }
  return out;
}

/** Δ_maxabs = max/(2^(k−1) − 0.5), guarded against all-zero tensors (any positive Δ then quantizes exactly). */
export function maxAbsDelta(max: number, bits: number): number {
  return max > 0 ? max / (qmax(bits) - 0.5) : 1e-8;
}

/** GELU's minimum, x·Φ(x) at x ≈ −0.7518: the negative twin range must reach it. */
export const GELU_MIN = 0.16997124254703522;

/**
 * Δ_R1 of the post-GELU twin: the finest scale whose 2^(k−1) negative codes still reach −GELU_MIN (or
 * −`negativeReach`, the minimum of the activation that feeds the input: QuickGELU's is ≈ −0.2785).
 * Aligned (the paper): Δ_R1 = Δ_R2/2^m with the largest such m, so R1 and R2 differ by a shift.
 */
export function geluNegativeDelta(deltaPos: number, bits: number, aligned: boolean, negativeReach: number = GELU_MIN): number {
  const finest = negativeReach / qmax(bits);
  if (!aligned) return finest;
  let m = Math.floor(Math.log2(deltaPos / finest));
  while (deltaPos / 2 ** m < finest) m--; // guard log2 rounding at exact powers of two
  return deltaPos / 2 ** m;
}
