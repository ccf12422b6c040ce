/**
 * Resampling a grid of position embeddings, as torch's `F.interpolate(mode='bicubic', align_corners=False)` does
 * it on a [1, D, H, W] tensor — with and without `antialias`, and with an explicit `scale_factor`:
 *
 *   antialias = false  (torch's upsample_bicubic2d): source coordinate s = (dst + 0.5)·r − 0.5 with
 *                      r = 1/scale_factor if given, else in/out; 4 taps at floor(s) − 1 … floor(s) + 2, indices
 *                      clamped to the border, Keys' cubic with a = −0.75.
 *   antialias = true   (torch's _upsample_bicubic2d_aa, PIL's resampling): centre c = (dst + 0.5)·r; the kernel is
 *                      widened by r when downscaling (support 2·max(r, 1)), Keys' cubic with a = −0.5, taps cut at
 *                      the border and the weights renormalized to sum 1; width pass first, then height.
 *
 * So antialias on and off differ even when upscaling (a = −0.5 vs −0.75, renormalized vs clamped borders); in the
 * interior of an upscale the antialiased result equals the plain one computed with a = −0.5.
 * Arithmetic is float32 as torch's CPU kernels for float32 tensors (scale and coordinates in float32).
 *
 * Used by transformers' Dinov2 (its `interpolate_pos_encoding`, scale_factor (g + 0.1)/g0) and by timm's
 * `resample_abs_pos_embed` (size, antialias = true) for `--img-size`.
 */
import { Ptq4vitError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';
import { MAX_IMG_SIZE, MAX_VIT_TOKENS } from './config.js';
import { isVitArch, type ModelSpec } from './types.js';
import { vitVariant } from './vit.js';
import type { TensorSource } from './weights.js';

export interface BicubicOptions {
  /** Output grid [height, width]. */
  size: [number, number];
  antialias: boolean;
  /** F.interpolate's scale_factor per axis: when given, the coordinate map uses 1/scale_factor instead of in/out. */
  scaleFactor?: [number, number];
  /** Keys' cubic parameter; torch: −0.75 without antialias, −0.5 with (the default for each). */
  a?: number;
}

/** One output position: the input indices it reads and their weights. */
interface Taps {
  index: Int32Array;
  weight: Float32Array;
}

const f = Math.fround;

/** Keys' cubic convolution kernel, torch's cubic_convolution1/2 evaluation order. */
function cubic(x: number, a: number): number {
  x = f(Math.abs(x));
  if (x < 1) return f(f(f(f(f(f(a + 2) * x) - (a + 3)) * x) * x) + 1);
  if (x < 2) return f(f(f(f(f(f(a * x) - 5 * a) * x) + 8 * a) * x) - 4 * a);
  return 0;
}

/** area_pixel_compute_scale (align_corners = false), in float32. */
function axisScale(inSize: number, outSize: number, scaleFactor?: number): number {
  return scaleFactor !== undefined && scaleFactor > 0 ? f(1 / scaleFactor) : f(inSize / outSize);
}

function plainTaps(inSize: number, outSize: number, a: number, scaleFactor?: number): Taps[] {
  const r = axisScale(inSize, outSize, scaleFactor);
  return Array.from({ length: outSize }, (_, i) => {
    const real = f(f(r * f(i + 0.5)) - 0.5);
    const idx = Math.min(Math.floor(real), inSize - 1);
    const t = Math.min(Math.max(f(real - idx), 0), 1);
    const weight = Float32Array.of(cubic(t + 1, a), cubic(t, a), cubic(f(1 - t), a), cubic(f(f(1 - t) + 1), a));
    const index = Int32Array.from([-1, 0, 1, 2], (d) => Math.max(Math.min(idx + d, inSize - 1), 0));
    return { index, weight };
  });
}

function antialiasTaps(inSize: number, outSize: number, a: number, scaleFactor?: number): Taps[] {
  const r = axisScale(inSize, outSize, scaleFactor);
  const support = r >= 1 ? f(2 * r) : 2;
  const invScale = r >= 1 ? f(1 / r) : 1;
  return Array.from({ length: outSize }, (_, i) => {
    const center = f(r * f(i + 0.5));
    const lo = Math.max(Math.trunc(f(center - support) + 0.5), 0);
    const hi = Math.min(Math.trunc(f(center + support) + 0.5), inSize);
    const raw = Array.from({ length: hi - lo }, (_, j) => cubic((f(f(j + lo) - center) + 0.5) * invScale, a));
    const total = raw.reduce((s, w) => f(s + w), 0);
    return { index: Int32Array.from(raw, (_, j) => lo + j), weight: Float32Array.from(raw, (w) => (total !== 0 ? w / total : w)) };
  });
}

/**
 * Resample `grid` [H·W, D] (tokens in row-major grid order, channels last — a position-embedding table) to
 * [h·w, D] with torch's bicubic interpolation.
 */
export function interpolateBicubic(grid: Tensor, from: [number, number], options: BicubicOptions): Tensor {
  const [H, W] = from;
  const [h, w] = options.size;
  if (grid.rank !== 2 || grid.shape[0] !== H * W) throw new Ptq4vitError(`position grid: expected [${H * W}, D] for a ${H}×${W} grid, got [${grid.shape.join(', ')}]`);
  if (!(Number.isInteger(h) && Number.isInteger(w) && h > 0 && w > 0)) throw new Ptq4vitError(`position grid: invalid output size ${h}×${w}`);
  const D = grid.shape[1];
  const a = options.a ?? (options.antialias ? -0.5 : -0.75);
  const taps = options.antialias ? antialiasTaps : plainTaps;
  const rows = taps(H, h, a, options.scaleFactor?.[0]);
  const cols = taps(W, w, a, options.scaleFactor?.[1]);
  // torch's antialiased kernel returns the input when the size does not change; the plain kernel at r = 1 is exact too.
  if (options.antialias && H === h && W === w) return new Tensor(grid.data.slice(), [H * W, D]);
  // Width pass, then height pass, each accumulated in float32 tap by tap (torch: horizontal first).
  const src = grid.data;
  const mid = new Float32Array(H * w * D);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < w; x++) {
      const { index, weight } = cols[x];
      const o = (y * w + x) * D;
      for (let c = 0; c < D; c++) {
        let t = 0;
        for (let k = 0; k < index.length; k++) t = f(t + f(src[(y * W + index[k]) * D + c] * weight[k]));
        mid[o + c] = t;
      }
    }
  }
  const out = new Float32Array(h * w * D);
  for (let y = 0; y < h; y++) {
    const { index, weight } = rows[y];
    for (let x = 0; x < w; x++) {
      const o = (y * w + x) * D;
      for (let c = 0; c < D; c++) {
        let t = 0;
        for (let k = 0; k < index.length; k++) t = f(t + f(mid[(index[k] * w + x) * D + c] * weight[k]));
        out[o + c] = t;
      }
    }
  }
  return new Tensor(out, [h * w, D]);
}

/**
 * timm's `resample_abs_pos_embed`: keep the `numPrefix` leading tokens (cls, dist; 0 with no_embed_class), resample
 * the square patch grid to `newGrid` × `newGrid` (bicubic, antialias = true), put the prefix back. [N, D] → [N', D].
 */
export function resampleAbsPosEmbed(posEmbed: Tensor, numPrefix: number, newGrid: number): Tensor {
  const [N, D] = posEmbed.shape;
  const old = Math.round(Math.sqrt(N - numPrefix));
  if (old * old !== N - numPrefix) throw new Ptq4vitError(`pos_embed: ${N - numPrefix} patch positions do not form a square grid`);
  if (old === newGrid) return posEmbed;
  const patches = new Tensor(posEmbed.data.slice(numPrefix * D), [old * old, D]);
  const resampled = interpolateBicubic(patches, [old, old], { size: [newGrid, newGrid], antialias: true });
  const out = new Float32Array((numPrefix + newGrid * newGrid) * D);
  out.set(posEmbed.data.subarray(0, numPrefix * D));
  out.set(resampled.data, numPrefix * D);
  return new Tensor(out, [numPrefix + newGrid * newGrid, D]);
}

/**
 * `--img-size N`: the same timm model at another input size, as timm builds it (`create_model(…, img_size=N)` with
 * the checkpoint's pos_embed through `resample_abs_pos_embed`): a ViT's absolute position embeddings resampled to
 * the new patch grid (prefix tokens kept), a Swin v1 rebuilt for the new grid (its relative position tables do not
 * depend on it). The preprocessing keeps its crop_pct at the new size.
 */
export function withInputSize(spec: ModelSpec, weights: TensorSource, imgSize: number): { spec: ModelSpec; weights: TensorSource } {
  const a = spec.arch;
  if (!(Number.isInteger(imgSize) && imgSize > 0 && imgSize <= MAX_IMG_SIZE)) throw new Ptq4vitError(`--img-size must be an integer from 1 to ${MAX_IMG_SIZE}, got ${imgSize}`);
  if (imgSize % a.patchSize !== 0) throw new Ptq4vitError(`--img-size ${imgSize} is not a multiple of ${spec.name}'s patch size ${a.patchSize}`);
  const resized: ModelSpec = { ...spec, arch: { ...a, imgSize }, preprocess: { ...spec.preprocess, inputSize: imgSize } };
  // Swin v1/v2: the relative position tables depend on the window only (v2 recomputes its continuous bias from it).
  if (a.family === 'swin' || a.family === 'swinv2' || imgSize === a.imgSize) return { spec: resized, weights };
  if (!isVitArch(a)) {
    const why = a.family === 'mixer' ? "its token-mixing MLP is as wide as the checkpoint's patch count" : "its relative position bias tables are sized for the checkpoint's patch grid (resampling them is not implemented)";
    throw new Ptq4vitError(`--img-size ${imgSize}: ${spec.name} is a ${a.family} model and ${why}; ViT and Swin models take another input size`);
  }
  const grid = imgSize / a.patchSize;
  if (grid * grid > MAX_VIT_TOKENS) throw new Ptq4vitError(`--img-size ${imgSize} / patch size ${a.patchSize} gives ${grid * grid} patches, more than the ${MAX_VIT_TOKENS} supported`);
  // timm: num_prefix_tokens = 0 with no_embed_class (pos_embed covers the patches only), else cls (+ dist) + registers.
  const v = vitVariant(a);
  const numPrefix = v.noEmbedClass ? 0 : (v.classToken ? 1 : 0) + (a.family === 'deit-distilled' ? 1 : 0) + v.regTokens;
  const source: TensorSource = {
    file: weights.file,
    names: () => weights.names(),
    tensor(name, shape) {
      if (name !== 'pos_embed') return weights.tensor(name, shape);
      const oldTokens = numPrefix + (a.imgSize / a.patchSize) ** 2;
      const stored = weights.tensor(name, [1, oldTokens, a.embedDim]);
      const out = resampleAbsPosEmbed(stored.reshape([oldTokens, a.embedDim]), numPrefix, grid);
      return out.reshape([1, out.shape[0], a.embedDim]);
    },
  };
  return { spec: resized, weights: source };
}
