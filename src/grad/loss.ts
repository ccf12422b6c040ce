/**
 * The loss whose gradient weights PTQ4ViT's Hessian-guided metric. The paper approximates the Hessian
 * of the task loss by the squared gradient ∂L/∂O; the authors' code takes L = KL(FP ‖ current), whose
 * gradient is exactly zero at the FP32 model (it only works through float noise), so we use
 * well-defined cross-entropies instead:
 *  - 'label':  CE against the dataset's labels;
 *  - 'pseudo': CE against the FP32 model's own top-1 prediction (needs no labels);
 *  - 'fisher': CE against labels sampled from the model's softmax (an unbiased Fisher estimate), seeded.
 *
 * A model without classifier (num_classes 0) outputs an embedding e (used through cosine similarity:
 * retrieval, k-NN, deduplication). A distance to the FP32 embedding has a zero gradient at the FP32 point,
 * so the two embedding losses take other routes to a non-zero, honest ∂L/∂O:
 *  - 'projection': L = (1/N)·Σ_b u_bᵀ·ê_b with ê = e/‖e‖ and u_b ~ N(0, I) drawn per image (seeded). Then
 *    g = ∂L/∂O = J_bᵀ·u_b/N with J_b = ∂ê_b/∂O, and E[g²] = diag(J_bᵀ·J_b)/N²: the metric's Σ g²·ΔO² is an
 *    unbiased (Hutchinson) estimate of the Gauss–Newton term ½‖ê(Ô) − ê(O)‖² ≈ ½ ΔOᵀ·JᵀJ·ΔO on the
 *    diagonal — the second-order error of the normalized embedding, i.e. of 1 − cos(e_q, e_fp32). The
 *    per-image form (gᵀ·ΔO)² that mixed precision scores with is unbiased for the whole quadratic ‖J·ΔO‖².
 *  - 'contrastive': CE over cosine similarities to the FP32 embeddings f_j of all N calibration images,
 *    the image's own embedding as its label (the pseudo-label of a retrieval model, argmax at FP32):
 *    L = (1/N)·Σ_b −log softmax_j(cos(e_b, f_j)/τ)[b], τ = 0.1. Other images keep softmax < 1, so the
 *    gradient at the FP32 point is non-zero and weights the directions that would confuse neighbours.
 */
import { Ptq4vitError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';

export type ClassifierLoss = 'label' | 'pseudo' | 'fisher';
export type EmbeddingLoss = 'projection' | 'contrastive';
export type LossKind = ClassifierLoss | EmbeddingLoss;
export const CLASSIFIER_LOSSES: readonly ClassifierLoss[] = ['label', 'pseudo', 'fisher'];
/** Losses for a model without classifier (its output is the embedding). */
export const EMBEDDING_LOSSES: readonly EmbeddingLoss[] = ['projection', 'contrastive'];
export const LOSS_KINDS: readonly LossKind[] = [...CLASSIFIER_LOSSES, ...EMBEDDING_LOSSES];

export function isEmbeddingLoss(kind: LossKind): kind is EmbeddingLoss {
  return (EMBEDDING_LOSSES as readonly string[]).includes(kind);
}

/** Temperature of the 'contrastive' loss (SimCLR's 0.1): cosines in [-1, 1] become logits in [-10, 10]. */
export const CONTRASTIVE_TEMPERATURE = 0.1;

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

/** A standard normal draw from the seeded uniform stream (Box–Muller). */
function gaussian(random: () => number): number {
  const u = 1 - random(); // (0, 1]: log(u) is finite
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/** Row b of [B, D] normalized in float64, and its norm (0 rows stay 0). */
function unitRows(x: Float32Array, rows: number, dim: number): { unit: Float64Array; norms: Float64Array } {
  const unit = new Float64Array(rows * dim), norms = new Float64Array(rows);
  for (let b = 0; b < rows; b++) {
    let ss = 0;
    for (let d = 0; d < dim; d++) ss += x[b * dim + d] ** 2;
    const n = (norms[b] = Math.sqrt(ss));
    if (n > 0) for (let d = 0; d < dim; d++) unit[b * dim + d] = x[b * dim + d] / n;
  }
  return { unit, norms };
}

/**
 * 'projection' for a chunk of embeddings [B, D]: ∂L/∂e_b = (I − ê_b·ê_bᵀ)·u_b / (‖e_b‖·N), u_b ~ N(0, I)
 * drawn from `random` in image order (so the same seed gives the same directions for any chunk size).
 */
export function projectionGrad(embeddings: Tensor, totalImages: number, random: () => number): { loss: number; grad: Tensor } {
  const [batch, dim] = embeddings.shape;
  const { unit, norms } = unitRows(embeddings.data, batch, dim);
  const grad = new Float32Array(embeddings.size);
  const u = new Float64Array(dim);
  let loss = 0;
  for (let b = 0; b < batch; b++) {
    let along = 0;
    for (let d = 0; d < dim; d++) along += (u[d] = gaussian(random)) * unit[b * dim + d];
    loss += along / totalImages;
    if (norms[b] === 0) continue;
    for (let d = 0; d < dim; d++) grad[b * dim + d] = (u[d] - along * unit[b * dim + d]) / (norms[b] * totalImages);
  }
  return { loss, grad: new Tensor(grad, embeddings.shape) };
}

/**
 * 'contrastive' for a chunk of embeddings [B, D] holding images first…first+B−1 of the calibration set,
 * against `references` [N, D] (the FP32 embeddings of all N images). With s_bj = cos(e_b, f_j) and
 * p_b = softmax_j(s_bj/τ): ∂L/∂e_b = Σ_j (p_bj − [j = b])·(f̂_j − s_bj·ê_b) / (τ·N·‖e_b‖).
 */
export function contrastiveGrad(embeddings: Tensor, references: Tensor, first: number): { loss: number; grad: Tensor } {
  const [batch, dim] = embeddings.shape;
  const total = references.shape[0];
  if (references.shape[1] !== dim) throw new Ptq4vitError(`contrastive loss: reference embeddings have width ${references.shape[1]}, the model gives ${dim}`);
  const tau = CONTRASTIVE_TEMPERATURE;
  const e = unitRows(embeddings.data, batch, dim);
  const f = unitRows(references.data, total, dim).unit;
  const grad = new Float32Array(embeddings.size);
  const sims = new Float64Array(total), p = new Float64Array(total);
  let loss = 0;
  for (let b = 0; b < batch; b++) {
    const self = first + b;
    let max = -Infinity;
    for (let j = 0; j < total; j++) {
      let dot = 0;
      for (let d = 0; d < dim; d++) dot += e.unit[b * dim + d] * f[j * dim + d];
      sims[j] = dot;
      max = Math.max(max, dot / tau);
    }
    let sum = 0;
    for (let j = 0; j < total; j++) sum += p[j] = Math.exp(sims[j] / tau - max);
    for (let j = 0; j < total; j++) p[j] /= sum;
    loss -= Math.log(Math.max(p[self], 1e-300)) / total;
    if (e.norms[b] === 0) continue;
    const scale = 1 / (tau * total * e.norms[b]);
    const row = new Float64Array(dim);
    for (let j = 0; j < total; j++) {
      const w = (p[j] - (j === self ? 1 : 0)) * scale;
      if (w === 0) continue;
      for (let d = 0; d < dim; d++) row[d] += w * (f[j * dim + d] - sims[j] * e.unit[b * dim + d]);
    }
    grad.set(row, b * dim);
  }
  return { loss, grad: new Tensor(grad, embeddings.shape) };
}
