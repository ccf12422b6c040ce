/**
 * The quantized model file: a safetensors file that is everything needed to run the quantized model.
 *  - every quantized weight under its checkpoint name as integer codes (I8 up to 8 bits, I16 above),
 *  - every other tensor (biases, norms, tokens, position tables) as F32,
 *  - metadata: the model spec, each point's bit widths / scales / twin parameters, the method and the
 *    calibration provenance — no timestamps, so the same inputs and seed give a byte-identical file.
 */
import { Ptq4vitError } from '../errors.js';
import { SafeTensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { TensorSource } from '../models/weights.js';
import type { ModelSpec } from '../models/types.js';
import { Tensor, shapeString } from '../tensor/tensor.js';
import type { LinearQuant, PointQuant } from './params.js';
import { qmax, uniformCode } from './quantizers.js';

export const QUANTIZED_FORMAT = 'ptq4vit-quantized-model/1';

export interface QuantizedModelInfo {
  spec: ModelSpec;
  points: PointQuant[];
  /** Method, bit widths, search settings, calibration data: how this file was made. */
  provenance: Record<string, unknown>;
}

function weightName(q: LinearQuant): string {
  return `${q.point}.weight`;
}

/** Integer codes of a weight with one Δ per group of output rows. */
export function weightCodes(weight: Tensor, q: LinearQuant): Int8Array | Int16Array {
  const rows = weight.shape[0];
  const perGroup = (weight.size / rows) * (rows / q.weightDeltas.length);
  const codes = q.weightBits <= 8 ? new Int8Array(weight.size) : new Int16Array(weight.size);
  for (let i = 0; i < weight.size; i++) codes[i] = uniformCode(weight.data[i], q.weightDeltas[Math.floor(i / perGroup)], q.weightBits);
  return codes;
}

/** Write the quantized model atomically. `source` is the float checkpoint the model was built from. */
export function saveQuantizedModel(file: string, source: TensorSource, info: QuantizedModelInfo): void {
  const linear = new Map<string, LinearQuant>();
  for (const p of info.points) if (p.kind !== 'matmul') linear.set(weightName(p), p);
  const tensors: Record<string, TensorToWrite> = {};
  for (const name of source.names()) {
    if (/(relative_position_index|attn_mask)$/.test(name)) continue; // recomputed buffers
    const t = source.tensor(name);
    const q = linear.get(name);
    tensors[name] = q ? { dtype: q.weightBits <= 8 ? 'I8' : 'I16', shape: t.shape, data: weightCodes(t, q) } : { dtype: 'F32', shape: t.shape, data: t.data };
  }
  writeSafetensors(file, tensors, {
    'ptq4vit.format': QUANTIZED_FORMAT,
    'ptq4vit.spec': JSON.stringify(info.spec),
    'ptq4vit.quant': JSON.stringify(info.points),
    'ptq4vit.provenance': JSON.stringify(info.provenance),
  });
}

export function isQuantizedModel(st: SafeTensors): boolean {
  return st.metadata['ptq4vit.format'] !== undefined;
}

function parseJson<T>(st: SafeTensors, key: string): T {
  const text = st.metadata[key];
  if (text === undefined) throw new Ptq4vitError(`${st.file}: quantized model metadata '${key}' is missing`);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Ptq4vitError(`${st.file}: quantized model metadata '${key}' is not valid JSON`);
  }
}

/** Reads a quantized model file: integer weights come back dequantized (code·Δ) as the model expects. */
export class DequantizedSource implements TensorSource {
  readonly file: string;
  private readonly linear = new Map<string, LinearQuant>();

  constructor(private readonly st: SafeTensors, points: readonly PointQuant[]) {
    this.file = st.file;
    for (const p of points) if (p.kind !== 'matmul') this.linear.set(weightName(p), p);
  }

  names(): string[] {
    return this.st.names();
  }

  /** The stored integer codes of a quantized weight, exactly as written (for the integer ONNX export). */
  codes(name: string): Int8Array | Int16Array {
    if (!this.linear.has(name)) throw new Ptq4vitError(`${this.file}: tensor '${name}' is not a quantized weight`);
    const codes = this.st.ints(name);
    if (!(codes instanceof Int8Array) && !(codes instanceof Int16Array)) throw new Ptq4vitError(`${this.file}: quantized weight '${name}' must be I8 or I16`);
    return codes;
  }

  tensor(name: string, shape?: readonly number[]): Tensor {
    const q = this.linear.get(name);
    if (!q) return this.st.tensor(name, shape);
    const info = this.st.info(name);
    if (shape && (shape.length !== info.shape.length || shape.some((d, i) => d !== info.shape[i]))) {
      throw new Ptq4vitError(`${this.file}: tensor '${name}' has shape ${shapeString(info.shape)}, expected ${shapeString(shape)}`);
    }
    const codes = this.st.ints(name);
    const rows = info.shape[0];
    const perGroup = (codes.length / rows) * (rows / q.weightDeltas.length);
    const lo = -qmax(q.weightBits), hi = qmax(q.weightBits) - 1;
    const values = new Float32Array(codes.length);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c < lo || c > hi) throw new Ptq4vitError(`${this.file}: tensor '${name}' has code ${c} outside the ${q.weightBits}-bit range [${lo}, ${hi}]`);
      values[i] = c * q.weightDeltas[Math.floor(i / perGroup)];
    }
    return new Tensor(values, info.shape);
  }
}

export function readQuantizedModel(st: SafeTensors): QuantizedModelInfo & { source: DequantizedSource } {
  const format = st.metadata['ptq4vit.format'];
  if (format !== QUANTIZED_FORMAT) throw new Ptq4vitError(`${st.file}: unsupported quantized model format '${format}' (this version reads ${QUANTIZED_FORMAT})`);
  const spec = parseJson<ModelSpec>(st, 'ptq4vit.spec');
  const points = parseJson<PointQuant[]>(st, 'ptq4vit.quant');
  const provenance = parseJson<Record<string, unknown>>(st, 'ptq4vit.provenance');
  if (!Array.isArray(points)) throw new Ptq4vitError(`${st.file}: 'ptq4vit.quant' must be a list of quantization points`);
  return { spec, points, provenance, source: new DequantizedSource(st, points) };
}
