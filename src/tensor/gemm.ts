/** Matrix products: everything O(n³) in the models goes through onnxruntime (see ort.ts). */
import { OnnxType, type GraphSpec } from '../onnx/proto.js';
import { runGraph } from './ort.js';
import { Tensor, shapeString } from './tensor.js';

const f32 = OnnxType.FLOAT;

function linearGraph(withBias: boolean): GraphSpec {
  return {
    name: 'linear',
    inputs: [
      { name: 'x', elemType: f32, shape: ['M', 'K'] },
      { name: 'w', elemType: f32, shape: ['N', 'K'] },
      ...(withBias ? [{ name: 'b', elemType: f32, shape: ['N'] }] : []),
    ],
    outputs: [{ name: 'y', elemType: f32, shape: ['M', 'N'] }],
    nodes: [{ op: 'Gemm', inputs: withBias ? ['x', 'w', 'b'] : ['x', 'w'], outputs: ['y'], attributes: { transB: 1 } }],
  };
}

/** y = x·wᵀ + b over the last dimension of x, as torch.nn.functional.linear. w: [out, in]. */
export async function linear(x: Tensor, weight: Tensor, bias: Tensor | null): Promise<Tensor> {
  const [outFeatures, inFeatures] = weight.shape;
  if (x.lastDim !== inFeatures) {
    throw new Error(`linear: input ${shapeString(x.shape)} does not match weight ${shapeString(weight.shape)}`);
  }
  const rows = x.size / inFeatures;
  const inputs: Parameters<typeof runGraph>[2] = { x: { data: x.data, shape: [rows, inFeatures] }, w: weight };
  if (bias) inputs.b = bias;
  const y = await runGraph(bias ? 'linear+b' : 'linear', () => linearGraph(bias !== null), inputs);
  return y.reshape([...x.shape.slice(0, -1), outFeatures]);
}

function matmulGraph(rank: number, transA: boolean, transB: boolean): GraphSpec {
  const batch = Array.from({ length: rank - 2 }, (_, i) => `B${i}`);
  const swapLast = [...batch.map((_, i) => i), rank - 1, rank - 2];
  const nodes: GraphSpec['nodes'] = [];
  if (transA) nodes.push({ op: 'Transpose', inputs: ['a'], outputs: ['at'], attributes: { perm: swapLast } });
  if (transB) nodes.push({ op: 'Transpose', inputs: ['b'], outputs: ['bt'], attributes: { perm: swapLast } });
  nodes.push({ op: 'MatMul', inputs: [transA ? 'at' : 'a', transB ? 'bt' : 'b'], outputs: ['y'] });
  return {
    name: 'matmul',
    inputs: [
      { name: 'a', elemType: f32, shape: transA ? [...batch, 'K', 'M'] : [...batch, 'M', 'K'] },
      { name: 'b', elemType: f32, shape: transB ? [...batch, 'N', 'K'] : [...batch, 'K', 'N'] },
    ],
    outputs: [{ name: 'y', elemType: f32, shape: [...batch, 'M', 'N'] }],
    nodes,
  };
}

/**
 * Batched op(a)·op(b) over the last two dimensions, op = transpose where asked; leading dimensions
 * must be equal. a: [..., M, K] (or [..., K, M] with transA); b: [..., K, N] (or [..., N, K] with transB).
 */
export async function matmul(a: Tensor, b: Tensor, transB = false, transA = false): Promise<Tensor> {
  const r = a.rank;
  if (r < 2 || b.rank !== r || a.shape.slice(0, -2).some((d, i) => d !== b.shape[i])) {
    throw new Error(`matmul: incompatible ${shapeString(a.shape)} and ${shapeString(b.shape)}`);
  }
  const k = transA ? a.shape[r - 2] : a.shape[r - 1];
  const kb = transB ? b.shape[r - 1] : b.shape[r - 2];
  if (k !== kb) throw new Error(`matmul: inner dimensions differ: ${shapeString(a.shape)}${transA ? 'ᵀ' : ''} · ${shapeString(b.shape)}${transB ? 'ᵀ' : ''}`);
  return runGraph(`matmul${r}${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}`, () => matmulGraph(r, transA, transB), { a, b });
}
