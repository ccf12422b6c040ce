import { Tensor, shapeString } from './tensor.js';

/**
 * Unfold an NCHW image batch into non-overlapping p×p patches, [B, (H/p)·(W/p), C·p·p], each patch
 * in (c, ky, kx) order. A stride-p, kernel-p conv is then a linear layer over this, with the conv
 * weight [D, C, p, p] read as [D, C·p·p] — which is how the patch embedding is quantized.
 */
export function unfoldPatches(images: Tensor, patch: number): Tensor {
  const [batch, channels, height, width] = images.shape;
  if (images.rank !== 4 || height % patch !== 0 || width % patch !== 0) {
    throw new Error(`unfoldPatches: ${shapeString(images.shape)} is not divisible into ${patch}×${patch} patches`);
  }
  const gridH = height / patch, gridW = width / patch;
  const patchSize = channels * patch * patch;
  const out = new Float32Array(images.size);
  const src = images.data;
  let k = 0;
  for (let b = 0; b < batch; b++) {
    for (let gy = 0; gy < gridH; gy++) {
      for (let gx = 0; gx < gridW; gx++) {
        for (let c = 0; c < channels; c++) {
          for (let ky = 0; ky < patch; ky++) {
            let idx = ((b * channels + c) * height + gy * patch + ky) * width + gx * patch;
            for (let kx = 0; kx < patch; kx++) out[k++] = src[idx++];
          }
        }
      }
    }
  }
  return new Tensor(out, [batch, gridH * gridW, patchSize]);
}
