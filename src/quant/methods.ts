/**
 * The two methods of the paper as search settings:
 *  - base:    Base PTQ — cosine metric, no twin, Δ ∈ [0.5, 1.2]·Δ_maxabs, 100 steps, 1 round;
 *  - ptq4vit: Hessian-guided metric, twin softmax and twin GELU, Δ ∈ [0.01, 1.2]·Δ_maxabs, 100 steps, 3 rounds.
 * Each ingredient can be switched off on its own (the paper's ablation).
 */
import type { LossKind } from '../grad/loss.js';
import type { CalibrationOptions } from './calibrate.js';

export type Method = 'ptq4vit' | 'base';
export const METHODS: readonly Method[] = ['ptq4vit', 'base'];

export interface MethodOverrides {
  weightBits: number;
  activationBits: number;
  alpha?: number;
  beta?: number;
  n?: number;
  rounds?: number;
  hessian?: boolean;
  twinSoftmax?: boolean;
  twinGelu?: boolean;
  geluAligned?: boolean;
  softmaxDeltaR2?: 'paper' | 'exact-one';
  loss?: LossKind;
  seed?: number;
  chunkSize?: number;
}

/** Default loss for the Hessian weights (see RESULTS.md, "choice of loss"). */
export const DEFAULT_LOSS: LossKind = 'label';
/** Default loss for a model without classifier (num_classes 0); see RESULTS.md, "backbones". */
export const DEFAULT_EMBEDDING_LOSS: LossKind = 'projection';

export function methodConfig(method: Method, o: MethodOverrides): CalibrationOptions {
  const ptq4vit = method === 'ptq4vit';
  return {
    metric: (o.hessian ?? ptq4vit) ? 'hessian' : 'cosine',
    alpha: o.alpha ?? (ptq4vit ? 0.01 : 0.5),
    beta: o.beta ?? 1.2,
    n: o.n ?? 100,
    rounds: o.rounds ?? (ptq4vit ? 3 : 1),
    weightBits: o.weightBits,
    activationBits: o.activationBits,
    twinSoftmax: o.twinSoftmax ?? ptq4vit,
    twinGelu: o.twinGelu ?? ptq4vit,
    geluAligned: o.geluAligned ?? true,
    softmaxDeltaR2: o.softmaxDeltaR2 ?? 'paper',
    loss: o.loss ?? DEFAULT_LOSS,
    seed: o.seed ?? 0,
    chunkSize: o.chunkSize,
  };
}
