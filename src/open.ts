/**
 * Opening a model file: a float checkpoint (with a card or preset) or a quantized model file (which
 * carries its own spec and parameters). Above both models/ and quant/, which it combines.
 */
import { Ptq4vitError } from './errors.js';
import { SafeTensors } from './io/safetensors.js';
import { readCard } from './models/config.js';
import { locateModel, readHubConfig } from './models/hub.js';
import { withInputSize } from './models/posembed.js';
import { readTransformersFolder } from './models/transformers.js';
import { buildModel, resolveSpec, type ModelSource } from './models/load.js';
import type { Runner, VisionModel } from './models/types.js';
import type { TensorSource } from './models/weights.js';
import { isQuantizedModel, readQuantizedModel, type QuantizedModelInfo } from './quant/file.js';
import { QuantRunner } from './quant/runner.js';
import { fp32Runner } from './tensor/runner.js';

export { buildModel, resolveSpec, type ModelSource };

export interface LoadedModel {
  model: VisionModel;
  /** fp32Runner for a float checkpoint; the fake-quantizing runner for a quantized model file. */
  runner: Runner;
  weights: TensorSource;
  quantized: QuantizedModelInfo | null;
  /** Set when --img-size rebuilt a float checkpoint for another input size (the quantized file records it). */
  inputResized?: { from: number; to: number };
}

/** Open a float checkpoint (with --config/--arch) or a quantized model file (which carries its own spec). */
export function openModel(source: ModelSource): LoadedModel {
  const files = locateModel(source.weights);
  if (files.hubConfig && (source.config || source.arch)) throw new Ptq4vitError(`${source.weights} is a timm hub folder described by its ${files.hubConfig}: drop --config/--arch`);
  const st = SafeTensors.read(files.weights);
  if (!isQuantizedModel(st)) {
    // A Hugging Face transformers folder (config.json with model_type): mapped onto timm's names (models/transformers.ts).
    const hf = files.hubConfig ? readTransformersFolder(source.weights, files.hubConfig, st) : null;
    if (hf && source.imgSize !== undefined && source.imgSize !== hf.spec.arch.imgSize) {
      throw new Ptq4vitError(`--img-size ${source.imgSize}: ${source.weights} is a transformers folder whose preprocessor_config.json fixes the input at ${hf.spec.arch.imgSize}`);
    }
    let spec = hf ? hf.spec : files.hubConfig ? readHubConfig(files.hubConfig) : files.siblingCard && !source.config && !source.arch ? readCard(files.siblingCard) : resolveSpec(source);
    let weights: TensorSource = hf ? hf.weights : st;
    const from = spec.arch.imgSize;
    if (source.imgSize !== undefined && source.imgSize !== from) ({ spec, weights } = withInputSize(spec, weights, source.imgSize));
    const model = buildModel(spec, weights);
    return { model, runner: fp32Runner, weights, quantized: null, ...(spec.arch.imgSize !== from ? { inputResized: { from, to: spec.arch.imgSize } } : {}) };
  }
  if (source.config || source.arch) {
    throw new Ptq4vitError(`${source.weights} is a quantized model file and carries its own architecture: drop --config/--arch`);
  }
  const { model, source: weights, spec, points, provenance } = readQuantizedModel(st);
  if (source.imgSize !== undefined && source.imgSize !== spec.arch.imgSize) {
    throw new Ptq4vitError(`--img-size ${source.imgSize}: ${source.weights} is a quantized model file calibrated at ${spec.arch.imgSize}×${spec.arch.imgSize}; quantize the float checkpoint with --img-size instead`);
  }
  return { model, runner: new QuantRunner(points), weights, quantized: { spec, points, provenance } };
}

/** Load a model file and build its model, validating every tensor against the spec. */
export function loadModel(source: ModelSource): VisionModel {
  return openModel(source).model;
}
