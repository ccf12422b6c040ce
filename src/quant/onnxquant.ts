/**
 * Fake quantization as ONNX nodes, shared by the candidate search (scoring.ts) and quantized
 * inference (qkernels.ts), so both round exactly alike (ONNX Round is half-to-even, like torch.round).
 */
import { OnnxType, type Initializer, type NodeSpec } from '../onnx/proto.js';

export type QuantizerKind = 'uniform' | 'twin-gelu' | 'twin-softmax';

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

/**
 * Nodes quantizing tensor `x` into `out`. Scale inputs (graph inputs the caller declares and feeds),
 * named with `prefix`: uniform → `${prefix}s`; twin-gelu → `${prefix}s` (Δ_R2, positive side) and
 * `${prefix}s2` (Δ_R1, negative side); twin-softmax → `${prefix}s` (Δ_R1) and `${prefix}split`
 * (2^(k−1)·Δ_R1), with Δ_R2 a constant.
 */
export function fakeQuantNodes(kind: QuantizerKind, bits: number, x: string, out: string, prefix: string, deltaR2 = 0): { nodes: NodeSpec[]; inits: Initializer[]; scaleInputs: string[] } {
  const q = 2 ** (bits - 1);
  const [lo, hi, zero] = [`${prefix}qlo`, `${prefix}qhi`, `${prefix}zero`];
  const s = `${prefix}s`;
  switch (kind) {
    case 'uniform':
      return { nodes: roundToGrid(x, s, lo, hi, out), inits: [scalar(lo, -q), scalar(hi, q - 1)], scaleInputs: [s] };
    case 'twin-gelu':
      return {
        nodes: [...roundToGrid(x, s, zero, hi, `${prefix}pos`), ...roundToGrid(x, `${prefix}s2`, lo, zero, `${prefix}neg`), { op: 'Add', inputs: [`${prefix}pos`, `${prefix}neg`], outputs: [out] }],
        inits: [scalar(lo, -q), scalar(hi, q - 1), scalar(zero, 0)],
        scaleInputs: [s, `${prefix}s2`],
      };
    case 'twin-softmax':
      return {
        nodes: [
          ...roundToGrid(x, s, zero, hi, `${prefix}r1`),
          ...roundToGrid(x, `${prefix}dr2`, zero, hi, `${prefix}r2`),
          { op: 'Less', inputs: [x, `${prefix}split`], outputs: [`${prefix}inR1`] },
          { op: 'Where', inputs: [`${prefix}inR1`, `${prefix}r1`, `${prefix}r2`], outputs: [out] },
        ],
        inits: [scalar(hi, q - 1), scalar(zero, 0), scalar(`${prefix}dr2`, deltaR2)],
        scaleInputs: [s, `${prefix}split`],
      };
  }
}
