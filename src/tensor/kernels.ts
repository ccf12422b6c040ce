/**
 * The non-GEMM operations a model's forward pass runs, as one interface with three implementations:
 * `fastKernels` (onnxruntime, for inference), the gradient tape (src/grad/tape.ts), which runs the same
 * kernels and records how to propagate ∂L/∂y back, and the tracer (src/export/trace.ts), which also
 * emits every op into one ONNX graph. Models call only these and the Runner, so one model definition
 * serves inference, calibration, the backward pass and export.
 */
import type { Activation } from './activation.js';
import type { LayoutOp } from './layout.js';
import { add, addRepeatedBias } from './ops.js';
import { geluFast, layerNormFast, scaledSoftmaxFast } from './ortops.js';
import type { Tensor } from './tensor.js';

export interface Kernels {
  layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Promise<Tensor>;
  /** The MLP activation: exact GELU unless `kind` names another (src/tensor/activation.ts). */
  gelu(x: Tensor, kind?: Activation): Promise<Tensor>;
  /** softmax(scale·x + bias) over the last dimension; bias [..., N, N] repeats over x's leading groups. */
  softmax(x: Tensor, scale: number, bias?: Tensor): Promise<Tensor>;
  add(a: Tensor, b: Tensor): Tensor;
  /** A named linear layout map (src/tensor/layout.ts): reshapes, head splits, windows, token pooling… */
  layout(op: LayoutOp, inputs: readonly Tensor[]): Tensor;
}

export const fastKernels: Kernels = {
  layerNorm: layerNormFast,
  gelu: geluFast,
  async softmax(x, scale, bias) {
    return bias ? scaledSoftmaxFast(addRepeatedBias(x, bias, scale), 1) : scaledSoftmaxFast(x, scale);
  },
  add,
  layout: (op, inputs) => op.forward(inputs),
};
