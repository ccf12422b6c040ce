/**
 * Quantized inference op by op: every quantization point computes with its operands on their k-bit grids
 * (weights once, activations on the fly), factored as Δ·(integer codes product) exactly as the exported
 * integer graph computes it (see qkernels.ts).
 */
import { linear } from '../tensor/gemm.js';
import type { Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';
import { groupwiseLinearSim } from './groupwise.js';
import { weightDeltaIndex, type LinearQuant, type PointQuant } from './params.js';
import { uniformCoder } from './quantizers.js';
import { quantLinear, quantMatmul, type WeightGrid } from './qkernels.js';

/** The weight's integer codes (as floats) and the Δ of every output row. */
export function weightGrid(weight: Tensor, q: LinearQuant): WeightGrid {
  if (q.weightGroupSize !== undefined) throw new Error(`${q.point}: group-wise weights have no Δ per output row`);
  const [rows, cols] = weight.shape;
  const rowsPerGroup = rows / q.weightDeltas.length;
  const rowDeltas = Float64Array.from({ length: rows }, (_, r) => q.weightDeltas[Math.floor(r / rowsPerGroup)]);
  const codes = new Float32Array(weight.size);
  const code = uniformCoder(q.weightBits);
  for (let i = 0; i < weight.size; i++) codes[i] = code(weight.data[i], rowDeltas[Math.floor(i / cols)]);
  return { codes: new Tensor(codes, weight.shape), rowDeltas };
}

/** Signed codes of group-wise weights, each from its own group's Δ. */
export function groupwiseCodes(weight: Tensor, q: LinearQuant): Int8Array {
  const [rows, cols] = weight.shape;
  const index = weightDeltaIndex(q, rows, cols);
  const code = uniformCoder(q.weightBits);
  return Int8Array.from({ length: weight.size }, (_, i) => code(weight.data[i], q.weightDeltas[index(i)]));
}

/** Ŵ = code·Δw rounded once to f32, as the exported graph's Cast + Mul computes it. */
export function dequantize(grid: WeightGrid): Tensor {
  const cols = grid.codes.shape[1];
  const out = new Float32Array(grid.codes.size);
  for (let i = 0; i < out.length; i++) out[i] = grid.codes.data[i] * Math.fround(grid.rowDeltas[Math.floor(i / cols)]);
  return new Tensor(out, grid.codes.shape);
}

export class QuantRunner implements Runner {
  private readonly params = new Map<string, PointQuant>();
  private readonly grids = new Map<Tensor, WeightGrid>();
  private readonly dequantized = new Map<Tensor, Tensor>();
  private readonly groupCodes = new Map<Tensor, Int8Array>();

  constructor(points: readonly PointQuant[]) {
    for (const p of points) this.params.set(p.point, p);
  }

  private param(point: string): PointQuant {
    const p = this.params.get(point);
    if (!p) throw new Error(`no quantization parameters for '${point}'`);
    return p;
  }

  async linear(point: string, x: Tensor, weight: Tensor, bias: Tensor | null): Promise<Tensor> {
    const q = this.param(point);
    if (q.kind === 'matmul') throw new Error(`'${point}' is a matmul, called as a linear layer`);
    if (q.weightGroupSize !== undefined) {
      // The exported graph's own nodes (MatMulNBits behind the input's quantize-dequantize), run as they are.
      let codes = this.groupCodes.get(weight);
      if (!codes) this.groupCodes.set(weight, (codes = groupwiseCodes(weight, q)));
      return groupwiseLinearSim(x, q, codes, { N: weight.shape[0], K: weight.shape[1] }, bias);
    }
    let grid = this.grids.get(weight);
    if (!grid) this.grids.set(weight, (grid = weightGrid(weight, q)));
    if (!q.input) {
      // Float input (the patch embedding's image): a float product with Ŵ = code·Δw rounded once to f32,
      // as the exported graph's Cast + Mul computes it.
      let wq = this.dequantized.get(weight);
      if (!wq) this.dequantized.set(weight, (wq = dequantize(grid)));
      return linear(x, wq, bias);
    }
    return quantLinear(x, q.input, grid, bias);
  }

  async matmul(point: string, a: Tensor, b: Tensor, transB: boolean): Promise<Tensor> {
    const q = this.param(point);
    if (q.kind !== 'matmul') throw new Error(`'${point}' is a linear layer, called as a matmul`);
    return quantMatmul(a, b, transB, q.a, q.b, q.heads);
  }
}
