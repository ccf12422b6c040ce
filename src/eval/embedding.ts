/**
 * Fidelity of a model without classifier (num_classes 0), whose output is an embedding used through cosine
 * similarity: how close the quantized embeddings stay to FP32 (per-image cosine: mean and 1st percentile)
 * and how well they still classify by nearest neighbours (k-NN top-1 on a labelled set).
 *
 * k-NN follows DINO's evaluation (Caron et al. 2021, eval_knn.py): cosine similarity to every training
 * embedding, the k = 20 most similar vote for their class with weight exp(s/0.07), the heaviest class wins.
 */
import { loadBatch, type Dataset, type SkippedImage } from '../data/datasets.js';
import { Ptq4vitError } from '../errors.js';
import type { VisionModel } from '../models/types.js';
import { fp32Runner, type Runner } from '../tensor/runner.js';
import { concatFloat32 } from '../tensor/tensor.js';

export const KNN_K = 20;
/** DINO's temperature for the neighbours' vote weights. */
export const KNN_TEMPERATURE = 0.07;

export interface Embeddings {
  /** [images, dim], row i = dataset item indices[i]. */
  data: Float32Array;
  dim: number;
  indices: number[];
  /** Class index per row (null for a dataset without labels). */
  labels: Int32Array | null;
  skipped: SkippedImage[];
  seconds: number;
}

/** The model's outputs for the first `limit` images of a dataset, batched, the next batch decoded while one runs. */
export async function embedDataset(model: VisionModel, dataset: Dataset, options: { limit?: number; batchSize?: number; runner?: Runner; onProgress?: (done: number, total: number) => void } = {}): Promise<Embeddings> {
  const total = Math.min(options.limit ?? dataset.size, dataset.size);
  const batchSize = options.batchSize ?? 64;
  const runner = options.runner ?? fp32Runner;
  const start = performance.now();
  const batches: number[][] = [];
  for (let s = 0; s < total; s += batchSize) batches.push(Array.from({ length: Math.min(batchSize, total - s) }, (_, i) => s + i));
  const rows: Float32Array[] = [], indices: number[] = [], labels: number[] = [], skipped: SkippedImage[] = [];
  let dim = 0, done = 0;
  let next = batches.length > 0 ? loadBatch(dataset, batches[0], model.spec.preprocess) : null;
  for (let b = 0; b < batches.length; b++) {
    const batch = await next!;
    next = b + 1 < batches.length ? loadBatch(dataset, batches[b + 1], model.spec.preprocess) : null;
    skipped.push(...batch.skipped);
    if (batch.indices.length > 0) {
      const out = await model.forward(batch.images, runner);
      dim = out.shape[1];
      rows.push(out.data);
      indices.push(...batch.indices);
      if (dataset.labeled) labels.push(...batch.labels);
    }
    done += batches[b].length;
    options.onProgress?.(done, total);
  }
  return { data: concatFloat32(rows), dim, indices, labels: dataset.labeled ? Int32Array.from(labels) : null, skipped, seconds: (performance.now() - start) / 1000 };
}

/** Rows scaled to unit length (float64 sums; a zero row stays zero). */
function normalizeRows(x: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let o = 0; o < x.length; o += dim) {
    let ss = 0;
    for (let d = 0; d < dim; d++) ss += x[o + d] * x[o + d];
    const inv = ss > 0 ? 1 / Math.sqrt(ss) : 0;
    for (let d = 0; d < dim; d++) out[o + d] = x[o + d] * inv;
  }
  return out;
}

export interface CosineFidelity {
  /** Mean over images of cos(e_quantized, e_fp32). */
  mean: number;
  /** 1st percentile (nearest rank) of the per-image cosines: the worst 1% of images. */
  p1: number;
  min: number;
  images: number;
}

/** Per-image cosine similarity between two embeddings of the same images (a NaN row counts as −1). */
export function cosineFidelity(a: Embeddings, b: Embeddings): CosineFidelity {
  if (a.dim !== b.dim || a.indices.length !== b.indices.length || a.indices.some((i, r) => b.indices[r] !== i)) {
    throw new Ptq4vitError(`cosine to the reference: the two models embedded different images or widths (${a.indices.length}×${a.dim} vs ${b.indices.length}×${b.dim})`);
  }
  const n = a.indices.length, dim = a.dim;
  if (n === 0) throw new Ptq4vitError('cosine to the reference: no image was embedded');
  const ua = normalizeRows(a.data, dim), ub = normalizeRows(b.data, dim);
  const cos = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let d = 0; d < dim; d++) dot += ua[i * dim + d] * ub[i * dim + d];
    cos[i] = Number.isNaN(dot) ? -1 : dot;
  }
  const sorted = Float64Array.from(cos).sort();
  return { mean: cos.reduce((s, c) => s + c, 0) / n, p1: sorted[Math.max(0, Math.ceil(0.01 * n) - 1)], min: sorted[0], images: n };
}

/**
 * k-NN top-1: each test embedding's k most cosine-similar training embeddings vote exp(s/T) for their
 * class; ties between classes go to the lower class index; a NaN similarity never counts as a neighbour.
 */
export function knnTop1(train: Embeddings, test: Embeddings, options: { k?: number; temperature?: number } = {}): number {
  const k = options.k ?? KNN_K, T = options.temperature ?? KNN_TEMPERATURE;
  if (!train.labels || !test.labels) throw new Ptq4vitError('k-NN top-1 needs labelled training and test images (one subfolder per class or a manifest)');
  if (train.dim !== test.dim) throw new Ptq4vitError(`k-NN: training embeddings have width ${train.dim}, test embeddings ${test.dim}`);
  const dim = train.dim, nTrain = train.indices.length, nTest = test.indices.length;
  if (nTrain === 0 || nTest === 0) throw new Ptq4vitError('k-NN: no training or no test image was embedded');
  const classes = Math.max(...train.labels, ...test.labels) + 1;
  const tr = normalizeRows(train.data, dim), te = normalizeRows(test.data, dim);
  const kk = Math.min(k, nTrain);
  const sims = new Float64Array(nTrain);
  const order = new Int32Array(nTrain);
  let correct = 0;
  for (let i = 0; i < nTest; i++) {
    for (let j = 0; j < nTrain; j++) {
      let dot = 0;
      for (let d = 0; d < dim; d++) dot += te[i * dim + d] * tr[j * dim + d];
      sims[j] = Number.isNaN(dot) ? -Infinity : dot;
      order[j] = j;
    }
    // The k largest, ties to the lower training index (a stable, deterministic order).
    const top = Array.from(order).sort((x, y) => sims[y] - sims[x] || x - y).slice(0, kk);
    const votes = new Float64Array(classes);
    for (const j of top) if (sims[j] > -Infinity) votes[train.labels[j]] += Math.exp(sims[j] / T);
    let best = 0;
    for (let c = 1; c < classes; c++) if (votes[c] > votes[best]) best = c;
    if (votes[best] > 0 && best === test.labels[i]) correct++;
  }
  return correct / nTest;
}
