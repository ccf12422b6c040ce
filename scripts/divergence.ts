/**
 * How far a quantized model's outputs are from FP32's: the mean KL(FP32 ‖ quantized) of the class
 * probabilities and the share of images whose top-1 class is unchanged. Both move smoothly with the
 * quantization error, where top-1 on a few thousand images moves by ±0.2 points with noise.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadBatch, openDataset } from '../src/data/datasets.js';
import { evaluate } from '../src/eval/evaluate.js';
import { wholeModelGraph } from '../src/export/graph.js';
import type { Preprocess, Runner, VisionModel } from '../src/models/types.js';
import type { LoadedModel } from '../src/open.js';
import { Tensor } from '../src/tensor/tensor.js';

/** The first `count` images of a dataset, preprocessed, in batches of 100 (the images a divergence is measured on). */
export async function firstImages(source: string, count: number, preprocess: Preprocess): Promise<Tensor[]> {
  const ds = await openDataset(source);
  const total = Math.min(count, ds.size);
  const batches: Tensor[] = [];
  for (let s = 0; s < total; s += 100) batches.push((await loadBatch(ds, Array.from({ length: Math.min(100, total - s) }, (_, i) => s + i), preprocess)).images);
  return batches;
}

export function softmaxRows(logits: Float32Array, classes: number): Float64Array {
  const p = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i += classes) {
    let max = -Infinity, sum = 0;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[i + c]);
    for (let c = 0; c < classes; c++) sum += p[i + c] = Math.exp(logits[i + c] - max);
    for (let c = 0; c < classes; c++) p[i + c] /= sum;
  }
  return p;
}

function argmax(p: Float64Array, at: number, classes: number): number {
  let best = 0;
  for (let c = 1; c < classes; c++) if (p[at + c] > p[at + best]) best = c;
  return best;
}

export interface DivergenceMeasure {
  /** Mean KL(FP32 ‖ quantized) over the images, in nats. */
  kl: number;
  /** Share of images whose top-1 class is FP32's. */
  agree: number;
  /** Per-image KL, in image order. */
  perImage: Float64Array;
}

/** FP32's class probabilities on fixed image batches, then any runner's divergence from them. */
export class Divergence {
  private constructor(private readonly model: VisionModel, private readonly batches: Tensor[], private readonly fp: Float64Array[]) {}

  static async of(model: VisionModel, batches: Tensor[]): Promise<Divergence> {
    const classes = model.spec.arch.numClasses;
    const fp: Float64Array[] = [];
    for (const b of batches) fp.push(softmaxRows((await model.forward(b)).data, classes));
    return new Divergence(model, batches, fp);
  }

  /** `model`: the quantized model's own float checkpoint when it is not FP32's (a smoothed one: the same function). */
  async measure(runner: Runner, model: VisionModel = this.model): Promise<DivergenceMeasure> {
    const classes = this.model.spec.arch.numClasses;
    const perImage: number[] = [];
    let agree = 0;
    for (let b = 0; b < this.batches.length; b++) {
      const q = softmaxRows((await model.forward(this.batches[b], runner)).data, classes);
      const p = this.fp[b];
      for (let at = 0; at < p.length; at += classes) {
        let kl = 0;
        for (let c = 0; c < classes; c++) if (p[at + c] > 0) kl += p[at + c] * Math.log(p[at + c] / Math.max(q[at + c], 1e-300));
        perImage.push(kl);
        if (argmax(p, at, classes) === argmax(q, at, classes)) agree++;
      }
    }
    return { kl: perImage.reduce((s, v) => s + v, 0) / perImage.length, agree: agree / perImage.length, perImage: Float64Array.from(perImage) };
  }
}

/**
 * Where a result script keeps one row's quantized file and its per-image hits (ensureHits):
 * DIR/files/NAME.CONFIG.safetensors and DIR/hits/NAME.CONFIG.u8, CONFIG made file-safe ("mixed avg 4" →
 * mixed_avg_4). Scripts read each other's rows through it (smoothing.ts and levers.ts read mixed_precision.ts's).
 */
export function rowFiles(dir: string, name: string, config: string): { file: string; hits: string } {
  const stem = rowStem(name, config);
  return { file: path.join(dir, 'files', `${stem}.safetensors`), hits: path.join(dir, 'hits', `${stem}.u8`) };
}

/** NAME.CONFIG with CONFIG made file-safe: the stem of a row's files (rowFiles) and of other per-row caches. */
export const rowStem = (name: string, config: string): string => `${name}.${config.replace(/[^A-Za-z0-9.]+/g, '_')}`;

/**
 * Per-image top-1 hits (1 = the label ranks first) of a model file on a labeled manifest, through the same
 * whole-model graph `ptq4vit eval` runs (the integer graph of a quantized file), written to `out` once: paired
 * comparisons need them, not just the totals.
 */
export async function ensureHits(out: string, loaded: LoadedModel, file: string, manifest: string): Promise<void> {
  if (fs.existsSync(out)) return;
  const dataset = await openDataset(manifest);
  const r = await evaluate(await wholeModelGraph(loaded, file), dataset, { batchSize: 100, keepLogits: true });
  const classes = loaded.model.spec.arch.numClasses;
  const hits = new Uint8Array(dataset.size);
  r.indices!.forEach((image, row) => {
    const at = row * classes, label = dataset.label(image);
    let best = 0;
    for (let c = 1; c < classes; c++) if (r.logits![at + c] > r.logits![at + best]) best = c;
    hits[image] = best === label ? 1 : 0;
  });
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, hits);
}

/**
 * a − b in top-1 points on the same images (hit files of ensureHits), with its 95% confidence interval from the
 * paired images (normal approximation: only the images one model gets right and the other wrong carry the
 * difference); undefined while either file is missing.
 */
export function pairedDifference(hitsA: string, hitsB: string): { diff: number; low: number; high: number } | undefined {
  if (!fs.existsSync(hitsA) || !fs.existsSync(hitsB)) return undefined;
  const [ha, hb] = [fs.readFileSync(hitsA), fs.readFileSync(hitsB)];
  let onlyA = 0, onlyB = 0;
  for (let i = 0; i < ha.length; i++) {
    if (ha[i] && !hb[i]) onlyA++;
    else if (!ha[i] && hb[i]) onlyB++;
  }
  const n = ha.length, diff = (onlyA - onlyB) / n;
  const se = Math.sqrt(onlyA + onlyB - (onlyA - onlyB) ** 2 / n) / n;
  return { diff: diff * 100, low: (diff - 1.96 * se) * 100, high: (diff + 1.96 * se) * 100 };
}
