/**
 * RESULTS.md, section "Channel smoothing": PTQ4ViT on the checkpoint rewritten by `--smooth 0.5`
 * (src/quant/smooth.ts) at uniform W4A4 and at mixed precision averages of 4 and 3.5 bits, beside the same
 * rows without smoothing (section "Mixed precision", whose files and per-image hits this reads from
 * out/mixed_precision/: run dist/scripts/mixed_precision.js first). vit_tiny_c10 and swin_micro_c10, calib32.
 * Top-1 on the full test set through the integer graph `ptq4vit eval` runs, with paired 95% intervals;
 * KL(FP32 ‖ quantized) and top-1 agreement on the first 1000 test images (simulation).
 *
 *   npx tsc -p . && nice -n 10 node dist/scripts/smoothing.js
 *
 * ≈ 10 min of CPU. Calibrations and hits are cached under out/smoothing/.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { calibrateMany } from '../src/quant/calibrate.js';
import { saveQuantizedModel } from '../src/quant/file.js';
import { methodConfig } from '../src/quant/methods.js';
import { calibrateMixed, mixedProvenance, CANDIDATE_WIDTHS, SENSITIVITY_N } from '../src/quant/mixed.js';
import type { BitPolicy, PointQuant } from '../src/quant/params.js';
import { QuantRunner } from '../src/quant/runner.js';
import { smoothChannels } from '../src/quant/smooth.js';
import { openModel } from '../src/open.js';
import { Divergence, ensureHits, firstImages, pairedDifference, rowFiles } from './divergence.js';
import { replaceSection } from './markdown.js';
import { openSharedModel, sharedCalib32, sharedDir } from './shared.js';

const ALPHA = 0.5;
const MODELS = ['vit_tiny_c10', 'swin_micro_c10'];
/** Config names as section "Mixed precision" writes them (its cached rows and hits are the baseline). */
const CONFIGS = ['PTQ4ViT W4A4', 'mixed avg 4', 'mixed avg 3.5'] as const;
const BUDGETS: Record<string, number> = { 'mixed avg 4': 4, 'mixed avg 3.5': 3.5 };
const cacheDir = path.join('out', 'smoothing');
const baseDir = path.join('out', 'mixed_precision');
const testManifest = path.join(sharedDir, 'data', 'cifar10', 'test.json');

interface Row {
  model: string;
  config: string;
  smoothed: boolean;
  top1?: number;
  kl?: number;
  agree?: number;
  /** vs FP32, and vs the same config unsmoothed: top-1 points with their 95% interval. */
  belowFp32?: { diff: number; low: number; high: number };
  vsUnsmoothed?: { diff: number; low: number; high: number };
  rangeBefore?: number;
  rangeAfter?: number;
}

const hitsTop1 = (file: string) => {
  const h = fs.readFileSync(file);
  return h.reduce((s, v) => s + v, 0) / h.length;
};

async function runModel(name: string): Promise<Row[]> {
  const loaded = openSharedModel(name);
  const { images, labels, indices } = await sharedCalib32(loaded.model.spec.preprocess);
  const smoothed = await smoothChannels(loaded.model, loaded.weights, images, ALPHA);
  const mean = (f: (n: (typeof smoothed.norms)[number]) => number) => smoothed.norms.reduce((a, n) => a + f(n), 0) / smoothed.norms.length;

  const calibFile = path.join(cacheDir, `${name}.json`);
  let points: Record<string, PointQuant[]>;
  if (fs.existsSync(calibFile)) points = JSON.parse(fs.readFileSync(calibFile, 'utf8')) as Record<string, PointQuant[]>;
  else {
    process.stderr.write(`${name}: calibrating the smoothed checkpoint (load ${os.loadavg()[0].toFixed(2)})\n`);
    const base = methodConfig('ptq4vit', { weightBits: 8, activationBits: 8 });
    const uniform = await calibrateMany(smoothed.model, images, labels, [methodConfig('ptq4vit', { weightBits: 4, activationBits: 4 })]);
    const requests = CONFIGS.slice(1).map((c) => ({ budget: { wAvgBits: BUDGETS[c], aAvgBits: BUDGETS[c] }, pin: true, weightBits: 8, activationBits: 8 }));
    const mixed = await calibrateMixed(smoothed.model, images, labels, base, requests);
    points = { [CONFIGS[0]]: uniform.results[0], ...Object.fromEntries(CONFIGS.slice(1).map((c, i) => [c, mixed.results[i].points])) };
    // A mixed file's provenance needs its summary; keep it beside the points.
    for (const [i, c] of CONFIGS.slice(1).entries()) (points as Record<string, unknown>)[`${c} summary`] = { ...mixed.results[i].summary, policy: mixed.results[i].policy, budget: requests[i].budget };
    fs.mkdirSync(cacheDir, { recursive: true });
    fs.writeFileSync(calibFile, JSON.stringify(points));
  }

  const divergence = await Divergence.of(loaded.model, await firstImages(testManifest, 1000, loaded.model.spec.preprocess));
  const fp32Hits = rowFiles(baseDir, name, 'FP32').hits;
  await ensureHits(fp32Hits, loaded, path.join(sharedDir, 'models', `${name}.safetensors`), testManifest);
  const baseRows = fs.existsSync(path.join(baseDir, 'rows.jsonl'))
    ? fs.readFileSync(path.join(baseDir, 'rows.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { model: string; config: string; kl?: number; agree?: number })
    : [];
  const rows: Row[] = [];
  for (const config of CONFIGS) {
    const { file: baseFile, hits: baseHits } = rowFiles(baseDir, name, config);
    if (fs.existsSync(baseFile)) await ensureHits(baseHits, openModel({ weights: baseFile }), baseFile, testManifest);
    const old = baseRows.find((r) => r.model === name && r.config === config);
    rows.push({ model: name, config, smoothed: false, ...(fs.existsSync(baseHits) ? { top1: hitsTop1(baseHits), belowFp32: pairedDifference(fp32Hits, baseHits) } : {}), kl: old?.kl, agree: old?.agree });

    const { file, hits } = rowFiles(cacheDir, name, config);
    if (!fs.existsSync(file)) {
      const summary = (points as Record<string, unknown>)[`${config} summary`] as { wAvgBits: number; aAvgBits: number; weightMb: number; policy: BitPolicy; budget: { wAvgBits: number; aAvgBits: number } } | undefined;
      const bits = summary
        ? { mixed_precision: mixedProvenance(loaded.model, { budget: summary.budget, pin: true }, { summary, policy: summary.policy }, { candidates: CANDIDATE_WIDTHS, sensitivityN: SENSITIVITY_N }) }
        : { w_bits: 4, a_bits: 4 };
      fs.mkdirSync(path.dirname(file), { recursive: true });
      saveQuantizedModel(file, smoothed.weights, {
        spec: loaded.model.spec,
        points: points[config],
        provenance: { tool: 'ptq4vit', method: 'ptq4vit', ...bits, seed: 0, source_checkpoint: `${name}.safetensors`, calibration: { data: 'calib32.json', images: indices.length, indices }, smoothing: { alpha: ALPHA, norms: smoothed.norms.map((n) => n.norm) } },
      });
    }
    await ensureHits(hits, openModel({ weights: file }), file, testManifest);
    const d = await divergence.measure(new QuantRunner(points[config]), smoothed.model);
    rows.push({ model: name, config, smoothed: true, top1: hitsTop1(hits), kl: d.kl, agree: d.agree, belowFp32: pairedDifference(fp32Hits, hits), vsUnsmoothed: pairedDifference(hits, baseHits), rangeBefore: mean((n) => n.rangeRatioBefore), rangeAfter: mean((n) => n.rangeRatioAfter) });
    process.stderr.write(`${name} ${config}: smoothed top-1 ${(rows.at(-1)!.top1! * 100).toFixed(2)}\n`);
  }
  const fp = hitsTop1(fp32Hits);
  return [{ model: name, config: 'FP32', smoothed: false, top1: fp, kl: 0, agree: 1 }, ...rows];
}

const signed = (x: number) => `${x < 0 ? '−' : '+'}${Math.abs(x).toFixed(0)}`;
const ci = (d?: { diff: number; low: number; high: number }) => (d ? `${d.diff >= 0 ? '+' : ''}${d.diff.toFixed(2)} (${d.low.toFixed(2)}…${d.high.toFixed(2)})` : '—');
const fmt = (x: number | undefined, scale: number, digits: number) => (x === undefined ? '—' : (x * scale).toFixed(digits));

const rows: Row[] = [];
for (const name of MODELS) rows.push(...(await runModel(name)));
const ranges = MODELS.map((m) => rows.find((r) => r.model === m && r.rangeBefore !== undefined)!).map((r) => `${r.model} ${r.rangeBefore!.toFixed(2)} → ${r.rangeAfter!.toFixed(2)}`).join(', ');
const lines = [
  '## Channel smoothing',
  '',
  `\`--smooth ${ALPHA}\` (src/quant/smooth.ts): before calibration, every LayerNorm feeding a linear layer (qkv, fc1, Swin's patch-merging reduction) divides channel j by s_j = max|X_j|^α / max|W_j|^(1−α) (max|X_j| on the calibration images) and the layer's weight column j is multiplied by s_j — the same float model, flatter input channels (mean max/mean channel range: ${ranges}). calib32; top-1 on the 10000 test images through the integer graph (\`ptq4vit eval\`), differences with their 95% interval over the paired images; KL(FP32 ‖ quantized) ×10⁻³ and top-1 agreement with FP32 on the first 1000 test images. Rows without smoothing are those of "Mixed precision".`,
  `Produced by \`npx tsc -p . && nice -n 10 node dist/scripts/smoothing.js\` (${os.cpus().length} cores, Node ${process.version}, load average ${os.loadavg()[0].toFixed(2)} at the end, ${new Date().toISOString().slice(0, 10)}).`,
  '',
  '| model | config | smoothing | top-1 % | vs FP32 (points) | smoothed − unsmoothed (points) | KL test1k ×10⁻³ | agree test1k % |',
  '|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.model} | ${r.config} | ${r.config === 'FP32' ? '' : r.smoothed ? `α ${ALPHA}` : 'none'} | ${fmt(r.top1, 100, 2)} | ${r.config === 'FP32' ? '' : ci(r.belowFp32 && { diff: -r.belowFp32.diff, low: -r.belowFp32.high, high: -r.belowFp32.low })} | ${r.smoothed ? ci(r.vsUnsmoothed) : ''} | ${fmt(r.kl, 1e3, 2)} | ${fmt(r.agree, 100, 1)} |`),
];
// The reading, from the rows: how KL moved with smoothing, and where the issue's 4-bit target stands.
const pairs = rows.filter((r) => r.smoothed).map((r) => ({ r, before: rows.find((b) => !b.smoothed && b.model === r.model && b.config === r.config)! }));
const changes = pairs.map(({ r, before }) => (r.kl! / before.kl! - 1) * 100);
const better = changes.filter((c) => c < 0);
const outside = pairs.filter(({ r }) => r.vsUnsmoothed && (r.vsUnsmoothed.low > 0 || r.vsUnsmoothed.high < 0)).length;
const target = pairs.filter(({ r }) => r.config === 'mixed avg 4').map(({ r }) => `${r.model} ${r.belowFp32!.diff.toFixed(2)} below (95% interval ${r.belowFp32!.low.toFixed(2)}…${r.belowFp32!.high.toFixed(2)})`).join(', ');
lines.push('', `Reading: smoothing brings the model closer to FP32 by KL in ${better.length} of the ${pairs.length} rows (${signed(Math.min(...changes))}…${signed(Math.max(...changes))}%), and ${outside === 0 ? 'none' : outside} of the ${pairs.length} top-1 differences it makes ${outside <= 1 ? 'is' : 'are'} outside ${outside === 0 ? 'its' : 'their'} 95% interval${outside === 0 ? '' : 's'}. Its effect is small here because these checkpoints have mild channel ranges; it is the same float model, so it costs nothing at inference. With it, mixed avg 4 against FP32 (the issue's target: within 0.3 points): ${target}.`);
const section = lines.slice(1).join('\n') + '\n';
process.stdout.write(section);
replaceSection('RESULTS.md', 'Channel smoothing', section, '# Results');
