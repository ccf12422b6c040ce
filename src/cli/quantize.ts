/** `ptq4vit quantize`: calibrate a float checkpoint, write the quantized model, optionally evaluate both. */
import fs from 'node:fs';
import path from 'node:path';
import { openDataset, type Dataset, type DatasetKind, type SkippedImage } from '../data/datasets.js';
import { Ptq4vitError } from '../errors.js';
import { evaluate, type EvalResult } from '../eval/evaluate.js';
import { EMBEDDING_LOSSES, isEmbeddingLoss, LOSS_KINDS, type LossKind } from '../grad/loss.js';
import { locateModel } from '../models/hub.js';
import { openModel } from '../open.js';
import type { VisionModel } from '../models/types.js';
import { loadCalibration } from '../quant/calibset.js';
import { calibrateMany, type CalibrationOptions, type CalibrationTiming } from '../quant/calibrate.js';
import { checkSpecStorable, saveQuantizedModel } from '../quant/file.js';
import { DEFAULT_EMBEDDING_LOSS, methodConfig, METHODS, type Method } from '../quant/methods.js';
import type { BitPolicy, PointQuant } from '../quant/params.js';
import { calibrateMixed, checkBudget, mixedProvenance, describeBudget, operandItems, isPinnable, CANDIDATE_WIDTHS, PINNED_BITS, SENSITIVITY_N, type Budget, type MixedProgress, type MixedRequest, type MixedResult, type MixedTiming } from '../quant/mixed.js';
import { QuantRunner } from '../quant/runner.js';
import { WEIGHT_SCALES, groupwiseMisfit, weightGroupSize } from '../quant/search.js';
import { smoothChannels, type SmoothedNorm } from '../quant/smooth.js';
import { applyCommon, commandHelp, FLOAT_CHECKPOINT_FLAGS, imgSizeFlag, intFlag, numberFlag, parse, requireFlag, type CommandSpec, type FlagTable, type Values } from './args.js';
import { checkClasses, describeQuantization, percent } from './describe.js';
import { checkOutputNotInput, datasetInputs, type InputPath } from './paths.js';
import { ProgressBar, type ProgressOptions } from './progress.js';
import { printReport } from './report.js';
import { ReportCollector } from '../report/collect.js';
import { exportOnnx } from '../export/onnx.js';
import { OnnxModel } from '../export/runtime.js';
import { isEmbeddingModel } from '../models/types.js';
import { embeddingFidelity, fidelityJson, fidelityRows, type EmbeddingFidelity } from './fidelity.js';
import { checkReportTarget, writeReport } from '../report/html.js';
import { quantizeReport } from '../report/quantize.js';

/** Every quantize flag: its meaning and default (the parser and `--help` both read this table). */
export const QUANTIZE_OPTIONS: FlagTable = {
  model: { type: 'string', value: 'path', required: true, help: 'float checkpoint: a .safetensors file (a NAME.json card beside NAME.safetensors is used without --config), a Hugging Face transformers folder (config.json with model_type vit/deit/swin/dinov2/dinov2_with_registers, preprocessor_config.json, model.safetensors) or a timm hub folder (config.json + model.safetensors)' },
  config: { type: 'string', value: 'card.json', help: 'JSON model card describing the architecture and preprocessing' },
  arch: { type: 'string', value: 'preset', help: "timm architecture by name ('ptq4vit presets' lists them)" },
  'img-size': FLOAT_CHECKPOINT_FLAGS['img-size'],
  calib: { type: 'string', value: 'data', required: true, help: 'calibration images: a folder with one subfolder per class, a folder of unlabeled images (searched recursively), a text file listing image paths, or a raw-uint8 manifest.json' },
  'calib-size': { type: 'string', value: 'N', default: '32, or all images if fewer', help: 'calibration images drawn (seeded) from --calib' },
  method: { type: 'string', value: 'ptq4vit|base', default: 'ptq4vit', help: "ptq4vit (twin uniform + Hessian-guided search) or base (the paper's baseline: cosine metric, no twin)" },
  bits: { type: 'string', value: 'K', default: '8', help: 'weight and activation bits, 2 to 16' },
  'w-bits': { type: 'string', value: 'K', default: '--bits', help: 'weight bits, 2 to 16 (instead of --bits)' },
  'a-bits': { type: 'string', value: 'K', default: '--bits', help: 'activation bits, 2 to 16 (instead of --bits)' },
  'avg-bits': { type: 'string', value: 'B', help: 'mixed precision: widths chosen per layer so that the average weight bits (weighted by parameters) and the average activation bits (weighted by elements per image) are at most B, from the lowest of --widths to 16' },
  'w-avg-bits': { type: 'string', value: 'B', help: 'mixed precision for the weights only: average weight bits at most B (activations at --a-bits unless --a-avg-bits)' },
  'a-avg-bits': { type: 'string', value: 'B', help: 'mixed precision for the activations only: average activation bits at most B (weights at --w-bits unless --w-avg-bits or --size-mb)' },
  'size-mb': { type: 'string', value: 'MB', help: 'mixed precision for the weights: deployed weight bytes (codes in their 2-, 4-, 8- or 16-bit containers, packed, and a f32 Δ per output channel) at most MB megabytes of 10^6 bytes; 3-bit weights cost as much as 4-bit ones, 5- to 7-bit as 8-bit, so the widest candidate of each container is chosen' },
  widths: { type: 'string', value: 'list', default: '3,4,5,6,8', help: 'mixed precision: candidate widths of every weight and activation, comma-separated, 2 to 16' },
  pin: { type: 'boolean', help: 'uniform widths: the patch embedding and the classifier keep 8-bit weights and inputs, as mixed precision pins them (at 4-bit weights the patch embedding alone costs most of the error; see RESULTS.md)' },
  'no-pin': { type: 'boolean', help: 'mixed precision: let the patch embedding and the classifier take any width (by default they stay at 8 bits and count in the budget)' },
  smooth: { type: 'string', value: 'α', help: 'channel smoothing (SmoothQuant) before calibration: every LayerNorm feeding a linear layer divides channel j by s_j = max|X_j|^α / max|W_j|^(1−α), the layer\'s weight column j is multiplied by s_j (the same float model; flatter input ranges); α from 0 to 1, 0.5 is usual' },
  out: { type: 'string', value: 'file', default: 'NAME.METHOD-wKaK.safetensors', help: 'where the quantized model is written (atomically)' },
  eval: { type: 'string', value: 'data', help: 'also evaluate FP32 and quantized top-1/top-5 on this image folder or manifest (a model without classifier: the per-image cosine of quantized to FP32 embeddings, and k-NN top-1 with the labelled --calib images as neighbours)' },
  limit: { type: 'string', value: 'N', default: 'all', help: 'evaluate on the first N images of --eval' },
  report: { type: 'string', value: 'file.html', help: 'write a self-contained HTML report: accuracy, per-layer scales, metric before/after the search, histograms' },
  seed: { type: 'string', value: 'N', default: '0', help: 'seed for drawing the calibration images and for --loss fisher' },
  loss: { type: 'string', value: 'kind', default: 'label; pseudo without labels; projection without classifier', help: "loss whose gradient weights the Hessian metric: label (dataset labels), pseudo (the FP32 model's top-1) or fisher (labels sampled from its softmax); for a model without classifier (num_classes 0): projection (the normalized embedding's Gauss–Newton diagonal through random directions) or contrastive (cross-entropy over cosines to the calibration images' FP32 embeddings)" },
  alpha: { type: 'string', value: 'A', default: '0.01; base: 0.5', help: 'smallest candidate scale as a fraction of Δ_maxabs, in (0, 10], below --beta' },
  beta: { type: 'string', value: 'B', default: '1.2', help: 'largest candidate scale as a fraction of Δ_maxabs, in (0, 10]' },
  n: { type: 'string', value: 'N', default: '100', help: 'grid steps between alpha and beta (N + 1 candidates), 1 to 10000' },
  rounds: { type: 'string', value: 'R', default: '3; base: 1', help: 'rounds of alternating weight/input search, 1 to 100' },
  'no-hessian': { type: 'boolean', help: 'score candidates by cosine similarity instead of the Hessian-guided metric' },
  'no-twin-softmax': { type: 'boolean', help: 'plain uniform quantization for post-softmax inputs' },
  'no-twin-gelu': { type: 'boolean', help: 'plain uniform quantization for post-GELU inputs' },
  'gelu-unaligned': { type: 'boolean', help: 'do not force Δ_R2 = 2^m·Δ_R1 for the GELU twin' },
  'skip-unreadable': { type: 'boolean', help: 'replace an unreadable calibration image by the next image of the seeded draw instead of stopping' },
  'weight-scales': { type: 'string', value: 'per', default: 'tensor', help: 'weight scales of linear layers: tensor (one Δ per tensor, q, k, v apart), channel (one Δ per output channel), or group16, group32, group64, group128 (weights of at most 4 bits, K a multiple of G: one Δ per output channel times an integer from 1 to 16 per group of G input channels, so the layer runs as int8 codes on the same integer products); searched with the same metric; the patch conv stays per channel' },
  'softmax-r2': { type: 'string', value: 'paper|exact-one', default: 'paper', help: "Δ_R2 of the softmax twin: 1/2^(k−1) (paper) or 1/(2^(k−1)−1) (the authors' code)" },
  'memory-mib': { type: 'string', value: 'MiB', default: '768', help: 'calibration records (inputs, outputs and ∂L/∂outputs of the points being searched) held in memory at once, 1 to 1048576 MiB; what does not fit is written to unlinked temporary files in TMPDIR and read back point by point. A larger budget lets two large points be searched at once (ViT-B/16-224 with 128 images on 2 cores: 29–32 min and 3.0–3.2 GiB peak at 1280 MiB, 35 min and 2.7 GiB at 768), a smaller one lowers the peak; the result is the same' },
};

export const QUANTIZE_COMMAND: CommandSpec = {
  name: 'quantize',
  summary: 'calibrate a float checkpoint, write the quantized model, optionally evaluate FP32 vs quantized',
  synopsis: '--model <path> [--config <card.json> | --arch <preset>] --calib <data> [options]',
  flags: QUANTIZE_OPTIONS,
  notes: [
    'Data: --eval takes an image folder with one subfolder per class (JPEG, PNG, BMP, WebP) or a raw-uint8-hwc manifest.json; --calib also takes unlabeled images (a folder or a list file), and without labels --loss defaults to pseudo. An unreadable calibration image stops with its name, or with --skip-unreadable is replaced by the next image of the seeded draw.',
    'Bad input ends with exit code 2 and one line naming the file and field.',
  ],
};

/** Calibration images when --calib-size is not given (the paper's setting). */
const DEFAULT_CALIB_SIZE = 32;

function choice<T extends string>(values: Values, name: string, allowed: readonly T[], fallback: T): T {
  const v = values[name] ?? fallback;
  if (!allowed.includes(v as T)) throw new Ptq4vitError(`--${name} must be one of ${allowed.join(', ')}, got '${v}'`);
  return v as T;
}

export function bitWidths(v: Values): { weightBits: number; activationBits: number } {
  if (v.bits !== undefined && (v['w-bits'] !== undefined || v['a-bits'] !== undefined)) throw new Ptq4vitError('give either --bits or --w-bits/--a-bits, not both');
  const budgetFlags = BUDGET_FLAGS.filter((f) => v[f] !== undefined);
  if (budgetFlags.length > 0 && v.bits !== undefined) throw new Ptq4vitError(`give either --bits or a mixed-precision budget (--${budgetFlags[0]}), not both`);
  const weightBudget = ['avg-bits', 'w-avg-bits', 'size-mb'].find((f) => v[f] !== undefined);
  const activationBudget = ['avg-bits', 'a-avg-bits'].find((f) => v[f] !== undefined);
  if (weightBudget && v['w-bits'] !== undefined) throw new Ptq4vitError(`give either --w-bits or --${weightBudget}, not both: the budget chooses the weight widths`);
  if (activationBudget && v['a-bits'] !== undefined) throw new Ptq4vitError(`give either --a-bits or --${activationBudget}, not both: the budget chooses the activation widths`);
  const bits = intFlag(v, 'bits', 8, 2, 16)!;
  return { weightBits: intFlag(v, 'w-bits', bits, 2, 16)!, activationBits: intFlag(v, 'a-bits', bits, 2, 16)! };
}

/** The flags that ask for mixed precision. */
const BUDGET_FLAGS = ['avg-bits', 'w-avg-bits', 'a-avg-bits', 'size-mb'] as const;

/**
 * A mixed-precision request from the budget flags, or null without one. Averages run from the lowest
 * candidate width to 16 bits; one constraint per side (--avg-bits sets both sides).
 */
export function mixedRequest(v: Values, uniform: { weightBits: number; activationBits: number }): (MixedRequest & { candidates: number[] }) | null {
  const given = BUDGET_FLAGS.filter((f) => v[f] !== undefined);
  if (given.length === 0) {
    for (const f of ['widths', 'no-pin']) if (v[f] !== undefined) throw new Ptq4vitError(`--${f} only applies to mixed precision: add a budget (--avg-bits, --w-avg-bits, --a-avg-bits or --size-mb)`);
    return null;
  }
  if (v.pin !== undefined) throw new Ptq4vitError(`--pin is for uniform widths: mixed precision (${given.map((f) => `--${f}`).join(', ')}) pins the patch embedding and the classifier at 8 bits already (--no-pin lets them go lower)`);
  const candidates = widthList(v);
  const lowest = Math.min(...candidates);
  if (v['avg-bits'] !== undefined) {
    const other = given.find((f) => f !== 'avg-bits');
    if (other) throw new Ptq4vitError(`give either --avg-bits or --${other}, not both: --avg-bits budgets the weights and the activations`);
  }
  if (v['w-avg-bits'] !== undefined && v['size-mb'] !== undefined) throw new Ptq4vitError('give either --w-avg-bits or --size-mb, not both: both budget the weights');
  const avg = (name: string) => numberFlag(v, name, undefined, lowest, 16);
  const both = avg('avg-bits');
  const sizeMb = numberFlag(v, 'size-mb', undefined, 0, 1e9);
  if (sizeMb === 0) throw new Ptq4vitError(`--size-mb must be greater than 0, got '${v['size-mb']}'`);
  const budget: Budget = { wAvgBits: both ?? avg('w-avg-bits'), aAvgBits: both ?? avg('a-avg-bits'), sizeMb };
  for (const k of Object.keys(budget) as (keyof Budget)[]) if (budget[k] === undefined) delete budget[k];
  return { budget, pin: v['no-pin'] !== true, weightBits: uniform.weightBits, activationBits: uniform.activationBits, candidates };
}

/** --widths: distinct integers from 2 to 16, ascending. */
function widthList(v: Values): number[] {
  const raw = v.widths;
  if (raw === undefined) return [...CANDIDATE_WIDTHS];
  const parts = String(raw).split(',');
  const widths = parts.map((p) => (/^\d+$/.test(p.trim()) ? Number(p.trim()) : NaN));
  if (widths.some((w) => !(w >= 2 && w <= 16)) || new Set(widths).size !== widths.length) {
    throw new Ptq4vitError(`--widths must be distinct integers from 2 to 16 separated by commas, got '${raw}'`);
  }
  return widths.sort((a, b) => a - b);
}

/** Which flag set the budget that failed (for the one-line message). */
function budgetFlagNames(v: Values): string {
  return BUDGET_FLAGS.filter((f) => v[f] !== undefined).map((f) => `--${f} ${v[f]}`).join(' ');
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
  const opts = methodConfig(method, {
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
  if (v['weight-scales'] !== undefined) opts.weightScales = choice(v, 'weight-scales', WEIGHT_SCALES, 'tensor');
  // Where records live changes time and peak memory, never the chosen scales (test/calib_recompute, calib_groups).
  const memoryMib = intFlag(v, 'memory-mib', undefined, 1, 2 ** 20);
  if (memoryMib !== undefined) opts.groupBytes = memoryMib * 2 ** 20;
  // A reversed range would search nothing sensible: candidates run from α·Δ_maxabs up to β·Δ_maxabs.
  if (!(opts.alpha < opts.beta)) throw new Ptq4vitError(`--alpha (${opts.alpha}) must be less than --beta (${opts.beta}): candidate scales run from α·Δ_maxabs up to β·Δ_maxabs`);
  return opts;
}

/** Fail before minutes of calibration if the output cannot be written, or would overwrite an input. */
function checkOutput(out: string, input: string, others: Values): void {
  // A tab-completed --out naming the card or a manifest would silently replace it with a safetensors file.
  const inputs: InputPath[] = [{ what: 'input checkpoint', path: input }];
  if (typeof others.config === 'string') inputs.push({ what: '--config file', path: others.config });
  for (const flag of ['calib', 'eval']) {
    const p = others[flag];
    if (typeof p === 'string') inputs.push(...datasetInputs(flag, p, { listEntries: fs.existsSync(out) }));
  }
  checkOutputNotInput(out, inputs);
  const dir = path.dirname(path.resolve(out));
  try {
    if (!fs.statSync(dir).isDirectory()) throw new Error('not a directory');
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new Ptq4vitError(`cannot write ${out}: directory ${dir} does not exist or is not writable`);
  }
  if (fs.existsSync(out) && fs.statSync(out).isDirectory()) throw new Ptq4vitError(`cannot write ${out}: it is a directory`);
}

/** What each loss fits the Hessian weights to, for the report. */
const LOSS_MEANING: Record<LossKind, string> = {
  label: "cross-entropy against the data's labels",
  pseudo: "cross-entropy against the FP32 model's own predictions",
  fisher: "cross-entropy against labels sampled from the FP32 model's softmax",
  projection: 'Gauss–Newton diagonal of the normalized embedding through a seeded random direction per image',
  contrastive: "cross-entropy over cosine similarities to the calibration images' FP32 embeddings, each image its own label",
};

const KIND_NAME: Record<DatasetKind, string> = {
  'class-folders': 'class folders',
  'raw-manifest': 'manifest',
  'image-folder': 'unlabeled image folder',
  'image-list': 'image list',
};

/** Why the loss is what it is: given with --loss, the default, or the default for data without labels. */
type LossChoice = '--loss' | 'default' | 'default for unlabeled data' | 'default without classifier';

/**
 * The loss for the Hessian weights: --loss when given, otherwise 'label' for labeled calibration data
 * and 'pseudo' (the FP32 model's own predictions) for data without labels. The dataset's classes are
 * checked against the model's only when its labels are used.
 */
function chooseLoss(opts: CalibrationOptions, v: Values, calib: Dataset, numClasses: number): { opts: CalibrationOptions; choice: LossChoice | null } {
  if (opts.metric !== 'hessian') return { opts, choice: null };
  const given = v.loss !== undefined;
  // Without classifier the output is the embedding: labels and logits do not apply (src/grad/loss.ts).
  if (numClasses === 0) {
    if (given && !isEmbeddingLoss(opts.loss)) throw new Ptq4vitError(`--loss ${opts.loss} needs a classifier, but the model has none (num_classes 0, it outputs its embedding): use --loss ${EMBEDDING_LOSSES.join(' or ')}`);
    return given ? { opts, choice: '--loss' } : { opts: { ...opts, loss: DEFAULT_EMBEDDING_LOSS }, choice: 'default without classifier' };
  }
  if (given && isEmbeddingLoss(opts.loss)) throw new Ptq4vitError(`--loss ${opts.loss} is for models without classifier; this model outputs ${numClasses} logits: use --loss label, pseudo or fisher`);
  if (!calib.labeled) {
    if (given && opts.loss === 'label') {
      throw new Ptq4vitError(`--loss label needs labels, but --calib ${v.calib} has none: it is ${calib.description}; use --loss pseudo (the FP32 model's own predictions, the default without labels), or one subfolder per class`);
    }
    return given ? { opts, choice: '--loss' } : { opts: { ...opts, loss: 'pseudo' }, choice: 'default for unlabeled data' };
  }
  if (opts.loss === 'label') {
    try {
      checkClasses(calib, numClasses);
    } catch (e) {
      throw new Ptq4vitError(`${(e as Error).message} (calibrating with --loss pseudo needs no labels)`);
    }
  }
  return { opts, choice: given ? '--loss' : 'default' };
}

export interface CalibrationRun {
  points: PointQuant[];
  seconds: number;
  timing: CalibrationTiming;
}

/** Progress for every calibration phase: each recording pass by images, the search by points (with ETA). */
export function calibrationProgress(label: string, totalPoints: number, quiet: boolean, bars: Pick<ProgressOptions, 'now' | 'write' | 'tty'> = {}): CalibrationOptions['onProgress'] {
  // Made at its first point, so its elapsed seconds are the search's, not the recording's or the sensitivities' before it.
  let search: ProgressBar | null = null;
  let record: ProgressBar | null = null, pass = 0;
  let searched = { done: 0, point: '' };
  return (e) => {
    if (e.phase === 'record') {
      // Once the search is under way (a pipelined calibration records the next group while it runs), a terminal
      // would redraw one line with the two bars in turn: the recording rides on the search's line instead.
      if (search?.tty && searched.done < totalPoints) {
        search.update(searched.done, `${searched.point} · recording ${e.group}/${e.groups}: ${e.images}/${e.totalImages} img`);
        return;
      }
      if (e.group !== pass) {
        pass = e.group;
        record = new ProgressBar(`${label} record ${e.group}/${e.groups}`, e.totalImages, { quiet, ...bars });
      }
      record!.update(e.images);
    } else {
      searched = { done: e.done, point: e.point };
      (search ??= new ProgressBar(`${label} search`, totalPoints, { unit: 'layers', quiet, ...bars })).update(e.done, e.point);
    }
  };
}

/** Calibrate with progress lines for every phase (recording passes by images, the search by points). */
export async function runCalibration(model: VisionModel, images: import('../tensor/tensor.js').Tensor, labels: Int32Array | null, opts: CalibrationOptions, quiet: boolean, label: string): Promise<CalibrationRun> {
  const start = performance.now();
  const onProgress = calibrationProgress(label, model.quantPoints.length, quiet);
  const { results, timing } = await calibrateMany(model, images, labels, [{ ...opts, onProgress }]);
  return { points: results[0], seconds: (performance.now() - start) / 1000, timing };
}

/** The budget in an output file name: w4a4, w4a8, 2.5mb-a6… */
function budgetTag(m: MixedRequest): string {
  const b = m.budget;
  const w = b.sizeMb !== undefined ? `${b.sizeMb}mb` : `w${b.wAvgBits ?? m.weightBits}`;
  return `${w}${b.sizeMb !== undefined ? '-' : ''}a${b.aAvgBits ?? m.activationBits}`;
}

/** How many operands got each width, e.g. "3 bits ×12, 4 bits ×40, 8 bits ×4". */
function histogram(r: MixedResult): string {
  const count = new Map<number, number>();
  for (const w of Object.values(r.policy)) for (const bits of Object.values(w)) count.set(bits!, (count.get(bits!) ?? 0) + 1);
  return [...count].sort((a, b) => a[0] - b[0]).map(([bits, n]) => `${bits} bits ×${n}`).join(', ');
}

/**
 * Mixed precision with progress lines: the budget is checked against the model's operand sizes first (one
 * forward pass of one image), so an impossible budget fails before minutes of calibration.
 */
async function runMixedCalibration(model: VisionModel, images: import('../tensor/tensor.js').Tensor, labels: Int32Array | null, opts: CalibrationOptions, request: MixedRequest & { candidates: number[] }, quiet: boolean, label: string, flags: string): Promise<{ run: CalibrationRun; result: MixedResult; timing: MixedTiming; provenance: Record<string, unknown> }> {
  const items = await operandItems(model, images);
  try {
    checkBudget(items, request, request.candidates);
  } catch (e) {
    if (e instanceof Ptq4vitError) throw new Ptq4vitError(`${flags}: ${e.message}${request.pin ? '; --no-pin lets them take lower widths' : ''}`);
    throw e;
  }
  const start = performance.now();
  const search = calibrationProgress(label, model.quantPoints.length, quiet)!;
  let sens: ProgressBar | null = null;
  const onProgress = (e: MixedProgress) => {
    if (e.phase !== 'sensitivity') return search(e);
    sens ??= new ProgressBar(`${label} sensitivities`, e.total, { unit: 'searches', quiet });
    sens.update(e.done, e.point);
  };
  const sensitivityN = Math.min(SENSITIVITY_N, opts.n);
  const { results, timing } = await calibrateMixed(model, images, labels, opts, [request], { candidates: request.candidates, sensitivityN, onProgress });
  const result = results[0];
  const seconds = (performance.now() - start) / 1000;
  const provenance = mixedProvenance(model, request, result, { candidates: request.candidates, sensitivityN });
  const calibTiming: CalibrationTiming = { recordSeconds: timing.recordSeconds, searchSeconds: timing.sensitivitySeconds + timing.searchSecondsPerRequest[0], searchSecondsPerConfig: timing.searchSecondsPerRequest, groups: timing.passes };
  return { run: { points: result.points, seconds, timing: calibTiming }, result, timing, provenance };
}

/** Peak resident set size of this process so far, in bytes. */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

export async function runQuantize(args: string[]): Promise<void> {
  const v = parse(args, QUANTIZE_COMMAND);
  if (v.help) {
    process.stdout.write(commandHelp(QUANTIZE_COMMAND));
    return;
  }
  applyCommon(v);
  const weights = requireFlag(v, 'model', 'quantize');
  const calibPath = requireFlag(v, 'calib', 'quantize');
  const method = choice<Method>(v, 'method', METHODS, 'ptq4vit');
  const flagOpts = calibrationOptions(v, method);
  const mixed = mixedRequest(v, flagOpts);
  if (mixed && flagOpts.metric !== 'hessian') throw new Ptq4vitError(`${budgetFlagNames(v)}: mixed precision needs the Hessian-guided metric (its sensitivities are Hessian-weighted errors), not --method base or --no-hessian`);
  const smoothAlpha = numberFlag(v, 'smooth', undefined, 0, 1);
  const calibSizeFlag = intFlag(v, 'calib-size', undefined);
  const limit = intFlag(v, 'limit', undefined);
  const out = (v.out as string | undefined) ?? `${path.basename(weights).replace(/\.safetensors$/, '')}.${method}-${mixed ? `mixed-${budgetTag(mixed)}` : `w${flagOpts.weightBits}a${flagOpts.activationBits}`}.safetensors`;
  const input = locateModel(weights); // a hub folder's model.safetensors + config.json, or the card beside the checkpoint
  checkOutput(out, input.weights, { ...v, config: input.hubConfig ?? input.siblingCard ?? v.config });
  const reportFile = v.report as string | undefined;
  if (reportFile !== undefined) checkReportTarget(reportFile, { '--out': out, '--model': input.weights, '--config': input.hubConfig ?? input.siblingCard ?? (v.config as string | undefined), '--calib': calibPath, '--eval': v.eval as string | undefined });

  const loaded = openModel({ weights, config: v.config as string | undefined, arch: v.arch as string | undefined, imgSize: imgSizeFlag(v) });
  if (loaded.quantized) throw new Ptq4vitError(`${weights} is already a quantized model; quantize the float checkpoint`);
  const { model: fpModel } = loaded;
  checkSpecStorable(fpModel.spec);
  // --pin: the patch embedding and the classifier at 8 bits (weights, and the classifier's input), the rest uniform.
  const pinned = new Set(v.pin === true ? fpModel.quantPoints.filter(isPinnable).map((p) => p.name) : []);
  const pinPolicy: BitPolicy = Object.fromEntries(fpModel.quantPoints.filter((p) => pinned.has(p.name)).map((p) => [p.name, p.kind === 'conv' ? { weight: PINNED_BITS } : { weight: PINNED_BITS, input: PINNED_BITS }]));
  const group = weightGroupSize(flagOpts.weightScales);
  if (group !== undefined) {
    // Refused now, not after minutes of calibration: group-wise needs ≤ 4-bit weights and K a multiple of G.
    if (mixed) throw new Ptq4vitError(`--weight-scales ${flagOpts.weightScales}: group-wise weight scales are for ≤ 4-bit weights and cannot be combined with mixed precision (${budgetFlagNames(v)}); use --weight-scales channel or tensor`);
    for (const p of fpModel.quantPoints) {
      if (p.kind !== 'linear' || !p.weight || pinned.has(p.name)) continue;
      const misfit = groupwiseMisfit(p.name, loaded.weights.tensor(p.weight).shape, flagOpts.weightBits, group);
      if (misfit) throw new Ptq4vitError(`--weight-scales ${flagOpts.weightScales}: ${misfit}`);
    }
  }
  const evalData = v.eval === undefined ? null : await openDataset(v.eval as string);
  const calib = await openDataset(calibPath, { allowUnlabeled: true });
  const embedding = isEmbeddingModel(fpModel.spec.arch);
  if (evalData && !embedding) checkClasses(evalData, fpModel.spec.arch.numClasses);
  const { opts, choice: lossChoice } = chooseLoss(flagOpts, v, calib, fpModel.spec.arch.numClasses);
  const quiet = v.json === true && !process.stderr.isTTY;
  // The paper calibrates on 32 images; a folder of a few photos is used whole unless --calib-size asks for more.
  const calibSize = calibSizeFlag ?? Math.min(DEFAULT_CALIB_SIZE, calib.size);
  const tLoad = performance.now();
  const { images, labels, indices, skipped } = await loadCalibration(calib, calibSize, opts.seed, fpModel.spec.preprocess, { skipUnreadable: v['skip-unreadable'] === true });
  const loadSeconds = (performance.now() - tLoad) / 1000;
  // With --smooth the calibrated (and written) model is the smoothed checkpoint: the same float function.
  const smoothed = smoothAlpha === undefined ? null : await smoothChannels(fpModel, loaded.weights, images, smoothAlpha);
  const model = smoothed?.model ?? fpModel;
  if (!quiet && calibSize < DEFAULT_CALIB_SIZE && calibSizeFlag === undefined) process.stderr.write(`--calib ${calibPath} has ${calib.size} images, fewer than the default ${DEFAULT_CALIB_SIZE}: calibrating on all of them\n`);
  if (!quiet && lossChoice === 'default without classifier') process.stderr.write(`${fpModel.spec.name} has no classifier (num_classes 0): calibrating for its embedding with --loss ${opts.loss}\n`);
  if (!quiet && lossChoice === 'default for unlabeled data') process.stderr.write(`--calib ${calibPath} has no labels: calibrating with --loss pseudo (the FP32 model's own predictions)\n`);
  const label = mixed ? `${method} mixed (${describeBudget(mixed.budget)})` : `${method} W${opts.weightBits}A${opts.activationBits}`;
  const collector = reportFile === undefined ? null : new ReportCollector(opts.metric);
  const searchOpts = { ...opts, ...(pinned.size > 0 ? { policy: pinPolicy } : {}), ...(collector ? { trace: collector.trace } : {}) };
  let mixedRun: { result: MixedResult; timing: MixedTiming; provenance: Record<string, unknown> } | null = null;
  let run: CalibrationRun;
  if (mixed) {
    const m = await runMixedCalibration(model, images, labels, searchOpts, mixed, quiet, label, budgetFlagNames(v));
    mixedRun = m;
    run = m.run;
  } else run = await runCalibration(model, images, labels, searchOpts, quiet, label);

  const provenance = {
    tool: 'ptq4vit',
    method,
    ...(mixedRun ? { mixed_precision: mixedRun.provenance } : { w_bits: opts.weightBits, a_bits: opts.activationBits, ...(pinned.size > 0 ? { pinned: { bits: PINNED_BITS, points: [...pinned] } } : {}) }),
    search: { metric: opts.metric, alpha: opts.alpha, beta: opts.beta, n: opts.n, rounds: opts.rounds, twin_softmax: opts.twinSoftmax, twin_gelu: opts.twinGelu, gelu_aligned: opts.geluAligned, softmax_delta_r2: opts.softmaxDeltaR2, ...(opts.weightScales ? { weight_scales: opts.weightScales } : {}) },
    loss: opts.metric === 'hessian' ? opts.loss : null,
    loss_choice: lossChoice,
    seed: opts.seed,
    source_checkpoint: path.basename(weights),
    ...(loaded.inputResized ? { img_size: { checkpoint: loaded.inputResized.from, used: loaded.inputResized.to } } : {}),
    calibration: calibrationRecord(calib, calibPath, indices, skipped),
    ...(smoothed ? { smoothing: { alpha: smoothAlpha, norms: smoothed.norms.map((n) => n.norm) } } : {}),
  };
  const tWrite = performance.now();
  saveQuantizedModel(out, smoothed?.weights ?? loaded.weights, { spec: model.spec, points: run.points, provenance });
  const writeSeconds = (performance.now() - tWrite) / 1000;
  const tEval = performance.now();

  let fp: EvalResult | null = null, quant: EvalResult | null = null;
  let fidelity: EmbeddingFidelity | null = null;
  if (evalData && embedding) {
    // k-NN neighbours: the calibration pool (all of --calib), embedded by each model. Both run as one ONNX
    // graph as `eval` runs them (the integer graph; the simulation for codes wider than 8 bits).
    const wide = run.points.some((p) => (p.kind === 'matmul' ? Math.max(p.a.bits, p.b.bits) : Math.max(p.weightBits, p.input?.bits ?? 0)) > 8);
    const quantized = wide ? { model, runner: new QuantRunner(run.points), label } : { model: await OnnxModel.create(await exportOnnx(model, { quant: run.points }), model.spec, `${label} (integer graph)`), label };
    const fp32 = { model: await OnnxModel.create(await exportOnnx(fpModel), fpModel.spec, 'FP32 graph'), label: 'FP32' };
    fidelity = await embeddingFidelity({ model: quantized, reference: fp32 }, evalData, calib.labeled ? calib : null, { limit, quiet });
  } else if (evalData) {
    const total = Math.min(limit ?? evalData.size, evalData.size);
    const fpBar = new ProgressBar('eval FP32', total, { quiet });
    fp = await evaluate(fpModel, evalData, { limit, onProgress: (d) => fpBar.update(d) });
    const qBar = new ProgressBar(`eval ${label}`, total, { quiet });
    quant = await evaluate(model, evalData, { limit, runner: new QuantRunner(run.points), onProgress: (d) => qBar.update(d) });
  }
  const evalSeconds = (performance.now() - tEval) / 1000;
  if (collector && reportFile !== undefined) {
    writeReport(reportFile, quantizeReport(model.spec, provenance, collector, fp && quant ? { fp32: fp, quantized: quant, images: quant.images } : undefined));
  }
  const rows: [string, string][] = [
    ['method', describeQuantization(provenance)],
    ['calibration', `${indices.length}${indices.length < calib.size ? ` of ${calib.size}` : ''} images from ${path.basename(calibPath)} (${KIND_NAME[calib.kind]}${indices.length < calib.size ? `, seed ${opts.seed}` : ''}) · ${run.seconds.toFixed(1)} s`],
    ['written', out],
    ...(reportFile === undefined ? [] : [['report', reportFile] as [string, string]]),
  ];
  if (mixedRun) {
    const { summary } = mixedRun.result, t = mixedRun.timing;
    rows.splice(1, 0, ['budget', `${describeBudget(mixed!.budget)}${mixed!.pin ? `; patch embedding${embedding ? '' : ' and classifier'} pinned at ${PINNED_BITS} bits` : ''}`]);
    rows.splice(2, 0, ['widths', `weights ${summary.wAvgBits.toFixed(3)} bits on average (${summary.weightMb.toFixed(3)} MB), activations ${summary.aAvgBits.toFixed(3)} bits on average; operands per width: ${histogram(mixedRun.result)}`]);
    rows.splice(3, 0, ['time', `record ${t.recordSeconds.toFixed(1)} s (${t.passes} pass${t.passes === 1 ? '' : 'es'}), sensitivities ${t.sensitivitySeconds.toFixed(1)} s, allocation ${t.allocationSeconds.toFixed(2)} s, search ${t.searchSecondsPerRequest[0].toFixed(1)} s`]);
  }
  if (smoothed) {
    const mean = (f: (n: SmoothedNorm) => number) => (smoothed.norms.reduce((a, n) => a + f(n), 0) / smoothed.norms.length).toFixed(2);
    rows.splice(1, 0, ['smoothing', smoothed.norms.length === 0 ? 'no LayerNorm feeds a linear layer: nothing rescaled' : `α ${smoothAlpha} on ${smoothed.norms.length} norms → linear layers; input channel range max/mean ${mean((n) => n.rangeRatioBefore)} → ${mean((n) => n.rangeRatioAfter)} on average`]);
  }
  if (lossChoice) rows.splice(1, 0, ['loss', `${opts.loss}: ${LOSS_MEANING[opts.loss]}${lossChoice === 'default for unlabeled data' ? ' (the default: the calibration images have no labels)' : ''}`]);
  if (fidelity) rows.push(...fidelityRows(fidelity));
  if (fp && quant) {
    rows.push(['top-1', `${percent(quant.top1)}  (FP32 ${percent(fp.top1)}, ${((quant.top1 - fp.top1) * 100).toFixed(2)} points)`]);
    rows.push(['top-5', `${percent(quant.top5)}  (FP32 ${percent(fp.top5)})`]);
    rows.push(['images', `${quant.images}`]);
  }
  printReport({
    title: `${model.spec.name} quantized`,
    rows,
    notes: skipped.slice(0, 10).map((s) => `unreadable, replaced: ${s.file}: ${s.reason}`),
    json: v.json === true
      ? {
          command: 'quantize',
          model: model.spec.name,
          method,
          ...(mixedRun
            ? { mixed_precision: { budget: mixedRun.provenance.budget, w_avg_bits: mixedRun.result.summary.wAvgBits, a_avg_bits: mixedRun.result.summary.aAvgBits, weight_mb: mixedRun.result.summary.weightMb, policy: mixedRun.result.policy, sensitivity_seconds: mixedRun.timing.sensitivitySeconds, allocation_seconds: mixedRun.timing.allocationSeconds } }
            : { w_bits: opts.weightBits, a_bits: opts.activationBits }),
          ...(smoothed ? { smoothing: { alpha: smoothAlpha, norms: smoothed.norms.map((n) => ({ norm: n.norm, layers: n.layers, range_ratio_before: n.rangeRatioBefore, range_ratio_after: n.rangeRatioAfter })) } } : {}),
          calib_images: indices.length,
          calib_skipped: skipped.length,
          loss: opts.metric === 'hessian' ? opts.loss : null,
          calib_seconds: run.seconds,
          phase_seconds: { load_calibration: loadSeconds, record: run.timing.recordSeconds, search: run.timing.searchSeconds, write: writeSeconds, ...(evalData ? { eval: evalSeconds } : {}) },
          record_passes: run.timing.groups,
          record_groups_in_files: run.timing.groupsInFiles ?? 0,
          peak_rss_bytes: peakRssBytes(),
          out,
          ...(fidelity ? fidelityJson(fidelity) : {}),
          ...(fp && quant ? { top1: quant.top1, top5: quant.top5, fp32_top1: fp.top1, fp32_top5: fp.top5, eval_images: quant.images } : {}),
        }
      : undefined,
  });
}

/**
 * The calibration set in the provenance: what was read, and which images by index and (for files)
 * by path relative to the folder or list, so the same sample can be checked or rebuilt.
 */
function calibrationRecord(calib: Dataset, calibPath: string, indices: number[], skipped: SkippedImage[]): Record<string, unknown> {
  const files = calib.kind === 'raw-manifest' ? null : indices.map((i) => calib.itemPath(i));
  return {
    data: path.basename(calibPath),
    kind: calib.kind,
    labeled: calib.labeled,
    size: calib.size,
    images: indices.length,
    indices,
    ...(files ? { files } : {}),
    ...(skipped.length > 0 ? { skipped: skipped.map((s) => ({ file: calib.itemPath(s.index) ?? s.file, reason: s.reason })) } : {}),
  };
}
