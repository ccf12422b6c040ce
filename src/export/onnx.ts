/**
 * Whole-model ONNX export: the model code traced once (src/export/trace.ts) into one graph.
 *   input  `pixel_values` float32 [batch, C, H, W], normalized as the model's preprocessing says
 *   output `logits`       float32 [batch, classes]  (distilled DeiT: the mean of both heads, timm's eval)
 *       or `image_embeds` float32 [batch, features] for a model without classifier (num_classes 0): the name
 *                         transformers.js's image-feature-extraction pipeline reads when there is no
 *                         last_hidden_state or logits (CLIP's vision tower with projection uses it too)
 * Opset 17 (LayerNormalization, per-axis QuantizeLinear/DequantizeLinear, MatMulInteger); only default-domain
 * ops, so onnxruntime-node, onnxruntime-web and transformers.js all run it. The model spec (architecture,
 * preprocessing) and class names travel in the file's metadata (`ptq4vit.spec`, `ptq4vit.labels`), so
 * `ptq4vit eval --model model.onnx` needs nothing else.
 */
import { GraphBuilder } from '../onnx/builder.js';
import { encodeModel, OnnxType } from '../onnx/proto.js';
import { isEmbeddingModel, outputDim, type ModelSpec, type VisionModel } from '../models/types.js';
import { cardFromSpec } from '../models/config.js';
import { weightCodes } from '../quant/file.js';
import type { PointQuant } from '../quant/params.js';
import { QuantRunner } from '../quant/runner.js';
import { fp32Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';
import { fp32Products, integerProducts, type WeightCodes } from './products.js';
import { Tracer, type ProductEmitter } from './trace.js';

export const ONNX_OPSET = 17;
export const ONNX_INPUT = 'pixel_values';
export const ONNX_OUTPUT = 'logits';
/** The output of a model without classifier: its pooled embedding [batch, features]. */
export const ONNX_EMBEDDING_OUTPUT = 'image_embeds';

/** The graph output's name for a spec: logits, or the embedding of a model without classifier. */
export function onnxOutputName(spec: ModelSpec): string {
  return isEmbeddingModel(spec.arch) ? ONNX_EMBEDDING_OUTPUT : ONNX_OUTPUT;
}

export interface ExportOptions {
  /** Quantization parameters: export the integer graph (omit for FP32). */
  quant?: readonly PointQuant[];
  /** The int8 codes of each quantized weight (default: quantize the float weight with its Δs). */
  codes?: WeightCodes;
  /** Class names, stored in the metadata (default: the spec's, e.g. a hub folder's label_names). */
  labels?: readonly string[];
  /** Extra metadata entries (e.g. provenance). */
  metadata?: Record<string, string>;
  /** Other product nodes than the FP32 / integer ones (e.g. MatMulNBits variants measured by scripts/bench_int4.ts). */
  products?: ProductEmitter;
}

/** A deterministic example batch for the trace (values only steer the eager side; shapes are what count). */
function exampleImages(spec: ModelSpec): Tensor {
  const { inChans, imgSize } = spec.arch;
  const data = new Float32Array(inChans * imgSize * imgSize);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 1.5;
  return new Tensor(data, [1, inChans, imgSize, imgSize]);
}

export async function exportOnnx(model: VisionModel, options: ExportOptions = {}): Promise<Uint8Array> {
  const { spec } = model;
  const g = new GraphBuilder();
  const quant = options.quant;
  const products = options.products ?? (quant
    ? integerProducts(quant, options.codes ?? ((q, w) => weightCodes(w, q) as Int8Array))
    : fp32Products);
  const tracer = new Tracer(g, quant ? new QuantRunner(quant) : fp32Runner, products);
  const images = exampleImages(spec);
  tracer.bind(images, g.reserve(ONNX_INPUT));
  const output = await model.forward(images, tracer);
  const outputName = onnxOutputName(spec);
  g.reserve(outputName);
  g.opInto(outputName, 'Identity', [tracer.value(output)]);
  const { inChans, imgSize } = spec.arch;
  const graph = g.finish(
    spec.name,
    [{ name: ONNX_INPUT, elemType: OnnxType.FLOAT, shape: ['batch', inChans, imgSize, imgSize] }],
    [{ name: outputName, elemType: OnnxType.FLOAT, shape: ['batch', outputDim(spec.arch)] }],
    ONNX_OPSET,
  );
  graph.metadata = {
    'ptq4vit.format': ONNX_FORMAT,
    // The spec as a card (snake_case, timm's names), read back through the card checks.
    'ptq4vit.spec': JSON.stringify(cardFromSpec(spec)),
    'ptq4vit.quantized': quant ? 'integer' : 'fp32',
    ...((options.labels ?? spec.labelNames) ? { 'ptq4vit.labels': JSON.stringify(options.labels ?? spec.labelNames) } : {}),
    ...options.metadata,
  };
  return encodeModel(graph);
}

export const ONNX_FORMAT = 'ptq4vit-onnx/1';
