/**
 * The non-GEMM operations a model's forward pass runs, as one interface with two implementations:
 * `fastKernels` (onnxruntime, for inference) and the gradient tape (src/grad/tape.ts), which runs the
 * same kernels and records how to propagate ∂L/∂y back. Models call only these and the Runner, so one
 * model definition serves inference, calibration and the backward pass.
 */
import { add, addRepeatedBias } from './ops.js';
import { geluFast, layerNormFast, scaledSoftmaxFast } from './ortops.js';
import type { Tensor } from './tensor.js';

export interface Kernels {
  layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Promise<Tensor>;
  gelu(x: Tensor): Promise<Tensor>;
  /** softmax(scale·x + bias) over the last dimension; bias [..., N, N] repeats over x's leading groups. */
  softmax(x: Tensor, scale: number, bias?: Tensor): Promise<Tensor>;
  add(a: Tensor, b: Tensor): Tensor;
  /**
   * A linear layout map (reshape, permute, gather, token pooling…) y = f(x₁, …), with its adjoint
   * (the transposed map) giving ∂L/∂xᵢ from ∂L/∂y. Inference ignores the adjoint.
   */
  layout(inputs: Tensor[], forward: (...xs: Tensor[]) => Tensor, adjoint: (gradOut: Tensor) => (Tensor | null)[]): Tensor;
}

export const fastKernels: Kernels = {
  layerNorm: layerNormFast,
  gelu: geluFast,
  async softmax(x, scale, bias) {
    return bias ? scaledSoftmaxFast(addRepeatedBias(x, bias, scale), 1) : scaledSoftmaxFast(x, scale);
  },
  add,
  layout: (inputs, forward) => forward(...inputs),
};
