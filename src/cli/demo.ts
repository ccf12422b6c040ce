/**
 * `ptq4vit demo`: the whole job on the bundled data — PTQ4ViT at W8A8 and W6A6 on the bundled
 * vit_tiny_c10 (CIFAR-10) with its 32 calibration images, then FP32 vs quantized top-1 on the 500
 * bundled test images. The FP32 activations and gradients are recorded once and searched twice.
 */
import path from 'node:path';
import { openDataset } from '../data/datasets.js';
import { evaluate } from '../eval/evaluate.js';
import { openModel } from '../models/load.js';
import { loadCalibration } from '../quant/calibset.js';
import { calibrateMany } from '../quant/calibrate.js';
import { methodConfig } from '../quant/methods.js';
import { QuantRunner } from '../quant/runner.js';
import { applyCommon, intFlag, parse, USAGE } from './args.js';
import { percent } from './describe.js';
import { packageRoot } from './paths.js';
import { ProgressBar } from './progress.js';
import { calibrationProgress, peakRssBytes } from './quantize.js';
import { printReport } from './report.js';

export async function runDemo(args: string[]): Promise<void> {
  // --limit / --n / --rounds shrink the demo (fewer test images, a coarser search) for smoke tests.
  const v = parse(args, { limit: { type: 'string' }, n: { type: 'string' }, rounds: { type: 'string' } });
  const limit = intFlag(v, 'limit', undefined);
  const search = { n: intFlag(v, 'n', undefined, 1, 10000), rounds: intFlag(v, 'rounds', undefined, 1, 100) };
  if (v.help) {
    process.stdout.write(USAGE);
    return;
  }
  applyCommon(v);
  const assets = path.join(packageRoot, 'assets');
  const { model } = openModel({ weights: path.join(assets, 'models', 'vit_tiny_c10.safetensors'), config: path.join(assets, 'models', 'vit_tiny_c10.json') });
  const test = await openDataset(path.join(assets, 'cifar10-test500'));
  const calib = await openDataset(path.join(assets, 'cifar10-calib32', 'calib32.json'));
  const quiet = v.json === true && !process.stderr.isTTY;

  const testImages = Math.min(limit ?? test.size, test.size);
  const fpBar = new ProgressBar('eval FP32', testImages, 'img', quiet);
  const fp = await evaluate(model, test, { limit, onProgress: (d) => fpBar.update(d) });
  const { images, labels } = await loadCalibration(calib, calib.size, 0, model.spec.preprocess);
  const start = performance.now();
  // Both bit widths are searched on the same recordings: each group of points is recorded once.
  const widths = [8, 6];
  const configs = widths.map((bits) => methodConfig('ptq4vit', { weightBits: bits, activationBits: bits, ...search }));
  const onProgress = calibrationProgress('PTQ4ViT W8A8+W6A6', model.quantPoints.length * widths.length, quiet);
  const { results: calibrated, timing } = await calibrateMany(model, images, labels, configs.map((c, i) => (i === 0 ? { ...c, onProgress } : c)));
  const calibSeconds = (performance.now() - start) / 1000;
  const rows: [string, string][] = [['FP32', `top-1 ${percent(fp.top1)}  top-5 ${percent(fp.top5)}`]];
  const results: Record<string, unknown>[] = [];
  for (let i = 0; i < widths.length; i++) {
    const bits = widths[i];
    const evalBar = new ProgressBar(`eval W${bits}A${bits}`, testImages, 'img', quiet);
    const q = await evaluate(model, test, { limit, runner: new QuantRunner(calibrated[i]), onProgress: (d) => evalBar.update(d) });
    rows.push([`PTQ4ViT W${bits}A${bits}`, `top-1 ${percent(q.top1)}  top-5 ${percent(q.top5)}  (${((q.top1 - fp.top1) * 100).toFixed(2)} points)`]);
    results.push({ w_bits: bits, a_bits: bits, top1: q.top1, top5: q.top5 });
  }
  printReport({
    title: `demo: ${model.spec.name} on ${testImages} bundled CIFAR-10 test images (calibration: ${calib.size} images)`,
    rows,
    notes: [`calibration of both: ${calibSeconds.toFixed(0)} s (recording ${timing.recordSeconds.toFixed(0)} s, search ${timing.searchSeconds.toFixed(0)} s); quantize your own model with \`ptq4vit quantize\``],
    json: v.json === true
      ? { command: 'demo', model: model.spec.name, images: fp.images, fp32_top1: fp.top1, fp32_top5: fp.top5, quantized: results, calib_seconds: calibSeconds, phase_seconds: { record: timing.recordSeconds, search: timing.searchSeconds }, peak_rss_bytes: peakRssBytes() }
      : undefined,
  });
}
