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
