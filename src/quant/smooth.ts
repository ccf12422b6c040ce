/**
 * Channel smoothing (SmoothQuant, Xiao et al., ICML 2023) as a rewrite of the float checkpoint before calibration.
 *
 * A LayerNorm feeding a linear layer channel for channel (QuantPoint.inputNorm) can trade range between the
 * quantized input and the weight without changing the model:
 *
 *   y = W·(γ⊙x̂ + β) = (W·diag(s))·((γ/s)⊙x̂ + β/s)
 *
 * The input the quantizer sees is divided per channel by
 *
 *   s_j = max|X_j|^α / max_i |W_ij|^(1−α)     (normalized to geometric mean 1)
 *
 * with max|X_j| over the calibration images; α = 1 flattens the input's channel ranges completely, α = 0 the
 * weight's. Where one norm feeds several layers they share s (max over all their weight columns). The result is
 * a checkpoint: the quantized file stores the rewritten norm and weights, so eval and export need nothing new.
 */
import { Ptq4vitError } from '../errors.js';
import { buildModel } from '../models/load.js';
import type { VisionModel } from '../models/types.js';
import type { TensorSource } from '../models/weights.js';
import { fp32Runner, type Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';

/** What smoothing did to one norm and the layers it feeds. */
export interface SmoothedNorm {
  norm: string;
  layers: string[];
  /** max over channels / mean over channels of max|X_j|, before and after (1 = flat). */
  rangeRatioBefore: number;
  rangeRatioAfter: number;
}

export interface Smoothed {
  model: VisionModel;
  weights: TensorSource;
  norms: SmoothedNorm[];
}

/** Largest |x| of every channel (last axis) of the linear inputs fed by a norm, over all images. */
class ChannelRange implements Runner {
  readonly max = new Map<string, Float64Array>();
  constructor(private readonly watched: ReadonlySet<string>) {}

  linear(point: string, x: Tensor, weight: Tensor, bias: Tensor | null): Promise<Tensor> {
    if (this.watched.has(point)) {
      const channels = weight.shape[1];
      let m = this.max.get(point);
      if (!m) this.max.set(point, (m = new Float64Array(channels)));
      for (let i = 0; i < x.size; i++) {
        const v = Math.abs(x.data[i]);
        if (v > m[i % channels]) m[i % channels] = v;
      }
    }
    return fp32Runner.linear(point, x, weight, bias);
  }

  matmul(point: string, a: Tensor, b: Tensor, transB: boolean): Promise<Tensor> {
    return fp32Runner.matmul(point, a, b, transB);
  }
}

const rangeRatio = (m: ArrayLike<number>): number => {
  let max = 0, sum = 0;
  for (let j = 0; j < m.length; j++) (max = Math.max(max, m[j])), (sum += m[j]);
  return sum > 0 ? max / (sum / m.length) : 1;
};

/** The checkpoint with some tensors replaced (same names, same shapes). */
export function overridden(base: TensorSource, replaced: ReadonlyMap<string, Tensor>): TensorSource {
  return {
    file: base.file,
    names: () => base.names(),
    tensor(name, shape) {
      const original = base.tensor(name, shape); // the shape check, and the error naming the file, stay the base's
      return replaced.get(name) ?? original;
    },
  };
}

/** Checks α for the CLI and the library alike. */
export function checkSmoothAlpha(alpha: number, what = '--smooth'): void {
  if (!Number.isFinite(alpha) || alpha < 0 || alpha > 1) throw new Ptq4vitError(`${what} must be a number from 0 to 1 (the migration strength α), got ${alpha}`);
}

/**
 * Rewrites `weights` (the checkpoint `model` was built from) so every norm → linear pair is smoothed with strength
 * α, measuring the channel ranges on `images` (normalized [B, C, H, W], e.g. the calibration images), in batches
 * of `batch` images.
 */
export async function smoothChannels(model: VisionModel, weights: TensorSource, images: Tensor, alpha: number, batch = 32): Promise<Smoothed> {
  checkSmoothAlpha(alpha, 'smoothing α');
  const fed = model.quantPoints.filter((p) => p.inputNorm !== undefined && p.weight !== undefined);
  const byNorm = new Map<string, typeof fed>();
  for (const p of fed) byNorm.set(p.inputNorm!, [...(byNorm.get(p.inputNorm!) ?? []), p]);

  const ranges = new ChannelRange(new Set(fed.map((p) => p.name)));
  for (let start = 0; start < images.shape[0]; start += batch) await model.forward(images.rows(start, Math.min(start + batch, images.shape[0])), ranges);

  const replaced = new Map<string, Tensor>();
  const norms: SmoothedNorm[] = [];
  for (const [norm, layers] of byNorm) {
    const gamma = weights.tensor(`${norm}.weight`), beta = weights.tensor(`${norm}.bias`);
    const channels = gamma.size;
    const xMax = new Float64Array(channels), wMax = new Float64Array(channels);
    const layerWeights = layers.map((p) => weights.tensor(p.weight!));
    for (const p of layers) ranges.max.get(p.name)!.forEach((v, j) => (xMax[j] = Math.max(xMax[j], v)));
    for (const w of layerWeights) for (let i = 0; i < w.size; i++) wMax[i % channels] = Math.max(wMax[i % channels], Math.abs(w.data[i]));
    // A channel that is always 0 (or a zero weight column) keeps s = 1 before normalization: nothing to balance.
    const s = Array.from(xMax, (x, j) => (x > 0 && wMax[j] > 0 ? x ** alpha / wMax[j] ** (1 - alpha) : 1));
    const geoMean = Math.exp(s.reduce((a, v) => a + Math.log(v), 0) / channels);
    for (let j = 0; j < channels; j++) s[j] /= geoMean;

    replaced.set(`${norm}.weight`, new Tensor(Float32Array.from(gamma.data, (g, j) => g / s[j]), gamma.shape));
    replaced.set(`${norm}.bias`, new Tensor(Float32Array.from(beta.data, (b, j) => b / s[j]), beta.shape));
    layers.forEach((p, l) => {
      const w = layerWeights[l];
      replaced.set(p.weight!, new Tensor(Float32Array.from(w.data, (v, i) => v * s[i % channels]), w.shape));
    });
    norms.push({ norm, layers: layers.map((p) => p.name), rangeRatioBefore: rangeRatio(xMax), rangeRatioAfter: rangeRatio(Array.from(xMax, (x, j) => x / s[j])) });
  }
  const smoothed = overridden(weights, replaced);
  return { model: buildModel(model.spec, smoothed), weights: smoothed, norms };
}
