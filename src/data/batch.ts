/**
 * Dataset items → a normalized [B, 3, S, S] batch. An unreadable image is reported and left out
 * rather than failing the batch: one corrupt file should cost one image, not a whole evaluation run.
 */
import { Ptq4vitError } from '../errors.js';
import type { Preprocess } from '../models/types.js';
import { Tensor } from '../tensor/tensor.js';
import type { Dataset } from './datasets.js';
import { ImageDecodeError, type RgbImage } from './decode.js';
import { evalTransform } from './transform.js';

export interface SkippedImage {
  index: number;
  file: string;
  reason: string;
}

export interface Batch {
  /** [B, 3, S, S] with B = indices.length (the images that decoded). */
  images: Tensor;
  labels: Int32Array;
  /** Dataset indices of the rows of `images`, in the order requested. */
  indices: number[];
  skipped: SkippedImage[];
}

/** sharp decodes on libuv's thread pool (4 threads by default): more in flight only queues. */
const DEFAULT_CONCURRENCY = 4;

/** Item i's pixels, or why it cannot be used. Anything other than a decode failure propagates. */
export async function readImageOrSkip(ds: Dataset, i: number): Promise<{ image: RgbImage } | { skipped: SkippedImage }> {
  try {
    return { image: await ds.image(i) };
  } catch (e) {
    if (e instanceof ImageDecodeError) return { skipped: { index: i, file: e.file, reason: e.reason } };
    throw e;
  }
}

export async function loadBatch(ds: Dataset, indices: readonly number[], p: Preprocess, concurrency = DEFAULT_CONCURRENCY): Promise<Batch> {
  for (const i of indices) ds.itemName(i); // validates every index before any work starts
  const S = p.inputSize;
  const perImage = 3 * S * S;
  const results = new Array<Float32Array | SkippedImage>(indices.length);
  await forEachConcurrently(indices.length, concurrency, async (k) => {
    const r = await readImageOrSkip(ds, indices[k]);
    results[k] = 'image' in r ? evalTransform(r.image, p) : r.skipped;
  });
  const kept = results.flatMap((r, k) => (r instanceof Float32Array ? [k] : []));
  const images = new Float32Array(kept.length * perImage);
  kept.forEach((k, row) => images.set(results[k] as Float32Array, row * perImage));
  return {
    images: new Tensor(images, [kept.length, 3, S, S]),
    labels: Int32Array.from(kept, (k) => ds.label(indices[k])),
    indices: kept.map((k) => indices[k]),
    skipped: results.filter((r): r is SkippedImage => !(r instanceof Float32Array)),
  };
}

/** Runs task(0..n−1) with at most `limit` in flight; the first failure rejects after in-flight tasks settle. */
async function forEachConcurrently(n: number, limit: number, task: (k: number) => Promise<void>): Promise<void> {
  if (!(Number.isInteger(limit) && limit >= 1)) throw new Ptq4vitError(`concurrency must be a positive integer, got ${limit}`);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) await task(next++);
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(limit, n) }, worker));
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
}
