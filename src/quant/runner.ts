/**
 * Quantized inference op by op: every quantization point computes with its operands on their k-bit grids
 * (weights once, activations on the fly), factored as Δ·(integer codes product) exactly as the exported
 * integer graph computes it (see qkernels.ts).
 */
import { linear } from '../tensor/gemm.js';
import type { Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';
import { elementScales, type LinearQuant, type PointQuant } from './params.js';
import { uniformCoder } from './quantizers.js';
import { quantLinear, quantMatmul, type WeightGrid } from './qkernels.js';

/**
 * The weight's integer codes (as floats) and the Δ of every output row. Group-wise weights: each code is the
 * group's multiplier times its k-bit code (an int8 code on the row's Δ; params.ts LinearQuant).
 */
export function weightGrid(weight: Tensor, q: LinearQuant): WeightGrid {
  const [rows, cols] = weight.shape;
  const { rowDelta, multiplier } = elementScales(q, rows, cols);
  const rowDeltas = Float64Array.from({ length: rows }, (_, r) => rowDelta(r * cols));
  const codes = new Float32Array(weight.size);
  const code = uniformCoder(q.weightBits);
  for (let i = 0; i < weight.size; i++) {
    const m = multiplier(i);
    codes[i] = m * code(weight.data[i], rowDeltas[Math.floor(i / cols)] * m);
  }
  return { codes: new Tensor(codes, weight.shape), rowDeltas };
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
