/**
 * Weight-scale granularity at low widths (issue 22): vit_tiny_c10 quantized by PTQ4ViT at W4A8 and W6A6 with
 * per-tensor weight scales (one Δ per tensor, q/k/v apart: the default) and per-output-channel scales
 * (`--weight-scales channel`), each searched with the Hessian-guided metric on calib32. For each: top-1 of the
 * exported integer ONNX graph (what ships: ≤ 4-bit weights packed, unpacked to int8 at load), top-1 of the
 * simulation and how many top-1 predictions the two share, the quantized file's and the ONNX file's size.
 * Written into RESULTS.md (--quick: test1k, RESULTS-quick.md).
 *
 *   npx tsc -p . && node dist/scripts/int4_results.js [--quick]
 *
 * Quantized files are made once with `ptq4vit quantize` under out/int4/ and reused.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { openDataset } from '../src/data/datasets.js';
import { evaluate, type EvalResult } from '../src/eval/evaluate.js';
import { exportOptionsFor, wholeModelGraph } from '../src/export/graph.js';
import { exportOnnx } from '../src/export/onnx.js';
import { openModel } from '../src/open.js';
import { machine, replaceSection } from './markdown.js';

const quick = process.argv.includes('--quick');
const shared = path.resolve('..', 'shared');
const MODEL = 'vit_tiny_c10';
const testData = path.join(shared, 'data', 'cifar10', quick ? 'test1k.json' : 'test.json');
const agreementData = path.join(shared, 'data', 'cifar10', 'test1k.json');
const dir = path.join('out', 'int4');
fs.mkdirSync(dir, { recursive: true });

interface Config {
  w: number;
  a: number;
  scales: 'tensor' | 'channel';
}
const CONFIGS: Config[] = [
  { w: 4, a: 8, scales: 'channel' },
  { w: 4, a: 8, scales: 'tensor' },
  { w: 6, a: 6, scales: 'channel' },
  { w: 6, a: 6, scales: 'tensor' },
];

function quantizedFile(c: Config): string {
  const file = path.join(dir, `${MODEL}.ptq4vit-w${c.w}a${c.a}-${c.scales}.safetensors`);
  if (fs.existsSync(file)) return file;
  console.log(`calibrating ${MODEL} W${c.w}A${c.a} per ${c.scales} …`);
  const run = spawnSync(process.execPath, ['bin/ptq4vit.js', 'quantize', '--model', path.join(shared, 'models', `${MODEL}.safetensors`), '--config', path.join(shared, 'models', `${MODEL}.json`),
    '--calib', path.join(shared, 'data', 'cifar10', 'calib32.json'), '--w-bits', String(c.w), '--a-bits', String(c.a), '--weight-scales', c.scales, '--out', file], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (run.status !== 0) throw new Error(`quantize failed for W${c.w}A${c.a} ${c.scales}`);
  return file;
}

function argmax(logits: Float32Array, row: number, classes: number): number {
  let best = 0;
  for (let c = 1; c < classes; c++) if (logits[row * classes + c] > logits[row * classes + best]) best = c;
  return best;
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(3);
const pct = (x: number) => (x * 100).toFixed(2);
const header = machine();
const dataset = await openDataset(testData);
const agreement = await openDataset(agreementData);

const fp32 = openModel({ weights: path.join(shared, 'models', `${MODEL}.safetensors`), config: path.join(shared, 'models', `${MODEL}.json`) });
const fp32Onnx = await exportOnnx(fp32.model, exportOptionsFor(fp32));
const fp32Graph = await wholeModelGraph(fp32, MODEL);
const fp32Result = await evaluate(fp32Graph, dataset, { batchSize: 100 });
const rows = [`| FP32 | — | ${pct(fp32Result.top1)} | — | — | ${mb(fs.statSync(path.join(shared, 'models', `${MODEL}.safetensors`)).size)} | ${mb(fp32Onnx.length)} (1.00×) |`];
console.log(`FP32 top-1 ${pct(fp32Result.top1)}`);

/** The section as measured so far (written after every row, so a long run leaves what it measured). */
function writeSection(): void {
  const body = [
    `${MODEL}, PTQ4ViT (Hessian-guided search, twin softmax/GELU, calib32), top-1 on ${quick ? 'test1k (1000 images)' : 'the full CIFAR-10 test set (10000 images)'}`,
    'of the exported integer ONNX graph (what `ptq4vit eval` runs and `ptq4vit export` writes). Per tensor: one weight Δ per',
    'tensor (q, k, v apart; the patch conv per channel); per channel: one Δ per output channel of every linear layer, each',
    "searched on its own rows' Hessian score. Simulation / graph: top-1 on test1k of the op-by-op simulation and of the",
    'graph, and the top-1 predictions they share. Sizes in MB of 10^6 bytes: 4-bit weights are stored packed (two codes a',
    'byte) in both files, 6-bit ones in int8. Group-wise scales (G input channels) are not implemented: the integer',
    "kernels ptq4vit deploys (MatMulIntegerToFloat) take one weight scale per output column, so a group-wise weight would",
    'need float activations (MatMulNBits) or one product per group.',
    '',
    '| weights/acts | weight scales | top-1 | top-1 simulation / graph (test1k) | same top-1 (test1k) | .safetensors MB | ONNX MB |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
    `Command: \`npx tsc -p . && node dist/scripts/int4_results.js${quick ? ' --quick' : ''}\`; ${header}.`,
  ];
  replaceSection(quick ? 'RESULTS-quick.md' : 'RESULTS.md', 'Weight scales per tensor vs per channel, packed 4-bit weights (issue 22)', body.join('\n'), '# Results');
}

for (const c of CONFIGS) {
  const file = quantizedFile(c);
  const loaded = openModel({ weights: file });
  const classes = loaded.model.spec.arch.numClasses;
  const onnx = await exportOnnx(loaded.model, exportOptionsFor(loaded));
  const graph = await wholeModelGraph(loaded, file);
  // Simulation vs deployed graph on test1k (the op-by-op simulation is the slow side).
  const int = await evaluate(graph, agreement, { batchSize: 100, keepLogits: true });
  const deployed: EvalResult = quick ? int : await evaluate(graph, dataset, { batchSize: 100 });
  const sim = await evaluate(loaded.model, agreement, { runner: loaded.runner, batchSize: 100, keepLogits: true });
  let same = 0;
  for (let i = 0; i < sim.images; i++) if (argmax(sim.logits!, i, classes) === argmax(int.logits!, i, classes)) same++;
  const row = `| W${c.w}A${c.a} | per ${c.scales} | ${pct(deployed.top1)} | ${pct(sim.top1)} / ${pct(int.top1)} | ${same}/${sim.images} | ${mb(fs.statSync(file).size)} | ${mb(onnx.length)} (${(onnx.length / fp32Onnx.length).toFixed(2)}×) |`;
  rows.push(row);
  console.log(row);
  writeSection();
}

