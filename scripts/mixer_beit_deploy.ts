/**
 * RESULTS.md, section "Deploy: MLP-Mixer and BEiT (random weights)": the integer ONNX graphs of the two
 * families where users run them. For a random-weight 32×32 Mixer and BEiT (test/random_models.ts), quantized
 * with PTQ4ViT at W8A8 and W6A6 on calib32:
 *   - onnxruntime-web (wasm, 1 thread) against onnxruntime-node on the 500 bundled test images: same top-1;
 *   - `writeHfDir` (what `export --hf-dir` writes) loaded offline by transformers.js's
 *     pipeline('image-classification') on the 100 JPEGs of jpeg_sample, fp32 and q8: same top-1 as
 *     onnxruntime-node on our preprocessing.
 *
 *   npx tsc -p . && node dist/scripts/mixer_beit_deploy.js
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDataset } from '../src/data/datasets.js';
import { openImageFolder } from '../src/data/folder.js';
import { evalTransform } from '../src/data/transform.js';
import { writeHfDir } from '../src/export/hfdir.js';
import { exportOnnx } from '../src/export/onnx.js';
import { openModel } from '../src/open.js';
import { calibrate } from '../src/quant/calibrate.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { methodConfig } from '../src/quant/methods.js';
import { writeRandomCifarModel } from '../test/random_models.js';
import { argmaxRows, openOrtNode, openOrtWeb, runTransformersJs, type Batch } from '../test/runtimes.js';
import { firstImages } from './divergence.js';
import { machine, replaceSection } from './markdown.js';
import { sharedDir } from './shared.js';

const CALIB = 'assets/cifar10-calib32/calib32.json';
const TEST = 'assets/cifar10-test500';
const jpegSample = path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample');

const same = (a: number[], b: number[]) => a.filter((v, i) => v === b[i]).length;

const started = machine();
const t0 = performance.now();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-mixbeit-deploy-'));
const lines: string[] = [];
try {
  const sampleData = await openImageFolder(jpegSample);
  for (const family of ['mixer', 'beit'] as const) {
    const { model: checkpoint, card } = writeRandomCifarModel(dir, family, 1);
    const { model } = openModel({ weights: checkpoint, config: card });
    const s = model.spec.preprocess.inputSize;
    const calib = await loadCalibration(await openDataset(CALIB), 32, 0, model.spec.preprocess);
    const test = await firstImages(TEST, 500, model.spec.preprocess);
    const files: string[] = [];
    const pixels = new Float32Array(sampleData.size * 3 * s * s);
    for (let i = 0; i < sampleData.size; i++) {
      files.push(sampleData.itemName(i));
      pixels.set(evalTransform(await sampleData.image(i), model.spec.preprocess), i * 3 * s * s);
    }
    const sample: Batch = { data: pixels, dims: [sampleData.size, 3, s, s] };
    const fp32 = await exportOnnx(model, {});
    for (const bits of [8, 6]) {
      const points = await calibrate(model, calib.images, calib.labels, methodConfig('ptq4vit', { weightBits: bits, activationBits: bits }));
      const quantized = await exportOnnx(model, { quant: points });
      const node = await openOrtNode(quantized), web = await openOrtWeb(quantized);
      let webSame = 0, total = 0;
      for (const batch of test) {
        const feed = { data: batch.data, dims: [...batch.shape] };
        const a = argmaxRows(await node.run(feed)), b = argmaxRows(await web.run(feed));
        webSame += same(a, b);
        total += a.length;
      }
      const nodeSample = argmaxRows(await node.run(sample));
      await node.release();
      await web.release();
      const hf = path.join(dir, `${family}-w${bits}`);
      writeHfDir(hf, model.spec, { fp32, quantized }, [...sampleData.classes]);
      const q8 = await runTransformersJs(hf, files, { dtype: 'q8' });
      const fpNode = await openOrtNode(fp32);
      const fpSample = argmaxRows(await fpNode.run(sample));
      await fpNode.release();
      const f32 = await runTransformersJs(hf, files, { dtype: 'fp32' });
      const toIndex = (labels: string[]) => labels.map((l) => sampleData.classes.indexOf(l));
      const row = `| ${family} W${bits}A${bits} | ${webSame}/${total} | ${same(toIndex(q8.labels), nodeSample)}/${files.length} | ${same(toIndex(f32.labels), fpSample)}/${files.length} | ${new Set(nodeSample).size} |`;
      lines.push(row);
      process.stderr.write(`${row}\n`);
    }
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

const body = [
  'Random-weight 32×32 Mixer and BEiT (test/random_models.ts, seed 1; no trained checkpoints of these families in ../shared), PTQ4ViT on calib32 (default search). Integer ONNX graph (`exportOnnx` with the points, as `ptq4vit export` writes it): onnxruntime-web (wasm, 1 thread) vs onnxruntime-node top-1 on the 500 bundled test images; the `export --hf-dir` folder (`writeHfDir`) loaded offline by transformers.js `pipeline(\'image-classification\')` on the 100 JPEGs of jpeg_sample, q8 (integer graph) and fp32, vs onnxruntime-node on our preprocessing (the images are 32×32: no resize, so both see the same pixels). Last column: distinct classes predicted on jpeg_sample (agreement would prove nothing with one).',
  '',
  '| model | ort-web = ort-node (test500) | transformers.js q8 = ort-node | transformers.js fp32 = ort-node | classes predicted |',
  '|---|---:|---:|---:|---:|',
  ...lines,
  '',
  `\`npx tsc -p . && node dist/scripts/mixer_beit_deploy.js\` — ${started}; ${((performance.now() - t0) / 1000).toFixed(0)} s.`,
];
replaceSection('RESULTS.md', 'Deploy: MLP-Mixer and BEiT (random weights)', body.join('\n'), '# Results');
process.stdout.write(body.join('\n') + '\n');
