/** The small calibrations whose chosen parameters are frozen in test/assets/calib_reference.json. */
import type { Method } from '../src/quant/methods.js';

export interface FixtureJob {
  model: 'vit_tiny_c10' | 'swin_micro_c10';
  method: Method;
  bits: number;
  images: number;
  n: number;
  rounds: number;
}

export const calibrationFixtureJobs: FixtureJob[] = [
  { model: 'vit_tiny_c10', method: 'ptq4vit', bits: 8, images: 12, n: 8, rounds: 2 },
  { model: 'vit_tiny_c10', method: 'ptq4vit', bits: 6, images: 8, n: 8, rounds: 2 },
  { model: 'vit_tiny_c10', method: 'base', bits: 6, images: 12, n: 8, rounds: 1 },
  { model: 'swin_micro_c10', method: 'ptq4vit', bits: 8, images: 12, n: 8, rounds: 2 },
  { model: 'swin_micro_c10', method: 'base', bits: 8, images: 12, n: 8, rounds: 1 },
];
