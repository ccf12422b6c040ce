/**
 * timm's evaluation transform, as torchvision 0.14 executes it on a PIL image:
 * Resize(floor(S / cropPct)) of the shorter side → CenterCrop(S) → ToTensor → Normalize(mean, std).
 */
import type { HfImageProcessor, Preprocess } from '../models/types.js';
import type { RgbImage } from './decode.js';
import { resizeRgb } from './resize.js';
import { roundHalfEven } from '../numeric.js';

export { roundHalfEven };

/** The normalized image as float32 CHW, length 3·S·S with S = p.inputSize. */
export function evalTransform(img: RgbImage, p: Preprocess): Float32Array {
  if (p.hfProcessor) return hfProcessorTransform(img, p, p.hfProcessor);
  const scaleSize = Math.floor(p.inputSize / p.cropPct);
  const resized = resizeShorterSide(img, scaleSize, p.interpolation);
  const cropped = centerCrop(resized, p.inputSize);
  return normalizeToChw(cropped, p.mean, p.std);
}

/** torchvision's output size for an int `size`: the long side is truncated, not rounded. */
export function shorterSideSize(width: number, height: number, size: number): { width: number; height: number } {
  if (width <= height) return { width: size, height: Math.trunc((size * height) / width) };
  return { width: Math.trunc((size * width) / height), height: size };
}

export function resizeShorterSide(img: RgbImage, size: number, filter: Preprocess['interpolation']): RgbImage {
  const target = shorterSideSize(img.width, img.height, size);
  if (target.width === img.width && target.height === img.height) return img; // PIL returns a copy: no resampling
  return resizeRgb(img, target.width, target.height, filter);
}

/**
 * torchvision's center_crop: pad with black (extra pixel on the right/bottom) when the image is
 * smaller than the crop, then cut at round((size − crop) / 2) with Python's round-half-to-even.
 */
export function centerCrop(img: RgbImage, size: number): RgbImage {
  const padLeft = img.width < size ? Math.floor((size - img.width) / 2) : 0;
  const padTop = img.height < size ? Math.floor((size - img.height) / 2) : 0;
  const paddedWidth = Math.max(img.width, size);
  const paddedHeight = Math.max(img.height, size);
  const left = roundHalfEven((paddedWidth - size) / 2) - padLeft;
  const top = roundHalfEven((paddedHeight - size) / 2) - padTop;
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const sy = top + y;
    if (sy < 0 || sy >= img.height) continue;
    const x0 = Math.max(0, -left);
    const x1 = Math.min(size, img.width - left);
    if (x1 <= x0) continue;
    const from = (sy * img.width + left + x0) * 3;
    out.set(img.data.subarray(from, from + (x1 - x0) * 3), (y * size + x0) * 3);
  }
  return { width: size, height: size, data: out };
}

/**
 * ToTensor then Normalize in torch's float32 arithmetic: x/255 rounded to float32, then
 * (x − mean)/std with mean and std themselves float32. A 256-entry table per channel holds every result.
 */
export function normalizeToChw(img: RgbImage, mean: readonly number[], std: readonly number[]): Float32Array {
  const plane = img.width * img.height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const table = channelTable(mean[c], std[c]);
    for (let i = 0; i < plane; i++) out[c * plane + i] = table[img.data[3 * i + c]];
  }
  return out;
}

function channelTable(mean: number, std: number): Float32Array {
  const m = Math.fround(mean);
  const s = Math.fround(std);
  const table = new Float32Array(256);
  for (let v = 0; v < 256; v++) {
    const x = Math.fround(v / 255);
    table[v] = Math.fround(x - m) / s; // the Float32Array store rounds the quotient
  }
  return table;
}

/**
 * A transformers image processor (preprocessor_config.json, src/models/hfprocessor.ts) on a PIL RGB image:
 * PIL resize (a warp to height×width, or the shorter edge with the long edge truncated), center crop at the
 * floor offset (zero padding), x = uint8 · rescale_factor in float64 stored as float32, then (x − mean)/std
 * in float32 — transformers' numpy arithmetic, so the result equals its `pixel_values` bit for bit.
 */
export function hfProcessorTransform(img: RgbImage, p: Preprocess, steps: HfImageProcessor): Float32Array {
  let out = img;
  if (steps.resize) {
    const target = 'height' in steps.resize ? steps.resize : shorterSideSize(img.width, img.height, steps.resize.shortestEdge);
    if (target.width !== img.width || target.height !== img.height) out = resizeRgb(img, target.width, target.height, p.interpolation);
  }
  if (steps.centerCrop) out = floorCenterCrop(out, steps.centerCrop.height, steps.centerCrop.width);
  const plane = out.width * out.height;
  const result = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(p.mean[c]), s = Math.fround(p.std[c]);
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) {
      const x = steps.rescaleFactor === null ? v : Math.fround(v * steps.rescaleFactor);
      table[v] = steps.normalize ? Math.fround(x - m) / s : x;
    }
    for (let i = 0; i < plane; i++) result[c * plane + i] = table[out.data[3 * i + c]];
  }
  return result;
}

/** transformers' center_crop: top = (H − h) // 2, left = (W − w) // 2 (floor, negative when padding), zeros outside. */
function floorCenterCrop(img: RgbImage, height: number, width: number): RgbImage {
  const top = Math.floor((img.height - height) / 2), left = Math.floor((img.width - width) / 2);
  const out = new Uint8Array(height * width * 3);
  for (let y = 0; y < height; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= img.height) continue;
    for (let x = 0; x < width; x++) {
      const sx = x + left;
      if (sx < 0 || sx >= img.width) continue;
      const from = (sy * img.width + sx) * 3, to = (y * width + x) * 3;
      out[to] = img.data[from];
      out[to + 1] = img.data[from + 1];
      out[to + 2] = img.data[from + 2];
    }
  }
  return { width, height, data: out };
}
