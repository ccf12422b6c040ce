/**
 * `ptq4vit demo`: the whole job on the bundled data — PTQ4ViT at W8A8 and W6A6 on the bundled
 * vit_tiny_c10 (CIFAR-10) with its 32 calibration images, then FP32 vs quantized top-1 on the 500
 * bundled test images. The FP32 activations and gradients are recorded once and searched twice.
 */
import path from 'node:path';
import { openDataset } from '../data/datasets.js';
import { evaluate } from '../eval/evaluate.js';
import { openModel } from '../open.js';
import { loadCalibration } from '../quant/calibset.js';
import { recordCalibration, searchAll } from '../quant/calibrate.js';
import { methodConfig } from '../quant/methods.js';
import { QuantRunner } from '../quant/runner.js';
import { applyCommon, intFlag, parse, USAGE } from './args.js';
import { percent } from './describe.js';
import { packageRoot } from './paths.js';
import { ProgressBar } from './progress.js';
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
  if (!quiet) process.stderr.write(`recording FP32 activations and gradients on ${images.shape[0]} calibration images…\n`);
  const records = await recordCalibration(model, images, labels, methodConfig('ptq4vit', { weightBits: 8, activationBits: 8 }));
  const rows: [string, string][] = [['FP32', `top-1 ${percent(fp.top1)}  top-5 ${percent(fp.top5)}`]];
  const results: Record<string, unknown>[] = [];
  for (const bits of [8, 6]) {
    const opts = methodConfig('ptq4vit', { weightBits: bits, activationBits: bits, ...search });
    const t0 = performance.now();
    const bar = new ProgressBar(`PTQ4ViT W${bits}A${bits}`, model.quantPoints.length, 'layers', quiet);
    const points = await searchAll(model, records, { ...opts, onPoint: (done, _t, point) => bar.update(done, point) }, false);
    const searchSeconds = (performance.now() - t0) / 1000;
    const evalBar = new ProgressBar(`eval W${bits}A${bits}`, testImages, 'img', quiet);
    const q = await evaluate(model, test, { limit, runner: new QuantRunner(points), onProgress: (d) => evalBar.update(d) });
    rows.push([`PTQ4ViT W${bits}A${bits}`, `top-1 ${percent(q.top1)}  top-5 ${percent(q.top5)}  (${((q.top1 - fp.top1) * 100).toFixed(2)} points; search ${searchSeconds.toFixed(0)} s)`]);
    results.push({ w_bits: bits, a_bits: bits, top1: q.top1, top5: q.top5, search_seconds: searchSeconds });
  }
  printReport({
    title: `demo: ${model.spec.name} on ${testImages} bundled CIFAR-10 test images (calibration: ${calib.size} images)`,
    rows,
    notes: [`total ${((performance.now() - start) / 1000).toFixed(0)} s of calibration; quantize your own model with \`ptq4vit quantize\``],
    json: v.json === true ? { command: 'demo', model: model.spec.name, images: fp.images, fp32_top1: fp.top1, fp32_top5: fp.top5, quantized: results } : undefined,
  });
}
