/**
 * Integer arithmetic for the quantized graph: each quantizer kind turns a float activation into uint8
 * codes (ONNX nodes made with quantizeCodes: kinds/*.ts integerCodes); `integerLinear` multiplies them by a
 * linear layer's int8 weight codes with MatMulIntegerToFloat (int32 accumulation, rescale and bias in one kernel), and `integerProduct` multiplies
 * the attention operands with the same kernel, its per-column scales carrying the per-head rescale.
 *
 * Signedness is a speed decision: onnxruntime's u8×s8 MatMulInteger ran 1.7–3.2× faster than float MatMul
 * on this CPU (AVX-512 VNNI), s8×s8 4× slower. So the left operand (activations, post-softmax and
 * post-GELU codes) is always uint8 — signed codes carry zero point 128 — and the right operand (weights,
 * k and v) is int8 with zero point 0.
 *
 * Twin quantizers give two code tensors (R1, R2), multiplied separately. When Δ_R2/Δ_R1 = 2^m (the paper's
 * design: post-softmax R2 is 1/2^(k−1) against a power-of-two Δ_R1; aligned post-GELU), the two int32
 * products are added as P1 + 2^m·P2 before a single rescale by Δ_R1.
 */
import { Ptq4vitError } from '../errors.js';
import type { GraphBuilder } from '../onnx/builder.js';
import type { ActivationQuant } from './params.js';
import { qmax } from './quantizers.js';

/** One code tensor of an operand: value = (code − zeroPoint)·scale, scale per head or per tensor. */
export interface CodePart {
  codes: string;
  /** Name of the zero-point constant (uint8 128 or 0 for activations; absent for int8 operands). */
  zeroPoint?: string;
  /** Δ of this part: one value, or one per head. */
  scales: number[];
}

/** Codes of an operand: one part (uniform) or two (twin R1, R2). */
export interface IntegerOperand {
  parts: CodePart[];
}

/** Where per-head scales apply: axis 1 of a [G/H, H, rows, cols] operand. */
const HEAD_AXIS = 1;

/** Codes of the integer graph live in an 8-bit container. */
export function checkBits(bits: number, what: string): void {
  if (bits < 2 || bits > 8) throw new Ptq4vitError(`${what}: ${bits}-bit codes do not fit the int8 container of the integer graph (2–8 bits); export with --float or quantize with at most 8 bits`);
}

/**
 * Codes of x made before x's layout step: when x is a transpose of y (the attention head split), quantize y —
 * its head axis is where the transpose took axis 1 from — and transpose the 1-byte codes. That moves a quarter
 * of the float transpose's bytes, and kᵀ's transpose then merges with the head split's (GraphBuilder.transpose).
 * Left to itself, onnxruntime wraps the float transpose in an extra QuantizeLinear/DequantizeLinear pair (its
 * QDQ propagation), which profiled slower.
 */
function codesThroughLayout(g: GraphBuilder, x: string, hint: string, codes: (source: string, headAxis: number) => string): string {
  const layout = g.transposeOf(x);
  return layout ? g.transpose(codes(layout.input, layout.perm[HEAD_AXIS]), layout.perm, `${hint}_t`) : codes(x, HEAD_AXIS);
}

/**
 * QuantizeLinear of x with one Δ per head along `axis` (or one Δ), zero point `zero` of the output type.
 * Per head, when the head axis is the second-to-last of a known shape [.., H, d]: x/Δ_h as a Div by a vector
 * over the flattened last two axes (a last-axis broadcast), then QuantizeLinear with scale 1 — the same
 * division and rounding as a per-axis QuantizeLinear (x/1 is exact), but onnxruntime runs a per-axis
 * QuantizeLinear over blocks of d elements one block at a time (profiled ~7× slower per element at d = 16).
 */
function quantizeLinear(g: GraphBuilder, x: string, scales: number[], axis: number, zeroPoint: (hint: string, count: number) => string, hint: string): string {
  if (scales.length === 1) return g.op('QuantizeLinear', [x, g.float(`${hint}_scale`, scales[0]), zeroPoint(`${hint}_zp`, 1)], undefined, `${hint}_q`);
  const shape = g.shapeOf(x);
  if (shape && axis === shape.length - 2 && shape[axis] === scales.length && shape.slice(1).every((d) => d > 0)) {
    const d = shape[shape.length - 1];
    const columns = Float32Array.from({ length: scales.length * d }, (_, i) => scales[Math.floor(i / d)]);
    // Reshaped back after QuantizeLinear (1-byte codes), so no reshape stands between Div and QuantizeLinear
    // for onnxruntime's QDQ propagation to wrap in an extra QuantizeLinear/DequantizeLinear pair.
    const flat = g.reshape(x, [...shape.slice(0, -2), scales.length * d], `${hint}_flat`);
    const divided = g.op('Div', [flat, g.floats(`${hint}_scale`, columns, [columns.length])], undefined, `${hint}_div`);
    return g.reshape(g.op('QuantizeLinear', [divided, g.float(`${hint}_one`, 1), zeroPoint(`${hint}_zp`, 1)], undefined, `${hint}_q`), shape, `${hint}_heads`);
  }
  return g.op('QuantizeLinear', [x, g.floats(`${hint}_scale`, Float32Array.from(scales), [scales.length]), zeroPoint(`${hint}_zp`, scales.length)], { axis }, `${hint}_q`);
}

/** The constants of one code type: uint8 (activation codes) or int8 (the right operand of a product). */
export interface CodeType {
  scalar(g: GraphBuilder, hint: string, value: number): string;
  vector(g: GraphBuilder, hint: string, values: number[]): string;
  min: number;
  max: number;
}
export const UINT8: CodeType = { scalar: (g, h, v) => g.uint8(h, v), vector: (g, h, vs) => g.uint8s(h, vs), min: 0, max: 255 };
const INT8: CodeType = { scalar: (g, h, v) => g.int8(h, v), vector: (g, h, vs) => g.int8s(h, Int8Array.from(vs), [vs.length]), min: -128, max: 127 };

/**
 * QuantizeLinear into `type` with zero point `zero`, then the k-bit code range [lo, hi] (as stored values).
 * The kinds' integer codes (kinds/*.ts integerCodes) are made of it.
 */
export function quantizeCodes(g: GraphBuilder, x: string, scales: number[], type: CodeType, zero: number, lo: number, hi: number, hint: string): string {
  const zp = (h: string, count: number): string => (count === 1 ? type.scalar(g, h, zero) : type.vector(g, h, new Array<number>(count).fill(zero)));
  return codesThroughLayout(g, x, hint, (source, axis) => {
    const q = quantizeLinear(g, source, scales, axis, zp, hint);
    // QuantizeLinear saturates to the type's range; narrower codes (k < 8, twin halves) clamp further.
    if (lo === type.min && hi === type.max) return q;
    return g.op('Clip', [q, type.scalar(g, `${hint}_lo`, lo), type.scalar(g, `${hint}_hi`, hi)], undefined, `${hint}_codes`);
  });
}

/** The right operand of an attention product (k or v) as int8 codes, zero point 0, one Δ per head. */
export function signedCodes(g: GraphBuilder, x: string, q: ActivationQuant, hint: string): CodePart {
  if (q.kind !== 'uniform') throw new Ptq4vitError(`${hint}: the right operand of a product must be uniformly quantized, got ${q.kind}`);
  checkBits(q.bits, hint);
  const half = qmax(q.bits);
  return { codes: quantizeCodes(g, x, q.deltas, INT8, 0, -half, half - 1, hint), scales: q.deltas };
}

/**
 * The f32 factor that turns an int32 product of codes into float: Δ_a·Δ_b rounded to f32 from the two f32
 * scales, exactly as onnxruntime's MatMulIntegerToFloat forms its multiplier (a_scale·b_scale in f32). Every
 * rescale of the integer graph and of the simulation uses it, so both round alike.
 */
export function rescaleConstant(deltaA: number, deltaB: number): number {
  return Math.fround(Math.fround(deltaA) * Math.fround(deltaB));
}

/** log2 of the ratio if `ratio` is an exact power of two (within float rounding), else null. */
function exactPowerOfTwo(ratio: number): number | null {
  const m = Math.round(Math.log2(ratio));
  return Math.abs(ratio / 2 ** m - 1) < 1e-6 ? m : null;
}

/**
 * The shift m with Δ_2 = 2^m·Δ_1 when two parts can share one int32 accumulator (P1 + 2^m·P2), else null:
 * the ratio must be a power of two, the same for every head, and the shifted sum of `depth` products of
 * |codes| ≤ 128 must fit int32. The simulation (qkernels.ts) follows the same plan, so both round alike.
 */
export function sharedAccumulatorShift(first: readonly number[], second: readonly number[], depth: number): number | null {
  const ratios = second.map((s, h) => s / first[first.length > 1 ? h : 0]);
  if (!ratios.every((r) => r === ratios[0])) return null;
  const m = exactPowerOfTwo(ratios[0]);
  return m !== null && m >= 0 && depth * 128 * 128 * (1 + 2 ** m) < 2 ** 31 ? m : null;
}

/** Largest |code − zero point| of an 8-bit operand: the bound every int32/f32 exactness check uses. */
const CODE_BOUND = 128;

/**
 * The rescale of one code part as a per-column b_scale of MatMulIntegerToFloat: the per-head f32 factors
 * [1, H, 1, 1] expanded to right's shape with its second-to-last axis 1 ([O, H, 1, N]: onnxruntime's
 * "same rank as B, second-to-last dimension 1" per-column form), so the kernel multiplies its int32
 * accumulator by the factor in its output pass — the f32 product float(P)·r that Cast → Mul made in two
 * more passes over the output. One factor for every head stays a scalar.
 */
function columnScales(g: GraphBuilder, right: string, perHead: Float32Array, hint: string): string {
  if (perHead.every((r) => r === perHead[0])) return g.float(`${hint}_scale`, perHead[0]);
  const scales = g.floats(`${hint}_scale`, perHead, [1, perHead.length, 1, 1]);
  const lead = g.op('Shape', [right], { start: 0, end: 2 }, `${hint}_lead`);
  const columns = g.op('Shape', [right], { start: 3 }, `${hint}_columns`);
  const shape = g.op('Concat', [lead, g.int64s(`${hint}_row`, [1]), columns], { axis: 0 }, `${hint}_scale_shape`);
  return g.op('Expand', [scales, shape], undefined, `${hint}_scales`);
}

/**
 * Σ over the parts of (codes − zp)·right, rescaled to float: `right` is int8 codes [O, H, K, N] (k or v, one
 * Δ per head), `rescale(part)` the f32 factor of that part's int32 product per head (rescaleConstant),
 * `factor` an exact power of two folded into every rescale (the attention scale, GraphBuilder.foldScale).
 *
 * Each product is a com.microsoft MatMulIntegerToFloat: int32 accumulation, then float(P)·r in the kernel's
 * output pass (per head through columnScales) — the same f32 operations as MatMulInteger → Cast → Mul.
 * Parts whose Δ are power-of-two multiples of the first part's share one accumulator (the paper's shift
 * argument): in float, P1 + 2^m·P2 is f32(P1) + f32(P2)·2^m, both exact while |P| < 2^24, and their f32 sum
 * is the correctly rounded S = P1 + 2^m·P2 — what Cast(S) gives; one rescale by the first part's r follows.
 * Products deep enough that |P| could reach 2^24 keep the int32 accumulator (integerProductInt32).
 * The simulation (qkernels.ts) follows the same plan, so both round alike.
 */
export function integerProduct(
  g: GraphBuilder,
  left: IntegerOperand,
  right: string,
  depth: number,
  rescale: (part: CodePart) => Float32Array,
  hint: string,
  factor = 1,
): string {
  if (depth * CODE_BOUND * CODE_BOUND >= 2 ** 24) return integerProductInt32(g, left, right, depth, rescale, hint, factor);
  const base = left.parts[0];
  const folded = (part: CodePart): Float32Array => rescale(part).map((r) => Math.fround(r * factor));
  const one = (): string => g.float(`${hint}_one`, 1);
  const shifts = left.parts.map((p) => sharedAccumulatorShift(base.scales, p.scales, depth));
  if (left.parts.length > 1 && shifts.every((m) => m !== null)) {
    // f32(P1) + 2^m·f32(P2) (the shift rides in the kernel's multiplier, 1·2^m), then one rescale.
    let sum: string | null = null;
    left.parts.forEach((p, i) => {
      const product = g.op('MatMulIntegerToFloat', [p.codes, right, one(), g.float(`${hint}_shift`, 2 ** shifts[i]!), p.zeroPoint ?? ''], undefined, `${hint}_p${i + 1}`, 'com.microsoft');
      sum = sum === null ? product : g.op('Add', [sum, product], undefined, `${hint}_acc`);
    });
    const r = folded(base);
    return g.op('Mul', [sum!, g.floats(`${hint}.rescale`, r, [1, r.length, 1, 1])], undefined, `${hint}_rescaled`);
  }
  // One part, or unaligned twin ranges (e.g. --gelu-unaligned): each product rescaled in its kernel, then added.
  let out: string | null = null;
  left.parts.forEach((p, i) => {
    const product = g.op('MatMulIntegerToFloat', [p.codes, right, one(), columnScales(g, right, folded(p), `${hint}_r${i + 1}`), p.zeroPoint ?? ''], undefined, `${hint}_p${i + 1}`, 'com.microsoft');
    out = out === null ? product : g.op('Add', [out, product], undefined, `${hint}_sum`);
  });
  return out!;
}

/** integerProduct with an int32 accumulator (MatMulInteger, P1 + 2^m·P2 in int32, Cast, Mul): for depths where f32 sums could round. */
function integerProductInt32(
  g: GraphBuilder,
  left: IntegerOperand,
  right: string,
  depth: number,
  rescale: (part: CodePart) => Float32Array,
  hint: string,
  factor: number,
): string {
  const base = left.parts[0];
  const scaleOf = (part: CodePart): string => {
    const r = rescale(part).map((v) => Math.fround(v * factor));
    return g.floats(`${hint}.rescale`, r, [1, r.length, 1, 1]);
  };
  const products = left.parts.map((p, i) => g.op('MatMulInteger', [p.codes, right, ...(p.zeroPoint ? [p.zeroPoint] : [])], undefined, `${hint}_p${i + 1}`));
  const shifts = left.parts.map((p) => sharedAccumulatorShift(base.scales, p.scales, depth));
  if (shifts.every((m) => m !== null)) {
    // One accumulator: P1 + 2^m·P2 in int32, one rescale by the first part's Δ (the paper's shift argument).
    let sum = products[0];
    for (let i = 1; i < products.length; i++) {
      const shifted = shifts[i] === 0 ? products[i] : g.op('Mul', [products[i], g.int32(`${hint}_shift`, 2 ** shifts[i]!)], undefined, `${hint}_p${i + 1}_shifted`);
      sum = g.op('Add', [sum, shifted], undefined, `${hint}_acc`);
    }
    return g.op('Mul', [g.op('Cast', [sum], { to: 1 }, `${hint}_f`), scaleOf(base)], undefined, `${hint}_rescaled`);
  }
  let out: string | null = null;
  products.forEach((p, i) => {
    const scaled = g.op('Mul', [g.op('Cast', [p], { to: 1 }, `${hint}_f${i + 1}`), scaleOf(left.parts[i])], undefined, `${hint}_rescaled${i + 1}`);
    out = out === null ? scaled : g.op('Add', [out, scaled], undefined, `${hint}_sum`);
  });
  return out!;
}

/**
 * A linear layer y = x·Wᵀ + b on codes: each code part of x meets the int8 weight codes Wᵀ [K, N] in one
 * com.microsoft MatMulIntegerToFloat, which accumulates (codes − zp)·w in int32 and rescales in the same
 * kernel by f32(Δ_part·Δw_n) per output column n (`weightDeltas`, one per column). That fused rescale is the
 * speed: MatMulInteger → Cast → Mul → Add runs three more passes over the output (ORT profile, BENCHMARKS.md).
 * Twin inputs (post-GELU) give two products added in float — no shared int32 accumulator here, since the
 * kernel's output is already float — with the bias added inside the last part's kernel: P1·r1 + (P2·r2 + b).
 * The simulation (qkernels.ts quantLinear) follows the same order of float operations.
 */
export function integerLinear(g: GraphBuilder, left: IntegerOperand, weightT: string, weightDeltas: Float32Array, bias: string | null, hint: string): string {
  const columnScales = g.floats(`${hint}.weight_scale`, weightDeltas, [weightDeltas.length]);
  const last = left.parts.length - 1;
  const products = left.parts.map((p, i) => {
    if (p.scales.length !== 1) throw new Ptq4vitError(`${hint}: a linear layer's input has one Δ per tensor, got ${p.scales.length}`);
    const inputs = [p.codes, weightT, g.float(`${hint}.x${i + 1}_scale`, p.scales[0]), columnScales, p.zeroPoint ?? ''];
    if (i === last && bias) inputs.push('', bias);
    return g.op('MatMulIntegerToFloat', inputs, undefined, `${hint}_p${i + 1}`, 'com.microsoft');
  });
  // y = P1·r1 + (P2·r2 + b): the bias rides in the last kernel.
  let sum = products[last];
  for (let i = last - 1; i >= 0; i--) sum = g.op('Add', [products[i], sum], undefined, `${hint}_sum`);
  return sum;
}
