/**
 * ∂L/∂O at every quantization point over a calibration set. Each image's loss term depends only on
 * that image (no batch statistics in a ViT), so the set is processed in chunks: the tape of one chunk
 * is all that is held at once, which bounds memory by the chunk size, not the calibration size.
 */
import type { Runner, VisionModel } from '../models/types.js';
import type { Tensor } from '../tensor/tensor.js';
import { crossEntropyGrad, lossTargets, seededRandom, type LossKind } from './loss.js';
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
  let loss = 0;
  for (let start = 0; start < total; start += chunk) {
    const end = Math.min(total, start + chunk);
    const range = { start, count: end - start };
    options.onChunk?.(range, 'start');
    const tape = new Tape(options.runner);
    const logits = await model.forward(images.rows(start, end), tape);
    const targets = lossTargets(options.loss, logits, labels ? labels.subarray(start, end) : null, random);
    const { loss: chunkLoss, grad } = crossEntropyGrad(logits, targets, total);
    loss += chunkLoss;
    await tape.backward(logits, grad, (point, g, out, inputs) => sink(range, point, g, out, inputs), { points: options.points?.() });
    options.onChunk?.(range, 'done');
  }
  return loss;
}
