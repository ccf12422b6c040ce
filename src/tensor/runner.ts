/**
 * Runners: how a model's quantization points (its matrix products) are computed. The forward pass calls
 * every quantization point through a runner, so calibration can record inputs/outputs, the tape can
 * differentiate, the tracer can emit ONNX, and fake- or integer-quantized products can stand in for
 * float ones without the model knowing.
 */
import { linear, matmul } from './gemm.js';
import type { Kernels } from './kernels.js';
import type { Tensor } from './tensor.js';

/**
 * Linear inputs are [..., inFeatures]; the patch-embedding conv is given already unfolded into patches
 * (x: [B, patches, C·p·p], weight: [outChannels, C·p·p]).
 */
export interface Runner {
  linear(point: string, x: Tensor, weight: Tensor, bias: Tensor | null): Promise<Tensor>;
  /** a·b, or a·bᵀ with transB, batched over the leading dimension: [G, M, K]. */
  matmul(point: string, a: Tensor, b: Tensor, transB: boolean): Promise<Tensor>;
  /** The kernels for everything else (default: fastKernels); the gradient tape and the tracer supply their own. */
  readonly kernels?: Kernels;
}

/** The plain float32 runner: every quantization point is an ordinary product. */
export const fp32Runner: Runner = {
  linear: (_point, x, weight, bias) => linear(x, weight, bias),
  matmul: (_point, a, b, transB) => matmul(a, b, transB),
};

export interface Recorded {
  inputs: Tensor[];
  output: Tensor;
}

/** Runs float32 and keeps every quantization point's inputs and output (for parity tests and calibration). */
export class RecordingRunner implements Runner {
  readonly records = new Map<string, Recorded>();

  async linear(point: string, x: Tensor, weight: Tensor, bias: Tensor | null): Promise<Tensor> {
    const output = await linear(x, weight, bias);
    this.records.set(point, { inputs: [x], output });
    return output;
  }

  async matmul(point: string, a: Tensor, b: Tensor, transB: boolean): Promise<Tensor> {
    const output = await matmul(a, b, transB);
    this.records.set(point, { inputs: [a, b], output });
    return output;
  }
}
