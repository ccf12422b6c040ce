/**
 * Calibration speed: wall seconds of a full PTQ4ViT (and Base PTQ) calibration on calib32, beside the
 * authors' implementation on this CPU (`calib_seconds` in ../shared/reference/official_ptq4vit.jsonl).
 * Goal: PTQ4ViT W6A6 on vit_tiny_c10 in less than a quarter of theirs.
 *
 *   npx tsc -p . && node dist/scripts/bench_calib.js [--threads=2] [--no-write]
 */
import fs from 'node:fs';
import path from 'node:path';
import { openDataset } from '../src/data/datasets.js';
import { openModel } from '../src/models/load.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { calibrateMany } from '../src/quant/calibrate.js';
import { methodConfig, type Method } from '../src/quant/methods.js';
import { setOrtThreads } from '../src/tensor/ort.js';
import { gitRevision, machine, replaceSection } from './markdown.js';

const threadsArg = process.argv.find((x) => x.startsWith('--threads='));
const threads = threadsArg ? Number(threadsArg.split('=')[1]) : 2;
setOrtThreads(threads);
const shared = path.resolve('..', 'shared');
const refs = fs.readFileSync(path.join(shared, 'reference', 'official_ptq4vit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { model: string; config: string; calib_seconds?: number });
const header = machine();

const jobs: { model: string; method: Method; bits: number }[] = [
  { model: 'vit_tiny_c10', method: 'ptq4vit', bits: 6 },
  { model: 'vit_tiny_c10', method: 'base', bits: 6 },
  { model: 'swin_micro_c10', method: 'ptq4vit', bits: 6 },
];
const rows: string[] = [];
for (const job of jobs) {
  const { model } = openModel({ weights: path.join(shared, 'models', `${job.model}.safetensors`), config: path.join(shared, 'models', `${job.model}.json`) });
  const calib = await openDataset(path.join(shared, 'data', 'cifar10', 'calib32.json'));
  const { images, labels } = await loadCalibration(calib, 32, 0, model.spec.preprocess);
  const opts = methodConfig(job.method, { weightBits: job.bits, activationBits: job.bits });
  const t0 = performance.now();
  const { timing } = await calibrateMany(model, images, labels, [opts]);
  const recorded = timing.recordSeconds;
  const seconds = (performance.now() - t0) / 1000;
  const config = `${job.method === 'base' ? 'BasePTQ' : 'PTQ4ViT'}-${job.bits}`;
  const theirs = refs.find((r) => r.model === job.model && r.config === config)?.calib_seconds;
  const ratio = theirs ? seconds / theirs : NaN;
  console.log(`${job.model} ${config}: ${seconds.toFixed(1)} s (recording ${recorded.toFixed(1)} s) vs authors ${theirs ?? '—'} s → ${(ratio * 100).toFixed(1)}%`);
  rows.push(`| ${job.model} | ${config} | ${seconds.toFixed(1)} | ${recorded.toFixed(1)} | ${theirs?.toFixed(1) ?? '—'} | ${Number.isFinite(ratio) ? `${(ratio * 100).toFixed(1)}%` : '—'} |`);
}

if (!process.argv.includes('--no-write')) {
  replaceSection(
    'BENCHMARKS.md',
    'Calibration time',
    `\`node dist/scripts/bench_calib.js --threads=${threads}\` at ${gitRevision()} — ${header}.
Wall seconds of a whole calibration on the 32 images of calib32 (recording FP32 activations and, for PTQ4ViT,
∂L/∂O by a backward pass, then the search of every layer), in-process, beside the authors' implementation on
this CPU (PyTorch 1.13, 2 threads; \`calib_seconds\` in ../shared/reference/official_ptq4vit.jsonl).

| model | config | ours (s) | of which recording (s) | authors (s) | ours / authors |
|---|---|---|---|---|---|
${rows.join('\n')}`,
  );
}
