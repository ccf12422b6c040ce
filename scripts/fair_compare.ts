/**
 * A fair comparison of deployable models (issue 22, item 5), all from the same FP32 checkpoint and all as ONNX
 * graphs run by onnxruntime: FP32; the transformers.js-style q8 (dynamic: uint8 activations per call, uint8
 * weights per channel with reduced range) and q4 (RTN, symmetric, blocks of 32, MatMulNBits, float activations)
 * recipes, built by this project from the model (src/export/nbits.ts: the recipes of the conversion script, not
 * its files); ptq4vit W8A8 (per tensor), W4A8 per channel and group-wise (both with --pin: the patch embedding and
 * the classifier at 8 bits; 4-bit codes packed), and mixed precision with --size-mb set so that the file comes out
 * at the q4 recipe's size.
 * Columns: top-1, top-1 agreement and mean KL(FP32 ‖ model) of the softmax, ONNX MB, img/s in onnxruntime-node
 * (--threads threads, batch 100, on the first --speed-images images) and in onnxruntime-web (wasm, 1 thread, on
 * the first --web-images images), and the share of those images where web predicts node's class.
 *
 *   npx tsc -p . && node dist/scripts/fair_compare.js [--models=vit_tiny_c10,swin_micro_c10,deit] [--images=10000] [--web-images=1000] [--speed-images=1000] [--threads=2]
 *
 * vit_tiny_c10 and swin_micro_c10: CIFAR-10, the full test set (or its first --images); deit: the random-weight
 * DeiT-distilled fixture the tests use (224², 16 classes), on the 100 JPEGs of jpeg_sample — agreement and KL
 * only (its classes are not CIFAR's), calibrated with --loss pseudo. ptq4vit files are made once under out/int4/
 * with `ptq4vit quantize` (calib32, default search; the names scripts/int4_results.ts uses) and reused.
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
import { deployedWeightBytes } from '../src/quant/mixed.js';
import { machine, replaceSection } from './markdown.js';
import { againstReference, argmaxRow } from './shared.js';

const args = process.argv.slice(2);
const option = (name: string): string | undefined => args.find((x) => x.startsWith(`--${name}=`))?.slice(name.length + 3);
const images = Number(option('images') ?? 10000), webImages = Number(option('web-images') ?? 1000), speedImages = Number(option('speed-images') ?? 1000), threads = Number(option('threads') ?? 2);
const MODELS = (option('models') ?? 'vit_tiny_c10,swin_micro_c10,deit').split(',');
const shared = path.resolve('..', 'shared');
const header = machine();
const started = Date.now();
const dir = path.join('out', 'int4');
fs.mkdirSync(dir, { recursive: true });

interface ModelSource { weights: string; config: string; data: string; labelled: boolean; group: string; extra: string[] }
const SOURCES: Record<string, ModelSource> = {
  vit_tiny_c10: { weights: path.join(shared, 'models', 'vit_tiny_c10.safetensors'), config: path.join(shared, 'models', 'vit_tiny_c10.json'), data: path.join(shared, 'data', 'cifar10', 'test.json'), labelled: true, group: 'group32', extra: [] },
  // Swin's first stage is 48 wide: group16 is the only group size that divides every layer.
  swin_micro_c10: { weights: path.join(shared, 'models', 'swin_micro_c10.safetensors'), config: path.join(shared, 'models', 'swin_micro_c10.json'), data: path.join(shared, 'data', 'cifar10', 'test.json'), labelled: true, group: 'group16', extra: [] },
  deit: { weights: path.join(shared, 'fixtures', 'deit_distilled_p16_224_fixture.safetensors'), config: path.join(shared, 'fixtures', 'deit_distilled_p16_224_fixture.json'), data: path.join(shared, 'data', 'cifar10', 'jpeg_sample'), labelled: false, group: 'group16', extra: ['--loss', 'pseudo'] },
};

/** A ptq4vit file of `model` made with these quantize flags, once, under the name `key` (int4_results' names). */
function ptq4vitFile(model: string, key: string, flags: string[]): string {
  const src = SOURCES[model];
  const file = path.join(dir, `${model}.ptq4vit-${key}.safetensors`);
  if (fs.existsSync(file)) return file;
  console.log(`calibrating ${model} ${key} …`);
  const run = spawnSync(process.execPath, ['bin/ptq4vit.js', 'quantize', '--model', src.weights, '--config', src.config, '--calib', path.join(shared, 'data', 'cifar10', 'calib32.json'), ...src.extra, ...flags, '--out', file], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (run.status !== 0) throw new Error(`quantize failed for ${model} ${key}`);
  return file;
}

const require = createRequire(import.meta.url);
const ortWeb = require('onnxruntime-web') as typeof import('onnxruntime-web');
ortWeb.env.wasm.numThreads = 1;

type Session = { run: (feeds: Record<string, unknown>) => Promise<Record<string, { data: unknown }>> };
const sections: string[] = [];

for (const MODEL of MODELS) {
  const src = SOURCES[MODEL];
  if (!src) throw new Error(`unknown model ${MODEL} (one of ${Object.keys(SOURCES).join(', ')})`);
  const fp32 = openModel({ weights: src.weights, config: src.config });
  const spec = fp32.model.spec;
  const S = spec.preprocess.inputSize, per = 3 * S * S, classes = spec.arch.numClasses;
  const test = await openDataset(src.data, { allowUnlabeled: true });
  const count = Math.min(images, test.size);
  const data = await loadBatch(test, Array.from({ length: count }, (_, i) => i), spec.preprocess);

  const logitsOf = async (session: Session, Tensor: new (t: 'float32', d: Float32Array, dims: number[]) => unknown, n: number): Promise<{ logits: Float32Array; seconds: number }> => {
    const out = new Float32Array(n * classes);
    const t0 = performance.now();
    for (let s = 0; s < n; s += 100) {
      const k = Math.min(100, n - s);
      const r = await session.run({ pixel_values: new Tensor('float32', data.images.data.slice(s * per, (s + k) * per), [k, 3, S, S]) });
      out.set(r.logits.data as Float32Array, s * classes);
    }
    return { logits: out, seconds: (performance.now() - t0) / 1000 };
  };
  const argmax = (l: Float32Array, r: number) => argmaxRow(l, r, classes);
  // Exported once per file: the per-channel --pin graph serves the size budget and its own row.
  const graphs = new Map<string, Promise<Uint8Array>>();
  const graphOf = (file: string): Promise<Uint8Array> => {
    if (!graphs.has(file)) {
      const loaded = openModel({ weights: file });
      graphs.set(file, exportOnnx(loaded.model, exportOptionsFor(loaded)));
    }
    return graphs.get(file)!;
  };

  const fp32Bytes = await exportOnnx(fp32.model, {});
  const q4Bytes = await exportOnnx(fp32.model, { products: q4RecipeProducts({ blockSize: 32, accuracyLevel: 0 }) });
  // --size-mb counts the quantized weights' deployed bytes (mixed.ts deployedWeightBytes); the rest of the file
  // (biases, norms, tables, the integer graph's nodes) is measured on the per-channel --pin file: the budget is
  // the q4 file's bytes less that rest, less 2 kB for the mixed graph's extra nodes (its 8-bit qkv runs as three
  // products).
  const sizeMbAtQ4 = async (): Promise<number> => {
    const file = ptq4vitFile(MODEL, 'w4a8-channel-pin', ['--w-bits', '4', '--a-bits', '8', '--weight-scales', 'channel', '--pin']);
    const loaded = openModel({ weights: file });
    const onnx = await graphOf(file);
    let weightBytes = 0;
    for (const q of loaded.quantized!.points) {
      if (q.kind === 'matmul') continue;
      const t = fp32.weights.tensor(`${q.point}.weight`);
      weightBytes += deployedWeightBytes({ size: t.size, rows: t.shape[0] }, q.weightBits);
    }
    return Math.floor((q4Bytes.length - (onnx.length - weightBytes) - 2000) / 1000) / 1000;
  };
  const sizeMb = await sizeMbAtQ4();
  const pin = ['--pin'];
  const variants: { name: string; bytes: () => Promise<Uint8Array> }[] = [
    { name: 'FP32', bytes: async () => fp32Bytes },
    { name: 'q8 recipe (dynamic u8 activations, u8 per-channel weights, reduced range)', bytes: () => exportOnnx(fp32.model, { products: q8DynamicProducts() }) },
    { name: 'q4 recipe (RTN, symmetric, block 32, MatMulNBits, float activations)', bytes: async () => q4Bytes },
    { name: 'ptq4vit W8A8 (per tensor)', bytes: () => graphOf(ptq4vitFile(MODEL, 'w8a8-tensor', ['--w-bits', '8', '--a-bits', '8'])) },
    { name: 'ptq4vit W4A8, per channel, --pin', bytes: () => graphOf(ptq4vitFile(MODEL, 'w4a8-channel-pin', ['--w-bits', '4', '--a-bits', '8', '--weight-scales', 'channel', ...pin])) },
    { name: `ptq4vit W4A8, ${src.group} (row Δ × 4-bit multiplier), --pin`, bytes: () => graphOf(ptq4vitFile(MODEL, `w4a8-${src.group}-pin`, ['--w-bits', '4', '--a-bits', '8', '--weight-scales', src.group, ...pin])) },
    { name: `ptq4vit mixed precision, --size-mb ${sizeMb} (A8, per channel)`, bytes: () => graphOf(ptq4vitFile(MODEL, `mixed-${sizeMb}mb-a8-channel`, ['--size-mb', String(sizeMb), '--a-bits', '8', '--weight-scales', 'channel'])) },
  ];

  const rows: string[] = [];
  let reference: Float32Array | null = null;
  for (const v of variants) {
    let bytes: Uint8Array;
    try {
      bytes = await v.bytes();
    } catch (e) {
      rows.push(`| ${v.name} | ${(e as Error).message.split('\n')[0]} | | | | | | |`);
      continue;
    }
    const node = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads, interOpNumThreads: 1 });
    const { logits } = await logitsOf(node as never, ort.Tensor as never, count);
    const speed = await logitsOf(node as never, ort.Tensor as never, Math.min(speedImages, count));
    await node.release();
    reference ??= logits;
    let correct = 0;
    for (let i = 0; i < count; i++) if (src.labelled && argmax(logits, i) === data.labels![i]) correct++;
    const { agree, kl } = againstReference(reference, logits, count, classes);
    let webSame = '—', webRate = '—';
    const nWeb = Math.min(webImages, count);
    try {
      const web = await ortWeb.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
      const w = await logitsOf(web as never, ortWeb.Tensor as never, nWeb);
      await web.release();
      let same = 0;
      for (let i = 0; i < nWeb; i++) if (argmax(w.logits, i) === argmax(logits, i)) same++;
      webSame = `${same}/${nWeb}`;
      webRate = (nWeb / w.seconds).toFixed(0);
    } catch (e) {
      webSame = `fails: ${(e as Error).message.split('\n')[0].slice(0, 80)}`;
    }
    const top1 = src.labelled ? (100 * correct / count).toFixed(2) : '—';
    const row = `| ${v.name} | ${top1} | ${(100 * agree).toFixed(2)}% | ${kl.toExponential(2)} | ${(bytes.length / 1e6).toFixed(3)} | ${(Math.min(speedImages, count) / speed.seconds).toFixed(0)} | ${webRate} | ${webSame} |`;
    rows.push(row);
    console.log(`${MODEL} ${row}`);
  }
  sections.push(
    `**${MODEL}** — ${src.labelled ? `${count === test.size ? 'the full CIFAR-10 test set' : `the first ${count} test images`} (${count} images)` : `the ${count} JPEGs of jpeg_sample (random-weight DeiT-distilled test fixture, 224², 16 classes: no top-1, agreement and KL only; calibrated with --loss pseudo)`}; mixed precision at --size-mb ${sizeMb} (the q4 file's bytes less the rest of the per-channel --pin file).`,
    '',
    '| model | top-1 | top-1 agreement with FP32 | KL(FP32 ‖ model) | ONNX MB | img/s (node) | img/s (web) | web = node top-1 |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
  );
}

const body = [
  `onnxruntime-node 1.30 CPU with ${threads} threads (batch 100, img/s over the first ${speedImages} images after the accuracy pass; a`,
  'shared machine: compare within a column and model only); onnxruntime-web 1.30 wasm, 1 thread, img/s and top-1 against node on',
  `the first ${webImages} images. Agreement and KL are against the FP32 graph's predictions and softmax. The q8 and q4 rows are the recipes`,
  "of transformers.js's conversion script rebuilt by this project (src/export/nbits.ts), not files made by that script; q8",
  'keeps the attention products in float, as dynamic quantization of activation × activation products is not part of it here.',
  'ptq4vit rows: PTQ4ViT on calib32 (default search); --pin keeps the patch embedding and the classifier at 8 bits (mixed precision',
  'pins them by default); group-wise: one Δ per output row times a 4-bit integer multiplier per group, run as int8 codes.',
  '',
  ...sections,
  `Command: \`npx tsc -p . && node dist/scripts/fair_compare.js${args.length ? ' ' + args.join(' ') : ''}\`; ${header}; ${((Date.now() - started) / 60000).toFixed(0)} min.`,
];
replaceSection('RESULTS.md', 'A fair comparison: transformers.js-style q8/q4 recipes vs ptq4vit (issue 22)', body.join('\n'), '# Results');
