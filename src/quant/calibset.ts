/** Choosing and loading the calibration images. */
import { loadBatch, type Dataset, type SkippedImage } from '../data/datasets.js';
import { Ptq4vitError } from '../errors.js';
import { seededRandom } from '../grad/loss.js';
import type { Preprocess } from '../models/types.js';
import { Tensor } from '../tensor/tensor.js';

/**
 * The order in which calibration images are drawn: the dataset's own order when all of it is used
 * (so a 32-image calibration manifest is used as is), otherwise a seeded shuffle. The first `size`
 * entries are the sample; with --skip-unreadable, the following ones replace unreadable images.
 * Only indices are shuffled: nothing is read, so sampling a million-file folder costs milliseconds.
 */
function drawOrder(ds: Dataset, size: number, seed: number): number[] {
  if (size > ds.size) throw new Ptq4vitError(`calibration set ${ds.source} has ${ds.size} images, fewer than the ${size} requested (--calib-size)`);
  const all = Array.from({ length: ds.size }, (_, i) => i);
  if (size === ds.size) return all;
  const random = seededRandom(seed);
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all;
}

const ascending = (a: number, b: number): number => a - b;

/**
 * `size` dataset indices, sorted: all of them when the dataset has exactly `size` images, otherwise a
 * seeded random sample (sorted, because image folders are grouped by class and the first N would all
 * be one class). Same dataset listing, size and seed → same indices.
 */
export function calibrationIndices(ds: Dataset, size: number, seed: number): number[] {
  return drawOrder(ds, size, seed).slice(0, size).sort(ascending);
}

export interface CalibrationLoadOptions {
  /**
   * Replace an unreadable image by the next one in the seeded draw order (deterministic) instead of
   * failing with its name.
   */
  skipUnreadable?: boolean;
}

export interface CalibrationSet {
  /** [size, 3, S, S], rows in ascending dataset index order. */
  images: Tensor;
  /** The images' labels, or null when the dataset has none. */
  labels: Int32Array | null;
  /** Dataset indices of the rows, ascending. */
  indices: number[];
  /** Unreadable images that were replaced (only with skipUnreadable). */
  skipped: SkippedImage[];
}

export async function loadCalibration(ds: Dataset, size: number, seed: number, p: Preprocess, options: CalibrationLoadOptions = {}): Promise<CalibrationSet> {
  const order = drawOrder(ds, size, seed);
  const perImage = 3 * p.inputSize * p.inputSize;
  const rows = new Map<number, Float32Array>();
  const skipped: SkippedImage[] = [];
  let pending = order.slice(0, size), drawn = size;
  while (pending.length > 0) {
    const batch = await loadBatch(ds, pending.sort(ascending), p);
    batch.indices.forEach((index, row) => rows.set(index, batch.images.data.subarray(row * perImage, (row + 1) * perImage)));
    if (batch.skipped.length === 0) break;
    const first = batch.skipped[0];
    if (!options.skipUnreadable) {
      throw new Ptq4vitError(`calibration image ${first.file} is unreadable (${first.reason}); ${batch.skipped.length} of ${size} calibration images could not be read (--skip-unreadable replaces them)`);
    }
    skipped.push(...batch.skipped);
    if (drawn + batch.skipped.length > order.length) {
      throw new Ptq4vitError(`calibration set ${ds.source} has ${ds.size} images, but ${skipped.length} of those tried are unreadable (first: ${skipped[0].file}: ${skipped[0].reason}), leaving fewer than the ${size} requested (--calib-size)`);
    }
    pending = order.slice(drawn, drawn + batch.skipped.length);
    drawn += pending.length;
  }
  const indices = [...rows.keys()].sort(ascending);
  const images = new Float32Array(indices.length * perImage);
  indices.forEach((index, row) => images.set(rows.get(index)!, row * perImage));
  return {
    images: new Tensor(images, [indices.length, 3, p.inputSize, p.inputSize]),
    labels: ds.labeled ? Int32Array.from(indices, (i) => ds.label(i)) : null,
    indices,
    skipped: skipped.sort((a, b) => a.index - b.index),
  };
}
