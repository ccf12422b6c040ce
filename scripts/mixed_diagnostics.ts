/**
 * RESULTS.md, section "Mixed precision diagnostics": why mixed precision at an average of 4 bits stays
 * ~0.5 points below FP32 on vit_tiny_c10. Activations only (weights at 8 bits), where most of the loss is:
 *
 *  1. Each activation operand alone quantized at k bits (its Δ from uniform PTQ4ViT W8Ak), everything else
 *     float: its measured KL(FP32 ‖ quantized) on the 32 calibration images — the quantity the allocation's
 *     Hessian proxy stands in for. Rank correlation of the proxies (per-image and diagonal Fisher, the
 *     sensitivities calibrateMixed computes) with it.
 *  2. Additivity: Σ of the single-operand KLs of a policy against the KL of the whole quantized model, for
 *     uniform W8Ak and the mixed policies.
 *  3. How much a perfect proxy would gain: the allocation redone with the measured KLs as sensitivities, its
 *     final search run, and its model measured like the others.
 *
 *   npx tsc -p . && nice -n 10 node dist/scripts/mixed_diagnostics.js
 *
 * Cases: vit_tiny_c10 at 4 bits, swin_micro_c10 at 4 and 3.5 bits. About 25 minutes of CPU from scratch;
 * calibrations and single-operand KLs are cached in out/mixed_diagnostics/ (per model, per budget).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Runner, VisionModel } from '../src/models/types.js';
import { calibrateMany } from '../src/quant/calibrate.js';
import { fakeQuantActivation } from '../src/quant/kinds/index.js';
import { methodConfig } from '../src/quant/methods.js';
import { allocatePolicy, calibrateMixed, CANDIDATE_WIDTHS, summarize, type MixedRequest, type OperandItem } from '../src/quant/mixed.js';
import type { ActivationQuant, BitPolicy, PointQuant, PointWidths } from '../src/quant/params.js';
import { QuantRunner } from '../src/quant/runner.js';
import type { SensitivityScore } from '../src/quant/search.js';
import { linear, matmul } from '../src/tensor/gemm.js';
import { Tensor } from '../src/tensor/tensor.js';
import { Divergence, firstImages } from './divergence.js';
import { machine, replaceSection } from './markdown.js';
import { openSharedModel, sharedCalib32, sharedDir } from './shared.js';

/** The cases: issue 12's two targets on the models where they are missed. */
const CASES: readonly { name: string; budget: number }[] = [
  { name: 'vit_tiny_c10', budget: 4 },
  { name: 'swin_micro_c10', budget: 4 },
  { name: 'swin_micro_c10', budget: 3.5 },
];
const TEST_IMAGES = 1000;
/** The wider candidate set of the last row of every case (the product's default is CANDIDATE_WIDTHS). */
const WIDE_WIDTHS = [2, 3, 4, 5, 6, 7, 8];
const cacheDir = path.join('out', 'mixed_diagnostics');
const key = (i: { point: string; operand: string }) => `${i.point}:${i.operand}`;
const k3 = (x: number) => (x * 1000).toFixed(2);

async function cached<T>(name: string, file: string, make: () => Promise<T>): Promise<T> {
  const at = path.join(cacheDir, `${name}.${file}.json`);
  if (fs.existsSync(at)) return JSON.parse(fs.readFileSync(at, 'utf8')) as T;
  const value = await make();
  fs.mkdirSync(cacheDir, { recursive: true });
  fs.writeFileSync(at, JSON.stringify(value));
  return value;
}

/** Float everywhere except one operand, fake-quantized by `q`. */
function oneOperand(point: string, operand: string, q: ActivationQuant): Runner {
  const fq = (t: Tensor, groupSize: number) => new Tensor(fakeQuantActivation(t.data, q, groupSize), t.shape);
  return {
    linear: async (p, x, w, b) => linear(p === point && operand === 'input' ? fq(x, x.size) : x, w, b),
    matmul: async (p, a, b, transB) => {
      if (p !== point) return matmul(a, b, transB);
      return operand === 'a' ? matmul(fq(a, a.size / a.shape[0]), b, transB) : matmul(a, fq(b, b.size / b.shape[0]), transB);
    },
  };
}

/** Spearman's rank correlation (no ties expected among these continuous scores). */
function spearman(a: number[], b: number[]): number {
  const rank = (v: number[]) => {
    const order = v.map((x, i) => [x, i] as const).sort((p, q) => p[0] - q[0]);
    const r = new Array<number>(v.length);
    order.forEach(([, i], k) => (r[i] = k));
    return r;
  };
  const [ra, rb] = [rank(a), rank(b)];
  const n = a.length;
  return 1 - (6 * ra.reduce((s, x, i) => s + (x - rb[i]) ** 2, 0)) / (n * (n * n - 1));
}

const base = methodConfig('ptq4vit', { weightBits: 8, activationBits: 8 });
type Scores = Record<string, Record<number, SensitivityScore>>;
interface MixedRun { items: OperandItem[]; policy: BitPolicy; points: PointQuant[]; scores: Scores }

/** What every budget of one model shares: its uniform W8Ak quantizers and the image sets (the single-operand KLs through their cache). */
interface ModelData {
  name: string;
  model: VisionModel;
  images: Tensor;
  labels: Int32Array | null;
  uniform: PointQuant[][];
  calib: Divergence;
  test: Divergence;
}

async function modelData(name: string): Promise<ModelData> {
  const { model } = openSharedModel(name);
  const { images, labels } = await sharedCalib32(model.spec.preprocess);
  // Uniform PTQ4ViT W8Ak at every candidate width: each operand's k-bit quantizer.
  const uniform = await cached(name, 'uniform', async () => {
    process.stderr.write(`${name}: uniform W8Ak calibrations\n`);
    return (await calibrateMany(model, images, labels, CANDIDATE_WIDTHS.map((k) => ({ ...base, activationBits: k })))).results;
  });
  const calib = await Divergence.of(model, [images]);
  const test = await Divergence.of(model, await firstImages(path.join(sharedDir, 'data', 'cifar10', 'test.json'), TEST_IMAGES, model.spec.preprocess));
  return { name, model, images, labels, uniform, calib, test };
}

interface CaseResult {
  lines: string[];
  /** Whole model's calibration KL / Σ single-operand KL, over the rows. */
  ratios: number[];
  /** Σ single-operand KL of the allocation by measured KLs, and of uniform W8A⌈B⌉. */
  sumBest: number;
  sumUniformCeil: number;
  /** Test KL of the allocation by measured KLs, and the uniform W8Ak rows' (k ascending). */
  testBest: number;
  /** Test KL of the product's allocation with the default widths and with WIDE_WIDTHS. */
  testProduct: number;
  testWide: number;
  testUniform: { bits: number; kl: number }[];
}

async function diagnose(d: ModelData, budget: number, { withCorrelation }: { withCorrelation: boolean }): Promise<CaseResult> {
  const { name, model, images, labels, uniform } = d;
  const log = (s: string) => process.stderr.write(`${name} @ ${budget}: ${s}\n`);
  // The product's mixed run at an activation average of `budget` bits: its sensitivities and its model.
  const request: MixedRequest = { budget: { aAvgBits: budget }, pin: true, weightBits: 8, activationBits: 8 };
  const mixed = await cached<MixedRun>(name, budget === 4 ? 'mixed' : `mixed-${budget}`, async () => {
    log('mixed-precision calibration');
    const r = await calibrateMixed(model, images, labels, base, [request]);
    return { items: r.items, policy: r.results[0].policy, points: r.results[0].points, scores: Object.fromEntries([...r.scores].map(([k, m]) => [k, Object.fromEntries(m)])) as Scores };
  });
  const items = mixed.items.filter((i): i is OperandItem => i.side === 'activation' && !i.pinnable);

  // Each activation operand alone at each width: shared by the budgets of one model.
  const single = await cached(name, 'single', async () => {
    const out: Record<string, Record<number, number>> = {};
    for (const [n, item] of items.entries()) {
      out[key(item)] = {};
      for (const [w, bits] of CANDIDATE_WIDTHS.entries()) {
        const p = uniform[w].find((q) => q.point === item.point)!;
        const q = p.kind === 'matmul' ? p[item.operand as 'a' | 'b'] : p.input!;
        out[key(item)][bits] = (await d.calib.measure(oneOperand(item.point, item.operand, q))).kl;
      }
      if (n % 10 === 9) log(`single-operand KLs ${n + 1}/${items.length}`);
    }
    return out;
  });

  /** A uniform W8Ak row as a policy: every activation at `bits`, every weight at 8. */
  const uniformPolicy = (bits: number): BitPolicy => {
    const policy: Record<string, PointWidths> = {};
    for (const i of mixed.items) (policy[i.point] ??= {})[i.operand as keyof PointWidths] = i.side === 'weight' ? 8 : bits;
    return policy;
  };
  // The product's exact allocation of the same request, with the measured single-operand KLs as the sensitivities.
  const klPolicy = allocatePolicy(mixed.items, new Map(items.map((i) => [key(i), new Map(CANDIDATE_WIDTHS.map((bits) => [bits, single[key(i)][bits]]))])), request).policy;
  const klModel = await cached(name, budget === 4 ? 'kl-policy' : `kl-policy-${budget}`, async () => {
    log('final search of the measured-KL policy');
    return (await calibrateMany(model, images, labels, [{ ...base, policy: klPolicy }])).results[0];
  });

  // The product's allocation with a wider set of widths (`--widths 2,3,4,5,6,7,8`): what finer choices buy.
  const wide = await cached<MixedRun>(name, `mixed-${budget}-widths-${WIDE_WIDTHS.join('')}`, async () => {
    log(`mixed-precision calibration, widths ${WIDE_WIDTHS.join(',')}`);
    const r = await calibrateMixed(model, images, labels, base, [request], { candidates: WIDE_WIDTHS });
    return { items: r.items, policy: r.results[0].policy, points: r.results[0].points, scores: {} };
  });

  /** Σ of the measured single-operand KLs of a policy: the additive model (undefined where a width was not measured). */
  const predicted = (policy: BitPolicy): number | undefined => {
    let sum = 0;
    for (const i of items) {
      const kl = single[key(i)][policy[i.point][i.operand as keyof PointWidths]!];
      if (kl === undefined) return undefined;
      sum += kl;
    }
    return sum;
  };
  const rows: { label: string; policy: BitPolicy; points: PointQuant[] }[] = [
    ...CANDIDATE_WIDTHS.map((bits, w) => ({ label: `uniform W8A${bits}`, policy: uniformPolicy(bits), points: uniform[w] })),
    { label: `mixed A avg ${budget} (Hessian per-image sensitivities: the product)`, policy: mixed.policy, points: mixed.points },
    { label: `mixed A avg ${budget} (measured single-operand KLs as sensitivities)`, policy: klPolicy, points: klModel },
    { label: `mixed A avg ${budget} (the product with widths ${WIDE_WIDTHS.join(', ')})`, policy: wide.policy, points: wide.points },
  ];
  const table = ['| model | A avg bits | Σ single-operand KL (calib) | KL calib | KL test1k | agree test1k % |', '|---|---|---|---|---|---|'];
  const ratios: number[] = [];
  let testBest = 0, testProduct = 0, testWide = 0;
  const testUniform: { bits: number; kl: number }[] = [];
  for (const [n, r] of rows.entries()) {
    // The uniform rows are the same for every budget of a model: measured once.
    const [c, t] = await cached(name, n < CANDIDATE_WIDTHS.length ? `measured-uniform-${CANDIDATE_WIDTHS[n]}` : `measured-${budget}-${n}`, async () => {
      const runner = new QuantRunner(r.points);
      return [await d.calib.measure(runner), await d.test.measure(runner)];
    });
    const sum = predicted(r.policy);
    if (sum !== undefined && sum > 0) ratios.push(c.kl / sum);
    if (r.policy === klPolicy) testBest = t.kl;
    if (r.policy === wide.policy) testWide = t.kl;
    if (r.policy === mixed.policy) testProduct = t.kl;
    if (n < CANDIDATE_WIDTHS.length) testUniform.push({ bits: CANDIDATE_WIDTHS[n], kl: t.kl });
    table.push(`| ${r.label} | ${summarize(mixed.items, r.policy).aAvgBits.toFixed(2)} | ${sum === undefined ? '—' : k3(sum)} | ${k3(c.kl)} | ${k3(t.kl)} | ${(t.agree * 100).toFixed(1)} |`);
    log(r.label);
  }

  const corr = ["| width | per-image Fisher (the allocation's) | diagonal Fisher (the search's metric) |", '|---|---|---|'];
  for (const bits of CANDIDATE_WIDTHS.filter((b) => b < 8)) {
    const measured = items.map((i) => single[key(i)][bits]);
    const of = (form: keyof SensitivityScore) => items.map((i) => mixed.scores[key(i)][bits][form]);
    corr.push(`| ${bits} | ${spearman(of('perImage'), measured).toFixed(3)} | ${spearman(of('diagonal'), measured).toFixed(3)} |`);
  }
  const sumBest = predicted(klPolicy)!, sumUniformCeil = predicted(uniformPolicy(Math.ceil(budget)))!;
  const lines = [
    `### ${name}, activation average ${budget} bits`,
    '',
    ...table,
    '',
    `Whole model's calibration KL / Σ single-operand KL: ${Math.min(...ratios).toFixed(2)} … ${Math.max(...ratios).toFixed(2)} over the rows.` +
      (withCorrelation ? ` Rank correlation (Spearman) between the Hessian proxies of calibrateMixed and the measured single-operand KL, over the ${items.length} operands (the same for every budget of the model):` : ''),
    ...(withCorrelation ? ['', ...corr] : []),
  ];
  return { lines, ratios, sumBest, sumUniformCeil, testBest, testProduct, testWide, testUniform };
}

/** Where a test KL sits among the uniform W8Ak rows' (which fall with every added bit). */
function between(kl: number, uniform: readonly { bits: number; kl: number }[]): string {
  const above = uniform.findIndex((u) => u.kl < kl);
  if (above === 0) return `above uniform W8A${uniform[0].bits}'s (${k3(uniform[0].kl)})`;
  if (above < 0) return `below uniform W8A${uniform.at(-1)!.bits}'s (${k3(uniform.at(-1)!.kl)})`;
  const [lo, hi] = [uniform[above - 1], uniform[above]];
  return `between uniform W8A${lo.bits} (${k3(lo.kl)}) and W8A${hi.bits} (${k3(hi.kl)})`;
}

const data = new Map<string, ModelData>();
const sections: string[] = [];
const readings: string[] = [];
const ratios: number[] = [];
for (const { name, budget } of CASES) {
  const first = !data.has(name);
  if (first) data.set(name, await modelData(name));
  const r = await diagnose(data.get(name)!, budget, { withCorrelation: first });
  sections.push(...r.lines, '');
  ratios.push(...r.ratios);
  const ceil = Math.ceil(budget);
  readings.push(
    `${name} at ${budget} bits: the best allocation of these quantizers under the additive model (measured KLs) sums to ${k3(r.sumBest)} against uniform W8A${ceil}'s ${k3(r.sumUniformCeil)}` +
      (budget < ceil ? ` — ${r.sumBest < r.sumUniformCeil ? 'below it: allocation can beat' : `above it: no allocation of these quantizers over widths ${CANDIDATE_WIDTHS.join(', ')} beats`} uniform ${ceil} bits here` : ` (${(r.sumUniformCeil / r.sumBest).toFixed(1)}× less)`) +
      `; its test KL ${k3(r.testBest)} lands ${between(r.testBest, r.testUniform)}; the product with widths ${WIDE_WIDTHS.join(', ')} reaches ${k3(r.testWide)} (${k3(r.testProduct)} with the default widths).`,
  );
}

const body = [
  `Activations only (every weight at 8 bits, where uniform W8A4 loses most of what W4A4 loses), calibration \`calib32\`; KL = mean KL(FP32 ‖ quantized) of the class probabilities ×10⁻³, on the 32 calibration images and on the first ${TEST_IMAGES} test images.`,
  `Produced by \`npx tsc -p . && nice -n 10 node dist/scripts/mixed_diagnostics.js\` (${machine()}).`,
  '',
  `"Σ single-operand KL": each activation operand alone quantized at its width (its Δ from uniform PTQ4ViT W8Ak), everything else float, its KL on the calibration images, summed over the operands — the additive model the allocation assumes. The row "measured single-operand KLs as sensitivities" allocates the same budget exactly with those measured KLs as the sensitivities (what a perfect proxy would choose: under the additive model, the best any allocation of these quantizers at these widths can do) and runs the same final search; the last row is the product again with a wider choice of widths (\`--widths ${WIDE_WIDTHS.join(',')}\`; Σ "—": no single-operand KLs at 2 and 7 bits).`,
  '',
  ...sections,
  `Reading: the KLs add up roughly (the whole model's KL is ${Math.min(...ratios).toFixed(1)}–${Math.max(...ratios).toFixed(1)}× the sum over its operands), and the per-image proxy ranks operands nearly as the measured KL does, so allocating with the measured KLs themselves changes the model's KL by little. ${readings.join(' ')} A mixed model is as good as its quantizers at each width allow: where the targets are missed, each operand's k-bit error itself has to shrink (finer or rebalanced activation scales, error-compensating rounding: see "Per-operand levers at 4 bits"), not the allocation.`,
].join('\n');
replaceSection('RESULTS.md', 'Mixed precision diagnostics', body, '# Results');
console.log(body);
