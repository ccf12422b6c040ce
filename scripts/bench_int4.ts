/**
 * 4-bit weights on real kernels (issue 22): which graph should ship ptq4vit's 4-bit weights? vit_tiny_c10,
 * one PTQ4ViT calibration (per-channel weight scales, 8 calib32 images, a short search: the Δs only need to be
 * plausible for speed) at W4A8 and W8A8, exported as:
 *
 *   - FP32 graph                                   exportOnnx(model, {})
 *   - W8A8 integer graph                           int8 weight codes, u8 × s8 MatMulIntegerToFloat (today's graph)
 *   - W4A8 integer graph, packed (shipped)         4-bit codes packed in uint8, unpacked to int8 once at load
 *                                                  (constant folding), then the same u8 × s8 kernels (packed.ts)
 *   - W4A8 MatMulNBits, accuracy_level 4           the same 4-bit codes and Δs, activations quantized to int8
 *                                                  per block by onnxruntime on the fly (nbits.ts)
 *   - W4A8 MatMulNBits, accuracy_level 0           the same, multiplied in float
 *   - q4 recipe (RTN, block 32), level 0 / 4       transformers.js-style q4 of the FP32 model (nbits.ts)
 *   - W4A8 group32 (shipped)                       group-wise scales (--weight-scales group32): 4-bit codes times
 *                                                  their group's multiplier, unpacked to int8 at load, the same
 *                                                  u8 × s8 kernels as per-channel weights (packed.ts)
 *   - W4A8 group32, MatMulNBits level 0 / 4        the same codes with Δ·m per block in MatMulNBits (nbits.ts)
 *
 * img/s under onnxruntime-node (one session each, --threads intra-op threads, ORT defaults, a warm-up batch, the
 * median of --repeat timed passes over --images test1k images, batch --batch, the graphs' passes interleaved), ratios against the W8A8 graph
 * measured in the same run; ONNX size; top-1 on those images and top-1 agreement with the shipped W4A8 graph.
 *
 *   npx tsc -p . && node dist/scripts/bench_int4.js [--threads=2] [--batch=64] [--images=1000] [--repeat=3] [--write]
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { loadBatch, openDataset } from '../src/data/datasets.js';
import { nbitsProducts, q4RecipeProducts } from '../src/export/nbits.js';
import { integerProducts } from '../src/export/products.js';
import { exportOnnx } from '../src/export/onnx.js';
import { openModel } from '../src/open.js';
import { weightCodes } from '../src/quant/file.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { calibrate } from '../src/quant/calibrate.js';
import { methodConfig } from '../src/quant/methods.js';
import { machine, replaceSection } from './markdown.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? Number(a.slice(name.length + 3)) : fallback;
};
const threads = option('threads', 2), batch = option('batch', 64), images = option('images', 1000), repeat = option('repeat', 3);
const shared = path.resolve('..', 'shared');
const header = machine();
const uptime = execFileSync('uptime', { encoding: 'utf8' }).trim();

const { model, weights } = openModel({ weights: path.join(shared, 'models', 'vit_tiny_c10.safetensors'), config: path.join(shared, 'models', 'vit_tiny_c10.json') });
void weights;
const calib = await openDataset(path.join(shared, 'data', 'cifar10', 'calib32.json'));
const { images: calibImages, labels } = await loadCalibration(calib, 8, 0, model.spec.preprocess);
const search = (w: number) => calibrate(model, calibImages, labels, { ...methodConfig('ptq4vit', { weightBits: w, activationBits: 8, n: 20, rounds: 1 }), weightScales: 'channel' });
const [w4, w8] = [await search(4), await search(8)];
const w4g32 = await calibrate(model, calibImages, labels, { ...methodConfig('ptq4vit', { weightBits: 4, activationBits: 8, n: 20, rounds: 1 }), weightScales: 'group32' });
const codes = (q: Parameters<typeof weightCodes>[1], w: Parameters<typeof weightCodes>[0]) => weightCodes(w, q) as Int8Array;

const variants: { name: string; bytes: Uint8Array }[] = [
  { name: 'FP32 graph', bytes: await exportOnnx(model, {}) },
  { name: 'W8A8 integer graph (int8 weights)', bytes: await exportOnnx(model, { quant: w8 }) },
  { name: 'W4A8 integer graph, 4-bit packed → int8 at load (shipped)', bytes: await exportOnnx(model, { quant: w4 }) },
  { name: 'W4A8 MatMulNBits, accuracy_level 4 (dynamic int8 activations)', bytes: await exportOnnx(model, { quant: w4, products: nbitsProducts(w4, codes, { blockSize: 32, accuracyLevel: 4 }) }) },
  { name: 'W4A8 MatMulNBits, accuracy_level 0 (float)', bytes: await exportOnnx(model, { quant: w4, products: nbitsProducts(w4, codes, { blockSize: 32, accuracyLevel: 0 }) }) },
  { name: 'q4 recipe (RTN, block 32), accuracy_level 0', bytes: await exportOnnx(model, { products: q4RecipeProducts({ blockSize: 32, accuracyLevel: 0 }) }) },
  { name: 'q4 recipe (RTN, block 32), accuracy_level 4', bytes: await exportOnnx(model, { products: q4RecipeProducts({ blockSize: 32, accuracyLevel: 4 }) }) },
  { name: 'W4A8 group32 integer graph, 4-bit codes × group multipliers → int8 at load (shipped)', bytes: await exportOnnx(model, { quant: w4g32 }) },
  { name: 'W4A8 group32, MatMulNBits accuracy_level 0 (float)', bytes: await exportOnnx(model, { quant: w4g32, products: nbitsProducts(w4g32, codes, { blockSize: 32, accuracyLevel: 0 }) }) },
  { name: 'W4A8 group32, MatMulNBits accuracy_level 4 (dynamic int8 activations)', bytes: await exportOnnx(model, { quant: w4g32, products: nbitsProducts(w4g32, codes, { blockSize: 32, accuracyLevel: 4 }) }) },
];

const test = await openDataset(path.join(shared, 'data', 'cifar10', 'test1k.json'));
const indices = Array.from({ length: Math.min(images, test.size) }, (_, i) => i);
const data = await loadBatch(test, indices, model.spec.preprocess);
const S = model.spec.preprocess.inputSize, per = 3 * S * S, classes = model.spec.arch.numClasses;

interface Row { name: string; mb: number; rate: number; passes: number[]; top1: number; preds: Int32Array }
// All sessions open at once and the timed passes interleaved (pass r of every graph, then pass r + 1), so a change
// of the shared machine's load hits every graph alike.
const sessions = await Promise.all(variants.map((v) => ort.InferenceSession.create(v.bytes, { intraOpNumThreads: threads, interOpNumThreads: 1 })));
const rows: Row[] = variants.map((v) => ({ name: v.name, mb: v.bytes.length / 1e6, rate: 0, passes: [], top1: 0, preds: new Int32Array(indices.length) }));
const pass = async (k: number, record: boolean) => {
  const count = record ? indices.length : Math.min(batch, indices.length);
  for (let s = 0; s < count; s += batch) {
    const n = Math.min(batch, count - s);
    const x = new ort.Tensor('float32', data.images.data.subarray(s * per, (s + n) * per), [n, 3, S, S]);
    const logits = (await sessions[k].run({ pixel_values: x })).logits.data as Float32Array;
    if (!record) continue;
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let c = 1; c < classes; c++) if (logits[i * classes + c] > logits[i * classes + best]) best = c;
      rows[k].preds[s + i] = best;
    }
  }
};
for (let k = 0; k < sessions.length; k++) await pass(k, false); // warm-up
for (let r = 0; r < repeat; r++) {
  for (let k = 0; k < sessions.length; k++) {
    const t0 = performance.now();
    await pass(k, true);
    rows[k].passes.push(indices.length / ((performance.now() - t0) / 1000));
  }
}
for (const s of sessions) await s.release();
for (const row of rows) {
  let correct = 0;
  for (let i = 0; i < indices.length; i++) if (row.preds[i] === data.labels[i]) correct++;
  row.top1 = correct / indices.length;
  const sorted = [...row.passes].sort((a, b) => a - b);
  row.rate = sorted[Math.floor(sorted.length / 2)];
  console.log(`${row.name}: ${row.rate.toFixed(0)} img/s, ${row.mb.toFixed(3)} MB, top-1 ${(100 * row.top1).toFixed(2)}`);
}

const base = rows[1], shipped = rows[2];
const agree = (r: Row) => r.preds.reduce((n, p, i) => n + (p === shipped.preds[i] ? 1 : 0), 0);
const body = [
  `vit_tiny_c10 (CIFAR-10, 32×32), ${indices.length} test1k images, batch ${batch}, onnxruntime-node 1.30 CPU, ${threads} intra-op threads,`,
  `median of ${repeat} passes, interleaved across the graphs (all passes listed). Ratios against the W8A8 integer graph of the same run. Same calibration`,
  'for every per-channel W4A8 row and one for the group32 rows (PTQ4ViT, 8 calib32 images, a short search: speed is the',
  'point here; accuracy at the full search is in RESULTS.md). The group-wise integer graph runs int8 codes (4-bit code ×',
  'the group\'s multiplier, made when the session loads) on the same kernels as the per-channel one.',
  '',
  '| graph | ONNX MB | img/s | × W8A8 | top-1 | same top-1 as shipped W4A8 | passes (img/s) |',
  '|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.name} | ${r.mb.toFixed(3)} | ${r.rate.toFixed(0)} | ${(r.rate / base.rate).toFixed(2)} | ${(100 * r.top1).toFixed(2)} | ${agree(r)}/${indices.length} | ${r.passes.map((p) => p.toFixed(0)).join(', ')} |`),
  '',
  `Command: \`npx tsc -p . && node dist/scripts/bench_int4.js --threads=${threads} --batch=${batch} --images=${images} --repeat=${repeat} --write\`; ${header}; \`uptime\`: ${uptime}.`,
];
console.log(body.join('\n'));
if (args.includes('--write')) replaceSection('BENCHMARKS.md', '4-bit weights: packed → int8 at load vs MatMulNBits (issue 22)', body.join('\n'));
