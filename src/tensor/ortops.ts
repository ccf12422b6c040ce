/**
 * Vectorized elementwise/normalization kernels on onnxruntime, for the forward pass: erf and exp
 * dominated a ViT's non-GEMM time in TypeScript loops (GELU alone was half the forward pass).
 */
import { OnnxType, type GraphSpec } from '../onnx/proto.js';
import { QUICK_GELU_SLOPE, type Activation } from './activation.js';
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

/** GELU: exact (erf) by default, or timm's other MLP activations (src/tensor/activation.ts). */
export async function geluFast(x: Tensor, kind: Activation = 'gelu'): Promise<Tensor> {
  const y = await runGraph(kind === 'gelu' ? 'gelu' : kind, () => unary(kind, activationNodes(kind)), { x: rows(x) });
  return y.reshape(x.shape);
}

/** x → y as ONNX nodes (opset 20: Gelu with approximate = 'tanh' for gelu_tanh; QuickGELU as x·Sigmoid(1.702·x)). */
function activationNodes(kind: Activation): GraphSpec['nodes'] {
  switch (kind) {
    case 'gelu':
      return [{ op: 'Gelu', inputs: ['x'], outputs: ['y'] }];
    case 'gelu_tanh':
      return [{ op: 'Gelu', inputs: ['x'], outputs: ['y'], attributes: { approximate: 'tanh' } }];
    case 'quick_gelu':
      return [
        { op: 'Constant', inputs: [], outputs: ['slope'], attributes: { value_float: { float: QUICK_GELU_SLOPE } } },
        { op: 'Mul', inputs: ['x', 'slope'], outputs: ['xs'] },
        { op: 'Sigmoid', inputs: ['xs'], outputs: ['s'] },
        { op: 'Mul', inputs: ['x', 's'], outputs: ['y'] },
      ];
  }
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
