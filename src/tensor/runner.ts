import type { Runner } from '../models/types.js';
import { linear, matmul } from './gemm.js';
import type { Tensor } from './tensor.js';

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
