/**
 * Weight-scale granularity at low widths (issue 22): vit_tiny_c10 and swin_micro_c10 quantized by PTQ4ViT with
 * per-tensor weight scales (one Δ per tensor, q/k/v apart: the default), per-output-channel scales
 * (`--weight-scales channel`) and, for 4-bit weights, group-wise scales (`--weight-scales groupG`: one Δ per output
 * row and group of G input channels, deployed as MatMulNBits), each searched with the Hessian-guided metric on
 * calib32; beside them the transformers.js-style `q4` recipe (RTN, symmetric, blocks of 32, MatMulNBits, float
 * activations; src/export/nbits.ts) built from the same FP32 model. For each: top-1 of the exported ONNX graph
 * (what ships), top-1 agreement and mean KL(FP32 ‖ model) of the softmax against the FP32 graph, how many top-1
 * predictions the op-by-op simulation shares with the graph, how many onnxruntime-web (wasm) shares with
 * onnxruntime-node, the quantized file's and the ONNX file's size. Written into RESULTS.md.
 *
 *   npx tsc -p . && node dist/scripts/int4_results.js [--full=vit_tiny_c10] [--models=vit_tiny_c10,swin_micro_c10] [--web-images=200] [--no-w6] [--only=w6a6-tensor,…]
 *
 * Top-1, agreement and KL on test1k, or on the full CIFAR-10 test set for the models --full names; simulation =
 * graph on test1k. Quantized
 * files are made once with `ptq4vit quantize` under out/int4/ and reused; a configuration `quantize` refuses (a
 * group size that does not divide a layer's input width) is a row saying so.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { openDataset, loadBatch } from '../src/data/datasets.js';
import { evaluate, type EvalResult } from '../src/eval/evaluate.js';
import { exportOptionsFor } from '../src/export/graph.js';
import { q4RecipeProducts } from '../src/export/nbits.js';
import { exportOnnx } from '../src/export/onnx.js';
import { OnnxModel } from '../src/export/runtime.js';
import { openModel } from '../src/open.js';
import { machine, replaceSection } from './markdown.js';
import { againstReference as against, argmaxRow as argmax } from './shared.js';

const args = process.argv.slice(2);
const option = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const MODELS = (option('models') ?? 'vit_tiny_c10,swin_micro_c10').split(',');
const FULL = new Set((option('full') ?? '').split(',').filter(Boolean));
const webImages = Number(option('web-images') ?? 200);
const shared = path.resolve('..', 'shared');
const agreementData = path.join(shared, 'data', 'cifar10', 'test1k.json');
const dir = path.join('out', 'int4');
fs.mkdirSync(dir, { recursive: true });

type Scales = 'tensor' | 'channel' | 'group16' | 'group32' | 'group64' | 'group128';
interface Config {
  w: number;
  a: number;
  scales: Scales;
  /** --pin: the patch embedding and the classifier at 8 bits. */
  pin?: boolean;
}
const keyOf = (c: Config) => `w${c.w}a${c.a}-${c.scales}${c.pin ? '-pin' : ''}`;
const CONFIGS: Config[] = [
  { w: 4, a: 8, scales: 'tensor' },
  { w: 4, a: 8, scales: 'channel' },
  { w: 4, a: 8, scales: 'group128' },
  { w: 4, a: 8, scales: 'group64' },
  { w: 4, a: 8, scales: 'group32' },
  { w: 4, a: 8, scales: 'group16' },
  { w: 4, a: 8, scales: 'channel', pin: true },
  { w: 4, a: 8, scales: 'group64', pin: true },
  { w: 4, a: 8, scales: 'group32', pin: true },
  { w: 4, a: 8, scales: 'group16', pin: true },
  // Group-wise scales are for ≤ 4-bit weights: W6A6 compares per tensor and per channel only.
  ...(args.includes('--no-w6') ? [] : [{ w: 6, a: 6, scales: 'tensor' as const }, { w: 6, a: 6, scales: 'channel' as const }]),
];
/** --only=w6a6-tensor,…: measure only these rows (and FP32, the reference), keeping the others measured before. */
const ONLY = option('only')?.split(',');
const RUN = ONLY ? CONFIGS.filter((c) => ONLY.includes(keyOf(c))) : CONFIGS;

/** The quantized file of a configuration, or the one-line refusal of `ptq4vit quantize`. */
function quantizedFile(model: string, c: Config): { file: string } | { refused: string } {
  const file = path.join(dir, `${model}.ptq4vit-${keyOf(c)}.safetensors`);
  if (fs.existsSync(file)) return { file };
  console.log(`calibrating ${model} W${c.w}A${c.a} ${c.scales} …`);
  const run = spawnSync(process.execPath, ['bin/ptq4vit.js', 'quantize', '--model', path.join(shared, 'models', `${model}.safetensors`), '--config', path.join(shared, 'models', `${model}.json`),
    '--calib', path.join(shared, 'data', 'cifar10', 'calib32.json'), '--w-bits', String(c.w), '--a-bits', String(c.a), '--weight-scales', c.scales, ...(c.pin ? ['--pin'] : []), '--out', file], { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
  if (run.status === 2) return { refused: run.stderr.trim().split('\n').pop()!.replace(/^ptq4vit: error: /, '') };
  if (run.status !== 0) throw new Error(`quantize failed for ${model} W${c.w}A${c.a} ${c.scales}: ${run.stderr}`);
  return { file };
}

const require = createRequire(import.meta.url);
const ortWeb = require('onnxruntime-web') as typeof import('onnxruntime-web');
ortWeb.env.wasm.numThreads = 1;

const mb = (bytes: number) => (bytes / 1e6).toFixed(3);
const pct = (x: number) => (x * 100).toFixed(2);
const header = machine();
const started = Date.now();
const testSet = await openDataset(path.join(shared, 'data', 'cifar10', 'test.json'));
const agreement = await openDataset(agreementData);
/**
 * Rows measured so far, by model and row key, kept in out/int4/results-rows.json so runs of one model (or of some
 * configurations) add to the table instead of replacing it.
 */
const rowsFile = path.join(dir, 'results-rows.json');
const stored: Record<string, { testSet: string; rows: Record<string, string> }> = fs.existsSync(rowsFile) ? JSON.parse(fs.readFileSync(rowsFile, 'utf8')) : {};
const ROW_ORDER = ['fp32', 'q4', ...CONFIGS.map(keyOf)];
function addRow(model: string, key: string, row: string): void {
  console.log(row);
  stored[model].rows[key] = row;
  fs.writeFileSync(rowsFile, JSON.stringify(stored, null, 1));
  writeSection();
}

function writeSection(): void {
  const body = [
    `PTQ4ViT (Hessian-guided search, twin softmax/GELU, calib32, default search: α 0.01, β 1.2, n 100, 3 rounds) on`,
    `${Object.keys(stored).join(' and ')}. Top-1, top-1 agreement and mean KL(FP32 ‖ model) of the softmax on ${Object.entries(stored).map(([m, v]) => `${m}: ${v.testSet}`).join('; ')},`,
    'all of the exported ONNX graph in onnxruntime-node (what `ptq4vit eval` runs and `ptq4vit export` writes), against the FP32',
    'graph. Weight scales: per tensor — one Δ per tensor (q, k, v apart); per channel — one Δ per output channel; groupG —',
    'one Δ per output channel times an integer multiplier m ∈ [1, 16] per group of G input channels (≤ 4-bit weights only:',
    'W6A6 compares per tensor and per channel only), one factor per row searched on the rows\' Hessian score, the multipliers',
    'the smallest lattice step at or above each group\'s Δ_maxabs; m·code is an int8 code, so group-wise layers run the same',
    'u8 × s8 integer products as per-channel ones (4-bit codes packed in the file and the graph, the multipliers packed to 4',
    'bits in the graph and multiplied into int8 codes when the session loads). The patch conv is per channel in every row;',
    '--pin keeps it and the classifier at 8 bits',
    '(weights and the classifier\'s input). q4 recipe:',
    "transformers.js's conversion recipe (RTN, symmetric, blocks of 32, MatMulNBits, float activations) rebuilt by this project",
    'from the same FP32 model (linear layers whose input width is not a multiple of 32 stay float, as its quantizer leaves',
    "them). Simulation = graph: top-1 predictions on test1k the op-by-op simulation shares with the graph. Web = node: the first",
    `${webImages} test1k images, onnxruntime-web 1.30 (wasm, 1 thread) vs onnxruntime-node. Sizes in MB of 10^6 bytes (4-bit codes`,
    'packed two a byte; group multipliers are JSON integers in the .safetensors metadata). A group size that',
    'does not divide every linear layer\'s input width is refused by `quantize` (the row says where).',
    '',
    '| model | weights/acts | weight scales | top-1 | agreement with FP32 | KL(FP32 ‖ model) | simulation = graph (test1k) | web = node | .safetensors MB | ONNX MB |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...Object.values(stored).flatMap((v) => [...new Set(ROW_ORDER)].filter((k) => v.rows[k]).map((k) => v.rows[k])),
    '',
    `Command: \`npx tsc -p . && nice -n 10 node dist/scripts/int4_results.js${args.length ? ' ' + args.join(' ') : ''}\`; ${header}; ${((Date.now() - started) / 60000).toFixed(0)} min so far.`,
  ];
  replaceSection('RESULTS.md', 'Weight scales per tensor vs per channel, packed 4-bit weights (issue 22)', body.join('\n'), '# Results');
}

/** Node vs web top-1 on the first `webImages` images of test1k. */
async function webSame(bytes: Uint8Array, spec: { preprocess: Parameters<typeof loadBatch>[2]; arch: { numClasses: number } }, nodeLogits: Float32Array): Promise<string> {
  const n = Math.min(webImages, agreement.size);
  if (n === 0) return '—';
  const batch = await loadBatch(agreement, Array.from({ length: n }, (_, i) => i), spec.preprocess);
  const classes = spec.arch.numClasses;
  const per = batch.images.size / n;
  try {
    const web = await ortWeb.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
    let same = 0;
    for (let s = 0; s < n; s += 50) {
      const k = Math.min(50, n - s);
      const out = await web.run({ pixel_values: new ortWeb.Tensor('float32', batch.images.data.slice(s * per, (s + k) * per), [k, ...batch.images.shape.slice(1)]) });
      const logits = out.logits.data as Float32Array;
      for (let i = 0; i < k; i++) if (argmax(logits, i, classes) === argmax(nodeLogits, s + i, classes)) same++;
    }
    await web.release();
    return `${same}/${n}`;
  } catch (e) {
    return `fails: ${(e as Error).message.split('\n')[0].slice(0, 60)}`;
  }
}

for (const MODEL of MODELS) {
  const quick = !FULL.has(MODEL);
  const dataset = quick ? agreement : testSet;
  stored[MODEL] = { testSet: quick ? 'test1k (1000 images)' : 'the full CIFAR-10 test set (10000 images)', rows: stored[MODEL]?.testSet === (quick ? 'test1k (1000 images)' : 'the full CIFAR-10 test set (10000 images)') ? stored[MODEL].rows : {} };
  const fp32 = openModel({ weights: path.join(shared, 'models', `${MODEL}.safetensors`), config: path.join(shared, 'models', `${MODEL}.json`) });
  const classes = fp32.model.spec.arch.numClasses;
  const fp32Onnx = await exportOnnx(fp32.model, exportOptionsFor(fp32));
  const graphOf = (bytes: Uint8Array, what: string) => OnnxModel.create(bytes, fp32.model.spec, what);
  const fp32Result = await evaluate(await graphOf(fp32Onnx, MODEL), dataset, { batchSize: 100, keepLogits: true });
  const fp32Sub = await evaluate(await graphOf(fp32Onnx, MODEL), agreement, { batchSize: 100, keepLogits: true });
  const reference = fp32Result.logits!;
  const ratio = (bytes: number) => `${mb(bytes)} (${(bytes / fp32Onnx.length).toFixed(3)}×)`;
  addRow(MODEL, 'fp32', `| ${MODEL} | FP32 | — | ${pct(fp32Result.top1)} | 100% | 0 | — | ${await webSame(fp32Onnx, fp32.model.spec, fp32Sub.logits!)} | ${mb(fs.statSync(path.join(shared, 'models', `${MODEL}.safetensors`)).size)} | ${ratio(fp32Onnx.length)} |`);

  /** A deployed graph's row: accuracy and distance to FP32 on the test set, web = node on test1k. */
  const graphRow = async (bytes: Uint8Array, what: string): Promise<{ result: EvalResult; sub: EvalResult; cells: string }> => {
    const graph = await graphOf(bytes, what);
    const result = await evaluate(graph, dataset, { batchSize: 100, keepLogits: true });
    const sub = quick ? result : await evaluate(graph, agreement, { batchSize: 100, keepLogits: true });
    const { agree, kl } = against(reference, result.logits!, result.images, classes);
    return { result, sub, cells: `${pct(result.top1)} | ${(agree * 100).toFixed(2)}% | ${kl.toExponential(2)}` };
  };

  const q4 = await exportOnnx(fp32.model, { products: q4RecipeProducts({ blockSize: 32, accuracyLevel: 0 }) });
  const q4Row = ONLY ? null : await graphRow(q4, `${MODEL} q4 recipe`);
  if (q4Row) addRow(MODEL, 'q4', `| ${MODEL} | q4 recipe: W4 (block 32), float activations | RTN per block of 32 | ${q4Row.cells} | — | ${await webSame(q4, fp32.model.spec, q4Row.sub.logits!)} | — | ${ratio(q4.length)} |`);

  for (const c of RUN) {
    const key = keyOf(c);
    const made = quantizedFile(MODEL, c);
    const label = `${c.scales === 'tensor' || c.scales === 'channel' ? `per ${c.scales}` : c.scales}${c.pin ? ', --pin' : ''}`;
    if ('refused' in made) {
      addRow(MODEL, key, `| ${MODEL} | W${c.w}A${c.a} | ${label} | refused by quantize: ${made.refused.replace(/\|/g, '\\|')} | | | | | | |`);
      continue;
    }
    const loaded = openModel({ weights: made.file });
    const onnx = await exportOnnx(loaded.model, exportOptionsFor(loaded));
    const row = await graphRow(onnx, made.file);
    const sim = await evaluate(loaded.model, agreement, { runner: loaded.runner, batchSize: 100, keepLogits: true });
    let same = 0;
    for (let i = 0; i < sim.images; i++) if (argmax(sim.logits!, i, classes) === argmax(row.sub.logits!, i, classes)) same++;
    addRow(MODEL, key, `| ${MODEL} | W${c.w}A${c.a} | ${label} | ${row.cells} | ${same}/${sim.images} | ${await webSame(onnx, loaded.model.spec, row.sub.logits!)} | ${mb(fs.statSync(made.file).size)} | ${ratio(onnx.length)} |`);
  }
}
