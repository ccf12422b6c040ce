/**
 * A stand-in for the exporter's output (src/export/onnx.ts, issue 7) with the same interface: input
 * `pixel_values` float32 [batch, 3, S, S], output `logits` float32 [batch, classes], dynamic batch, opset 17.
 * The graph is a linear classifier on the per-channel means — small, but it sees every pixel, so a
 * preprocessing difference shows up in its logits. The quantized variant computes its product with a real
 * integer kernel (u8 × s8 → int32 MatMulInteger, zero point 128) like the exporter's integer graphs.
 *
 * Only the deployment tests' model factory uses this; the tests themselves take ONNX bytes, so the real
 * exported models replace it in one place.
 */
import { encodeModel, OnnxType, type GraphSpec, type NodeSpec } from '../src/onnx/proto.js';
import type { ModelSpec } from '../src/models/types.js';

const f32 = (values: ArrayLike<number>): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);

/** Seeded weights (a small LCG) so the stand-in is the same model every run. */
function weights(classes: number, seed: number): { w: Float32Array; b: Float32Array } {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  const w = new Float32Array(3 * classes).map(() => next() * 4);
  const b = new Float32Array(classes).map(() => next() * 0.5);
  return { w, b };
}

export interface StandIn {
  spec: ModelSpec;
  fp32: Uint8Array;
  quantized: Uint8Array;
}

/** ReduceMean over H, W → [B, 3]; then logits = mean·W + b, in float or through MatMulInteger. */
export function standInModels(spec: ModelSpec, seed = 7): StandIn {
  const classes = spec.arch.numClasses;
  const size = spec.preprocess.inputSize;
  const { w, b } = weights(classes, seed);
  const io = {
    inputs: [{ name: 'pixel_values', elemType: OnnxType.FLOAT, shape: ['batch', 3, size, size] }],
    outputs: [{ name: 'logits', elemType: OnnxType.FLOAT, shape: ['batch', classes] }],
  };
  const pool: NodeSpec = { op: 'ReduceMean', inputs: ['pixel_values'], outputs: ['pooled'], attributes: { axes: [2, 3], keepdims: 0 } };

  const fp32: GraphSpec = {
    name: 'standin_fp32',
    ...io,
    nodes: [pool, { op: 'MatMul', inputs: ['pooled', 'w'], outputs: ['mm'] }, { op: 'Add', inputs: ['mm', 'b'], outputs: ['logits'] }],
    initializers: [
      { name: 'w', elemType: OnnxType.FLOAT, dims: [3, classes], data: f32(w) },
      { name: 'b', elemType: OnnxType.FLOAT, dims: [classes], data: f32(b) },
    ],
  };

  // Symmetric int8 weights (per tensor) and u8 activations with zero point 128, scale from the input range
  // a normalized image can reach (|x| ≤ 4 covers ImageNet and CIFAR mean/std).
  const wScale = Math.max(...w.map(Math.abs)) / 127;
  const wCodes = Int8Array.from(w, (v) => Math.max(-127, Math.min(127, Math.round(v / wScale))));
  const xScale = 4 / 127;
  const quantized: GraphSpec = {
    name: 'standin_w8a8',
    ...io,
    nodes: [
      pool,
      { op: 'QuantizeLinear', inputs: ['pooled', 'x_scale', 'x_zero'], outputs: ['x_q'] },
      { op: 'MatMulInteger', inputs: ['x_q', 'w_q', 'x_zero'], outputs: ['acc'] },
      { op: 'Cast', inputs: ['acc'], outputs: ['acc_f'], attributes: { to: OnnxType.FLOAT } },
      { op: 'Mul', inputs: ['acc_f', 'rescale'], outputs: ['mm'] },
      { op: 'Add', inputs: ['mm', 'b'], outputs: ['logits'] },
    ],
    initializers: [
      { name: 'x_scale', elemType: OnnxType.FLOAT, dims: [], data: f32([xScale]) },
      { name: 'x_zero', elemType: OnnxType.UINT8, dims: [], data: Uint8Array.of(128) },
      { name: 'w_q', elemType: OnnxType.INT8, dims: [3, classes], data: new Uint8Array(wCodes.buffer) },
      { name: 'rescale', elemType: OnnxType.FLOAT, dims: [], data: f32([xScale * wScale]) },
      { name: 'b', elemType: OnnxType.FLOAT, dims: [classes], data: f32(b) },
    ],
  };
  return { spec, fp32: encodeModel(fp32), quantized: encodeModel(quantized) };
}
