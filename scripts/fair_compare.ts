/**
 * A fair comparison of deployable models (issue 22, item 5), all from the same FP32 checkpoint and all as ONNX
 * graphs run by onnxruntime: FP32; the transformers.js-style q8 (dynamic: uint8 activations per call, uint8
 * weights per channel with reduced range) and q4 (RTN, symmetric, blocks of 32, MatMulNBits, float activations)
 * recipes, built by this project from the model (src/export/nbits.ts: the recipes of the conversion script, not
 * its files); ptq4vit W8A8 and W4A8 (per tensor and per channel; 4-bit weights packed).
 * Columns: top-1, top-1 agreement and mean KL(FP32 ‖ model) of the softmax, ONNX MB, img/s in onnxruntime-node
 * (one pass, --threads threads) and the share of images where onnxruntime-web (wasm, 1 thread) predicts the
 * same class as onnxruntime-node.
 *
 *   npx tsc -p . && node dist/scripts/fair_compare.js [--images=1000] [--web-images=200] [--threads=2]
 *
 * ptq4vit files are made once under out/int4/ with `ptq4vit quantize` (calib32, default search) and reused.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { loadBatch, openDataset } from '../src/data/datasets.js';
import { exportOptionsFor } from '../src/export/graph.js';
import { q4RecipeProducts, q8DynamicProducts } from '../src/export/nbits.js';
import { exportOnnx } from '../src/export/onnx.js';
import { openModel } from '../src/open.js';
import { machine, replaceSection } from './markdown.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? Number(a.slice(name.length + 3)) : fallback;
};
const images = option('images', 1000), webImages = option('web-images', 200), threads = option('threads', 2);
const shared = path.resolve('..', 'shared');
const MODEL = 'vit_tiny_c10';
const header = machine();
const dir = path.join('out', 'int4');
fs.mkdirSync(dir, { recursive: true });

function ptq4vitFile(w: number, a: number, scales: 'tensor' | 'channel'): string {
  const file = path.join(dir, `${MODEL}.ptq4vit-w${w}a${a}-${scales}.safetensors`);
  if (fs.existsSync(file)) return file;
  console.log(`calibrating ${MODEL} W${w}A${a} per ${scales} …`);
  const run = spawnSync(process.execPath, ['bin/ptq4vit.js', 'quantize', '--model', path.join(shared, 'models', `${MODEL}.safetensors`), '--config', path.join(shared, 'models', `${MODEL}.json`),
    '--calib', path.join(shared, 'data', 'cifar10', 'calib32.json'), '--w-bits', String(w), '--a-bits', String(a), '--weight-scales', scales, '--out', file], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (run.status !== 0) throw new Error(`quantize failed for W${w}A${a} ${scales}`);
  return file;
}

const fp32 = openModel({ weights: path.join(shared, 'models', `${MODEL}.safetensors`), config: path.join(shared, 'models', `${MODEL}.json`) });
const quantizedGraph = async (file: string) => {
  const loaded = openModel({ weights: file });
  return exportOnnx(loaded.model, exportOptionsFor(loaded));
};
const variants: { name: string; bytes: () => Promise<Uint8Array> }[] = [
  { name: 'FP32', bytes: () => exportOnnx(fp32.model, {}) },
  { name: 'q8 recipe (dynamic u8 activations, u8 per-channel weights, reduced range)', bytes: () => exportOnnx(fp32.model, { products: q8DynamicProducts() }) },
  { name: 'q4 recipe (RTN, symmetric, block 32, MatMulNBits, float activations)', bytes: () => exportOnnx(fp32.model, { products: q4RecipeProducts({ blockSize: 32, accuracyLevel: 0 }) }) },
  { name: 'ptq4vit W8A8 (per tensor)', bytes: async () => quantizedGraph(ptq4vitFile(8, 8, 'tensor')) },
  { name: 'ptq4vit W4A8 (per tensor, packed)', bytes: async () => quantizedGraph(ptq4vitFile(4, 8, 'tensor')) },
  { name: 'ptq4vit W4A8 (per channel, packed)', bytes: async () => quantizedGraph(ptq4vitFile(4, 8, 'channel')) },
];

const test = await openDataset(path.join(shared, 'data', 'cifar10', 'test1k.json'));
const indices = Array.from({ length: Math.min(images, test.size) }, (_, i) => i);
const data = await loadBatch(test, indices, fp32.model.spec.preprocess);
const S = fp32.model.spec.preprocess.inputSize, per = 3 * S * S, classes = fp32.model.spec.arch.numClasses;

async function logitsOf(session: { run: (feeds: Record<string, unknown>) => Promise<Record<string, { data: unknown }>> }, Tensor: new (t: 'float32', d: Float32Array, dims: number[]) => unknown, count: number): Promise<{ logits: Float32Array; seconds: number }> {
  const out = new Float32Array(count * classes);
  const t0 = performance.now();
  for (let s = 0; s < count; s += 100) {
    const n = Math.min(100, count - s);
    const r = await session.run({ pixel_values: new Tensor('float32', data.images.data.slice(s * per, (s + n) * per), [n, 3, S, S]) });
    out.set(r.logits.data as Float32Array, s * classes);
  }
  return { logits: out, seconds: (performance.now() - t0) / 1000 };
}
const argmax = (l: Float32Array, r: number) => {
  let best = 0;
  for (let c = 1; c < classes; c++) if (l[r * classes + c] > l[r * classes + best]) best = c;
  return best;
};
const softmax = (l: Float32Array, r: number) => {
  const row = Array.from(l.subarray(r * classes, (r + 1) * classes));
  const m = Math.max(...row);
  const e = row.map((v) => Math.exp(v - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
};

const require = createRequire(import.meta.url);
const ortWeb = require('onnxruntime-web') as typeof import('onnxruntime-web');
ortWeb.env.wasm.numThreads = 1;

const rows: string[] = [];
let reference: Float32Array | null = null;
for (const v of variants) {
  const bytes = await v.bytes();
  const node = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads, interOpNumThreads: 1 });
  const { logits, seconds } = await logitsOf(node as never, ort.Tensor as never, indices.length);
  await node.release();
  reference ??= logits;
  let correct = 0, agree = 0, kl = 0;
  for (let i = 0; i < indices.length; i++) {
    if (argmax(logits, i) === data.labels[i]) correct++;
    if (argmax(logits, i) === argmax(reference, i)) agree++;
    const p = softmax(reference, i), q = softmax(logits, i);
    for (let c = 0; c < classes; c++) if (p[c] > 0) kl += p[c] * Math.log(p[c] / Math.max(q[c], 1e-30));
  }
  let webSame = '—';
  try {
    const web = await ortWeb.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
    const w = await logitsOf(web as never, ortWeb.Tensor as never, Math.min(webImages, indices.length));
    await web.release();
    let same = 0;
    for (let i = 0; i < Math.min(webImages, indices.length); i++) if (argmax(w.logits, i) === argmax(logits, i)) same++;
    webSame = `${same}/${Math.min(webImages, indices.length)}`;
  } catch (e) {
    webSame = `fails: ${(e as Error).message.split('\n')[0].slice(0, 80)}`;
  }
  const row = `| ${v.name} | ${(100 * correct / indices.length).toFixed(2)} | ${(100 * agree / indices.length).toFixed(1)}% | ${(kl / indices.length).toExponential(2)} | ${(bytes.length / 1e6).toFixed(3)} | ${(indices.length / seconds).toFixed(0)} | ${webSame} |`;
  rows.push(row);
  console.log(row);
}

const body = [
  `${MODEL}, the first ${indices.length} images of test1k (not the full test set), onnxruntime-node 1.30 CPU with ${threads} threads (one pass,`,
  'batch 100: img/s on a shared machine, compare within the column only); onnxruntime-web 1.30 wasm, 1 thread, on the first',
  `${Math.min(webImages, indices.length)} images. Agreement and KL are against the FP32 graph's predictions and softmax. The q8 and q4 rows are the recipes`,
  "of transformers.js's conversion script rebuilt by this project (src/export/nbits.ts), not files made by that script; q8",
  'keeps the attention products in float, as dynamic quantization of activation × activation products is not part of it here.',
  'Not measured here: swin_micro_c10 and the DeiT of the tests, mixed precision at the q4 file size, group-wise ptq4vit scales (int4_results.ts),',
  'onnxruntime-web throughput.',
  '',
  '| model | top-1 | top-1 agreement with FP32 | KL(FP32 ‖ model) | ONNX MB | img/s (node) | web = node top-1 |',
  '|---|---|---|---|---|---|---|',
  ...rows,
  '',
  `Command: \`npx tsc -p . && node dist/scripts/fair_compare.js --images=${images} --web-images=${webImages} --threads=${threads}\`; ${header}.`,
];
replaceSection('RESULTS.md', 'A fair comparison: transformers.js-style q8/q4 recipes vs ptq4vit (issue 22)', body.join('\n'), '# Results');
