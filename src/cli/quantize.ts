/** `ptq4vit quantize`: calibrate a float checkpoint, write the quantized model, optionally evaluate both. */
import fs from 'node:fs';
import path from 'node:path';
import { openDataset } from '../data/datasets.js';
import { Ptq4vitError } from '../errors.js';
import { evaluate, type EvalResult } from '../eval/evaluate.js';
import { LOSS_KINDS, type LossKind } from '../grad/loss.js';
import { openModel } from '../models/load.js';
import type { VisionModel } from '../models/types.js';
import { loadCalibration } from '../quant/calibset.js';
import { calibrateMany, type CalibrationOptions, type CalibrationTiming } from '../quant/calibrate.js';
import { saveQuantizedModel } from '../quant/file.js';
import { methodConfig, METHODS, type Method } from '../quant/methods.js';
import type { PointQuant } from '../quant/params.js';
import { QuantRunner } from '../quant/runner.js';
import { applyCommon, intFlag, numberFlag, parse, requireFlag, USAGE } from './args.js';
import { checkClasses, describeQuantization, percent } from './describe.js';
import { ProgressBar } from './progress.js';
import { printReport } from './report.js';

export const QUANTIZE_OPTIONS = {
  model: { type: 'string' },
  config: { type: 'string' },
  arch: { type: 'string' },
  calib: { type: 'string' },
  'calib-size': { type: 'string' },
  method: { type: 'string' },
  bits: { type: 'string' },
  'w-bits': { type: 'string' },
  'a-bits': { type: 'string' },
  out: { type: 'string' },
  eval: { type: 'string' },
  limit: { type: 'string' },
  seed: { type: 'string' },
  loss: { type: 'string' },
  alpha: { type: 'string' },
  beta: { type: 'string' },
  n: { type: 'string' },
  rounds: { type: 'string' },
  'no-hessian': { type: 'boolean' },
  'no-twin-softmax': { type: 'boolean' },
  'no-twin-gelu': { type: 'boolean' },
  'gelu-unaligned': { type: 'boolean' },
  'softmax-r2': { type: 'string' },
} as const;

type Values = Record<string, string | boolean | undefined>;

function choice<T extends string>(values: Values, name: string, allowed: readonly T[], fallback: T): T {
  const v = values[name] ?? fallback;
  if (!allowed.includes(v as T)) throw new Ptq4vitError(`--${name} must be one of ${allowed.join(', ')}, got '${v}'`);
  return v as T;
}

export function bitWidths(v: Values): { weightBits: number; activationBits: number } {
  if (v.bits !== undefined && (v['w-bits'] !== undefined || v['a-bits'] !== undefined)) throw new Ptq4vitError('give either --bits or --w-bits/--a-bits, not both');
  const bits = intFlag(v, 'bits', 8, 2, 16)!;
  return { weightBits: intFlag(v, 'w-bits', bits, 2, 16)!, activationBits: intFlag(v, 'a-bits', bits, 2, 16)! };
}

/**
 * --alpha/--beta: the candidate grid runs from α·Δ_maxabs to β·Δ_maxabs. A factor of 0 puts Δ = 0 among
 * the candidates, whose x/Δ is NaN; a NaN score is never beaten in the argmin, so the search kept Δ = 0
 * and wrote a model that outputs NaN.
 */
function gridFactor(v: Values, name: 'alpha' | 'beta'): number | undefined {
  const f = numberFlag(v, name, undefined, 0, 10);
  if (f === 0) throw new Ptq4vitError(`--${name} must be greater than 0 (it scales Δ_maxabs into a candidate scale), got '${v[name]}'`);
  return f;
}

export function calibrationOptions(v: Values, method: Method): CalibrationOptions {
  const { weightBits, activationBits } = bitWidths(v);
  const softmaxR2 = v['softmax-r2'] === undefined ? undefined : choice(v, 'softmax-r2', ['paper', 'exact-one'] as const, 'paper');
  return methodConfig(method, {
    weightBits,
    activationBits,
    alpha: gridFactor(v, 'alpha'),
    beta: gridFactor(v, 'beta'),
    n: intFlag(v, 'n', undefined, 1, 10000),
    rounds: intFlag(v, 'rounds', undefined, 1, 100),
    hessian: v['no-hessian'] ? false : undefined,
    twinSoftmax: v['no-twin-softmax'] ? false : undefined,
    twinGelu: v['no-twin-gelu'] ? false : undefined,
    geluAligned: v['gelu-unaligned'] ? false : undefined,
    softmaxDeltaR2: softmaxR2,
    loss: v.loss === undefined ? undefined : choice<LossKind>(v, 'loss', LOSS_KINDS, 'label'),
    seed: intFlag(v, 'seed', 0, 0, 2 ** 31 - 1),
  });
}

/** Fail before minutes of calibration if the output cannot be written, or would overwrite the input. */
function checkOutput(out: string, input: string, others: Values): void {
  if (path.resolve(out) === path.resolve(input)) throw new Ptq4vitError(`--out ${out} would overwrite the input checkpoint`);
  // A tab-completed --out naming the card or a manifest would silently replace it with a safetensors file.
  for (const flag of ['config', 'calib', 'eval']) {
    const p = others[flag];
    if (typeof p === 'string' && path.resolve(out) === path.resolve(p)) throw new Ptq4vitError(`--out ${out} would overwrite the --${flag} file`);
  }
  const dir = path.dirname(path.resolve(out));
  try {
    if (!fs.statSync(dir).isDirectory()) throw new Error('not a directory');
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new Ptq4vitError(`cannot write ${out}: directory ${dir} does not exist or is not writable`);
  }
  if (fs.existsSync(out) && fs.statSync(out).isDirectory()) throw new Ptq4vitError(`cannot write ${out}: it is a directory`);
}

export interface CalibrationRun {
  points: PointQuant[];
  seconds: number;
  timing: CalibrationTiming;
}

/** Progress for every calibration phase: each recording pass by images, the search by points (with ETA). */
export function calibrationProgress(label: string, totalPoints: number, quiet: boolean): CalibrationOptions['onProgress'] {
  const search = new ProgressBar(`${label} search`, totalPoints, 'layers', quiet);
  let record: ProgressBar | null = null, pass = 0;
  return (e) => {
    if (e.phase === 'record') {
      if (e.group !== pass) {
        pass = e.group;
        record = new ProgressBar(`${label} record ${e.group}/${e.groups}`, e.totalImages, 'img', quiet);
      }
      record!.update(e.images);
    } else search.update(e.done, e.point);
  };
}

/** Calibrate with progress lines for every phase (recording passes by images, the search by points). */
export async function runCalibration(model: VisionModel, images: import('../tensor/tensor.js').Tensor, labels: Int32Array, opts: CalibrationOptions, quiet: boolean, label: string): Promise<CalibrationRun> {
  const start = performance.now();
  const onProgress = calibrationProgress(label, model.quantPoints.length, quiet);
  const { results, timing } = await calibrateMany(model, images, labels, [{ ...opts, onProgress }]);
  return { points: results[0], seconds: (performance.now() - start) / 1000, timing };
}

/** Peak resident set size of this process so far, in bytes. */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

export async function runQuantize(args: string[]): Promise<void> {
  const v = parse(args, QUANTIZE_OPTIONS);
  if (v.help) {
    process.stdout.write(USAGE);
    return;
  }
  applyCommon(v);
  const weights = requireFlag(v, 'model', 'quantize');
  const calibPath = requireFlag(v, 'calib', 'quantize');
  const method = choice<Method>(v, 'method', METHODS, 'ptq4vit');
  const opts = calibrationOptions(v, method);
  const calibSize = intFlag(v, 'calib-size', 32)!;
  const limit = intFlag(v, 'limit', undefined);
  const out = (v.out as string | undefined) ?? `${path.basename(weights).replace(/\.safetensors$/, '')}.${method}-w${opts.weightBits}a${opts.activationBits}.safetensors`;
  checkOutput(out, weights, v);

  const loaded = openModel({ weights, config: v.config as string | undefined, arch: v.arch as string | undefined });
  if (loaded.quantized) throw new Ptq4vitError(`${weights} is already a quantized model; quantize the float checkpoint`);
  const { model } = loaded;
  const evalData = v.eval === undefined ? null : await openDataset(v.eval as string);
  const calib = await openDataset(calibPath);
  if (evalData) checkClasses(evalData, model.spec.arch.numClasses);
  if (opts.metric === 'hessian' && opts.loss === 'label') {
    try {
      checkClasses(calib, model.spec.arch.numClasses);
    } catch (e) {
      throw new Ptq4vitError(`${(e as Error).message} (calibrating with --loss pseudo needs no labels)`);
    }
  }
  const tLoad = performance.now();
  const { images, labels, indices } = await loadCalibration(calib, calibSize, opts.seed, model.spec.preprocess);
  const loadSeconds = (performance.now() - tLoad) / 1000;
  const quiet = v.json === true && !process.stderr.isTTY;
  const label = `${method} W${opts.weightBits}A${opts.activationBits}`;
  const run = await runCalibration(model, images, labels, opts, quiet, label);

  const provenance = {
    tool: 'ptq4vit',
    method,
    w_bits: opts.weightBits,
    a_bits: opts.activationBits,
    search: { metric: opts.metric, alpha: opts.alpha, beta: opts.beta, n: opts.n, rounds: opts.rounds, twin_softmax: opts.twinSoftmax, twin_gelu: opts.twinGelu, gelu_aligned: opts.geluAligned, softmax_delta_r2: opts.softmaxDeltaR2 },
    loss: opts.metric === 'hessian' ? opts.loss : null,
    seed: opts.seed,
    source_checkpoint: path.basename(weights),
    calibration: { data: path.basename(calibPath), images: indices.length, indices },
  };
  const tWrite = performance.now();
  saveQuantizedModel(out, loaded.weights, { spec: model.spec, points: run.points, provenance });
  const writeSeconds = (performance.now() - tWrite) / 1000;
  const tEval = performance.now();

  let fp: EvalResult | null = null, quant: EvalResult | null = null;
  if (evalData) {
    const total = Math.min(limit ?? evalData.size, evalData.size);
    const fpBar = new ProgressBar('eval FP32', total, 'img', quiet);
    fp = await evaluate(model, evalData, { limit, onProgress: (d) => fpBar.update(d) });
    const qBar = new ProgressBar(`eval ${label}`, total, 'img', quiet);
    quant = await evaluate(model, evalData, { limit, runner: new QuantRunner(run.points), onProgress: (d) => qBar.update(d) });
  }
  const evalSeconds = (performance.now() - tEval) / 1000;
  const rows: [string, string][] = [
    ['method', describeQuantization(provenance)],
    ['calibration', `${indices.length} images from ${path.basename(calibPath)} · ${run.seconds.toFixed(1)} s`],
    ['written', out],
  ];
  if (fp && quant) {
    rows.push(['top-1', `${percent(quant.top1)}  (FP32 ${percent(fp.top1)}, ${((quant.top1 - fp.top1) * 100).toFixed(2)} points)`]);
    rows.push(['top-5', `${percent(quant.top5)}  (FP32 ${percent(fp.top5)})`]);
    rows.push(['images', `${quant.images}`]);
  }
  printReport({
    title: `${model.spec.name} quantized`,
    rows,
    json: v.json === true
      ? {
          command: 'quantize',
          model: model.spec.name,
          method,
          w_bits: opts.weightBits,
          a_bits: opts.activationBits,
          calib_images: indices.length,
          calib_seconds: run.seconds,
          phase_seconds: { load_calibration: loadSeconds, record: run.timing.recordSeconds, search: run.timing.searchSeconds, write: writeSeconds, ...(evalData ? { eval: evalSeconds } : {}) },
          record_passes: run.timing.groups,
          peak_rss_bytes: peakRssBytes(),
          out,
          ...(fp && quant ? { top1: quant.top1, top5: quant.top5, fp32_top1: fp.top1, fp32_top5: fp.top5, eval_images: quant.images } : {}),
        }
      : undefined,
  });
}
