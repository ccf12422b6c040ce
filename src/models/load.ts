import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { SafeTensors } from '../io/safetensors.js';
import { readQuantizedModel, isQuantizedModel, type QuantizedModelInfo } from '../quant/file.js';
import { QuantRunner } from '../quant/runner.js';
import { fp32Runner } from '../tensor/runner.js';
import { readCard, specFromPreset } from './config.js';
import { locateModel, readHubConfig } from './hub.js';
import { SwinTransformer } from './swin.js';
import type { ModelSpec, Runner, VisionModel } from './types.js';
import { VisionTransformer } from './vit.js';
import type { TensorSource } from './weights.js';

export function buildModel(spec: ModelSpec, weights: TensorSource): VisionModel {
  return spec.arch.family === 'swin' ? new SwinTransformer(spec, weights) : new VisionTransformer(spec, weights);
}

export interface ModelSource {
  /** A safetensors checkpoint with timm parameter names (NAME.json beside it is its card), a timm hub folder, or a quantized model file. */
  weights: string;
  /** A JSON model card… */
  config?: string;
  /** …or a timm preset name. */
  arch?: string;
}

export function resolveSpec(source: ModelSource): ModelSpec {
  if (source.config && source.arch) throw new Ptq4vitError('give either --config or --arch, not both');
  if (source.config) return readCard(source.config);
  if (source.arch) return specFromPreset(source.arch);
  throw new Ptq4vitError(`${source.weights}: the architecture is needed: pass --config <card.json> or --arch <preset> (or put its card beside it as ${path.basename(source.weights).replace(/\.safetensors$/, '')}.json)`);
}

/** Load a float checkpoint and build its model, validating every tensor against the spec. */
export function loadModel(source: ModelSource): VisionModel {
  return openModel(source).model;
}

export interface LoadedModel {
  model: VisionModel;
  /** fp32Runner for a float checkpoint; the fake-quantizing runner for a quantized model file. */
  runner: Runner;
  weights: TensorSource;
  quantized: QuantizedModelInfo | null;
}

/** Open a float checkpoint (with --config/--arch) or a quantized model file (which carries its own spec). */
export function openModel(source: ModelSource): LoadedModel {
  const files = locateModel(source.weights);
  if (files.hubConfig && (source.config || source.arch)) throw new Ptq4vitError(`${source.weights} is a timm hub folder described by its ${files.hubConfig}: drop --config/--arch`);
  const st = SafeTensors.read(files.weights);
  if (!isQuantizedModel(st)) {
    const spec = files.hubConfig ? readHubConfig(files.hubConfig) : files.siblingCard && !source.config && !source.arch ? readCard(files.siblingCard) : resolveSpec(source);
    const model = buildModel(spec, st);
    return { model, runner: fp32Runner, weights: st, quantized: null };
  }
  if (source.config || source.arch) {
    throw new Ptq4vitError(`${source.weights} is a quantized model file and carries its own architecture: drop --config/--arch`);
  }
  const info = readQuantizedModel(st);
  const model = buildModel(info.spec, info.source);
  const expected = model.quantPoints.map((p) => p.name).join(',');
  if (info.points.map((p) => p.point).join(',') !== expected) {
    throw new Ptq4vitError(`${source.weights}: its quantization parameters do not match the quantization points of ${info.spec.name}`);
  }
  return { model, runner: new QuantRunner(info.points), weights: info.source, quantized: info };
}
