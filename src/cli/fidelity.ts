/**
 * What `eval` and `quantize --eval` report for a model without classifier: the per-image cosine of its
 * embeddings to a reference's (FP32), and k-NN top-1 of both with a labelled training set as neighbours.
 */
import type { Dataset } from '../data/datasets.js';
import { Ptq4vitError } from '../errors.js';
import { cosineFidelity, embedDataset, KNN_K, knnTop1, type CosineFidelity, type Embeddings } from '../eval/embedding.js';
import type { Runner, VisionModel } from '../models/types.js';
import { percent } from './describe.js';
import { ProgressBar } from './progress.js';

export interface EmbeddingFidelity {
  images: number;
  seconds: number;
  /** Cosine of the model's embeddings to the reference's, per image (null without a reference). */
  cosine: CosineFidelity | null;
  /** k-NN top-1 of the model and of the reference (null without labelled neighbours). */
  knn: { top1: number; referenceTop1: number | null; k: number; trainImages: number; trainSource: string } | null;
  skipped: number;
}

interface Embedder {
  model: VisionModel;
  runner?: Runner;
  /** For progress lines: "FP32", "PTQ4ViT W8A8"… */
  label: string;
}

/**
 * Embed `data` (and `knnTrain`) with the model and the reference. The reference is FP32 (a quantized
 * file's own float weights, or --reference); k-NN needs `data` and `knnTrain` labelled.
 */
export async function embeddingFidelity(
  models: { model: Embedder; reference: Embedder | null },
  data: Dataset,
  knnTrain: Dataset | null,
  options: { limit?: number; batchSize?: number; quiet: boolean },
): Promise<EmbeddingFidelity> {
  if (knnTrain && !data.labeled) throw new Ptq4vitError(`k-NN top-1 needs labels, but ${data.source} has none: it is ${data.description}`);
  if (knnTrain && !knnTrain.labeled) throw new Ptq4vitError(`k-NN top-1 needs labelled neighbours, but ${knnTrain.source} has none: it is ${knnTrain.description}`);
  if (knnTrain && data.labeled && knnTrain.classes.length !== data.classes.length) {
    throw new Ptq4vitError(`${knnTrain.source} has ${knnTrain.classes.length} classes but ${data.source} has ${data.classes.length}: k-NN labels are class indices in each dataset's order`);
  }
  const start = performance.now();
  const run = async (e: Embedder, ds: Dataset, what: string, limit?: number): Promise<Embeddings> => {
    const bar = new ProgressBar(`embed ${what} (${e.label})`, Math.min(limit ?? ds.size, ds.size), { quiet: options.quiet });
    return embedDataset(e.model, ds, { limit, batchSize: options.batchSize, runner: e.runner, onProgress: (d) => bar.update(d) });
  };
  const test = await run(models.model, data, 'eval set', options.limit);
  const ref = models.reference ? await run(models.reference, data, 'eval set', options.limit) : null;
  let knn: EmbeddingFidelity['knn'] = null;
  if (knnTrain) {
    const train = await run(models.model, knnTrain, 'k-NN neighbours');
    const refTrain = models.reference ? await run(models.reference, knnTrain, 'k-NN neighbours') : null;
    knn = { top1: knnTop1(train, test), referenceTop1: refTrain && ref ? knnTop1(refTrain, ref) : null, k: KNN_K, trainImages: train.indices.length, trainSource: knnTrain.source };
  }
  return { images: test.indices.length, seconds: (performance.now() - start) / 1000, cosine: ref ? cosineFidelity(test, ref) : null, knn, skipped: test.skipped.length };
}

export function fidelityRows(f: EmbeddingFidelity, names: { model: string; reference: string } = { model: 'quantized', reference: 'FP32' }): [string, string][] {
  const rows: [string, string][] = [];
  if (f.cosine) rows.push([`cosine to ${names.reference}`, `mean ${f.cosine.mean.toFixed(5)}, 1st percentile ${f.cosine.p1.toFixed(5)}, min ${f.cosine.min.toFixed(5)} (${f.cosine.images} images)`]);
  if (f.knn) {
    const ref = f.knn.referenceTop1;
    const beside = ref === null ? '' : `  (${names.reference} ${percent(ref)}, ${((f.knn.top1 - ref) * 100).toFixed(2)} points)`;
    rows.push([`k-NN top-1`, `${percent(f.knn.top1)}${beside}; k = ${f.knn.k}, cosine, ${f.knn.trainImages} neighbours from ${f.knn.trainSource}`]);
  }
  rows.push(['images', `${f.images}${f.skipped ? ` (${f.skipped} unreadable skipped)` : ''}`]);
  return rows;
}

/** The --json fields (snake_case, as the other reports). */
export function fidelityJson(f: EmbeddingFidelity): Record<string, unknown> {
  return {
    embedding: true,
    eval_images: f.images,
    ...(f.cosine ? { cosine_mean: f.cosine.mean, cosine_p1: f.cosine.p1, cosine_min: f.cosine.min } : {}),
    ...(f.knn ? { knn_top1: f.knn.top1, reference_knn_top1: f.knn.referenceTop1, knn_k: f.knn.k, knn_train_images: f.knn.trainImages } : {}),
  };
}
