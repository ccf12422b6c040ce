/**
 * Models for the inference speed scripts (profile_speed.ts): random-weight timm presets built in memory
 * (ViT-S/16-224, ViT-B/16-224, Swin-T/224 — speed does not depend on the values) or the bundled CIFAR
 * checkpoints, and W8A8 PTQ4ViT-shaped quantization parameters made without a search: the same kinds a
 * PTQ4ViT calibration chooses (uniform inputs, twin post-GELU with aligned ranges, twin post-softmax with
 * Δ_R2 = 1/2^(k−1), per-head attention operands, per-q/k/v weight Δs), so the integer graph has the same ops.
 */
import path from 'node:path';
import { seededRandom } from '../src/grad/loss.js';
import { specFromPreset } from '../src/models/config.js';
import type { VisionModel } from '../src/models/types.js';
import type { TensorSource } from '../src/models/weights.js';
import { buildModel, openModel } from '../src/open.js';
import type { ActivationQuant, PointQuant } from '../src/quant/params.js';
import { Tensor } from '../src/tensor/tensor.js';

export const RANDOM_PRESETS: Record<string, string> = {
  vit_s: 'vit_small_patch16_224',
  vit_b: 'vit_base_patch16_224',
  swin_t: 'swin_tiny_patch4_window7_224',
};

/** A random-weight preset (timm-like scales, seeded) or a bundled model of ../shared/models. */
export function speedModel(name: string): VisionModel {
  const preset = RANDOM_PRESETS[name];
  if (!preset) {
    const dir = path.resolve('..', 'shared', 'models');
    return openModel({ weights: path.join(dir, `${name}.safetensors`), config: path.join(dir, `${name}.json`) }).model;
  }
  const rand = seededRandom(2024);
  const source: TensorSource = {
    file: `${preset} (random)`,
    names: () => [],
    tensor(tensorName, shape) {
      if (!shape) throw new Error(`random weights: '${tensorName}' was asked for without a shape`);
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
      const norm = /norm\d?\.weight$/.test(tensorName);
      for (let i = 0; i < data.length; i++) data[i] = (norm ? 1 : 0) + 0.0346 * (rand() - 0.5) * (tensorName.endsWith('.bias') ? 0.5 : 2);
      return new Tensor(data, [...shape]);
    },
  };
  return buildModel(specFromPreset(preset), source);
}

/** W`bits`A`bits` parameters shaped like a PTQ4ViT calibration's (values plausible, not searched). */
export function syntheticQuant(model: VisionModel, bits = 8): PointQuant[] {
  const half = 2 ** (bits - 1);
  const uniform = (deltas: number[]): ActivationQuant => ({ kind: 'uniform', bits, deltas });
  return model.quantPoints.map((p): PointQuant => {
    if (p.kind === 'matmul') {
      const heads = p.heads ?? 1;
      const perHead = Array.from({ length: heads }, (_, h) => 0.02 + 0.002 * h);
      const a: ActivationQuant = p.input === 'post-softmax' ? { kind: 'twin-softmax', bits, deltaR1: 2 ** -14, deltaR2: 1 / half } : uniform(perHead);
      return { kind: 'matmul', point: p.name, heads, a, b: uniform(perHead) };
    }
    const weightDeltas = new Array<number>(p.weightGroups ?? 1).fill(0.0346 / (half - 1));
    const input: ActivationQuant | null = p.kind === 'conv' ? null : p.input === 'post-gelu' ? { kind: 'twin-gelu', bits, deltaNeg: 0.17 / half, deltaPos: (0.17 / half) * 2 ** 4 } : uniform([0.03]);
    return { kind: p.kind === 'conv' ? 'conv' : 'linear', point: p.name, weightBits: bits, weightDeltas, input };
  });
}
