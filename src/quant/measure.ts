/**
 * How far one quantization point's output moves from FP32 under given quantization parameters, on the
 * calibration records the search used — for reports. Two measures:
 *
 *   metric:       the search's own score (hessian: Σ (∂L/∂O ⊙ (Ô − O))²; cosine: 1 − mean row cos(O, Ô))
 *   cosine error: 1 − mean over output rows of cos(O, Ô), comparable across layers whatever the metric
 *
 * and the naive starting point they are compared with: max-abs uniform quantization of every operand
 * (Δ = max|x| / (2^(k−1) − 0.5) per tensor, per q/k/v group, per channel or per head, as the point is
 * quantized), no search and no twin ranges.
 */
import { Tensor } from '../tensor/tensor.js';
import type { ActivationQuant, LinearQuant, MatmulQuant } from './params.js';
import { fakeQuantGrouped, maxAbsDelta } from './quantizers.js';
import { scoreLinear, scoreMatmul, type Metric } from './scoring.js';
import { fakeQuantActivation, kindNamed, kindOf } from './kinds/index.js';
import { groupLattice, type LinearRecord, type MatmulRecord } from './search.js';
import { dequantize, weightGrid } from './runner.js';
import { maxAbs } from '../numeric.js';

const sum = (xs: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return s;
};

/** The score array of one candidate reduced to one number, lower is better. */
const reduce = (scores: Float32Array, metric: Metric): number => (metric === 'hessian' ? sum(scores) : 1 - sum(scores) / scores.length);

export async function measureLinear(rec: LinearRecord, q: LinearQuant, metric: Metric): Promise<number> {
  const [N, K] = rec.weight.shape;
  const M = rec.x.size / K;
  const x = rec.x.reshape([M, K]);
  const out = rec.out.reshape([M, N]);
  const grad = metric === 'hessian' && rec.grad ? rec.grad.reshape([M, N]) : null;
  const rowsPerGroup = N / q.weightDeltas.length;
  const common = { bias: rec.bias, out, grad, candidates: 1, metric, cosineGroups: 1 };
  if (q.input) {
    // Consecutive weights sharing a Δ: a row group's rows; group-wise weights as the simulation dequantizes them.
    const wq = q.weightGroups ? dequantize(weightGrid(rec.weight, q)) : new Tensor(fakeQuantGrouped(rec.weight.data, q.weightDeltas, rowsPerGroup * K, q.weightBits), [N, K]);
    // The searched input as the one candidate of the search's own scoring graph.
    const { scales, scales2 } = kindOf(q.input).scoringScales(q.input);
    return reduce(await scoreLinear({ ...common, searched: 'input', x, w: wq, scales, scales2, bits: q.input.bits, quantizer: q.input.kind }), metric);
  }
  // The image input of the patch embedding stays float: only the weight is quantized (per row: never group-wise).
  if (q.weightGroups) throw new Error(`${q.point}: group-wise weights need a quantized input`);
  const scales = Float32Array.from({ length: N }, (_, n) => q.weightDeltas[Math.floor(n / rowsPerGroup)]);
  return reduce(await scoreLinear({ ...common, searched: 'weight', x, w: rec.weight, scales, bits: q.weightBits, quantizer: 'uniform' }), metric);
}

export async function measureMatmul(rec: MatmulRecord, q: MatmulQuant, metric: Metric): Promise<number> {
  const H = q.heads;
  const [G, M, K] = rec.a.shape;
  const N = rec.b.shape[2];
  const view = (data: Float32Array, rows: number, cols: number) => ({ data, shape: [G / H, H, rows, cols] });
  const bq = view(fakeQuantActivation(rec.b.data, q.b, K * N), K, N);
  const grad = metric === 'hessian' && rec.grad ? view(rec.grad.data, M, N) : null;
  const common = { searched: 'A' as const, a: view(rec.a.data, M, K), b: bq, out: view(rec.out.data, M, N), grad, candidates: 1, heads: H, bits: q.a.bits, metric };
  const { scales, splits, deltaR2 } = kindOf(q.a).scoringScales(q.a);
  return reduce(await scoreMatmul({ ...common, scales, splits, deltaR2, quantizer: q.a.kind }), metric);
}


/** Δ_maxabs uniform quantization of an operand, per tensor or per head: the uniform kind's starting point. */
function maxAbsUniform(data: Float32Array, heads: number, groupSize: number, bits: number): ActivationQuant {
  return kindNamed('uniform').searchSpace({ data, heads, groupSize, bits, factors: [1], geluAligned: true, softmaxDeltaR2: 'paper' }).initial;
}

/** The naive baseline for a linear point: max-abs Δ per weight group, and per tensor for the input. */
export function maxAbsLinear(rec: LinearRecord, searched: LinearQuant): LinearQuant {
  const [N, K] = rec.weight.shape;
  const bits = searched.input?.bits;
  const input = bits === undefined ? null : maxAbsUniform(rec.x.data, 1, rec.x.size, bits);
  const G = searched.weightGroups?.size;
  if (G !== undefined) {
    // Group-wise: the search's starting lattice (factor 1 on every row).
    const maxabs = Array.from({ length: (N * K) / G }, (_, g) => maxAbsDelta(maxAbs(rec.weight.data, g * G, (g + 1) * G), searched.weightBits));
    const { rowDeltas, multipliers } = groupLattice(maxabs, N, searched.weightBits);
    return { ...searched, weightDeltas: rowDeltas, weightGroups: { size: G, multipliers }, input };
  }
  const groups = searched.weightDeltas.length;
  const per = (N / groups) * K;
  const weightDeltas = Array.from({ length: groups }, (_, g) => maxAbsDelta(maxAbs(rec.weight.data, g * per, (g + 1) * per), searched.weightBits));
  return { ...searched, weightDeltas, input };
}

/** The naive baseline for an attention product: max-abs Δ per head for both operands. */
export function maxAbsMatmul(rec: MatmulRecord, searched: MatmulQuant): MatmulQuant {
  const of = (t: Tensor, bits: number) => maxAbsUniform(t.data, searched.heads, t.size / t.shape[0], bits);
  return { ...searched, a: of(rec.a, searched.a.bits), b: of(rec.b, searched.b.bits) };
}
