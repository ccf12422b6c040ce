/**
 * `ptq4vit demo`: the whole job on the bundled data — PTQ4ViT at W8A8 and W6A6 on the bundled
 * vit_tiny_c10 (CIFAR-10) with its 32 calibration images, then FP32 vs quantized top-1 on the 500
 * bundled test images, each model run as the ONNX graph it exports to (the quantized ones with integer
 * products), with its speed and file size. The FP32 activations and gradients are recorded once and
 * searched twice.
 */
import path from 'node:path';
import { openDataset } from '../data/datasets.js';
import { evaluate } from '../eval/evaluate.js';
import { exportOnnx } from '../export/onnx.js';
import { OnnxModel } from '../export/runtime.js';
import { openModel } from '../open.js';
import { loadCalibration } from '../quant/calibset.js';
import { calibrateMany } from '../quant/calibrate.js';
import { methodConfig } from '../quant/methods.js';
import { applyCommon, commandHelp, intFlag, parse, type CommandSpec } from './args.js';
import { percent } from './describe.js';
import { packageRoot } from './paths.js';
import { ProgressBar } from './progress.js';
import { calibrationProgress, peakRssBytes } from './quantize.js';
import { printReport } from './report.js';

export const DEMO_COMMAND: CommandSpec = {
  name: 'demo',
  summary: 'quantize the bundled ViT (W8A8, W6A6) and compare top-1 with FP32',
  synopsis: '[options]',
  // --limit / --n / --rounds shrink the demo (fewer test images, a coarser search) for smoke tests.
  flags: {
    limit: { type: 'string', value: 'N', default: '500', help: 'evaluate on the first N bundled test images' },
    n: { type: 'string', value: 'N', default: '100', help: 'grid steps of the scale search (N + 1 candidates), 1 to 10000' },
    rounds: { type: 'string', value: 'R', default: '3', help: 'rounds of alternating weight/input search, 1 to 100' },
  },
  notes: ['Runs on the bundled vit_tiny_c10 (CIFAR-10) with its 32 calibration images and 500 test images; takes a few minutes on 2 cores.'],
};

export async function runDemo(args: string[]): Promise<void> {
  const v = parse(args, DEMO_COMMAND);
  if (v.help) {
    process.stdout.write(commandHelp(DEMO_COMMAND));
    return;
  }
  const limit = intFlag(v, 'limit', undefined);
  const search = { n: intFlag(v, 'n', undefined, 1, 10000), rounds: intFlag(v, 'rounds', undefined, 1, 100) };
  applyCommon(v);
  const assets = path.join(packageRoot, 'assets');
  const { model } = openModel({ weights: path.join(assets, 'models', 'vit_tiny_c10.safetensors'), config: path.join(assets, 'models', 'vit_tiny_c10.json') });
  const test = await openDataset(path.join(assets, 'cifar10-test500'));
  const calib = await openDataset(path.join(assets, 'cifar10-calib32', 'calib32.json'));
  const quiet = v.json === true && !process.stderr.isTTY;

  const testImages = Math.min(limit ?? test.size, test.size);
  // Every model is evaluated as the ONNX graph `ptq4vit export` writes (one onnxruntime session).
  const asGraph = async (bytes: Uint8Array, what: string) => ({ graph: await OnnxModel.create(bytes, model.spec, `${model.spec.name} ${what}`), mb: bytes.length / 1e6 });
  const fpGraph = await asGraph(await exportOnnx(model), 'FP32');
  const fpBar = new ProgressBar('eval FP32', testImages, { quiet });
  const fp = await evaluate(fpGraph.graph, test, { limit, onProgress: (d) => fpBar.update(d) });
  const { images, labels } = await loadCalibration(calib, calib.size, 0, model.spec.preprocess);
  const start = performance.now();
  // Both bit widths are searched on the same recordings: each group of points is recorded once.
  const widths = [8, 6];
  const configs = widths.map((bits) => methodConfig('ptq4vit', { weightBits: bits, activationBits: bits, ...search }));
  const onProgress = calibrationProgress('PTQ4ViT W8A8+W6A6', model.quantPoints.length * widths.length, quiet);
  const { results: calibrated, timing } = await calibrateMany(model, images, labels, configs.map((c, i) => (i === 0 ? { ...c, onProgress } : c)));
  const calibSeconds = (performance.now() - start) / 1000;
  const speed = (r: { imagesPerSecond: number }, mb: number) => `${r.imagesPerSecond.toFixed(0)} img/s, ONNX ${mb.toFixed(1)} MB`;
  const rows: [string, string][] = [['FP32', `top-1 ${percent(fp.top1)}  top-5 ${percent(fp.top5)}  (${speed(fp, fpGraph.mb)})`]];
  const results: Record<string, unknown>[] = [];
  for (let i = 0; i < widths.length; i++) {
    const bits = widths[i];
    const evalBar = new ProgressBar(`eval W${bits}A${bits}`, testImages, { quiet });
    const qGraph = await asGraph(await exportOnnx(model, { quant: calibrated[i] }), `W${bits}A${bits} integer graph`);
    const q = await evaluate(qGraph.graph, test, { limit, onProgress: (d) => evalBar.update(d) });
    rows.push([`PTQ4ViT W${bits}A${bits}`, `top-1 ${percent(q.top1)}  top-5 ${percent(q.top5)}  (${((q.top1 - fp.top1) * 100).toFixed(2)} points; integer graph ${speed(q, qGraph.mb)})`]);
    results.push({ w_bits: bits, a_bits: bits, top1: q.top1, top5: q.top5, images_per_second: q.imagesPerSecond, onnx_bytes: Math.round(qGraph.mb * 1e6) });
  }
  printReport({
    title: `demo: ${model.spec.name} on ${testImages} bundled CIFAR-10 test images (calibration: ${calib.size} images)`,
    rows,
    notes: [`calibration of both: ${calibSeconds.toFixed(0)} s (recording ${timing.recordSeconds.toFixed(0)} s, search ${timing.searchSeconds.toFixed(0)} s); quantize your own model with \`ptq4vit quantize\`, deploy it with \`ptq4vit export\``],
    json: v.json === true
      ? { command: 'demo', model: model.spec.name, images: fp.images, fp32_top1: fp.top1, fp32_top5: fp.top5, fp32_images_per_second: fp.imagesPerSecond, quantized: results, calib_seconds: calibSeconds, phase_seconds: { record: timing.recordSeconds, search: timing.searchSeconds }, peak_rss_bytes: peakRssBytes() }
      : undefined,
  });
}
