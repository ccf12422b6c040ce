import type { Runner } from '../models/types.js';
import { linear, matmul } from './gemm.js';

/** The plain float32 runner: every quantization point is an ordinary product. */
export const fp32Runner: Runner = {
  linear: (_point, x, weight, bias) => linear(x, weight, bias),
  matmul: (_point, a, b, transB) => matmul(a, b, transB),
};
