/**
 * Building a model from a spec and its tensors. Opening a file (float checkpoint or quantized model)
 * is src/open.ts: it needs quant/, which sits above models/.
 */
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { Beit } from './beit.js';
import { readCard, specFromPreset } from './config.js';
import { MlpMixer } from './mixer.js';
import { SwinTransformer } from './swin.js';
import { SwinTransformerV2 } from './swinv2.js';
import type { ModelSpec, VisionModel } from './types.js';
import { VisionTransformer } from './vit.js';
import type { TensorSource } from './weights.js';

export function buildModel(spec: ModelSpec, weights: TensorSource): VisionModel {
  if (spec.arch.family === 'swinv2') return new SwinTransformerV2(spec, weights);
  if (spec.arch.family === 'mixer') return new MlpMixer(spec, weights);
  if (spec.arch.family === 'beit') return new Beit(spec, weights);
  return spec.arch.family === 'swin' ? new SwinTransformer(spec, weights) : new VisionTransformer(spec, weights);
}

export interface ModelSource {
  /** A safetensors checkpoint with timm parameter names (NAME.json beside it is its card), a timm hub folder, or a quantized model file. */
  weights: string;
  /** A JSON model card… */
  config?: string;
  /** …or a timm preset name. */
  arch?: string;
  /** --img-size: rebuild a float checkpoint for this input size (position embeddings resampled as timm does). */
  imgSize?: number;
}

export function resolveSpec(source: ModelSource): ModelSpec {
  if (source.config && source.arch) throw new Ptq4vitError('give either --config or --arch, not both');
  if (source.config) return readCard(source.config);
  if (source.arch) return specFromPreset(source.arch);
  throw new Ptq4vitError(`${source.weights}: the architecture is needed: pass --config <card.json> or --arch <preset> (or put its card beside it as ${path.basename(source.weights).replace(/\.safetensors$/, '')}.json)`);
}
