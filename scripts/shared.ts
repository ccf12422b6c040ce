/**
 * The fixed inputs of the measurement scripts in ../shared (read-only; the product never needs it): the
 * bundled CIFAR-10 checkpoints with their cards, and the 32 calibration images every table uses.
 */
import path from 'node:path';
import { openDataset } from '../src/data/datasets.js';
import type { Preprocess } from '../src/models/types.js';
import { openModel, type LoadedModel } from '../src/open.js';
import { loadCalibration } from '../src/quant/calibset.js';

export const sharedDir = path.resolve('..', 'shared');

/** A checkpoint of ../shared/models (e.g. vit_tiny_c10) with its card. */
export function openSharedModel(name: string): LoadedModel {
  return openModel({ weights: path.join(sharedDir, 'models', `${name}.safetensors`), config: path.join(sharedDir, 'models', `${name}.json`) });
}

/** calib32 (all 32 images, seed 0) preprocessed as `preprocess` says, with the dataset it came from. */
export async function sharedCalib32(preprocess: Preprocess) {
  const dataset = await openDataset(path.join(sharedDir, 'data', 'cifar10', 'calib32.json'));
  return { dataset, ...(await loadCalibration(dataset, 32, 0, preprocess)) };
}

/** The class with the largest logit in row `row` of [rows, classes] logits (the first on ties). */
export function argmaxRow(logits: Float32Array, row: number, classes: number): number {
  let best = 0;
  for (let c = 1; c < classes; c++) if (logits[row * classes + c] > logits[row * classes + best]) best = c;
  return best;
}

/** Top-1 agreement with a reference run's logits and the mean KL(p_reference ‖ p_logits) of their softmaxes. */
export function againstReference(reference: Float32Array, logits: Float32Array, images: number, classes: number): { agree: number; kl: number } {
  const softmax = (l: Float32Array, r: number) => {
    const row = Array.from(l.subarray(r * classes, (r + 1) * classes));
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const z = e.reduce((s, v) => s + v, 0);
    return e.map((v) => v / z);
  };
  let agree = 0, kl = 0;
  for (let i = 0; i < images; i++) {
    if (argmaxRow(logits, i, classes) === argmaxRow(reference, i, classes)) agree++;
    const p = softmax(reference, i), q = softmax(logits, i);
    for (let c = 0; c < classes; c++) if (p[c] > 0) kl += p[c] * Math.log(p[c] / Math.max(q[c], 1e-30));
  }
  return { agree: agree / images, kl: kl / images };
}
