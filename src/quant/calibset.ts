/** Choosing and loading the calibration images. */
import { loadBatch, type Dataset } from '../data/datasets.js';
import { Ptq4vitError } from '../errors.js';
import { seededRandom } from '../grad/loss.js';
import type { Preprocess } from '../models/types.js';
import type { Tensor } from '../tensor/tensor.js';

/**
 * The dataset itself when it has exactly `size` images (so a 32-image calibration manifest is used as
 * is, in order); otherwise a seeded random sample, sorted (image folders are grouped by class, so the
 * first N would all be one class).
 */
export function calibrationIndices(ds: Dataset, size: number, seed: number): number[] {
  if (size > ds.size) throw new Ptq4vitError(`calibration set ${ds.source} has ${ds.size} images, fewer than the ${size} requested (--calib-size)`);
  const all = Array.from({ length: ds.size }, (_, i) => i);
  if (size === ds.size) return all;
  const random = seededRandom(seed);
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, size).sort((a, b) => a - b);
}

export async function loadCalibration(ds: Dataset, size: number, seed: number, p: Preprocess): Promise<{ images: Tensor; labels: Int32Array; indices: number[] }> {
  const indices = calibrationIndices(ds, size, seed);
  const batch = await loadBatch(ds, indices, p);
  if (batch.skipped.length > 0) {
    const s = batch.skipped[0];
    throw new Ptq4vitError(`calibration image ${s.file} is unreadable (${s.reason}); ${batch.skipped.length} of ${size} calibration images could not be read`);
  }
  return { images: batch.images, labels: batch.labels, indices };
}
