import type { Dataset } from '../data/datasets.js';
import { Ptq4vitError } from '../errors.js';
import { bitsLabel } from '../quant/fileschema.js';

/** One-line descriptions of a quantized model for reports. */
export function describeQuantization(provenance: Record<string, unknown>): string {
  const method = provenance.method === 'base' ? 'Base PTQ' : 'PTQ4ViT';
  const smoothing = provenance.smoothing as { alpha: number } | undefined;
  const pinned = provenance.pinned as { bits: number; points: string[] } | undefined;
  return `${method} ${bitsLabel(provenance)}${pinned ? ` (${pinned.points.join(', ')} at ${pinned.bits} bits)` : ''}${smoothing ? `, channel smoothing α ${smoothing.alpha}` : ''}`;
}

export function percent(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}

/**
 * Labels are class indices in the dataset's class order; a dataset with a different number of classes
 * than the model (an image folder missing a class, say) would be scored against shifted labels.
 */
export function checkClasses(ds: Dataset, numClasses: number): void {
  if (!ds.labeled) throw new Ptq4vitError(`${ds.source} has no labels: it is ${ds.description}; expected one subfolder per class or a .json manifest`);
  if (ds.classes.length !== numClasses) {
    throw new Ptq4vitError(
      `${ds.source} has ${ds.classes.length} classes but the model predicts ${numClasses}: labels are class indices in the dataset's order (sorted subfolder names for an image folder), so they would not match the model's`,
    );
  }
}
