/**
 * ∂L/∂O at every quantization point over a calibration set. Each image's loss term depends only on
 * that image (no batch statistics in a ViT), so the set is processed in chunks: the tape of one chunk
 * is all that is held at once, which bounds memory by the chunk size, not the calibration size.
 */
import { Ptq4vitError } from '../errors.js';
import { isEmbeddingModel, type Runner, type VisionModel } from '../models/types.js';
import { concatFloat32, Tensor } from '../tensor/tensor.js';
import { contrastiveGrad, crossEntropyGrad, EMBEDDING_LOSSES, isEmbeddingLoss, lossTargets, projectionGrad, seededRandom, type LossKind } from './loss.js';
import { Tape, type GradientSink } from './tape.js';

export interface GradientOptions {
  loss: LossKind;
  /** Images per backward pass (memory ∝ chunk size). */
  chunkSize?: number;
  seed?: number;
  /** Computes the forward values at the quantization points (default float32), e.g. to observe them. */
  runner?: Runner;
  /**
   * Only these points' gradients are wanted (asked once per chunk, after its forward pass): the sink sees
   * only them and each backward pass stops once it has passed all of them. Default: every point.
   */
  points?: () => ReadonlySet<string>;
  /** Called before a chunk's forward pass ('start') and after its backward pass ('done'). */
  onChunk?: (chunk: ImageRange, stage: 'start' | 'done') => void;
}

/** Which calibration images a chunk holds: every tensor the sink sees covers `count` images from `start`. */
export interface ImageRange {
  start: number;
  count: number;
}

/**
 * Run forward + backward over `images` chunk by chunk; `sink(chunk, point, ∂L/∂O, O, inputs)` is called
 * for every (wanted) quantization point of every chunk. Returns the loss L over the whole set.
 */
export async function computeGradients(
  model: VisionModel,
  images: Tensor,
  labels: Int32Array | null,
  options: GradientOptions,
  sink: (chunk: ImageRange, ...args: Parameters<GradientSink>) => void | Promise<void>,
): Promise<number> {
  const total = images.shape[0];
  const chunk = options.chunkSize ?? 8;
  const random = seededRandom(options.seed ?? 0);
  checkLossFits(model, options.loss);
  const references = options.loss === 'contrastive' ? await fp32Embeddings(model, images, chunk) : null;
  let loss = 0;
  for (let start = 0; start < total; start += chunk) {
    const end = Math.min(total, start + chunk);
    const range = { start, count: end - start };
    options.onChunk?.(range, 'start');
    const tape = new Tape(options.runner);
    const output = await model.forward(images.rows(start, end), tape);
    const { loss: chunkLoss, grad } = options.loss === 'projection'
      ? projectionGrad(output, total, random)
      : references
        ? contrastiveGrad(output, references, start)
        : crossEntropyGrad(output, lossTargets(options.loss, output, labels ? labels.subarray(start, end) : null, random), total);
    loss += chunkLoss;
    await tape.backward(output, grad, (point, g, out, inputs) => sink(range, point, g, out, inputs), { points: options.points?.() });
    options.onChunk?.(range, 'done');
  }
  return loss;
}

/** Cross-entropies need logits, the embedding losses an embedding: refuse the mismatch with the way out. */
function checkLossFits(model: VisionModel, loss: LossKind): void {
  const embedding = isEmbeddingModel(model.spec.arch);
  if (embedding && !isEmbeddingLoss(loss)) {
    throw new Ptq4vitError(`loss '${loss}' needs a classifier, but ${model.spec.name} has none (num_classes 0, its output is the embedding): use ${EMBEDDING_LOSSES.map((l) => `'${l}'`).join(' or ')}`);
  }
  if (!embedding && isEmbeddingLoss(loss)) {
    throw new Ptq4vitError(`loss '${loss}' is for models without classifier, but ${model.spec.name} outputs ${model.spec.arch.numClasses} logits: use 'label', 'pseudo' or 'fisher'`);
  }
}

/**
 * The FP32 embeddings of every calibration image (the 'contrastive' loss's references), computed once per
 * images tensor and model: calibration asks for gradients once per group of points.
 */
const referenceCache = new WeakMap<Tensor, { model: VisionModel; embeddings: Tensor }>();

async function fp32Embeddings(model: VisionModel, images: Tensor, chunk: number): Promise<Tensor> {
  const cached = referenceCache.get(images);
  if (cached && cached.model === model) return cached.embeddings;
  const rows: Float32Array[] = [];
  let dim = 0;
  for (let start = 0; start < images.shape[0]; start += chunk) {
    const out = await model.forward(images.rows(start, Math.min(images.shape[0], start + chunk)));
    dim = out.shape[1];
    rows.push(out.data);
  }
  const embeddings = new Tensor(concatFloat32(rows), [images.shape[0], dim]);
  referenceCache.set(images, { model, embeddings });
  return embeddings;
}
