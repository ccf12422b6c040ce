/**
 * Vectorized elementwise/normalization kernels on onnxruntime, for the forward pass: erf and exp
 * dominated a ViT's non-GEMM time in TypeScript loops (GELU alone was half the forward pass).
 */
import { OnnxType, type GraphSpec } from '../onnx/proto.js';
import { runGraph } from './ort.js';
import type { Tensor } from './tensor.js';

const f32 = OnnxType.FLOAT;

function unary(name: string, nodes: GraphSpec['nodes'], extraInputs: GraphSpec['inputs'] = []): GraphSpec {
  return {
    name,
    inputs: [{ name: 'x', elemType: f32, shape: ['R', 'C'] }, ...extraInputs],
    outputs: [{ name: 'y', elemType: f32, shape: ['R', 'C'] }],
    nodes,
    opset: 20,
  };
}

const rows = (x: Tensor) => ({ data: x.data, shape: [x.size / x.lastDim, x.lastDim] });

/** Exact (erf) GELU. */
export async function geluFast(x: Tensor): Promise<Tensor> {
  const y = await runGraph('gelu', () => unary('gelu', [{ op: 'Gelu', inputs: ['x'], outputs: ['y'] }]), { x: rows(x) });
  return y.reshape(x.shape);
}

/** softmax(scale·x) over the last dimension. */
export async function scaledSoftmaxFast(x: Tensor, scale: number): Promise<Tensor> {
  const y = await runGraph(
    'softmax',
    () => unary('softmax', [
      { op: 'Mul', inputs: ['x', 's'], outputs: ['xs'] },
      { op: 'Softmax', inputs: ['xs'], outputs: ['y'], attributes: { axis: -1 } },
    ], [{ name: 's', elemType: f32, shape: [1] }]),
    { x: rows(x), s: { data: Float32Array.of(scale), shape: [1] } },
  );
  return y.reshape(x.shape);
}

/** LayerNorm over the last dimension. */
export async function layerNormFast(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Promise<Tensor> {
  const y = await runGraph(
    `layernorm${eps}`,
    () => unary('layernorm', [{ op: 'LayerNormalization', inputs: ['x', 'w', 'b'], outputs: ['y'], attributes: { axis: -1, epsilon: { float: eps } } }], [
      { name: 'w', elemType: f32, shape: ['C'] },
      { name: 'b', elemType: f32, shape: ['C'] },
    ]),
    { x: rows(x), w: weight, b: bias },
  );
  return y.reshape(x.shape);
}
