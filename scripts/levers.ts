/**
 * RESULTS.md, section "Per-operand levers at 4 bits": how much closer to FP32 each known way of shrinking a
 * quantized operand's error brings the 4-bit models of "Mixed precision" (uniform W4A4 and mixed avg 4,
 * vit_tiny_c10 and swin_micro_c10): KL(FP32 ‖ quantized) on the first 1000 test images, the quantized
 * parameters unchanged except where a row says otherwise.
 *
 *  - channel smoothing α 0.5 (the product's --smooth, calibrated anew: section "Channel smoothing");
 *  - dynamic per-token scales for the uniform linear inputs (qkv, proj, fc1, …): Δ_t = max|x_t|/(2^(k−1)−0.5)
 *    per token at run time instead of the searched static Δ — simulation only, not a product feature;
 *  - dynamic per-row scales for the post-softmax operand: unsigned k-bit codes, Δ_row = max_row/(2^k−1),
 *    instead of the twin quantizer — simulation only;
 *  - both dynamic levers together;
 *  - bias correction: every linear layer's mean output error on the calibration images, E[Ŵx̂ − Wx] per output
 *    channel with the layer's own (quantized-model) input, subtracted from its bias — simulation only;
 *  - channel shift (Outlier Suppression+): every LayerNorm → biased linear pair's input channel j centred on
 *    the calibration images, c_j = (max_j + min_j)/2 subtracted from the norm's β and W·c added to the layer's
 *    bias — the same float model, calibrated anew (Swin's bias-free patch-merging reduction is left out);
 *  - an unsigned (zero-point) k-bit grid for fc2's post-GELU input instead of the twin, which spends half its
 *    codes on GELU's short negative tail: codes lo … lo + 2^k − 1 (lo = 0, −1, −2 or −3), Δ and lo chosen by
 *    the squared error on the calibration images' float fc2 inputs — simulation only;
 *  - and, for the mixed avg 4 models, the uniform activation Δs tuned end to end on the whole model's KL on
 *    the calibration images (tuneOnCalibration), measured on the test images.
 *
 * Reads the files of out/mixed_precision/ and out/smoothing/ (run mixed_precision.js and smoothing.js first).
 *
 *   npx tsc -p . && nice -n 10 node dist/scripts/levers.js
 *
 * ≈ 30 min of CPU; each model's measurements are cached in out/levers/.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Runner, VisionModel } from '../src/models/types.js';
import { openModel } from '../src/open.js';
import { fakeQuantActivation } from '../src/quant/kinds/index.js';
import { calibrateMany } from '../src/quant/calibrate.js';
import { methodConfig } from '../src/quant/methods.js';
import { calibrateMixed, isPinnable } from '../src/quant/mixed.js';
import { buildModel } from '../src/models/load.js';
import type { TensorSource } from '../src/models/weights.js';
import { overridden } from '../src/quant/smooth.js';
import type { ActivationQuant, PointQuant } from '../src/quant/params.js';
import { dequantize, QuantRunner, weightGrid } from '../src/quant/runner.js';
import { linear, matmul } from '../src/tensor/gemm.js';
import { RecordingRunner } from '../src/tensor/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { Divergence, firstImages, rowFiles, rowStem } from './divergence.js';
import { machine, replaceSection } from './markdown.js';
import { openSharedModel, sharedCalib32, sharedDir } from './shared.js';

const MODELS = ['vit_tiny_c10', 'swin_micro_c10'];
const CONFIGS = ['PTQ4ViT W4A4', 'mixed avg 4'];
const log = (s: string) => process.stderr.write(`${s}\n`);

/** x̂ with one Δ per row of the last axis: symmetric (Δ = max|x|/(2^(k−1)−0.5)) or unsigned (Δ = max/(2^k−1)). */
function perRow(x: Tensor, bits: number, codes: 'signed' | 'unsigned'): Tensor {
  const signed = codes === 'signed';
  const d = x.shape[x.shape.length - 1], out = new Float32Array(x.size);
  const lo = signed ? -(2 ** (bits - 1)) : 0, hi = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1, steps = signed ? 2 ** (bits - 1) - 0.5 : hi;
  for (let s = 0; s < x.size; s += d) {
    let m = 0;
    for (let i = s; i < s + d; i++) m = Math.max(m, Math.abs(x.data[i]));
    const delta = m / steps;
    if (delta > 0) for (let i = s; i < s + d; i++) out[i] = Math.max(lo, Math.min(hi, Math.round(x.data[i] / delta))) * delta;
  }
  return new Tensor(out, x.shape);
}

/** An unsigned k-bit grid with its lowest code: x̂ = clamp(round(x/Δ), lo, lo + 2^k − 1)·Δ. */
interface UnsignedGrid {
  delta: number;
  lo: number;
}

function onUnsignedGrid(x: Float32Array, g: UnsignedGrid, bits: number): Float32Array {
  const hi = g.lo + 2 ** bits - 1, out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = Math.max(g.lo, Math.min(hi, Math.round(x[i] / g.delta))) * g.delta;
  return out;
}

/** The grid of least squared error on `x`: Δ = f·max/(2^k − 1 + lo), f from 0.30 to 1.00 in steps of 0.02. */
function fitUnsignedGrid(x: Float32Array, bits: number): UnsignedGrid {
  let max = 0;
  for (let i = 0; i < x.length; i++) max = Math.max(max, x[i]);
  let best = { error: Infinity, grid: { delta: max / (2 ** bits - 1), lo: 0 } };
  for (let step = 0; step <= 35; step++) {
    for (const lo of [0, -1, -2, -3]) {
      const grid = { delta: ((0.3 + 0.02 * step) * max) / (2 ** bits - 1 + lo), lo };
      if (!(grid.delta > 0)) continue;
      const q = onUnsignedGrid(x, grid, bits);
      let error = 0;
      for (let i = 0; i < x.length; i++) error += (q[i] - x[i]) ** 2;
      if (error < best.error) best = { error, grid };
    }
  }
  return best.grid;
}

/** The fitted unsigned grid of every post-GELU input, on the float model's inputs on the calibration images. */
async function unsignedGeluGrids(model: VisionModel, points: PointQuant[], images: Tensor): Promise<Map<string, UnsignedGrid>> {
  const gelu = new Set(model.quantPoints.filter((p) => p.input === 'post-gelu').map((p) => p.name));
  const recording = new RecordingRunner();
  await model.forward(images, recording);
  const grids = new Map<string, UnsignedGrid>();
  for (const p of points) {
    if (p.kind === 'matmul' || !gelu.has(p.point) || !p.input) continue;
    grids.set(p.point, fitUnsignedGrid(recording.records.get(p.point)!.inputs[0].data, p.input.bits));
  }
  return grids;
}

/**
 * The checkpoint with every LayerNorm → linear pair's input channels centred (Outlier Suppression+'s shift):
 *
 *   y = W·(x + β) + b = W·(x + β − c) + (b + W·c),   c_j = (max_j + min_j)/2 over the calibration images
 *
 * The same float model; pairs whose layers have no bias to take W·c are left as they are.
 */
async function shiftedModel(model: VisionModel, weights: TensorSource, images: Tensor): Promise<VisionModel> {
  const byNorm = new Map<string, typeof model.quantPoints>();
  for (const p of model.quantPoints) if (p.inputNorm && p.weight) byNorm.set(p.inputNorm, [...(byNorm.get(p.inputNorm) ?? []), p]);
  const recording = new RecordingRunner();
  await model.forward(images, recording);
  const replaced = new Map<string, Tensor>();
  for (const [norm, layers] of byNorm) {
    if (!layers.every((p) => p.bias)) continue;
    const x = recording.records.get(layers[0].name)!.inputs[0], channels = x.shape[x.shape.length - 1];
    const max = new Float64Array(channels).fill(-Infinity), min = new Float64Array(channels).fill(Infinity);
    for (let i = 0; i < x.size; i++) (max[i % channels] = Math.max(max[i % channels], x.data[i])), (min[i % channels] = Math.min(min[i % channels], x.data[i]));
    const c = Array.from(max, (m, j) => (m + min[j]) / 2);
    const beta = weights.tensor(`${norm}.bias`);
    replaced.set(`${norm}.bias`, new Tensor(Float32Array.from(beta.data, (b, j) => b - c[j]), beta.shape));
    for (const p of layers) {
      const w = weights.tensor(p.weight!), bias = weights.tensor(p.bias!);
      replaced.set(p.bias!, new Tensor(Float32Array.from(bias.data, (b, o) => b + w.data.subarray(o * channels, (o + 1) * channels).reduce((s, v, j) => s + v * c[j], 0)), bias.shape));
    }
  }
  return buildModel(model.spec, overridden(weights, replaced));
}

/** The config of "Mixed precision" calibrated anew on another checkpoint of the same model. */
async function recalibrated(model: VisionModel, images: Tensor, labels: Int32Array | null, config: string): Promise<PointQuant[]> {
  if (config === 'PTQ4ViT W4A4') return (await calibrateMany(model, images, labels, [methodConfig('ptq4vit', { weightBits: 4, activationBits: 4 })])).results[0];
  const request = { budget: { wAvgBits: 4, aAvgBits: 4 }, pin: true, weightBits: 8, activationBits: 8 };
  return (await calibrateMixed(model, images, labels, methodConfig('ptq4vit', { weightBits: 8, activationBits: 8 }), [request])).results[0].points;
}

/** The simulation with some operands quantized per token / per row at run time (and biases corrected). */
class Lever implements Runner {
  private readonly base: QuantRunner;
  private readonly params: Map<string, PointQuant>;
  private readonly dequantized = new Map<Tensor, Tensor>();

  constructor(points: PointQuant[], private readonly opts: { tokens?: boolean; softmaxRows?: boolean; biasShift?: Map<string, Float64Array>; unsignedGelu?: Map<string, UnsignedGrid> }) {
    this.base = new QuantRunner(points);
    this.params = new Map(points.map((p) => [p.point, p]));
  }

  private shifted(point: string, bias: Tensor | null): Tensor | null {
    const shift = this.opts.biasShift?.get(point);
    return shift && bias ? new Tensor(Float32Array.from(bias.data, (b, j) => b - shift[j]), bias.shape) : bias;
  }

  async linear(point: string, x: Tensor, weight: Tensor, bias: Tensor | null): Promise<Tensor> {
    const q = this.params.get(point)!;
    if (q.kind === 'matmul' || !q.input) return this.base.linear(point, x, weight, this.shifted(point, bias));
    const grid = this.opts.unsignedGelu?.get(point);
    // The replaced input: a float product with the dequantized weight, as QuantRunner computes a float input.
    const xq = grid ? new Tensor(onUnsignedGrid(x.data, grid, q.input.bits), x.shape) : this.opts.tokens && q.input.kind === 'uniform' ? perRow(x, q.input.bits, 'signed') : null;
    if (!xq) return this.base.linear(point, x, weight, this.shifted(point, bias));
    let w = this.dequantized.get(weight);
    if (!w) this.dequantized.set(weight, (w = dequantize(weightGrid(weight, q))));
    return linear(xq, w, this.shifted(point, bias));
  }

  async matmul(point: string, a: Tensor, b: Tensor, transB: boolean): Promise<Tensor> {
    const q = this.params.get(point)!;
    if (q.kind === 'matmul' && this.opts.softmaxRows && q.a.kind === 'twin-softmax') {
      const groupSize = b.shape[1] * b.shape[2];
      return matmul(perRow(a, q.a.bits, 'unsigned'), new Tensor(fakeQuantActivation(b.data, q.b as ActivationQuant, groupSize), b.shape), transB);
    }
    return this.base.matmul(point, a, b, transB);
  }
}

/** Mean output error of every biased linear layer against the float product of the same input (calibration images). */
async function biasShifts(model: VisionModel, points: PointQuant[], images: Tensor): Promise<Map<string, Float64Array>> {
  const quant = new QuantRunner(points);
  const shifts = new Map<string, Float64Array>();
  const recorder: Runner = {
    linear: async (point, x, weight, bias) => {
      const y = await quant.linear(point, x, weight, bias);
      if (bias && point !== 'patch_embed.proj') {
        const ref = await linear(x, weight, bias), n = bias.size, rows = y.size / n;
        const s = new Float64Array(n);
        for (let i = 0; i < y.size; i++) s[i % n] += (y.data[i] - ref.data[i]) / rows;
        shifts.set(point, s);
      }
      return y;
    },
    matmul: (point, a, b, transB) => quant.matmul(point, a, b, transB),
  };
  await model.forward(images, recorder);
  return shifts;
}

const signedPct = (c: number) => `${c < 0 ? '−' : '+'}${Math.abs(100 * c).toFixed(0)}%`;

/** A value made on first use (FP32's outputs on the test images are needed only when a row is not cached). */
function lazy<T>(make: () => Promise<T>): () => Promise<T> {
  let value: Promise<T> | undefined;
  return () => (value ??= make());
}

/** The largest reduction of each lever over the rows of one config (uniform W4A4 or mixed avg 4), as "−24%". */
function best(config: string, column: number): string {
  const c = Math.min(...changes.filter((r) => r.config === config).map((r) => r.change[column]));
  return `${c < 0 ? '−' : '+'}${Math.abs(100 * c).toFixed(0)}%`;
}

function reading(): string {
  const lever = (i: number) => `${columns[i]} ${best(CONFIGS[0], i)} / ${best(CONFIGS[1], i)}`;
  return `Reading: the best change each lever makes on either model, uniform W4A4 / mixed avg 4: ${columns.slice(1).map((_, i) => lever(i + 1)).join('; ')}. The errors are rounding noise, not a bias (bias correction does not remove them)${changes.every((r) => r.change[UNSIGNED_GELU] > 0) ? '; the twin GELU quantizer\'s fine negative range is worth more than the finer positive steps an unsigned grid would give (every row worse without it)' : ''}; no lever takes off more than ${Math.round(-100 * Math.min(...changes.flatMap((r) => r.change)))}% — less on the mixed models, whose allocation has already given the sensitive operands more bits — where a 4-bit model within 0.3 points of FP32 needs about a third of the error ("Mixed precision diagnostics"). Only smoothing and the shift cost nothing at inference (the same float model, calibrated anew); the dynamic scales would add a per-token maximum before every quantized product.`;
}

/**
 * End-to-end fitting on the calibration images, the direction block reconstruction takes: every uniform
 * activation operand's Δ (the classifier's excepted: isPinnable) in forward order is scaled by the factor of TUNE_FACTORS
 * that lowers the whole quantized model's KL(FP32 ‖ quantized) on the 32 calibration images, or kept; one sweep.
 */
const TUNE_FACTORS = [0.85, 0.93, 1.07, 1.15];
async function tuneOnCalibration(model: VisionModel, points: PointQuant[], images: Tensor): Promise<{ points: PointQuant[]; before: number; after: number; changed: number; operands: number }> {
  const calib = await Divergence.of(model, [images]);
  const tuned = structuredClone(points);
  const klOf = async () => (await calib.measure(new QuantRunner(tuned))).kl;
  const before = await klOf();
  let best = before, changed = 0;
  const pinned = new Set(model.quantPoints.filter(isPinnable).map((p) => p.name));
  const operands = tuned.flatMap((p) => (p.kind === 'matmul' ? [p.a, p.b] : p.input && !pinned.has(p.point) ? [p.input] : [])).filter((q) => q.kind === 'uniform');
  for (const q of operands) {
    const original = q.deltas;
    let keep = original;
    for (const f of TUNE_FACTORS) {
      q.deltas = original.map((d) => d * f);
      const kl = await klOf();
      if (kl < best) (best = kl), (keep = q.deltas);
    }
    q.deltas = keep;
    if (keep !== original) changed++;
  }
  return { points: tuned, before, after: best, changed, operands: operands.length };
}

/** The column of the unsigned post-GELU grid (the reading checks its sign). */
const UNSIGNED_GELU = 6;
const columns = ['as calibrated', 'smoothing α 0.5 (--smooth)', 'dynamic per-token linear inputs', 'dynamic per-row softmax', 'both dynamic', 'bias correction', 'unsigned post-GELU grid', 'channel shift (OS+)'];
const rows: string[] = [];
/** Each row's relative KL change per column, for the reading. */
const changes: { config: string; change: number[] }[] = [];
for (const name of MODELS) {
  const { model, weights } = openSharedModel(name);
  const { images, labels } = await sharedCalib32(model.spec.preprocess);
  const divergence = lazy(async () => Divergence.of(model, await firstImages(path.join(sharedDir, 'data', 'cifar10', 'test.json'), 1000, model.spec.preprocess)));
  for (const config of CONFIGS) {
    const file = rowFiles(path.join('out', 'mixed_precision'), name, config).file;
    const smoothedFile = rowFiles(path.join('out', 'smoothing'), name, config).file;
    if (!fs.existsSync(file) || !fs.existsSync(smoothedFile)) throw new Error(`${file} or ${smoothedFile} is missing: run mixed_precision.js and smoothing.js first`);
    const cache = path.join('out', 'levers', `${rowStem(name, config)}.json`);
    // One runner per column (with the float model it runs on when not FP32's); cached columns are not re-measured.
    const points = openModel({ weights: file }).quantized!.points;
    const columnRunners: (() => Promise<{ runner: Runner; own?: VisionModel }>)[] = [
      async () => ({ runner: new QuantRunner(points) }),
      async () => {
        const smoothed = openModel({ weights: smoothedFile });
        return { runner: new QuantRunner(smoothed.quantized!.points), own: smoothed.model };
      },
      async () => ({ runner: new Lever(points, { tokens: true }) }),
      async () => ({ runner: new Lever(points, { softmaxRows: true }) }),
      async () => ({ runner: new Lever(points, { tokens: true, softmaxRows: true }) }),
      async () => ({ runner: new Lever(points, { biasShift: await biasShifts(model, points, images) }) }),
      async () => ({ runner: new Lever(points, { unsignedGelu: await unsignedGeluGrids(model, points, images) }) }),
      async () => {
        const shifted = await shiftedModel(model, weights, images);
        log(`${name} ${config}: calibrating the shifted checkpoint`);
        return { runner: new QuantRunner(await recalibrated(shifted, images, labels, config)), own: shifted };
      },
    ];
    const kl = fs.existsSync(cache) ? (JSON.parse(fs.readFileSync(cache, 'utf8')) as number[]) : [];
    if (kl.length < columnRunners.length) {
      const d = await divergence();
      for (const make of columnRunners.slice(kl.length)) {
        const { runner, own } = await make();
        kl.push((await d.measure(runner, own)).kl);
      }
      fs.mkdirSync(path.dirname(cache), { recursive: true });
      fs.writeFileSync(cache, JSON.stringify(kl));
    }
    changes.push({ config, change: kl.map((v) => v / kl[0] - 1) });
    log(`${name} ${config}: ${kl.map((v) => (v * 1e3).toFixed(2)).join(' ')}`);
    rows.push(`| ${name} | ${config} | ${kl.map((v, i) => `${(v * 1e3).toFixed(2)}${i === 0 ? '' : ` (${v >= kl[0] ? '+' : '−'}${Math.abs(100 * (v / kl[0] - 1)).toFixed(0)}%)`}`).join(' | ')} |`);
  }
}

// End-to-end tuning of the mixed avg 4 models' scales on the calibration images (cached: minutes per model).
const tunedRows: string[] = [];
const tunedTestChange: number[] = [];
for (const name of MODELS) {
  const cache = path.join('out', 'levers', `${name}.tuned.json`);
  let t: { calibBefore: number; calibAfter: number; testBefore: number; testAfter: number; changed: number; operands: number };
  if (fs.existsSync(cache)) t = JSON.parse(fs.readFileSync(cache, 'utf8')) as typeof t;
  else {
    const { model } = openSharedModel(name);
    const { images } = await sharedCalib32(model.spec.preprocess);
    const points = openModel({ weights: rowFiles(path.join('out', 'mixed_precision'), name, 'mixed avg 4').file }).quantized!.points;
    log(`${name}: tuning the mixed avg 4 scales on the calibration KL`);
    const r = await tuneOnCalibration(model, points, images);
    const test = await Divergence.of(model, await firstImages(path.join(sharedDir, 'data', 'cifar10', 'test.json'), 1000, model.spec.preprocess));
    t = { calibBefore: r.before, calibAfter: r.after, testBefore: (await test.measure(new QuantRunner(points))).kl, testAfter: (await test.measure(new QuantRunner(r.points))).kl, changed: r.changed, operands: r.operands };
    fs.mkdirSync(path.dirname(cache), { recursive: true });
    fs.writeFileSync(cache, JSON.stringify(t));
  }
  tunedTestChange.push(t.testAfter / t.testBefore - 1);
  const pct = (a: number, b: number) => `${b < a ? '−' : '+'}${Math.abs(100 * (b / a - 1)).toFixed(0)}%`;
  tunedRows.push(`| ${name} | mixed avg 4 | ${t.changed} of ${t.operands} | ${(t.calibBefore * 1e3).toFixed(2)} → ${(t.calibAfter * 1e3).toFixed(2)} (${pct(t.calibBefore, t.calibAfter)}) | ${(t.testBefore * 1e3).toFixed(2)} → ${(t.testAfter * 1e3).toFixed(2)} (${pct(t.testBefore, t.testAfter)}) |`);
}

replaceSection('RESULTS.md', 'Per-operand levers at 4 bits', [
  'How much closer to FP32 each known way of shrinking a quantized operand\'s error brings the 4-bit models of "Mixed precision": KL(FP32 ‖ quantized) ×10⁻³ on the first 1000 test images (change against the model as calibrated). Only smoothing is a product feature (`--smooth`, calibrated anew); the others keep the calibrated parameters and change one thing in the simulation: dynamic per-token scales for the uniform linear inputs (Δ_t = max|x_t|/(2^(k−1)−0.5) per token at run time), dynamic per-row scales for the post-softmax operand (unsigned, Δ_row = max_row/(2^k−1), instead of the twin quantizer), both, each linear layer\'s mean output error on the calibration images (its own input, quantized vs float product) subtracted from its bias, or an unsigned k-bit grid for fc2\'s post-GELU input (codes lo … lo + 2^k − 1 with lo ∈ {0, −1, −2, −3}; Δ and lo of least squared error on the calibration images\' float inputs) instead of the twin, which spends half its codes on GELU\'s negative tail. Channel shift (Outlier Suppression+) is, like smoothing, a rewrite of the float checkpoint calibrated anew, but not a product feature: each LayerNorm → biased linear pair\'s input channel j centred on the calibration images (c_j = (max_j + min_j)/2 taken off the norm\'s β, W·c added to the layer\'s bias; Swin\'s bias-free patch-merging reduction left out).',
  `Produced by \`npx tsc -p . && nice -n 10 node dist/scripts/levers.js\` (${machine()}).`,
  '',
  `| model | config | ${columns.join(' | ')} |`,
  `|---|---|${columns.map(() => '---').join('|')}|`,
  ...rows,
  '',
  reading(),
  '',
  `Fitting the scales end to end instead, as block reconstruction does (with one parameter per operand rather than learned rounding): each uniform activation operand's Δ, in forward order, scaled by whichever of ${TUNE_FACTORS.join(', ')} (or 1) lowers the whole quantized model's KL on the 32 calibration images, one sweep:`,
  '',
  '| model | config | Δs changed | KL calib32 ×10⁻³ | KL test (first 1000) ×10⁻³ |',
  '|---|---|---|---|---|',
  ...tunedRows,
  '',
  tunedTestChange.every((c) => c > -0.1)
    ? 'The calibration KL falls and the test KL does not follow (its best change ' + signedPct(Math.min(...tunedTestChange)) + '): with 32 images, fitting the whole model\'s output fits those images. The per-operand Hessian-guided search generalizes as well or better than the end-to-end objective here.'
    : 'End-to-end fitting carries over to the test images here (test KL change ' + tunedTestChange.map(signedPct).join(', ') + ').',
].join('\n'), '# Results');
