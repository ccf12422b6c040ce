/**
 * Which loss should weight the Hessian-guided metric of a model without classifier? The bundled ViT
 * (../shared/models/vit_tiny_c10) viewed as a backbone (num_classes 0: its head dropped, the output is the
 * normed cls token), calibrated on calib32 without labels at W8A8, W6A6 and W4A8 with each embedding loss
 * of src/grad/loss.ts, each quantized model run as its integer ONNX graph. Measured on CIFAR-10 test1k:
 * the per-image cosine of the quantized embedding to FP32 (mean, 1st percentile) and k-NN top-1
 * (k = 20, cosine, DINO's weighted vote; neighbours = calib_pool's 2048 training images embedded by the
 * same model). Beside them, a transformers.js-style q8 of the same backbone (scripts/q8_dynamic.ts: dynamic
 * uint8 activations, per-channel reduced-range uint8 weights, MatMulInteger), run one image per call as
 * its pipeline does. Writes the "Backbones: loss for the Hessian metric" section of RESULTS.md.
 *
 *   npx tsc -p . && node dist/scripts/backbone_losses.js
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDataset } from '../src/data/datasets.js';
import { cosineFidelity, embedDataset, knnTop1, type Embeddings } from '../src/eval/embedding.js';
import { exportOnnx } from '../src/export/onnx.js';
import { OnnxModel } from '../src/export/runtime.js';
import type { EmbeddingLoss } from '../src/grad/loss.js';
import { EMBEDDING_LOSSES } from '../src/grad/loss.js';
import { calibrateMany } from '../src/quant/calibrate.js';
import { methodConfig } from '../src/quant/methods.js';
import { openModel } from '../src/open.js';
import { writeBackboneView } from './backbone_view.js';
import { gitRevision, machine, replaceSection } from './markdown.js';
import { exportDynamicQ8 } from './q8_dynamic.js';
import { sharedCalib32, sharedDir } from './shared.js';

const BITS: [number, number][] = [[8, 8], [6, 6], [4, 8]];
const started = performance.now();
const machineLine = machine();
const revision = gitRevision(); // the code that runs, not HEAD when the table is written
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-backbone-'));
try {
  const models = path.join(sharedDir, 'models');
  const file = writeBackboneView(path.join(models, 'vit_tiny_c10.safetensors'), path.join(models, 'vit_tiny_c10.json'), tmp, 'vit_tiny_c10_backbone');
  const { model } = openModel({ weights: file });
  const cifar = path.join(sharedDir, 'data', 'cifar10');
  const pool = await openDataset(path.join(cifar, 'calib_pool.json'));
  const test = await openDataset(path.join(cifar, 'test1k.json'));
  const { images } = await sharedCalib32(model.spec.preprocess);

  const embedBoth = async (graph: OnnxModel, batchSize: number): Promise<{ train: Embeddings; test: Embeddings }> => ({
    train: await embedDataset(graph, pool, { batchSize }),
    test: await embedDataset(graph, test, { batchSize }),
  });
  const fp32 = await embedBoth(await OnnxModel.create(await exportOnnx(model), model.spec, 'FP32 graph'), 64);
  const fp32Knn = knnTop1(fp32.train, fp32.test);
  console.log(`FP32 k-NN top-1 ${(fp32Knn * 100).toFixed(2)}%`);

  interface Row { what: string; bits: string; cosMean: number; cosP1: number; knn: number; seconds?: number }
  const rows: Row[] = [];
  const measure = async (what: string, bits: string, graph: OnnxModel, batchSize: number, seconds?: number) => {
    const e = await embedBoth(graph, batchSize);
    const cos = cosineFidelity(e.test, fp32.test);
    const row = { what, bits, cosMean: cos.mean, cosP1: cos.p1, knn: knnTop1(e.train, e.test), seconds };
    rows.push(row);
    console.log(`${what} ${bits}: cos mean ${row.cosMean.toFixed(5)} p1 ${row.cosP1.toFixed(5)} k-NN ${(row.knn * 100).toFixed(2)}%${seconds ? ` (calibration ${seconds.toFixed(0)} s)` : ''}`);
  };

  const losses: readonly EmbeddingLoss[] = EMBEDDING_LOSSES;
  for (const loss of losses) {
    const t = performance.now();
    // One recording of the FP32 model and its gradients serves the three bit widths (calibrateMany).
    const configs = BITS.map(([w, a]) => methodConfig('ptq4vit', { weightBits: w, activationBits: a, loss }));
    const { results } = await calibrateMany(model, images, null, configs);
    const seconds = (performance.now() - t) / 1000;
    for (let i = 0; i < BITS.length; i++) {
      const [w, a] = BITS[i];
      const graph = await OnnxModel.create(await exportOnnx(model, { quant: results[i] }), model.spec, `${loss} W${w}A${a}`);
      await measure(`PTQ4ViT, --loss ${loss}`, `W${w}A${a}`, graph, 64, seconds);
    }
  }
  // transformers.js's q8 quantizes activations per call: one image per call, as its pipeline runs.
  await measure('transformers.js-style q8 (dynamic)', 'W8A8 (weights 7-bit range)', await OnnxModel.create(await exportDynamicQ8(model), model.spec, 'dynamic q8'), 1);

  const pct = (x: number) => (x * 100).toFixed(2);
  const table = [
    '| quantization | bits | cosine to FP32, mean | cosine, 1st percentile | k-NN top-1 (%) |',
    '|---|---|---|---|---|',
    `| FP32 | — | 1 | 1 | ${pct(fp32Knn)} |`,
    ...rows.map((r) => `| ${r.what} | ${r.bits} | ${r.cosMean.toFixed(5)} | ${r.cosP1.toFixed(5)} | ${pct(r.knn)} |`),
  ].join('\n');
  const minutes = ((performance.now() - started) / 60000).toFixed(1);
  replaceSection('RESULTS.md', 'Backbones: loss for the Hessian metric', [
    '`vit_tiny_c10` viewed as a backbone (`num_classes` 0: head dropped, output = the normed cls token, 192 wide), PTQ4ViT',
    'calibrated on `calib32` **without labels** with each embedding loss (src/grad/loss.ts), every quantized model run as its',
    'integer ONNX graph. CIFAR-10 `test1k`: per-image cosine of the quantized embedding to FP32, and k-NN top-1 (k = 20,',
    "cosine, DINO's exp(s/0.07) vote) with `calib_pool`'s 2048 training images as neighbours, embedded by the same model.",
    'The q8 row is the transformers.js-style dynamic quantization built by `scripts/q8_dynamic.ts` from our traced model',
    '(uint8 activations per call, per-channel uint8 weights in the reduced 7-bit range, MatMulInteger; attention products and',
    'the patch embedding float), run one image per call.',
    '',
    table,
    '',
    `Command: \`npx tsc -p . && node dist/scripts/backbone_losses.js\` (${minutes} min; ${machineLine}; git ${revision}).`,
  ].join('\n'), '# Results');
  console.log(table);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
