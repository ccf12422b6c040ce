import { Ptq4vitError } from '../errors.js';
import { SafeTensors } from '../io/safetensors.js';
import { readCard, specFromPreset } from './config.js';
import { SwinTransformer } from './swin.js';
import type { ModelSpec, VisionModel } from './types.js';
import { VisionTransformer } from './vit.js';

export function buildModel(spec: ModelSpec, weights: SafeTensors): VisionModel {
  return spec.arch.family === 'swin' ? new SwinTransformer(spec, weights) : new VisionTransformer(spec, weights);
}

export interface ModelSource {
  /** A safetensors checkpoint with timm parameter names. */
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
  throw new Ptq4vitError(`${source.weights}: the architecture is needed: pass --config <card.json> or --arch <preset>`);
}

/** Load a float checkpoint and build its model, validating every tensor against the spec. */
export function loadModel(source: ModelSource): VisionModel {
  const spec = resolveSpec(source);
  return buildModel(spec, SafeTensors.read(source.weights));
}
