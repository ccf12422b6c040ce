/**
 * A Hugging Face model folder that transformers.js loads offline:
 *
 *   DIR/config.json                 model_type "vit" (ViTForImageClassification: pixel_values → logits), labels;
 *                                   without classifier (num_classes 0) ViTModel: pixel_values → image_embeds,
 *                                   read by pipeline('image-feature-extraction'); a model read from a transformers
 *                                   folder: that folder's config.json (same model_type and id2label) and its
 *                                   preprocessor_config.json as read
 *   DIR/preprocessor_config.json    the image processor closest to the model's timm eval transform
 *   DIR/onnx/model.onnx             FP32 graph            (transformers.js dtype "fp32")
 *   DIR/onnx/model_quantized.onnx   integer graph, if any (transformers.js dtype "q8")
 *   DIR/onnx/model_q4.onnx          integer graph of a file whose weights are all ≤ 4 bits, stored packed
 *                                   (transformers.js dtype "q4", then also the folder's default dtype)
 *
 *   import { pipeline, env } from '@huggingface/transformers';
 *   env.allowRemoteModels = false; env.localModelPath = path.dirname(DIR);
 *   const classify = await pipeline('image-classification', path.basename(DIR), { dtype: 'q8' });
 *
 * Preprocessing. timm's eval transform is: resize the shorter side to floor(S / crop_pct) (PIL bicubic, with
 * antialiasing), center crop S×S, x/255, normalize. transformers.js's ConvNextImageProcessor has exactly
 * this geometry for S < 384 (`size.shortest_edge` = S, `crop_pct`); for S ≥ 384 it warps to S×S instead, so
 * there we use the base (ViT) processor with `size.shortest_edge` = floor(S / crop_pct) + `crop_size` S×S,
 * which is the same geometry. What no processor setting can reproduce (measured by
 * scripts/hf_preprocess_parity.ts, table in RESULTS.md):
 *   - Node's resize is sharp's affine transform with a bicubic/bilinear interpolator: it maps pixel corners,
 *     not centres (a sub-pixel shift), and does not antialias when downscaling, unlike PIL. This is nearly
 *     all of the difference on photos; there is none when no resize happens (an image already at the
 *     model's resolution, e.g. CIFAR at 32×32 with crop_pct 1: the same pixels up to float rounding).
 *   - the crop offset is floor((size − S)/2) where torchvision rounds half to even: a one-pixel shift when
 *     size − S is odd and its half rounds up (e.g. 3 → torchvision 2, transformers.js 1).
 *   - it applies EXIF orientation (sharp's rotate()); PIL (and ptq4vit) does not.
 *   - normalization in float64 then stored as float32 (≤ 1 ulp from torch's float32 arithmetic).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { describeFsError } from '../io/safetensors.js';
import { isEmbeddingModel, type ModelSpec, type Preprocess } from '../models/types.js';

/** Version of the `ptq4vit` block in config.json. */
export const HF_DIR_FORMAT_VERSION = 1;

export interface HfModels {
  /** The FP32 ONNX model (input `pixel_values` [batch, 3, S, S], output `logits` [batch, classes]). */
  fp32: Uint8Array;
  /** The integer-quantized ONNX model with the same interface. */
  quantized?: Uint8Array;
  /** The integer graph of a model whose weights are all ≤ 4 bits (packed): transformers.js dtype 'q4'. */
  q4?: Uint8Array;
}

/** The files of the folder, relative to it, in the order they are written. */
export const HF_FILES = {
  config: 'config.json',
  preprocessor: 'preprocessor_config.json',
  fp32: 'onnx/model.onnx',
  quantized: 'onnx/model_quantized.onnx',
} as const;

/** The 4-bit graph (transformers.js dtype 'q4'): written instead of model_quantized.onnx for a ≤ 4-bit-weight file. */
export const HF_Q4_FILE = 'onnx/model_q4.onnx';

/** PIL's resampling filter numbers, which transformers.js's `resample` uses. */
const PIL_RESAMPLE = { bilinear: 2, bicubic: 3 } as const;

/** At and above this size ConvNextImageProcessor warps instead of resize-shorter-side + crop. */
const CONVNEXT_CROP_LIMIT = 384;

export function defaultLabels(classes: number): string[] {
  return Array.from({ length: classes }, (_, i) => `LABEL_${i}`); // transformers' own default names
}

function checkLabels(spec: ModelSpec, labels: readonly string[]): void {
  const n = spec.arch.numClasses;
  if (labels.length !== n) throw new Ptq4vitError(`labels: ${labels.length} given but model ${spec.name} has ${n} classes`);
  const seen = new Map<string, number>();
  labels.forEach((label, i) => {
    if (typeof label !== 'string' || label.length === 0) throw new Ptq4vitError(`labels[${i}]: expected a non-empty string, got ${JSON.stringify(label)}`);
    const first = seen.get(label);
    if (first !== undefined) throw new Ptq4vitError(`labels[${i}]: ${JSON.stringify(label)} repeats labels[${first}] (label2id needs distinct labels)`);
    seen.set(label, i);
  });
}

/** config.json: what transformers.js needs for image-classification, plus where the model came from. */
export function hfConfig(spec: ModelSpec, labels: readonly string[], options: { hasQuantized: boolean; hasQ4?: boolean }): Record<string, unknown> {
  checkLabels(spec, labels);
  const id2label: Record<string, string> = {};
  const label2id: Record<string, number> = {};
  labels.forEach((label, i) => {
    id2label[String(i)] = label;
    label2id[label] = i;
  });
  // A model read from a transformers folder keeps its own config.json (model_type, architectures, …): the folder
  // we write replaces the user's, so transformers.js builds the same model class it built before. A model without
  // classifier loads as transformers.js's AutoModel (ViTModel), whose outputs the image-feature-extraction pipeline
  // reads by name (our graph's `image_embeds`).
  const head = isEmbeddingModel(spec.arch)
    ? { architectures: ['ViTModel'], model_type: 'vit' }
    : { architectures: ['ViTForImageClassification'], model_type: 'vit', num_labels: labels.length, id2label, label2id };
  const config: Record<string, unknown> = spec.transformers
    ? { ...spec.transformers.config, id2label, label2id }
    : { ...head, image_size: spec.preprocess.inputSize, num_channels: spec.arch.inChans };
  delete config['transformers.js_config'];
  // transformers.js picks model_quantized.onnx by default on its wasm device: without one, default to fp32.
  // A 4-bit folder without a q8 graph defaults to its q4 graph.
  if (!options.hasQuantized) config['transformers.js_config'] = { dtype: options.hasQ4 ? 'q4' : 'fp32' };
  config.ptq4vit = { format_version: HF_DIR_FORMAT_VERSION, name: spec.name, timm_class: spec.timmClass, preprocess: preprocessCard(spec.preprocess) };
  return config;
}

function preprocessCard(p: Preprocess): Record<string, unknown> {
  return { input_size: [3, p.inputSize, p.inputSize], crop_pct: p.cropPct, interpolation: p.interpolation, mean: p.mean, std: p.std };
}

/** preprocessor_config.json: resize shorter side to floor(S/crop_pct), center crop S, x/255, normalize. */
export function hfPreprocessorConfig(p: Preprocess): Record<string, unknown> {
  const common = {
    do_convert_rgb: true,
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: p.mean,
    image_std: p.std,
    resample: PIL_RESAMPLE[p.interpolation],
  };
  if (p.inputSize < CONVNEXT_CROP_LIMIT) {
    // ConvNext resizes to floor(shortest_edge / crop_pct) and crops inside resize(): no second crop.
    return { image_processor_type: 'ConvNextImageProcessor', do_resize: true, size: { shortest_edge: p.inputSize }, crop_pct: p.cropPct, do_center_crop: false, ...common };
  }
  return {
    image_processor_type: 'ViTImageProcessor',
    do_resize: true,
    size: { shortest_edge: Math.floor(p.inputSize / p.cropPct) },
    do_center_crop: true,
    crop_size: { height: p.inputSize, width: p.inputSize },
    ...common,
  };
}

const json = (value: unknown): Uint8Array => new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`);

/** Every ONNX writer serializes ModelProto field 1 (ir_version, varint) first: tag byte 0x08. */
function checkOnnx(bytes: Uint8Array, what: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new Ptq4vitError(`${what}: expected ONNX model bytes, got ${bytes instanceof Uint8Array ? 'an empty buffer' : typeof bytes}`);
  if (bytes[0] !== 0x08) throw new Ptq4vitError(`${what}: not an ONNX model (a serialized ModelProto starts with its ir_version, byte 0x08; got 0x${bytes[0].toString(16).padStart(2, '0')})`);
}

/** What may already be in DIR for us to replace it: a folder this function wrote (or an empty one). */
function isReplaceable(dir: string): { ok: true } | { ok: false; foreign: string } {
  const known = new Set<string>([...Object.values(HF_FILES), HF_Q4_FILE]);
  const walk = (rel: string): string | null => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const name = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory() && name === 'onnx') {
        const inner = walk(name);
        if (inner) return inner;
      } else if (!(entry.isFile() && known.has(name))) {
        return name;
      }
    }
    return null;
  };
  const foreign = walk('');
  return foreign ? { ok: false, foreign } : { ok: true };
}

/**
 * Write the folder atomically: everything goes to a temporary sibling directory first, which is renamed to
 * DIR once complete, so DIR is never half-written. An existing DIR is replaced only if it holds nothing but
 * the files of such a folder; anything else there stops the export before a byte is written.
 */
export function writeHfDir(dir: string, spec: ModelSpec, models: HfModels, labels?: readonly string[]): void {
  const names = labels ?? defaultLabels(spec.arch.numClasses);
  const files: [string, Uint8Array][] = [];
  checkOnnx(models.fp32, 'FP32 model');
  if (models.quantized !== undefined) checkOnnx(models.quantized, 'quantized model');
  if (models.q4 !== undefined) checkOnnx(models.q4, '4-bit model');
  files.push([HF_FILES.config, json(hfConfig(spec, names, { hasQuantized: models.quantized !== undefined, hasQ4: models.q4 !== undefined }))]);
  // A transformers folder's own image processor is the model's preprocessing: written back as read.
  files.push([HF_FILES.preprocessor, json(spec.transformers ? spec.transformers.preprocessorConfig : hfPreprocessorConfig(spec.preprocess))]);
  files.push([HF_FILES.fp32, models.fp32]);
  if (models.quantized !== undefined) files.push([HF_FILES.quantized, models.quantized]);
  if (models.q4 !== undefined) files.push([HF_Q4_FILE, models.q4]);

  const target = path.resolve(dir);
  let existing: fs.Stats | undefined;
  try {
    existing = fs.statSync(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Ptq4vitError(`cannot write ${dir}: ${describeFsError(e)}`);
  }
  if (existing && !existing.isDirectory()) throw new Ptq4vitError(`cannot write ${dir}: it exists and is not a directory`);
  if (existing) {
    const check = isReplaceable(target);
    if (!check.ok) throw new Ptq4vitError(`cannot write ${dir}: it already holds ${check.foreign}, which is not part of a transformers.js model folder (use a new or empty directory)`);
  }

  const parent = path.dirname(target);
  const tmp = path.join(parent, `.${path.basename(target)}.${process.pid}.tmp`);
  const old = path.join(parent, `.${path.basename(target)}.${process.pid}.old`);
  try {
    fs.mkdirSync(parent, { recursive: true });
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(path.join(tmp, 'onnx'), { recursive: true });
    for (const [name, bytes] of files) fs.writeFileSync(path.join(tmp, name), bytes);
    if (existing) fs.renameSync(target, old);
    try {
      fs.renameSync(tmp, target);
    } catch (e) {
      if (existing) fs.renameSync(old, target); // put the previous folder back
      throw e;
    }
    fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw new Ptq4vitError(`cannot write ${dir}: ${describeFsError(e)}`);
  }
}
