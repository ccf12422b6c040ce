/**
 * Inference throughput: FP32 images/s of vit_tiny_c10 and swin_micro_c10 on the CIFAR-10 test set
 * (batch 64, data already decoded: the raw manifest), beside PyTorch on the same CPU with the same
 * number of threads, and of the quantized (fake-quant) model.
 *
 *   npx tsc -p . && node dist/scripts/bench_eval.js [--images 10000] [--threads 2] [--no-write]
 */
import path from 'node:path';
import { openDataset } from '../src/data/datasets.js';
import { evaluate } from '../src/eval/evaluate.js';
import { calibrate } from '../src/quant/calibrate.js';
import { methodConfig } from '../src/quant/methods.js';
import { QuantRunner } from '../src/quant/runner.js';
import { setOrtThreads } from '../src/tensor/ort.js';
import { openSharedModel, sharedCalib32, sharedDir } from './shared.js';
import { gitRevision, machine, pytorchBaseline, replaceSection } from './markdown.js';

const arg = (name: string, fallback: number) => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? Number(a.split('=')[1]) : fallback;
};
const images = arg('images', 10000);
const threads = arg('threads', 2);
setOrtThreads(threads);
const header = machine();

const rows: string[] = [];
for (const name of ['vit_tiny_c10', 'swin_micro_c10']) {
  const { model } = openSharedModel(name);
  const data = await openDataset(path.join(sharedDir, 'data', 'cifar10', 'test.json'));
  await evaluate(model, data, { limit: 64 }); // warm-up: ORT sessions
  const ours = await evaluate(model, data, { limit: images, batchSize: 64 });
  const torch = pytorchBaseline(['forward', '--model', name, '--images', String(images), '--batch-size', '64', '--threads', String(threads)]);
  const torchRate = torch ? Number(torch.images_per_second) : NaN;
  // Quantized: a quick W8A8 calibration (the search settings do not change inference cost).
  const { images: ci, labels } = await sharedCalib32(model.spec.preprocess);
  const points = await calibrate(model, ci, labels, methodConfig('ptq4vit', { weightBits: 8, activationBits: 8, n: 4, rounds: 1 }));
  const quant = await evaluate(model, data, { limit: images, batchSize: 64, runner: new QuantRunner(points) });
  console.log(`${name}: ours ${ours.imagesPerSecond.toFixed(1)} img/s (top-1 ${(ours.top1 * 100).toFixed(2)}%), PyTorch ${torchRate.toFixed(1)} img/s, ratio ${(ours.imagesPerSecond / torchRate).toFixed(2)}; quantized ${quant.imagesPerSecond.toFixed(1)} img/s`);
  rows.push(`| ${name} | ${ours.imagesPerSecond.toFixed(1)} | ${torchRate.toFixed(1)} | ${(ours.imagesPerSecond / torchRate).toFixed(2)}× | ${quant.imagesPerSecond.toFixed(1)} | ${(ours.top1 * 100).toFixed(2)} / ${torch ? (Number(torch.top1) * 100).toFixed(2) : '—'} |`);
}

if (!process.argv.includes('--no-write')) {
  replaceSection(
    'BENCHMARKS.md',
    'Inference throughput (FP32 and fake-quantized)',
    `\`node dist/scripts/bench_eval.js --images=${images} --threads=${threads}\` at ${gitRevision()} — ${header}.
Images/s over the first ${images} CIFAR-10 test images (decoded raw manifest, batch 64, ${threads} threads for both),
after one warm-up batch. PyTorch = \`scripts/pytorch_baseline.py forward\` (PyTorch 1.13.1 from Debian, same math as timm,
\`torch.inference_mode()\`, \`torch.set_num_threads(${threads})\`), run by the same script right after ours.

| model | ptq4vit FP32 img/s | PyTorch FP32 img/s | ratio | ptq4vit W8A8 (fake-quant) img/s | top-1 ours / PyTorch |
|---|---|---|---|---|---|
${rows.join('\n')}`,
  );
}
