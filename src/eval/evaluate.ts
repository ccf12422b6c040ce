/** Top-1/top-5 evaluation over a dataset, batched, with the next batch decoded while this one runs. */
import { loadBatch, type Dataset, type SkippedImage } from '../data/datasets.js';
import type { VisionModel } from '../models/types.js';
import type { Runner } from '../tensor/runner.js';
import { fp32Runner } from '../tensor/runner.js';
import { concatFloat32 } from '../tensor/tensor.js';
import { Ptq4vitError } from '../errors.js';

export interface EvalOptions {
  limit?: number;
  batchSize?: number;
  runner?: Runner;
  /** Keep every image's logits (rows × classes) in the result. */
  keepLogits?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface EvalResult {
  top1: number;
  top5: number;
  images: number;
  seconds: number;
  imagesPerSecond: number;
  skipped: SkippedImage[];
  /** Dataset indices of the evaluated images, in logits row order (with keepLogits). */
  indices?: number[];
  logits?: Float32Array;
}

/**
 * Rank of the true label among the logits (0 = predicted). Ties count against the label, and a NaN
 * anywhere in the row makes the prediction wrong (a broken model must not score as correct).
 */
function rankOfLabel(logits: Float32Array, offset: number, classes: number, label: number): number {
  const target = logits[offset + label];
  if (Number.isNaN(target)) return classes;
  let rank = 0;
  for (let k = 0; k < classes; k++) {
    const v = logits[offset + k];
    if (Number.isNaN(v)) return classes;
    if (v > target || (v === target && k < label)) rank++;
  }
  return rank;
}

export async function evaluate(model: VisionModel, dataset: Dataset, options: EvalOptions = {}): Promise<EvalResult> {
  if (!dataset.labeled) throw new Ptq4vitError(`cannot evaluate on ${dataset.source}: it is ${dataset.description}, and top-1 needs labels`);
  const total = Math.min(options.limit ?? dataset.size, dataset.size);
  const batchSize = options.batchSize ?? 64;
  const runner = options.runner ?? fp32Runner;
  const classes = model.spec.arch.numClasses;
  const start = performance.now();
  const batches: number[][] = [];
  for (let s = 0; s < total; s += batchSize) batches.push(Array.from({ length: Math.min(batchSize, total - s) }, (_, i) => s + i));

  let top1 = 0, top5 = 0, seen = 0, done = 0;
  const skipped: SkippedImage[] = [];
  const keptLogits: Float32Array[] = [];
  const keptIndices: number[] = [];
  let next = batches.length > 0 ? loadBatch(dataset, batches[0], model.spec.preprocess) : null;
  for (let b = 0; b < batches.length; b++) {
    const batch = await next!;
    next = b + 1 < batches.length ? loadBatch(dataset, batches[b + 1], model.spec.preprocess) : null;
    skipped.push(...batch.skipped);
    if (batch.indices.length > 0) {
      const logits = await model.forward(batch.images, runner);
      for (let i = 0; i < batch.indices.length; i++) {
        const rank = rankOfLabel(logits.data, i * classes, classes, batch.labels[i]);
        if (rank === 0) top1++;
        if (rank < 5) top5++;
      }
      seen += batch.indices.length;
      if (options.keepLogits) {
        keptLogits.push(logits.data);
        keptIndices.push(...batch.indices);
      }
    }
    done += batches[b].length;
    options.onProgress?.(done, total);
  }
  const seconds = (performance.now() - start) / 1000;
  const result: EvalResult = {
    top1: seen ? top1 / seen : 0,
    top5: seen ? top5 / seen : 0,
    images: seen,
    seconds,
    imagesPerSecond: seen / seconds,
    skipped,
  };
  if (options.keepLogits) {
    result.logits = concatFloat32(keptLogits);
    result.indices = keptIndices;
  }
  return result;
}
