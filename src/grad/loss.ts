/**
 * The loss whose gradient weights PTQ4ViT's Hessian-guided metric. The paper approximates the Hessian
 * of the task loss by the squared gradient ∂L/∂O; the authors' code takes L = KL(FP ‖ current), whose
 * gradient is exactly zero at the FP32 model (it only works through float noise), so we use
 * well-defined cross-entropies instead:
 *  - 'label':  CE against the dataset's labels;
 *  - 'pseudo': CE against the FP32 model's own top-1 prediction (needs no labels);
 *  - 'fisher': CE against labels sampled from the model's softmax (an unbiased Fisher estimate), seeded.
 */
import { Ptq4vitError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';

export type LossKind = 'label' | 'pseudo' | 'fisher';
export const LOSS_KINDS: readonly LossKind[] = ['label', 'pseudo', 'fisher'];

/** Row-wise softmax of logits [B, K], in float64 for the loss. */
function softmaxRows(logits: Tensor): Float64Array {
  const [batch, classes] = logits.shape;
  const p = new Float64Array(logits.size);
  for (let b = 0; b < batch; b++) {
    const o = b * classes;
    let max = -Infinity;
    for (let k = 0; k < classes; k++) max = Math.max(max, logits.data[o + k]);
    let sum = 0;
    for (let k = 0; k < classes; k++) sum += p[o + k] = Math.exp(logits.data[o + k] - max);
    for (let k = 0; k < classes; k++) p[o + k] /= sum;
  }
  return p;
}

/** mulberry32: a tiny seeded PRNG, so 'fisher' targets are reproducible. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The class targets for a batch under the chosen loss. */
export function lossTargets(kind: LossKind, logits: Tensor, labels: Int32Array | null, random: () => number): Int32Array {
  const [batch, classes] = logits.shape;
  if (kind === 'label') {
    if (!labels || labels.length !== batch) throw new Ptq4vitError(`loss 'label' needs a label for each of the ${batch} calibration images`);
    return labels;
  }
  const p = softmaxRows(logits);
  const targets = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    if (kind === 'pseudo') {
      let best = 0;
      for (let k = 1; k < classes; k++) if (logits.data[b * classes + k] > logits.data[b * classes + best]) best = k;
      targets[b] = best;
    } else {
      let u = random(), k = 0;
      while (k < classes - 1 && (u -= p[b * classes + k]) > 0) k++;
      targets[b] = k;
    }
  }
  return targets;
}

/**
 * L = (1/N)·Σ_b CE(logits_b, target_b) over the whole calibration set of N images; for a chunk of it,
 * returns L's gradient with respect to the chunk's logits: (softmax − onehot)/N.
 */
export function crossEntropyGrad(logits: Tensor, targets: Int32Array, totalImages: number): { loss: number; grad: Tensor } {
  const [batch, classes] = logits.shape;
  const p = softmaxRows(logits);
  const grad = new Float32Array(logits.size);
  let loss = 0;
  for (let b = 0; b < batch; b++) {
    const t = targets[b];
    if (!(t >= 0 && t < classes)) throw new Ptq4vitError(`label ${t} is outside the model's ${classes} classes`);
    loss -= Math.log(Math.max(p[b * classes + t], 1e-300));
    for (let k = 0; k < classes; k++) grad[b * classes + k] = (p[b * classes + k] - (k === t ? 1 : 0)) / totalImages;
  }
  return { loss: loss / totalImages, grad: new Tensor(grad, logits.shape) };
}
