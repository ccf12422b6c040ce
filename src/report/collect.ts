/**
 * What a report shows about each quantization point, gathered while the search runs: the chosen
 * parameters, the metric and the output's cosine error before (max-abs uniform, no search) and after the
 * search, and histograms of the two badly shaped inputs (post-softmax, post-GELU) with their ranges.
 *
 * `collector.trace` is given to the search (SearchConfig.trace); it reads each point's FP32 record once and
 * keeps only small summaries.
 */
import { measureLinear, measureMatmul, maxAbsLinear, maxAbsMatmul } from '../quant/measure.js';
import type { ActivationQuant, PointQuant } from '../quant/params.js';
import { kindOf } from '../quant/kinds/index.js';
import type { Metric } from '../quant/scoring.js';
import type { SearchTrace } from '../quant/search.js';

export interface Measure {
  /** The search's metric (hessian: Σ (∂L/∂O ⊙ (Ô − O))²; cosine: 1 − mean cos), lower is better. */
  metric: number;
  /** 1 − mean row cosine similarity of the point's output with FP32. */
  cosine_error: number;
}

export interface PointReport {
  point: string;
  params: PointQuant;
  before: Measure;
  after: Measure;
}

export interface Interval {
  name: string;
  from: number;
  to: number;
}

export interface Histogram {
  point: string;
  input: 'post-softmax' | 'post-gelu';
  /** 'log': bins evenly spaced in log10 (post-softmax values span many decades). */
  x_scale: 'log' | 'linear';
  /** [bin center, fraction of the values in the bin]. */
  bins: [number, number][];
  /** Values left of the first log bin (zeros included). */
  below: number;
  values: number;
  ranges: Interval[];
  marks: { name: string; value: number }[];
  quantizer: ActivationQuant;
}

const LOG_MIN = -7;
const LOG_BINS = 70;
const LINEAR_BINS = 100;

/** Fraction of values per bin: log10-spaced bins on [1e-7, 1] for softmax, even bins on [min, max] otherwise. */
export function histogram(data: Float32Array, scale: 'log' | 'linear'): { bins: [number, number][]; below: number } {
  const counts = new Float64Array(scale === 'log' ? LOG_BINS : LINEAR_BINS);
  let below = 0;
  let lo = Infinity, hi = -Infinity;
  if (scale === 'linear') {
    for (let i = 0; i < data.length; i++) {
      if (data[i] < lo) lo = data[i];
      if (data[i] > hi) hi = data[i];
    }
    if (!(hi > lo)) hi = lo + 1;
  }
  const width = scale === 'log' ? -LOG_MIN / LOG_BINS : (hi - lo) / LINEAR_BINS;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (scale === 'log') {
      if (!(v >= 10 ** LOG_MIN)) {
        below++;
        continue;
      }
      counts[Math.min(LOG_BINS - 1, Math.floor((Math.log10(v) - LOG_MIN) / width))]++;
    } else counts[Math.min(LINEAR_BINS - 1, Math.floor((v - lo) / width))]++;
  }
  const center = (b: number) => (scale === 'log' ? 10 ** (LOG_MIN + (b + 0.5) * width) : lo + (b + 0.5) * width);
  return { bins: Array.from(counts, (c, b) => [center(b), c / data.length] as [number, number]), below };
}

/** Ranges and clipping points of a quantizer, for marking on its histogram (each kind draws its own: kinds/*.ts). */
export function rangesOf(q: ActivationQuant, input: Histogram['input']): { ranges: Interval[]; marks: { name: string; value: number }[] } {
  return kindOf(q).picture(q, input);
}

export class ReportCollector {
  readonly points: PointReport[] = [];
  readonly histograms: Histogram[] = [];

  constructor(private readonly metric: Metric) {}

  private async measures(t: SearchTrace): Promise<{ before: Measure; after: Measure }> {
    const measure = async (q: PointQuant, metric: Metric): Promise<number> =>
      t.kind === 'linear' ? measureLinear(t.record, q as typeof t.result, metric) : measureMatmul(t.record, q as typeof t.result, metric);
    const naive = t.kind === 'linear' ? maxAbsLinear(t.record, t.result) : maxAbsMatmul(t.record, t.result);
    const one = async (q: PointQuant): Promise<Measure> => {
      const cosine = await measure(q, 'cosine');
      return { metric: this.metric === 'cosine' ? cosine : await measure(q, this.metric), cosine_error: cosine };
    };
    return { before: await one(naive), after: await one(t.result) };
  }

  readonly trace = async (t: SearchTrace): Promise<void> => {
    this.points.push({ point: t.result.point, params: t.result, ...(await this.measures(t)) });
    const input = t.kind === 'linear' ? (t.record.postGelu && t.result.input ? 'post-gelu' : null) : t.record.postSoftmax ? 'post-softmax' : null;
    if (!input) return;
    const data = t.kind === 'linear' ? t.record.x.data : t.record.a.data;
    const quantizer = t.kind === 'linear' ? t.result.input! : t.result.a;
    const scale = input === 'post-softmax' ? 'log' : 'linear';
    this.histograms.push({ point: t.result.point, input, x_scale: scale, ...histogram(data, scale), values: data.length, quantizer, ...rangesOf(quantizer, input) });
  };
}
