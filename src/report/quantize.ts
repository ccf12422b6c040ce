/** The report of one `ptq4vit quantize` run: what was quantized and how, then the collected measures. */
import type { ModelSpec } from '../models/types.js';
import { bitsLabel } from '../quant/fileschema.js';
import type { ReportCollector } from './collect.js';
import type { Accuracy, ReportData } from './html.js';

export function quantizeReport(spec: ModelSpec, provenance: Record<string, unknown>, collector: ReportCollector, accuracy?: { fp32: Accuracy; quantized: Accuracy; images: number }): ReportData {
  const method = provenance.method === 'base' ? 'Base PTQ' : 'PTQ4ViT';
  const search = provenance.search as Record<string, unknown>;
  const calibration = provenance.calibration as { data: string; images: number };
  const smoothing = provenance.smoothing as { alpha: number; norms: string[] } | undefined;
  const on = (flag: unknown) => (flag ? 'on' : 'off');
  const p = spec.preprocess;
  return {
    title: `${spec.name}: ${method} ${bitsLabel(provenance)}`,
    facts: [
      ['model', `${spec.name} (${spec.timmClass}, ${spec.arch.numClasses === 0 ? 'no classifier: embedding' : `${spec.arch.numClasses} classes`}, ${p.inputSize}×${p.inputSize} input)`],
      ['checkpoint', String(provenance.source_checkpoint)],
      ['method', `${method}: metric ${search.metric}${provenance.loss ? ` (loss: ${provenance.loss})` : ''}, twin softmax ${on(search.twin_softmax)}, twin GELU ${on(search.twin_gelu)}`],
      ['search', `Δ = (α + i·(β−α)/n)·Δ_maxabs, α = ${search.alpha}, β = ${search.beta}, n = ${search.n}, ${search.rounds} round(s)`],
      ['calibration', `${calibration.images} images from ${calibration.data}, seed ${provenance.seed}`],
      ...(smoothing ? [['smoothing', `SmoothQuant channel smoothing before calibration, α = ${smoothing.alpha}, at the ${smoothing.norms.length} LayerNorms that feed linear layers`] as [string, string]] : []),
    ],
    ...(spec.labelNames ? { labelNames: spec.labelNames } : {}),
    ...(accuracy ? { accuracy: { fp32: pick(accuracy.fp32), quantized: pick(accuracy.quantized), images: accuracy.images } } : {}),
    points: collector.points,
    histograms: collector.histograms,
  };
}

const pick = (a: Accuracy): Accuracy => ({ top1: a.top1, top5: a.top5 });
