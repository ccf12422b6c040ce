/**
 * Reverse-mode differentiation of a model's forward pass. The tape is a Runner (and supplies the
 * model's Kernels), so the unchanged model code records, op by op, how to send ∂L/∂y back to its
 * inputs. `backward` then walks the ops in reverse, reporting ∂L/∂O at every quantization point and
 * freeing each op's saved tensors as soon as its gradient has been propagated.
 */
import type { Runner } from '../tensor/runner.js';
import { linear as linearFp, matmul as matmulFp } from '../tensor/gemm.js';
import { add } from '../tensor/ops.js';
import { fastKernels, type Kernels } from '../tensor/kernels.js';
import { Tensor } from '../tensor/tensor.js';
import { geluBackward, l2NormalizeBackward, layerNormBackward, softmaxBackward } from './kernels.js';

interface TapeEntry {
  inputs: Tensor[];
  output: Tensor;
  /** ∂L/∂inputs from ∂L/∂output (null where an input needs no gradient). */
  backward: (gradOut: Tensor) => Promise<(Tensor | null)[]> | (Tensor | null)[];
  /** Set for the quantization points: the runner's point name. */
  point?: string;
}

/** Called once per quantization point with ∂L/∂O (same layout as the point's output). */
export type GradientSink = (point: string, gradOut: Tensor, output: Tensor, inputs: Tensor[]) => void | Promise<void>;

export class Tape implements Runner {
  private entries: TapeEntry[] = [];
  readonly kernels: Kernels;

  /** `inner` computes the forward values (float32 by default; a quantizing runner also works). */
  constructor(private readonly inner?: Runner) {
    this.kernels = this.makeKernels();
  }

  private record(entry: TapeEntry): Tensor {
    this.entries.push(entry);
    return entry.output;
  }

  async linear(point: string, x: Tensor, weight: Tensor, bias: Tensor | null): Promise<Tensor> {
    const output = this.inner ? await this.inner.linear(point, x, weight, bias) : await linearFp(x, weight, bias);
    // y = x·Wᵀ + b  ⇒  ∂L/∂x = ∂L/∂y · W
    return this.record({ point, inputs: [x], output, backward: async (g) => [(await matmulFp(g.reshape([g.size / g.lastDim, g.lastDim]), weight)).reshape(x.shape)] });
  }

  async matmul(point: string, a: Tensor, b: Tensor, transB: boolean): Promise<Tensor> {
    const output = this.inner ? await this.inner.matmul(point, a, b, transB) : await matmulFp(a, b, transB);
    // y = a·b: ∂a = g·bᵀ, ∂b = aᵀ·g;   y = a·bᵀ: ∂a = g·b, ∂b = gᵀ·a
    const backward = async (g: Tensor) =>
      transB ? [await matmulFp(g, b), await matmulFp(g, a, false, true)] : [await matmulFp(g, b, true), await matmulFp(a, g, false, true)];
    return this.record({ point, inputs: [a, b], output, backward });
  }

  private makeKernels(): Kernels {
    return {
      layerNorm: async (x, weight, bias, eps) => {
        const output = await fastKernels.layerNorm(x, weight, bias, eps);
        return this.record({ inputs: [x], output, backward: (g) => [layerNormBackward(x, weight, g, eps)] });
      },
      gelu: async (x, kind) => {
        const output = await fastKernels.gelu(x, kind);
        return this.record({ inputs: [x], output, backward: (g) => [geluBackward(x, g, kind)] });
      },
      softmax: async (x, scale, bias) => {
        const output = await fastKernels.softmax(x, scale, bias);
        return this.record({ inputs: [x], output, backward: (g) => [softmaxBackward(output, g, scale)] });
      },
      add: (a, b) => this.record({ inputs: [a, b], output: add(a, b), backward: (g) => [g, g] }),
      l2Normalize: async (x, eps) => {
        const output = await fastKernels.l2Normalize(x, eps);
        return this.record({ inputs: [x], output, backward: (g) => [l2NormalizeBackward(x, g, eps)] });
      },
      layout: (op, inputs) => this.record({ inputs: [...inputs], output: op.forward(inputs), backward: (g) => op.adjoint(g, inputs) }),
    };
  }

  /**
   * Propagate ∂L/∂output back through everything recorded, calling `sink` at each quantization point
   * (in reverse order of the forward pass). The tape is empty afterwards.
   * With `points`, only those points reach the sink, and propagation stops once all of them have: what
   * lies before them in the forward pass cannot change their gradients.
   */
  async backward(output: Tensor, gradOutput: Tensor, sink: GradientSink, options: { points?: ReadonlySet<string>; boundaries?: ReadonlyMap<Tensor, (grad: Tensor) => void> } = {}): Promise<void> {
    const wanted = options.points;
    // `boundaries`: tensors whose whole ∂L/∂ is reported once known (when the op that produced them is reached:
    // every consumer came later in the forward pass); propagation goes on until all of them are reported.
    const boundaries = options.boundaries;
    let remaining = (wanted ? wanted.size : Infinity) + (boundaries?.size ?? 0);
    // Inputs no op produced (images, weights) need no gradient: skip ops whose inputs are all such.
    const produced = new Set(this.entries.map((e) => e.output));
    const grads = new Map<Tensor, Tensor>([[output, gradOutput]]);
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const entry = this.entries[i];
      this.entries.length = i; // drop the entry (and what it saved) once used
      const g = grads.get(entry.output);
      if (!g) continue;
      grads.delete(entry.output);
      const boundary = boundaries?.get(entry.output);
      if (boundary) {
        boundary(g);
        if (--remaining === 0) {
          this.entries.length = 0;
          return;
        }
      }
      if (entry.point && (!wanted || wanted.has(entry.point))) {
        await sink(entry.point, g, entry.output, entry.inputs);
        if (--remaining === 0) {
          this.entries.length = 0;
          return;
        }
      }
      if (!entry.inputs.some((t) => produced.has(t))) continue;
      const inputGrads = await entry.backward(g);
      entry.inputs.forEach((input, k) => {
        const gi = inputGrads[k];
        if (!gi || !produced.has(input)) return;
        const prev = grads.get(input);
        grads.set(input, prev ? add(prev, gi) : gi);
      });
    }
  }
}
