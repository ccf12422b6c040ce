/**
 * Building blocks of fake quantization as ONNX nodes: each quantizer kind's candidate-scoring nodes
 * (kinds/*.ts fakeQuantNodes) are made of roundToGrid, so every kind rounds alike (ONNX Round is
 * half-to-even, like torch.round).
 */
import { OnnxType, type Initializer, type NodeSpec } from '../onnx/proto.js';
import type { ActivationQuant } from './params.js';

export type QuantizerKind = ActivationQuant['kind'];

export function scalar(name: string, value: number): Initializer {
  const data = new Uint8Array(4);
  new DataView(data.buffer).setFloat32(0, value, true);
  return { name, elemType: OnnxType.FLOAT, dims: [], data };
}

export function int64s(name: string, values: number[]): Initializer {
  const data = new Uint8Array(8 * values.length);
  const view = new DataView(data.buffer);
  values.forEach((v, i) => view.setBigInt64(8 * i, BigInt(v), true));
  return { name, elemType: OnnxType.INT64, dims: [values.length], data };
}

/** clamp(round(x/s), lo, hi)·s into `out` (s broadcasts). */
export function roundToGrid(x: string, s: string, lo: string, hi: string, out: string): NodeSpec[] {
  return [
    { op: 'Div', inputs: [x, s], outputs: [`${out}_div`] },
    { op: 'Round', inputs: [`${out}_div`], outputs: [`${out}_round`] },
    { op: 'Clip', inputs: [`${out}_round`, lo, hi], outputs: [`${out}_clip`] },
    { op: 'Mul', inputs: [`${out}_clip`, s], outputs: [out] },
  ];
}
