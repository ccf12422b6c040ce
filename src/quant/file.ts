/**
 * The quantized model file: a safetensors file that is everything needed to run the quantized model.
 *  - every quantized weight under its checkpoint name as integer codes in its container (packing.ts): 2- to
 *    4-bit codes packed as U8 [rows, ⌈cols·c/8⌉] (c = 2 or 4 bits, offset by 2^(c−1)), 5- to 8-bit as I8,
 *    9- to 16-bit as I16 (files before format /3 hold every ≤ 8-bit code as I8),
 *  - every other tensor (biases, norms, tokens, position tables) as F32,
 *  - metadata: the model spec, each point's bit widths / scales / twin parameters, the method and the
 *    calibration provenance — no timestamps, so the same inputs and seed give a byte-identical file.
 */
import { Ptq4vitError } from '../errors.js';
import { SafeTensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { cardFromSpec, specFromCard } from '../models/config.js';
import { buildModel } from '../models/load.js';
import type { TensorSource } from '../models/weights.js';
import type { ModelSpec, QuantPoint, VisionModel } from '../models/types.js';
import { parseWith } from '../schema.js';
import { Tensor, shapeString } from '../tensor/tensor.js';
import { pointsFromDisk, pointsSchema, pointsToDisk, provenanceSchema, snakeCaseKeys } from './fileschema.js';
import { kindOf } from './kinds/index.js';
import { MAX_GROUPWISE_BITS, elementScales, maxGroupMultiplier, type ActivationQuant, type LinearQuant, type PointQuant } from './params.js';
import { containerBits, isPacked, packCodes, packedRowBytes, unpackCodes } from './packing.js';
import { qmax, uniformCoder } from './quantizers.js';

/**
 * /3: /2's metadata, with 2- to 4-bit weight codes packed (packing.ts) — the file is as small as the widths say.
 * /2: snake_case metadata, the spec stored as a model card, everything validated on load; every ≤ 8-bit code I8.
 * /1 files (camelCase, written before) are still read: their metadata is renamed to /2's fields and
 * goes through exactly the same checks. /2 and /1 files keep their I8 codes.
 */
export const QUANTIZED_FORMAT = 'ptq4vit-quantized-model/3';
export const QUANTIZED_FORMAT_V2 = 'ptq4vit-quantized-model/2';
export const QUANTIZED_FORMAT_V1 = 'ptq4vit-quantized-model/1';

export interface QuantizedModelInfo {
  spec: ModelSpec;
  points: PointQuant[];
  /** Method, bit widths, search settings, calibration data: how this file was made. */
  provenance: Record<string, unknown>;
  /** Read from a file whose ≤ 4-bit codes are packed (format /3); absent or false: every ≤ 8-bit code is I8. */
  packed?: boolean;
}

function weightName(q: LinearQuant): string {
  return `${q.point}.weight`;
}

/** The safetensors type that holds k-bit codes: U8 packed (format /3, ≤ 4 bits), else I8 or I16. */
function codeDtype(bits: number, packed: boolean): 'U8' | 'I8' | 'I16' {
  return packed && isPacked(bits) ? 'U8' : bits <= 8 ? 'I8' : 'I16';
}

/** Rows (first axis) and codes per row of a weight of this shape. */
function rowsAndCols(shape: readonly number[]): [number, number] {
  const rows = shape[0];
  return [rows, shape.reduce((a, b) => a * b, 1) / rows];
}

/**
 * Integer codes of a weight with one Δ per group of output rows, each code on its step (group-wise: the row's Δ
 * times the group's multiplier; params.ts elementScales).
 */
export function weightCodes(weight: Tensor, q: LinearQuant): Int8Array | Int16Array {
  const rows = weight.shape[0];
  const { rowDelta, multiplier } = elementScales(q, rows, weight.size / rows);
  const codes = q.weightBits <= 8 ? new Int8Array(weight.size) : new Int16Array(weight.size);
  const code = uniformCoder(q.weightBits);
  for (let i = 0; i < weight.size; i++) codes[i] = code(weight.data[i], rowDelta(i) * multiplier(i));
  return codes;
}

/** The /2 metadata of a quantized model (validated: what we write, we can read). */
export function quantizedMetadata(info: QuantizedModelInfo): Record<string, string> {
  const metadata = {
    'ptq4vit.format': QUANTIZED_FORMAT,
    'ptq4vit.spec': JSON.stringify(cardFromSpec(info.spec)),
    'ptq4vit.quant': JSON.stringify(pointsToDisk(info.points)),
    'ptq4vit.provenance': JSON.stringify(info.provenance),
  };
  parseMetadata(metadata, '<quantized model being written>');
  return metadata;
}

/** Write the quantized model atomically. `source` is the float checkpoint the model was built from. */
export function saveQuantizedModel(file: string, source: TensorSource, info: QuantizedModelInfo): void {
  const metadata = quantizedMetadata(info);
  const linear = new Map<string, LinearQuant>();
  for (const p of info.points) if (p.kind !== 'matmul') linear.set(weightName(p), p);
  const tensors: Record<string, TensorToWrite> = {};
  for (const name of source.names()) {
    if (/(relative_position_index|attn_mask)$/.test(name)) continue; // recomputed buffers
    const t = source.tensor(name);
    const q = linear.get(name);
    if (!q) tensors[name] = { dtype: 'F32', shape: t.shape, data: t.data };
    else if (isPacked(q.weightBits)) {
      const [rows, cols] = rowsAndCols(t.shape);
      tensors[name] = { dtype: 'U8', shape: [rows, packedRowBytes(cols, containerBits(q.weightBits))], data: packCodes(weightCodes(t, q) as Int8Array, rows, q.weightBits) };
    } else tensors[name] = { dtype: codeDtype(q.weightBits, true), shape: t.shape, data: weightCodes(t, q) };
  }
  writeSafetensors(file, tensors, metadata);
}

export function isQuantizedModel(st: SafeTensors): boolean {
  return st.metadata['ptq4vit.format'] !== undefined;
}

function parseJson(metadata: Readonly<Record<string, string>>, key: string, where: string): unknown {
  const text = metadata[key];
  if (text === undefined) throw new Ptq4vitError(`${where}: quantized model metadata '${key}' is missing`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Ptq4vitError(`${where}: quantized model metadata '${key}' is not valid JSON (${(e as Error).message})`);
  }
}

/** A /1 spec (the in-memory ModelSpec as JSON) as the card /2 stores. */
function cardFromV1Spec(v1: unknown, where: string): unknown {
  if (typeof v1 !== 'object' || v1 === null || Array.isArray(v1)) return v1;
  const s = v1 as Record<string, unknown>;
  const missing = ['name', 'timmClass', 'arch', 'preprocess'].find((k) => typeof s[k] !== (k === 'arch' || k === 'preprocess' ? 'object' : 'string') || s[k] === null);
  if (missing) throw new Ptq4vitError(`${where}: spec.${missing} is missing or of the wrong type (format ${QUANTIZED_FORMAT_V1})`);
  const { family: _family, ...kwargs } = snakeCaseKeys(s.arch) as Record<string, unknown>;
  const p = s.preprocess as Record<string, unknown>;
  return {
    name: s.name,
    timm_class: s.timmClass,
    timm_kwargs: kwargs,
    input_size: [kwargs.in_chans, p.inputSize, p.inputSize],
    mean: p.mean,
    std: p.std,
    crop_pct: p.cropPct,
    interpolation: p.interpolation,
  };
}

/** The first field where a stored card differs from the canonical one (a file's card must be complete). */
function firstDifference(stored: unknown, canonical: unknown, field: string): string | null {
  if (typeof canonical === 'object' && canonical !== null) {
    if (typeof stored !== 'object' || stored === null || Array.isArray(stored) !== Array.isArray(canonical)) return field;
    const keys = new Set([...Object.keys(stored), ...Object.keys(canonical)]);
    for (const k of keys) {
      const sub = Array.isArray(canonical) ? `${field}[${k}]` : field ? `${field}.${k}` : k;
      const d = firstDifference((stored as Record<string, unknown>)[k], (canonical as Record<string, unknown>)[k], sub);
      if (d !== null) return d;
    }
    return null;
  }
  return stored === canonical ? null : field;
}

/**
 * A stored spec card → the spec. A card may leave fields to timm's defaults; a file's card must not
 * (a missing field would silently mean the default), so it must be exactly cardFromSpec of its spec.
 */
export function specFromStoredCard(card: unknown, where: string): ModelSpec {
  const spec = specFromCard(card, where);
  const different = firstDifference(card, cardFromSpec(spec), '');
  if (different !== null) throw new Ptq4vitError(`${where}: field ${different} is missing or not what the rest of the spec implies`);
  return spec;
}

/**
 * Throws unless a quantized file can store this spec (it is read back through the card checks). Called
 * before calibrating, so a spec the format cannot hold fails in a second, not after minutes of search.
 */
export function checkSpecStorable(spec: ModelSpec): void {
  specFromStoredCard(JSON.parse(JSON.stringify(cardFromSpec(spec))), `model ${spec.name}: cannot be stored in a quantized model file`);
}

/** Every metadata field of a quantized model file, checked and converted to the in-memory types. */
export function parseMetadata(metadata: Readonly<Record<string, string>>, file: string): QuantizedModelInfo {
  const format = metadata['ptq4vit.format'];
  if (format !== QUANTIZED_FORMAT && format !== QUANTIZED_FORMAT_V2 && format !== QUANTIZED_FORMAT_V1) {
    throw new Ptq4vitError(`${file}: unsupported quantized model format ${JSON.stringify(format)} (this version reads ${QUANTIZED_FORMAT}, ${QUANTIZED_FORMAT_V2} and ${QUANTIZED_FORMAT_V1})`);
  }
  const v1 = format === QUANTIZED_FORMAT_V1;
  const specWhere = `${file}: metadata ptq4vit.spec`;
  const rawSpec = parseJson(metadata, 'ptq4vit.spec', file);
  const card = v1 ? cardFromV1Spec(rawSpec, specWhere) : rawSpec;
  const spec = specFromStoredCard(card, specWhere);
  const rawPoints = parseJson(metadata, 'ptq4vit.quant', file);
  const points = pointsFromDisk(parseWith(pointsSchema, v1 ? snakeCaseKeys(rawPoints) : rawPoints, `${file}: metadata ptq4vit.quant`, 'points'));
  const provenance = parseWith(provenanceSchema, parseJson(metadata, 'ptq4vit.provenance', file), `${file}: metadata ptq4vit.provenance`) as Record<string, unknown>;
  return { spec, points, provenance, packed: format === QUANTIZED_FORMAT };
}
/** Reads a quantized model file: integer weights come back dequantized (code·Δ) as the model expects. */
export class DequantizedSource implements TensorSource {
  readonly file: string;
  private readonly linear = new Map<string, LinearQuant>();

  /** `packed`: the file's ≤ 4-bit codes are packed (format /3). */
  constructor(private readonly st: SafeTensors, points: readonly PointQuant[], private readonly packed = false) {
    this.file = st.file;
    for (const p of points) if (p.kind !== 'matmul') this.linear.set(weightName(p), p);
  }

  names(): string[] {
    return this.st.names();
  }

  /** The stored integer codes of a quantized weight, exactly as written (unpacked; for the integer ONNX export). */
  codes(name: string, shape: readonly number[]): Int8Array | Int16Array {
    const q = this.linear.get(name);
    if (!q) throw new Ptq4vitError(`${this.file}: tensor '${name}' is not a quantized weight`);
    return this.checkedCodes(name, q, shape, this.st.info(name).shape);
  }

  /**
   * The codes of weight `name` (expected shape `shape`), checked: stored type for the width and the format,
   * stored shape (packed: [rows, ⌈cols·c/8⌉]), every code within the k-bit range.
   */
  private checkedCodes(name: string, q: LinearQuant, shape: readonly number[], storedShape: readonly number[]): Int8Array | Int16Array {
    const dtype = this.checkDtype(name, q);
    if (dtype === 'U8') {
      const [rows, cols] = rowsAndCols(shape);
      const want = [rows, packedRowBytes(cols, containerBits(q.weightBits))];
      if (storedShape.length !== 2 || storedShape[0] !== want[0] || storedShape[1] !== want[1]) {
        throw new Ptq4vitError(`${this.file}: tensor '${name}' holds packed ${q.weightBits}-bit codes of shape ${shapeString(storedShape)}, expected ${shapeString(want)} for a ${shapeString(shape)} weight`);
      }
      return unpackCodes(this.st.ints(name) as Uint8Array, rows, cols, q.weightBits, `${this.file}: tensor '${name}'`);
    }
    const codes = this.st.ints(name);
    if (!(codes instanceof Int8Array) && !(codes instanceof Int16Array)) throw new Ptq4vitError(`${this.file}: quantized weight '${name}' must be I8 or I16`);
    const lo = -qmax(q.weightBits), hi = qmax(q.weightBits) - 1;
    for (let i = 0; i < codes.length; i++) {
      if (codes[i] < lo || codes[i] > hi) throw new Ptq4vitError(`${this.file}: tensor '${name}' has code ${codes[i]} outside the ${q.weightBits}-bit range [${lo}, ${hi}]`);
    }
    return codes;
  }

  /** The stored type k-bit codes must have in this file (U8 packed from format /3 on), checked. */
  private checkDtype(name: string, q: LinearQuant): 'U8' | 'I8' | 'I16' {
    const info = this.st.info(name);
    const dtype = codeDtype(q.weightBits, this.packed);
    if (info.dtype !== dtype) {
      throw new Ptq4vitError(`${this.file}: tensor '${name}' is ${info.dtype}, but ${q.weightBits}-bit weight codes (point ${q.point}) are stored as ${dtype}${this.packed ? '' : ' before format ' + QUANTIZED_FORMAT}`);
    }
    return dtype;
  }

  tensor(name: string, shape?: readonly number[]): Tensor {
    const q = this.linear.get(name);
    if (!q) {
      const dtype = this.st.info(name).dtype;
      if (dtype === 'I8' || dtype === 'I16') {
        throw new Ptq4vitError(`${this.file}: tensor '${name}' holds ${dtype} integer codes, but metadata ptq4vit.quant has no point '${name.replace(/\.weight$/, '')}' with their scales`);
      }
      return this.st.tensor(name, shape);
    }
    const info = this.st.info(name);
    const packed = this.checkDtype(name, q) === 'U8';
    // A packed weight's stored shape is its bytes' ([rows, ⌈cols·c/8⌉]): its own shape is the model's.
    if (packed && !shape) throw new Ptq4vitError(`${this.file}: tensor '${name}' holds packed codes; its shape must come from the model`);
    const weightShape = packed ? shape! : info.shape;
    if (!packed && shape && (shape.length !== info.shape.length || shape.some((d, i) => d !== info.shape[i]))) {
      throw new Ptq4vitError(`${this.file}: tensor '${name}' has shape ${shapeString(info.shape)}, expected ${shapeString(shape)}`);
    }
    const rows = weightShape[0];
    if (q.weightGroups) {
      const G = q.weightGroups.size;
      // Group-wise: a [N, K] weight, K a multiple of G, one Δ per row and N·(K/G) multipliers.
      const cols = weightShape[weightShape.length - 1];
      if (weightShape.length !== 2 || cols % G !== 0) {
        throw new Ptq4vitError(`${this.file}: point ${q.point} has weight_group_size ${G}, which does not divide the input width of the ${shapeString(weightShape)} weight '${name}'`);
      }
      if (q.weightDeltas.length !== rows) {
        throw new Ptq4vitError(`${this.file}: point ${q.point} has ${q.weightDeltas.length} weight_deltas, expected ${rows} (one per output row of the group-wise ${shapeString(weightShape)} weight '${name}')`);
      }
      const multipliers = q.weightGroups.multipliers;
      if (multipliers.length !== (rows * cols) / G) {
        throw new Ptq4vitError(`${this.file}: point ${q.point} has ${multipliers.length} weight_group_multipliers, expected ${(rows * cols) / G} (${rows} rows × ${cols / G} groups of ${G}) for the ${shapeString(weightShape)} weight '${name}'`);
      }
    } else if (weightShape.length < 2 || rows % q.weightDeltas.length !== 0) {
      throw new Ptq4vitError(`${this.file}: point ${q.point} has ${q.weightDeltas.length} weight_deltas, which do not split the ${shapeString(weightShape)} weight '${name}' into equal groups of rows`);
    }
    const codes = this.checkedCodes(name, q, weightShape, info.shape);
    const { rowDelta, multiplier } = elementScales(q, rows, codes.length / rows);
    // Δ·(m·code): the integer code of the product, on the row's Δ (m = 1 unless group-wise).
    const values = new Float32Array(codes.length);
    for (let i = 0; i < codes.length; i++) values[i] = codes[i] * multiplier(i) * rowDelta(i);
    return new Tensor(values, [...weightShape]);
  }
}

/** Model quantization points vs the file's parameters: same points, kinds and operand layout. */
export function checkPointsMatchModel(points: readonly PointQuant[], model: VisionModel, file: string): void {
  const expected = model.quantPoints;
  const where = `${file}: metadata ptq4vit.quant`;
  if (points.length !== expected.length) {
    throw new Ptq4vitError(`${where}: has ${points.length} quantization points, ${model.spec.name} has ${expected.length}`);
  }
  points.forEach((q, i) => checkPoint(q, expected[i], `${where}: points[${i}]`));
}

function checkPoint(q: PointQuant, p: QuantPoint, where: string): void {
  const bad = (why: string): never => {
    throw new Ptq4vitError(`${where} (${q.point}): ${why}`);
  };
  if (q.point !== p.name) bad(`expected point ${p.name} here (the model's points in order)`);
  if (q.kind !== p.kind) bad(`kind is ${q.kind}, but ${p.name} is a ${p.kind}`);
  if (q.kind === 'matmul') {
    if (q.heads !== p.heads) bad(`heads is ${q.heads}, the model has ${p.heads}`);
    checkOperand(q.a, p, 'a', q.heads, bad);
    checkOperand(q.b, p, 'b', q.heads, bad);
    return;
  }
  const groups = p.weightGroups ?? 1;
  // The model's groups (per tensor, q/k/v apart), or finer groups within them (per output channel: one per row;
  // that they split the weight's rows evenly is checked with the weight, DequantizedSource.tensor).
  if (q.weightGroups) {
    // Group-wise Δs (counted against the weight's shape in DequantizedSource.tensor): ≤ 4-bit linear layers only.
    if (q.kind !== 'linear') bad('weight_group_size is set, but group-wise weight scales are for linear layers (the patch conv is per channel)');
    if (q.weightBits > MAX_GROUPWISE_BITS) bad(`weight_group_size is set, but group-wise weight scales are for weights of at most ${MAX_GROUPWISE_BITS} bits, got ${q.weightBits}`);
    const multipliers = q.weightGroups.multipliers;
    const top = maxGroupMultiplier(q.weightBits);
    const outside = multipliers.findIndex((m) => m > top);
    if (outside >= 0) bad(`weight_group_multipliers[${outside}] is ${multipliers[outside]}, expected an integer from 1 to ${top} (2^(8−${q.weightBits}): the ${q.weightBits}-bit code times it must fit int8)`);
  } else if (q.weightDeltas.length % groups !== 0) bad(`weight_deltas has ${q.weightDeltas.length} entries, expected ${groups} (or one per output channel)`);
  if (q.kind === 'conv') {
    if (q.input !== null) bad('input must be null (the image input of the patch embedding stays float)');
    return;
  }
  if (q.input === null) return bad('input is null, but the input of a linear layer is quantized');
  checkOperand(q.input, p, 'input', 1, bad);
}

function checkOperand(a: ActivationQuant, p: QuantPoint, field: 'a' | 'b' | 'input', heads: number, bad: (why: string) => never): void {
  const misfit = kindOf(a).misfit(a, { field, feeds: p.input, heads });
  if (misfit !== null) bad(misfit);
}

/**
 * Read and check a quantized model file: metadata (spec as a card, points, provenance), then the model
 * built from its tensors, then the points against the model's. Everything a reader of the file uses has
 * been validated when this returns.
 */
export function readQuantizedModel(st: SafeTensors): QuantizedModelInfo & { source: DequantizedSource; model: VisionModel } {
  const info = parseMetadata(st.metadata, st.file);
  // Points are matched by name below; an unknown point must not reach the source's lookup first.
  const source = new DequantizedSource(st, info.points, info.packed === true);
  const model = buildModel(info.spec, source);
  checkPointsMatchModel(info.points, model, st.file);
  return { ...info, source, model };
}
