/**
 * RESULTS.md, section "Mixed precision": uniform PTQ4ViT W3A3/W4A4/W5A5/W6A6/W8A8 beside Hessian-guided
 * mixed precision at average budgets of 3, 3.5, 4, 5 and 6 bits (weights and activations), on
 * vit_tiny_c10 and swin_micro_c10 (full CIFAR-10 test set, calibration = calib32); the widths chosen per
 * layer at 4 bits; and a plot of top-1 vs model size (docs/mixed_precision_MODEL.svg).
 *
 *   npx tsc -p . && nice -n 10 node dist/scripts/mixed_precision.js [--quick] [--model=NAME] [--kinds=uniform|mixed] [--render-only]
 *
 * Long (≈ 1 h of CPU). Everything finished is cached under out/mixed_precision/ (calibration results, then
 * each evaluated row), so a stopped run resumes where it was; RESULTS.md's section and the plots are
 * rewritten (atomically) from the cache after every row. --quick evaluates on test1k (its own cache).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as echarts from 'echarts';
import { spawnSync } from 'node:child_process';
import { saveQuantizedModel } from '../src/quant/file.js';
import { type LoadedModel } from '../src/open.js';
import { calibrateMany } from '../src/quant/calibrate.js';
import { methodConfig } from '../src/quant/methods.js';
import { calibrateMixed, mixedProvenance, operandItems, CANDIDATE_WIDTHS, SENSITIVITY_N, type MixedRequest } from '../src/quant/mixed.js';
import type { BitPolicy, PointQuant } from '../src/quant/params.js';
import { openSharedModel, sharedCalib32, sharedDir } from './shared.js';
import type { VisionModel } from '../src/models/types.js';
import { QuantRunner } from '../src/quant/runner.js';
import { Divergence, ensureHits, firstImages, pairedDifference, rowFiles } from './divergence.js';
import { openModel } from '../src/open.js';

const quick = process.argv.includes('--quick');
const cacheDir = path.join('out', quick ? 'mixed_precision-quick' : 'mixed_precision');
const rowsFile = path.join(cacheDir, 'rows.jsonl');
const evalManifest = path.join(sharedDir, 'data', 'cifar10', quick ? 'test1k.json' : 'test.json');
const MODELS = ['vit_tiny_c10', 'swin_micro_c10'] as const;
const UNIFORM_BITS = [3, 4, 5, 6, 8];
/**
 * Uniform widths calibrated here (every one: each row needs its divergence from FP32, which needs its
 * parameters); FP32's top-1 is the row of results/results.jsonl (results.ts: same checkpoint and data).
 */
const UNIFORM_COMPUTED = UNIFORM_BITS;
const REUSED: Record<string, string> = { FP32: 'FP32' };
/**
 * Top-1 differences of a few tenths of a point are partly chance (which images happen to flip), so every row
 * also gets a smoother measure of what quantization did: the mean KL(FP32 ‖ quantized) of the class
 * probabilities and the top-1 agreement with FP32, on the first DIVERGENCE_IMAGES test images (the op-by-op
 * simulation, equal to the integer graph).
 */
const DIVERGENCE_IMAGES = 1000;
const BUDGETS = [3, 3.5, 4, 5, 6];
/** The budget whose widths are tabulated per layer. */
const SHOWN_BUDGET = 4;
/** --kinds=uniform or --kinds=mixed: compute only those rows (FP32 is always computed). */
const kinds = new Set((process.argv.find((a) => a.startsWith('--kinds='))?.slice(8) ?? 'uniform,mixed').split(','));
/**
 * Pinning the patch embedding and the classifier at 8 bits (the CLI's default) makes an average of 3 bits
 * impossible with 3 as the lowest width: that budget runs with --no-pin.
 */
const pinAt = (budget: number) => budget > Math.min(...CANDIDATE_WIDTHS);

interface Row {
  model: string;
  config: string;
  kind: 'fp32' | 'uniform' | 'mixed';
  /** Uniform width, or the average budget. */
  bits?: number;
  pin?: boolean;
  w_avg_bits?: number;
  a_avg_bits?: number;
  weight_mb?: number;
  top1: number;
  top5: number;
  images: number;
  /** One whole run: recording + (sensitivities + allocation) + search of this row's configuration. */
  run_seconds?: number;
  record_seconds?: number;
  sensitivity_seconds?: number;
  allocation_seconds?: number;
  search_seconds?: number;
  record_passes?: number;
  policy?: BitPolicy;
  load?: string;
  /** Taken from results/results.jsonl. */
  reused?: boolean;
  /** Mean KL(FP32 ‖ quantized) of the class probabilities over the first DIVERGENCE_IMAGES test images. */
  kl?: number;
  /** Share of those images whose top-1 class is FP32's. */
  agree?: number;
}

/** What a calibration batch leaves for the evaluation of its rows (cached so a resumed run skips it). */
interface Calibrated {
  row: Omit<Row, 'top1' | 'top5' | 'images'>;
  points: PointQuant[];
}

function readRows(): Row[] {
  if (!fs.existsSync(rowsFile)) return [];
  return fs.readFileSync(rowsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Row);
}

function writeAtomic(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

const uniformConfig = (bits: number) => `PTQ4ViT W${bits}A${bits}`;
const mixedConfig = (budget: number) => `mixed avg ${budget}`;

/**
 * Write the quantized file and evaluate it with `ptq4vit eval` (the integer ONNX graph, equal to the
 * simulation on all 10000 test images: RESULTS.md, "Integer ONNX export vs fake-quant simulation").
 */
function evalFile(loaded: LoadedModel, name: string, config: string, points: PointQuant[], provenance: Record<string, unknown>): { top1: number; top5: number; images: number } {
  const file = fileOf(name, config);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  saveQuantizedModel(file, loaded.weights, { spec: loaded.model.spec, points, provenance });
  const r = spawnSync(process.execPath, ['bin/ptq4vit.js', 'eval', '--model', file, '--data', evalManifest, '--batch-size', '100', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`eval of ${file} failed (exit ${r.status})`);
  const e = JSON.parse(r.stdout.trimEnd().split('\n').at(-1)!) as { top1: number; top5: number; images: number };
  return { top1: e.top1, top5: e.top5, images: e.images };
}

/** FP32's outputs on the first DIVERGENCE_IMAGES images of the evaluation set. */
async function divergenceOf(model: VisionModel): Promise<Divergence> {
  return Divergence.of(model, await firstImages(evalManifest, DIVERGENCE_IMAGES, model.spec.preprocess));
}

/** KL and agreement of one row's parameters (the op-by-op simulation). */
async function divergenceRow(d: Divergence, points: PointQuant[]): Promise<{ kl: number; agree: number }> {
  const { kl, agree } = await d.measure(new QuantRunner(points));
  return { kl, agree };
}

/** Where a row's quantized file is written (evalFile) and its per-image top-1 hits are kept (correctness). */
const fileOf = (name: string, config: string) => rowFiles(cacheDir, name, config).file;
const hitsOf = (name: string, config: string) => rowFiles(cacheDir, name, config).hits;

/** A row's per-image top-1 hits on the evaluation set (divergence.ts ensureHits), once its file exists. */
async function ensureRowHits(name: string, config: string): Promise<void> {
  const file = config === 'FP32' ? path.join(sharedDir, 'models', `${name}.safetensors`) : fileOf(name, config);
  if (fs.existsSync(hitsOf(name, config)) || !fs.existsSync(file)) return;
  await ensureHits(hitsOf(name, config), config === 'FP32' ? openSharedModel(name) : openModel({ weights: file }), file, evalManifest);
}

/** a − b in top-1 points on the same images, with its 95% confidence interval (divergence.ts). */
const rowDifference = (name: string, a: string, b: string) => pairedDifference(hitsOf(name, a), hitsOf(name, b));

/** The rows compared by the targets. */
const TARGET_CONFIGS = ['FP32', 'mixed avg 4', 'mixed avg 3.5', 'PTQ4ViT W4A4'];

/** The rows results.ts measured (FP32, uniform W6A6/W8A8), under this script's config names. */
function reusedRows(name: string): Row[] {
  const file = path.join('results', quick ? 'results-quick.jsonl' : 'results.jsonl');
  if (!fs.existsSync(file)) return [];
  const old = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { model: string; config: string; w_bits?: number; top1: number; top5: number; images: number; calib_seconds?: number; search_seconds?: number });
  return Object.entries(REUSED).flatMap(([config, theirs]) => {
    const r = old.find((o) => o.model === name && o.config === theirs);
    if (!r) return [];
    const bits = r.w_bits;
    return [{ model: name, config, kind: bits ? ('uniform' as const) : ('fp32' as const), ...(bits ? { bits, w_avg_bits: bits, a_avg_bits: bits } : {}), top1: r.top1, top5: r.top5, images: r.images, run_seconds: r.calib_seconds, search_seconds: r.search_seconds, reused: true }];
  });
}

function appendRow(row: Row): void {
  fs.mkdirSync(cacheDir, { recursive: true });
  fs.appendFileSync(rowsFile, JSON.stringify(row) + '\n');
  const extra = row.run_seconds !== undefined ? `, run ${row.run_seconds.toFixed(0)} s` : '';
  console.log(`${row.model} ${row.config}: top-1 ${(row.top1 * 100).toFixed(2)}%${extra}`);
  writeOutputs(readRows());
}

/** Calibrate (or read the cached calibration of) a batch of rows. */
async function calibratedBatch(file: string, make: () => Promise<Calibrated[]>): Promise<Calibrated[]> {
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8')) as Calibrated[];
  const batch = await make();
  writeAtomic(file, JSON.stringify(batch));
  return batch;
}

async function runModel(name: string): Promise<void> {
  const loaded = openSharedModel(name);
  const { model } = loaded;
  const { dataset: calib, images, labels, indices } = await sharedCalib32(model.spec.preprocess);
  const base = methodConfig('ptq4vit', { weightBits: 8, activationBits: 8 });
  const items = await operandItems(model, images);
  const weightCount = items.filter((i) => i.side === 'weight').reduce((s, i) => s + i.size, 0);
  const have = readRows().filter((r) => r.model === name);
  for (const r of reusedRows(name)) if (!have.some((h) => h.config === r.config)) appendRow(r.bits ? { ...r, weight_mb: (weightCount * r.bits) / 8e6 } : r);
  const done = new Set(readRows().filter((r) => r.model === name).map((r) => r.config));
  const wanted = [...UNIFORM_COMPUTED.map(uniformConfig), ...BUDGETS.map(mixedConfig)];
  if (wanted.every((c) => done.has(c))) return;
  const divergence = await divergenceOf(model);
  const progress = (what: string) => (e: { phase: string; done?: number; total?: number }) => {
    if (e.phase !== 'record' && e.done !== undefined && (e.done === e.total || e.done % 25 === 0)) process.stderr.write(`${name} ${what}: ${e.phase} ${e.done}/${e.total}\n`);
  };
  const provenanceBase = {
    tool: 'ptq4vit',
    method: 'ptq4vit',
    search: { metric: base.metric, alpha: base.alpha, beta: base.beta, n: base.n, rounds: base.rounds, twin_softmax: base.twinSoftmax, twin_gelu: base.twinGelu, gelu_aligned: base.geluAligned, softmax_delta_r2: base.softmaxDeltaR2 },
    loss: base.loss,
    seed: base.seed,
    source_checkpoint: `${name}.safetensors`,
    calibration: { data: 'calib32.json', kind: calib.kind, labeled: calib.labeled, size: calib.size, images: indices.length, indices },
  };

  // Mixed precision at every budget: sensitivities once, then one allocation and final search per budget.
  if (kinds.has('mixed') && BUDGETS.some((b) => !done.has(mixedConfig(b)))) {
    const requests: MixedRequest[] = BUDGETS.map((b) => ({ budget: { wAvgBits: b, aAvgBits: b }, pin: pinAt(b), weightBits: 8, activationBits: 8 }));
    const batch = await calibratedBatch(path.join(cacheDir, `${name}.mixed.json`), async () => {
      const load = loadAverages();
      const { results, timing } = await calibrateMixed(model, images, labels, base, requests, { onProgress: progress('mixed') });
      return BUDGETS.map((budget, i) => ({
        row: {
          model: name,
          config: mixedConfig(budget),
          kind: 'mixed' as const,
          bits: budget,
          pin: requests[i].pin,
          w_avg_bits: results[i].summary.wAvgBits,
          a_avg_bits: results[i].summary.aAvgBits,
          weight_mb: results[i].summary.weightMb,
          // One mixed run = recording + sensitivities + allocation + this budget's final search (the
          // sensitivities are shared by the five budgets here, but charged in full to each).
          run_seconds: timing.recordSeconds + timing.sensitivitySeconds + timing.allocationSeconds + timing.searchSecondsPerRequest[i],
          record_seconds: timing.recordSeconds,
          sensitivity_seconds: timing.sensitivitySeconds,
          allocation_seconds: timing.allocationSeconds,
          search_seconds: timing.searchSecondsPerRequest[i],
          record_passes: timing.passes,
          policy: results[i].policy,
          load,
        },
        points: results[i].points,
      }));
    });
    for (const [i, c] of batch.entries()) {
      if (done.has(c.row.config)) continue;
      const reached = { summary: { wAvgBits: c.row.w_avg_bits!, aAvgBits: c.row.a_avg_bits!, weightMb: c.row.weight_mb! }, policy: c.row.policy! };
      const mixed = mixedProvenance(model, requests[i], reached, { candidates: CANDIDATE_WIDTHS, sensitivityN: SENSITIVITY_N });
      appendRow({ ...c.row, ...evalFile(loaded, name, c.row.config, c.points, { ...provenanceBase, mixed_precision: mixed }), ...(await divergenceRow(divergence, c.points)) });
    }
  }

  // Uniform PTQ4ViT at the computed widths: one recording, searched under each configuration.
  if (kinds.has('uniform') && UNIFORM_COMPUTED.some((b) => !done.has(uniformConfig(b)))) {
    const batch = await calibratedBatch(path.join(cacheDir, `${name}.uniform.json`), async () => {
      const configs = UNIFORM_COMPUTED.map((bits) => methodConfig('ptq4vit', { weightBits: bits, activationBits: bits }));
      const load = loadAverages();
      const { results, timing } = await calibrateMany(model, images, labels, configs.map((c, i) => (i === 0 ? { ...c, onProgress: progress('uniform') } : c)));
      return UNIFORM_COMPUTED.map((bits, i) => ({
        row: {
          model: name,
          config: uniformConfig(bits),
          kind: 'uniform' as const,
          bits,
          w_avg_bits: bits,
          a_avg_bits: bits,
          weight_mb: (weightCount * bits) / 8e6,
          // One uniform run = the recording (charged in full to every row) + this configuration's search.
          run_seconds: timing.recordSeconds + timing.searchSecondsPerConfig[i],
          record_seconds: timing.recordSeconds,
          search_seconds: timing.searchSecondsPerConfig[i],
          record_passes: timing.groups,
          load,
        },
        points: results[i],
      }));
    });
    for (const c of batch) {
      if (!done.has(c.row.config)) appendRow({ ...c.row, ...evalFile(loaded, name, c.row.config, c.points, { ...provenanceBase, w_bits: c.row.bits, a_bits: c.row.bits }), ...(await divergenceRow(divergence, c.points)) });
    }
  }
}

/** "1.23 / 0.98 / 0.80": the machine's load averages when a calibration starts (the lead benchmarks on the same cores). */
function loadAverages(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' / ');
}

const pct = (x: number | undefined) => (x === undefined ? '—' : (x * 100).toFixed(2));

/** Per-layer widths of one policy: one row per block, one column per operand. */
function widthsTable(policy: BitPolicy): string[] {
  const columns: [string, string, 'weight' | 'input' | 'a' | 'b'][] = [
    ['attn.qkv', 'qkv W', 'weight'], ['attn.qkv', 'qkv A', 'input'],
    ['attn.matmul1', 'q·kᵀ q', 'a'], ['attn.matmul1', 'q·kᵀ k', 'b'],
    ['attn.matmul2', 'attn·v attn', 'a'], ['attn.matmul2', 'attn·v v', 'b'],
    ['attn.proj', 'proj W', 'weight'], ['attn.proj', 'proj A', 'input'],
    ['mlp.fc1', 'fc1 W', 'weight'], ['mlp.fc1', 'fc1 A', 'input'],
    ['mlp.fc2', 'fc2 W', 'weight'], ['mlp.fc2', 'fc2 A', 'input'],
  ];
  const blocks = [...new Set(Object.keys(policy).filter((p) => p.includes('.attn.') || p.includes('.mlp.')).map((p) => p.replace(/\.(attn|mlp)\..*$/, '')))];
  const lines = [`| layer | ${columns.map((c) => c[1]).join(' | ')} |`, `|---|${columns.map(() => '---').join('|')}|`];
  for (const b of blocks) lines.push(`| ${b} | ${columns.map(([p, , op]) => policy[`${b}.${p}`]?.[op] ?? '—').join(' | ')} |`);
  const others = Object.entries(policy).filter(([p]) => !(p.includes('.attn.') || p.includes('.mlp.')));
  for (const [p, w] of others) lines.push(`| ${p} | ${Object.entries(w).map(([op, bits]) => `${op} ${bits}`).join(', ')} |${columns.slice(1).map(() => '').join(' |')} |`);
  return lines;
}

/** Mean run time of the uniform runs calibrated by this script (W3A3, W4A4, W5A5) of a model. */
function uniformRun(rows: Row[], model: string): number | undefined {
  const runs = rows.filter((r) => r.model === model && r.kind === 'uniform' && !r.reused && r.run_seconds !== undefined).map((r) => r.run_seconds!);
  return runs.length ? runs.reduce((a, b) => a + b, 0) / runs.length : undefined;
}

function section(rows: Row[]): string[] {
  const find = (model: string, config: string) => rows.find((r) => r.model === model && r.config === config);
  const lines = [
    '## Mixed precision',
    '',
    `Hessian-guided mixed precision (README, "Mixed precision") beside uniform PTQ4ViT, top-1 (%) on the CIFAR-10 ${quick ? 'test1k subset' : 'test set (10000 images)'}, calibration \`calib32\`.`,
    `Produced by \`npx tsc -p . && nice -n 10 node dist/scripts/mixed_precision.js${quick ? ' --quick' : ''}\` (rows cached in \`${rowsFile}\`).`,
    `Mixed rows: budget = average weight bits (by parameters) and average activation bits (by elements per image) at most B; candidate widths ${CANDIDATE_WIDTHS.join(', ')};`,
    `sensitivity = per-image Fisher error (README) after a search with n = ${SENSITIVITY_N}, one half-step, the other operand at 8 bits; patch embedding and classifier pinned at 8 bits (counted in the budget) except at 3 bits, where pinning makes the budget impossible.`,
    'Model size = the quantized weights\' integer codes packed at their widths (biases, norms and tokens stay float and are not counted).',
    'At an average of 3 bits with 3 as the lowest width the budget leaves one choice — every operand at 3 bits — so that mixed row is uniform W3A3 (the same search, the same top-1): a check of the pipeline, not a result.',
    '"run s" = one whole calibration: recording + sensitivities + allocation + final search (mixed; the sensitivities are shared by the budgets of one run but charged in full to each), or recording + search (uniform). "× uniform" = run s / the mean run s of the uniform runs of the same model in this script.',
    'Every row is evaluated with `ptq4vit eval` on the written file (the integer ONNX graph, equal to the simulation: see "Integer ONNX export vs fake-quant simulation"); FP32\'s top-1 is the row of the tables above.',
    `Top-1 differences of a few tenths of a point are not all quantization error (uniform top-1 is not even monotone in the bits: see swin_micro_c10's W5A5 and W6A6), so every row also has "KL" (mean KL(FP32 ‖ quantized) of the class probabilities, ×10⁻³) and "agree" (top-1 equal to FP32's, %), measured on the first ${DIVERGENCE_IMAGES} test images in the simulation: how far each model is from FP32, which does fall with every added bit.`,
    '',
  ];
  for (const model of MODELS) {
    const fp = find(model, 'FP32');
    lines.push(`### ${model}`, '', `FP32: ${pct(fp?.top1)}.`, '', '| bits | uniform PTQ4ViT top-1 | Δ FP32 | KL ×10⁻³ | agree % | weights MB | run s | mixed top-1 | Δ FP32 | KL ×10⁻³ | agree % | W avg / A avg | weights MB | run s (sens. + search) | × uniform |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    const bitsList = [...new Set([...UNIFORM_BITS, ...BUDGETS])].sort((a, b) => a - b);
    for (const bits of bitsList) {
      const u = UNIFORM_BITS.includes(bits) ? find(model, uniformConfig(bits)) : undefined;
      const m = BUDGETS.includes(bits) ? find(model, mixedConfig(bits)) : undefined;
      const ref = uniformRun(rows, model);
      const d = (r?: Row) => (r && fp ? ((r.top1 - fp.top1) * 100).toFixed(2) : '—');
      const kl = (r?: Row) => (r?.kl === undefined ? '—' : (r.kl * 1000).toFixed(2));
      const uCells = UNIFORM_BITS.includes(bits) ? [pct(u?.top1), d(u), kl(u), pct(u?.agree), u?.weight_mb?.toFixed(2) ?? '—', u?.run_seconds?.toFixed(0) ?? '—'] : ['', '', '', '', '', ''];
      const mCells = BUDGETS.includes(bits)
        ? [`${pct(m?.top1)}${m && m.pin === false ? ' (no pin)' : ''}`, d(m), kl(m), pct(m?.agree), m ? `${m.w_avg_bits!.toFixed(2)} / ${m.a_avg_bits!.toFixed(2)}` : '—', m?.weight_mb?.toFixed(2) ?? '—', m ? `${m.run_seconds!.toFixed(0)} (${m.sensitivity_seconds!.toFixed(0)} + ${m.search_seconds!.toFixed(0)})` : '—', m && ref ? (m.run_seconds! / ref).toFixed(2) : '—']
        : ['', '', '', '', '', '', '', ''];
      lines.push(`| ${bits} | ${[...uCells, ...mCells].join(' | ')} |`);
    }
    lines.push('', `Top-1 vs model size: [docs/mixed_precision_${model}.svg](docs/mixed_precision_${model}.svg)`, '');
  }
  lines.push('### Targets', '');
  for (const model of MODELS) {
    const fp = find(model, 'FP32'), m4 = find(model, mixedConfig(4)), m35 = find(model, mixedConfig(3.5)), u4 = find(model, uniformConfig(4));
    const ref = uniformRun(rows, model);
    const ratios = BUDGETS.map((b) => {
      const m = find(model, mixedConfig(b));
      return m && ref ? m.run_seconds! / ref : undefined;
    }).filter((r): r is number => r !== undefined);
    const klOf = (r?: Row) => (r?.kl === undefined ? '—' : (r.kl * 1000).toFixed(2));
    const verdict = (ok: boolean | undefined) => (ok === undefined ? 'pending' : ok ? '**met**' : '**not met**');
    const within = m4 && fp ? (fp.top1 - m4.top1) * 100 : undefined;
    /** The verdict above is the point estimate's; say so when the 95% interval reaches across the threshold. */
    const undecided = (d: { low: number; high: number } | undefined, threshold: number) => (d && d.low < threshold && d.high > threshold ? ' by the point estimate, undecided within the 95% CI' : '');
    const ci = (d?: { low: number; high: number }) => (d ? `, 95% CI ${d.low.toFixed(2)} … ${d.high.toFixed(2)}` : '');
    const below = rowDifference(model, 'FP32', mixedConfig(4));
    const versus = rowDifference(model, mixedConfig(3.5), uniformConfig(4));
    lines.push(
      `- ${model}: 4-bit mixed within 0.3 points of FP32: ${verdict(within === undefined ? undefined : within <= 0.3)}${undecided(below, 0.3)} (${within === undefined ? '—' : `${within.toFixed(2)} points below${ci(below)}`}; KL ×10⁻³ ${klOf(m4)}; uniform W4A4 ${klOf(u4)}, W5A5 ${klOf(find(model, uniformConfig(5)))}, W6A6 ${klOf(find(model, uniformConfig(6)))});` +
        ` 3.5-bit mixed ≥ uniform W4A4: ${verdict(m35 && u4 ? m35.top1 >= u4.top1 : undefined)}${undecided(versus, 0)} (${pct(m35?.top1)} vs ${pct(u4?.top1)}${versus ? `: ${versus.diff.toFixed(2)}${ci(versus)}` : ''}; KL ×10⁻³ ${klOf(m35)} vs ${klOf(u4)}, agreement with FP32 ${pct(m35?.agree)}% vs ${pct(u4?.agree)}%);` +
        ` run ≤ 3× uniform: ${verdict(ratios.length === BUDGETS.length ? Math.max(...ratios) <= 3 : undefined)} (largest ${ratios.length ? Math.max(...ratios).toFixed(2) : '—'}×).`,
    );
  }
  lines.push('', 'The confidence intervals are over the paired test images (the same images through both models\' integer graphs; only those one model gets right and the other wrong carry a difference): a target whose interval straddles its threshold is not decided by this test set.');
  const loads = [...new Set(rows.filter((r) => r.load).map((r) => r.load))];
  lines.push('', `Machine load (1/5/15-min averages) when each calibration started: ${loads.join('; ') || '—'} (2 cores, shared: the times are upper bounds).`, '');
  const shown = find('vit_tiny_c10', mixedConfig(SHOWN_BUDGET)) ?? find('swin_micro_c10', mixedConfig(SHOWN_BUDGET));
  if (shown?.policy) {
    lines.push(`### Widths chosen per layer: ${shown.model}, average ${SHOWN_BUDGET} bits`, '', 'W = weight, A = input of a linear layer; the attention products\' two operands by name.', '', ...widthsTable(shown.policy), '');
  }
  return lines;
}

/** Replace (or append) this script's section of RESULTS.md, keeping every other section as it is. */
function writeResultsSection(rows: Row[]): void {
  const file = quick ? 'RESULTS-quick.md' : 'RESULTS.md';
  const own = section(rows).join('\n').trimEnd();
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Results\n';
  const parts = text.split(/\n(?=## )/);
  const at = parts.findIndex((p) => p.startsWith('## Mixed precision\n'));
  if (at >= 0) parts[at] = own + '\n';
  else parts.push(own + '\n');
  writeAtomic(file, parts.map((p, i) => (i < parts.length - 1 ? p.trimEnd() + '\n' : p)).join('\n'));
}

/**
 * Top-1 vs weight size, uniform and mixed, FP32 as a line: server-side ECharts SVG. Element ids carry
 * ECharts' instance counters; they are renumbered by first appearance so the file depends on the data only.
 */
function plotSvg(rows: Row[], model: string): string | null {
  const of = (kind: Row['kind']) => rows.filter((r) => r.model === model && r.kind === kind && r.weight_mb !== undefined).sort((a, b) => a.weight_mb! - b.weight_mb!);
  const uniform = of('uniform'), mixed = of('mixed'), fp = rows.find((r) => r.model === model && r.kind === 'fp32');
  if (uniform.length + mixed.length === 0) return null;
  // A collapsed run (uniform W3A3) would squash the others into a line: the axis stops 8 points below FP32.
  const floor = fp ? fp.top1 * 100 - 8 : -Infinity;
  const below = [...uniform, ...mixed].filter((r) => r.top1 * 100 < floor);
  const yMin = Math.floor(Math.max(floor, Math.min(...[...uniform, ...mixed].map((r) => r.top1 * 100))));
  const chart = echarts.init(null, null, { renderer: 'svg', ssr: true, width: 720, height: 440 });
  // Uniform labels above their points, mixed below (avg 3 is W3A3 itself, and avg 6 sits on W6A6).
  const point = (r: Row, label: string, position: 'top' | 'bottom') => ({ value: [Number(r.weight_mb!.toFixed(3)), Number((r.top1 * 100).toFixed(2))], label: { show: true, formatter: label, position, fontSize: 10 } });
  chart.setOption({
    animation: false,
    title: {
      text: `${model}: top-1 vs model size (CIFAR-10 ${quick ? 'test1k' : 'test'})`,
      subtext: below.length ? `below the axis: ${below.map((r) => `${r.kind === 'mixed' ? `mixed avg ${r.bits}` : `W${r.bits}A${r.bits}`} ${pct(r.top1)}%`).join(', ')}` : '',
      left: 'center',
      textStyle: { fontSize: 14 },
    },
    legend: { top: 44, right: 30, data: ['uniform PTQ4ViT', 'mixed precision'] },
    grid: { left: 60, right: 30, top: 80, bottom: 50 },
    xAxis: { type: 'value', name: 'quantized weights (MB)', nameLocation: 'middle', nameGap: 28, scale: true },
    yAxis: { type: 'value', name: 'top-1 (%)', nameLocation: 'middle', nameGap: 40, min: yMin, scale: true },
    series: [
      { name: 'uniform PTQ4ViT', type: 'line', symbolSize: 7, data: uniform.map((r) => point(r, `W${r.bits}A${r.bits}`, 'top')), ...(fp ? { markLine: { symbol: 'none', label: { formatter: `FP32 ${pct(fp.top1)}`, position: 'insideEndTop' }, lineStyle: { type: 'dashed' }, data: [{ yAxis: Number((fp.top1 * 100).toFixed(2)) }] } } : {}) },
      { name: 'mixed precision', type: 'line', symbolSize: 7, data: mixed.map((r) => point(r, `avg ${r.bits}`, 'bottom')) },
    ],
  });
  const svg = chart.renderToSVGString();
  chart.dispose();
  const ids = new Map<string, string>();
  return svg.replace(/zr\d+-[A-Za-z]+-?\d+/g, (id) => {
    if (!ids.has(id)) ids.set(id, `mp-${ids.size}`);
    return ids.get(id)!;
  });
}

function writeOutputs(rows: Row[]): void {
  writeResultsSection(rows);
  for (const model of MODELS) {
    const svg = plotSvg(rows, model);
    if (svg) writeAtomic(path.join('docs', `mixed_precision_${model}${quick ? '-quick' : ''}.svg`), svg + '\n');
  }
}

// --render-only: rewrite RESULTS.md's section and the plots from the cached rows, computing nothing.
const only = process.argv.find((a) => a.startsWith('--model='))?.slice(8);
if (!process.argv.includes('--render-only')) {
  for (const name of MODELS) {
    if (only && only !== name) continue;
    await runModel(name);
    for (const config of TARGET_CONFIGS) await ensureRowHits(name, config);
  }
}
writeOutputs(readRows());
