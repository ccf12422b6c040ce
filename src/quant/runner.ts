/**
 * Fake-quantized inference: every quantization point computes with its operands rounded to their
 * k-bit grids (weights once, activations on the fly), exactly as the integer pipeline would up to
 * float accumulation order.
 */
import type { Runner } from '../tensor/runner.js';
import { linear } from '../tensor/gemm.js';
import { Tensor } from '../tensor/tensor.js';
import type { LinearQuant, PointQuant } from './params.js';
import { fakeQuantGrouped } from './quantizers.js';
import { quantLinear, quantMatmul } from './qkernels.js';

/** Ŵ: each group of output rows on its own grid. */
export function quantizedWeight(weight: Tensor, q: LinearQuant): Tensor {
  const [rows, cols] = weight.shape;
  const rowsPerGroup = rows / q.weightDeltas.length;
  return new Tensor(fakeQuantGrouped(weight.data, q.weightDeltas, rowsPerGroup * cols, q.weightBits), weight.shape);
}

export class QuantRunner implements Runner {
  private readonly params = new Map<string, PointQuant>();
  private readonly weights = new Map<Tensor, Tensor>();

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
    let wq = this.weights.get(weight);
    if (!wq) {
      wq = quantizedWeight(weight, q);
      this.weights.set(weight, wq);
    }
    return q.input ? quantLinear(x, q.input, wq, bias) : linear(x, wq, bias);
  }

  async matmul(point: string, a: Tensor, b: Tensor, transB: boolean): Promise<Tensor> {
    const q = this.param(point);
    if (q.kind !== 'matmul') throw new Error(`'${point}' is a linear layer, called as a matmul`);
    return quantMatmul(a, b, transB, q.a, q.b, q.heads);
  }
}
