/**
 * Quantized inference kernels on onnxruntime: the activation is rounded to its grid and multiplied in
 * the same graph (the weights are quantized once, ahead of time). Doing the rounding in TypeScript took
 * two thirds of a quantized forward pass.
 */
import { OnnxType, type GraphSpec } from '../onnx/proto.js';
import { runGraph } from '../tensor/ort.js';
import { Tensor } from '../tensor/tensor.js';
import { fakeQuantNodes } from './onnxquant.js';
import type { ActivationQuant } from './params.js';

const f32 = OnnxType.FLOAT;
type Feed = { data: Float32Array; shape: readonly number[] };

/** Feeds for a quantizer's scale inputs (per tensor, or per head shaped to broadcast over [O, H, M, K]). */
function scaleFeeds(q: ActivationQuant, prefix: string, perHeadShape: number[]): Record<string, Feed> {
  switch (q.kind) {
    case 'uniform':
      return { [`${prefix}s`]: { data: Float32Array.from(q.deltas), shape: q.deltas.length === 1 ? [1] : perHeadShape } };
    case 'twin-gelu':
      return { [`${prefix}s`]: { data: Float32Array.of(q.deltaPos), shape: [1] }, [`${prefix}s2`]: { data: Float32Array.of(q.deltaNeg), shape: [1] } };
    case 'twin-softmax':
      return { [`${prefix}s`]: { data: Float32Array.of(q.deltaR1), shape: [1] }, [`${prefix}split`]: { data: Float32Array.of(q.deltaR1 * 2 ** (q.bits - 1)), shape: [1] } };
  }
}

function quantizerKey(q: ActivationQuant): string {
  return `${q.kind}${q.bits}${q.kind === 'twin-softmax' ? `:${q.deltaR2}` : ''}${q.kind === 'uniform' && q.deltas.length > 1 ? 'h' : ''}`;
}

function deltaR2(q: ActivationQuant): number {
  return q.kind === 'twin-softmax' ? q.deltaR2 : 0;
}

function scaleInputs(names: string[], q: ActivationQuant, perHead: (string | number)[]): GraphSpec['inputs'] {
  return names.map((name) => ({ name, elemType: f32, shape: q.kind === 'uniform' && q.deltas.length > 1 ? perHead : [1] }));
}

/** y = Q(x)·Ŵᵀ + b. */
export async function quantLinear(x: Tensor, input: ActivationQuant, wq: Tensor, bias: Tensor | null): Promise<Tensor> {
  const [outFeatures, inFeatures] = wq.shape;
  const key = `qlinear:${quantizerKey(input)}:${bias ? 'b' : ''}`;
  const graph = (): GraphSpec => {
    const fq = fakeQuantNodes(input.kind, input.bits, 'x', 'xq', 'x_', deltaR2(input));
    return {
      name: 'qlinear',
      inputs: [
        { name: 'x', elemType: f32, shape: ['M', 'K'] },
        { name: 'w', elemType: f32, shape: ['N', 'K'] },
        ...(bias ? [{ name: 'b', elemType: f32, shape: ['N'] }] : []),
        ...scaleInputs(fq.scaleInputs, input, []),
      ],
      outputs: [{ name: 'y', elemType: f32, shape: ['M', 'N'] }],
      nodes: [...fq.nodes, { op: 'Gemm', inputs: bias ? ['xq', 'w', 'b'] : ['xq', 'w'], outputs: ['y'], attributes: { transB: 1 } }],
      initializers: fq.inits,
      opset: 17,
    };
  };
  const feeds: Record<string, Feed> = { x: { data: x.data, shape: [x.size / inFeatures, inFeatures] }, w: wq, ...scaleFeeds(input, 'x_', []) };
  if (bias) feeds.b = bias;
  const y = await runGraph(key, graph, feeds);
  return y.reshape([...x.shape.slice(0, -1), outFeatures]);
}

/** Q(a)·Q(b) (or Q(a)·Q(b)ᵀ), operands [G, M, K] with G = outer·heads, head fastest. */
export async function quantMatmul(a: Tensor, b: Tensor, transB: boolean, qa: ActivationQuant, qb: ActivationQuant, heads: number): Promise<Tensor> {
  const [G, M, K] = a.shape;
  const outer = G / heads;
  const key = `qmatmul:${quantizerKey(qa)}:${quantizerKey(qb)}:${transB ? 'T' : 'N'}`;
  const graph = (): GraphSpec => {
    const fa = fakeQuantNodes(qa.kind, qa.bits, 'a', 'aq', 'a_', deltaR2(qa));
    const fb = fakeQuantNodes(qb.kind, qb.bits, 'b', 'bq', 'b_', deltaR2(qb));
    const perHead: (string | number)[] = [1, 'H', 1, 1];
    return {
      name: 'qmatmul',
      inputs: [
        { name: 'a', elemType: f32, shape: ['O', 'H', 'M', 'K'] },
        { name: 'b', elemType: f32, shape: transB ? ['O', 'H', 'N', 'K'] : ['O', 'H', 'K', 'N'] },
        ...scaleInputs(fa.scaleInputs, qa, perHead),
        ...scaleInputs(fb.scaleInputs, qb, perHead),
      ],
      outputs: [{ name: 'y', elemType: f32, shape: ['O', 'H', 'M', 'N'] }],
      nodes: [
        ...fa.nodes,
        ...fb.nodes,
        ...(transB ? [{ op: 'Transpose', inputs: ['bq'], outputs: ['bt'], attributes: { perm: [0, 1, 3, 2] } }] : []),
        { op: 'MatMul', inputs: ['aq', transB ? 'bt' : 'bq'], outputs: ['y'] },
      ],
      initializers: [...fa.inits, ...fb.inits],
      opset: 17,
    };
  };
  const perHeadShape = [1, heads, 1, 1];
  const feeds: Record<string, Feed> = {
    a: { data: a.data, shape: [outer, heads, M, K] },
    b: { data: b.data, shape: [outer, heads, b.shape[1], b.shape[2]] },
    ...scaleFeeds(qa, 'a_', perHeadShape),
    ...scaleFeeds(qb, 'b_', perHeadShape),
  };
  const y = await runGraph(key, graph, feeds);
  return y.reshape([G, M, y.shape[3]]);
}
