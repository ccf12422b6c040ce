/**
 * The ablation per timm ViT family (issue 20): on each random-weight family fixture (DeiT III, DINOv2 reg4,
 * CLIP, MAE avg pool), PTQ4ViT W6A6 against Base PTQ W6A6, measured as the mean KL(FP32 ‖ quantized) of the
 * softmax over the logits and top-1 agreement with FP32, on seeded N(0, 1) images (the fixtures' own input
 * distribution): 8 calibration images (--calib), 32 evaluation images. Prints a markdown table for RESULTS.md.
 *
 *   npx tsc -p . && node dist/scripts/vit_families_ablation.js [--n 40] [--rounds 2] [--calib 8] [--only layerscale]
 */
import fs from 'node:fs';
import path from 'node:path';
import { seededRandom } from '../src/grad/loss.js';
import { SafeTensors } from '../src/io/safetensors.js';
import { specFromCard } from '../src/models/config.js';
import { buildModel } from '../src/models/load.js';
import { calibrate } from '../src/quant/calibrate.js';
import { methodConfig, type Method } from '../src/quant/methods.js';
import { QuantRunner } from '../src/quant/runner.js';
import { Tensor } from '../src/tensor/tensor.js';

const fixtures = path.resolve(process.cwd(), '..', 'shared', 'fixtures');
const FAMILIES = ['vit_layerscale_p16_224_fixture', 'vit_reg4_p14_224_fixture', 'vit_clip_p16_224_fixture', 'vit_avgpool_p16_224_fixture'];
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const n = arg('n', 40), rounds = arg('rounds', 2), calibSize = arg('calib', 8);
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : null;

function images(count: number, seed: number, size: number): Tensor {
  const u = seededRandom(seed);
  const data = Float32Array.from({ length: count * 3 * size * size }, () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u()));
  return new Tensor(data, [count, 3, size, size]);
}

function softmaxRows(logits: Float32Array, classes: number): Float64Array[] {
  return Array.from({ length: logits.length / classes }, (_, r) => {
    const row = logits.subarray(r * classes, (r + 1) * classes);
    const m = Math.max(...row);
    const e = Float64Array.from(row, (v) => Math.exp(v - m));
    const z = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / z);
  });
}

const argmax = (p: Float64Array) => p.indexOf(Math.max(...p));

const rows: string[] = [];
for (const name of FAMILIES.filter((f) => !only || f.includes(only))) {
  const card = JSON.parse(fs.readFileSync(path.join(fixtures, `${name}.json`), 'utf8'));
  const model = buildModel(specFromCard(card, name), SafeTensors.read(path.join(fixtures, `${name}.safetensors`)));
  const size = model.spec.arch.imgSize, classes = model.spec.arch.numClasses;
  const calib = images(calibSize, 1, size), test = images(32, 2, size);
  const fp = softmaxRows((await model.forward(test)).data, classes);
  const cells: string[] = [];
  for (const method of ['base', 'ptq4vit'] as Method[]) {
    const start = Date.now();
    const points = await calibrate(model, calib, null, { ...methodConfig(method, { weightBits: 6, activationBits: 6, n, rounds, loss: 'pseudo' }) });
    const q = softmaxRows((await model.forward(test, new QuantRunner(points))).data, classes);
    let kl = 0, agree = 0;
    fp.forEach((p, i) => {
      for (let c = 0; c < classes; c++) if (p[c] > 0) kl += p[c] * Math.log(p[c] / Math.max(q[i][c], 1e-30));
      if (argmax(p) === argmax(q[i])) agree++;
    });
    cells.push(`${(kl / fp.length).toFixed(4)} | ${agree}/${fp.length}`);
    process.stderr.write(`${name} ${method}: KL ${(kl / fp.length).toFixed(4)}, top-1 agreement ${agree}/${fp.length} (${((Date.now() - start) / 1000).toFixed(1)} s)\n`);
  }
  rows.push(`| ${card.family} (${card.timm_model}) | ${cells.join(' | ')} |`);
}
process.stdout.write(`| family | Base PTQ KL | Base PTQ top-1 = FP32 | PTQ4ViT KL | PTQ4ViT top-1 = FP32 |\n|---|---|---|---|---|\n${rows.join('\n')}\n`);
