/**
 * RESULTS.md, section "Deploy: every family (random weights)": issue 20's per-family checks in one run. For a
 * random-weight 32×32, 10-class model of every family ptq4vit opens (there are no trained checkpoints of most of
 * them in ../shared), quantized with PTQ4ViT at W8A8 and W6A6 on calib32:
 *   - the simulation (QuantRunner, what calibration and `eval --simulate` compute) against the exported integer
 *     graph under onnxruntime-node on the 500 bundled test images: same top-1 (the quantized file round trip is
 *     each family's test);
 *   - onnxruntime-web (wasm, 1 thread) against onnxruntime-node on the same images;
 *   - the `export --hf-dir` folder (writeHfDir) loaded offline by transformers.js pipeline('image-classification')
 *     on the 100 JPEGs of jpeg_sample (32×32: no resize), q8 against onnxruntime-node.
 * The weights are drawn per tensor by its role (a Linear/conv N(0, 1/fan_in), norms near 1, tokens and tables O(1),
 * LayerScale γ ≈ 0.3, Swin V2's logit scales near ln 10) so that attention is far from uniform and the models
 * predict several classes (last column: agreement would prove nothing with one).
 *
 *   npx tsc -p . && node dist/scripts/families_deploy.js
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDataset } from '../src/data/datasets.js';
import { openImageFolder } from '../src/data/folder.js';
import { evalTransform } from '../src/data/transform.js';
import { writeHfDir } from '../src/export/hfdir.js';
import { exportOnnx } from '../src/export/onnx.js';
import { specFromCard } from '../src/models/config.js';
import { buildModel } from '../src/models/load.js';
import type { TensorSource } from '../src/models/weights.js';
import { calibrate } from '../src/quant/calibrate.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { methodConfig } from '../src/quant/methods.js';
import { QuantRunner } from '../src/quant/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { argmaxRows, openOrtNode, openOrtWeb, runTransformersJs, type Batch } from '../test/runtimes.js';
import { firstImages } from './divergence.js';
import { machine, replaceSection } from './markdown.js';
import { sharedDir } from './shared.js';

const CALIB = 'assets/cifar10-calib32/calib32.json';
const TEST = 'assets/cifar10-test500';
const jpegSample = path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample');
const CIFAR = { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616], crop_pct: 1.0 };

/** One small card per family and variant, 32×32 input, 10 classes. */
const vit = (extra: Record<string, unknown> = {}) => ({ img_size: 32, patch_size: 4, embed_dim: 48, depth: 2, num_heads: 3, num_classes: 10, ...extra });
const swin = { img_size: 32, patch_size: 2, embed_dim: 24, depths: [2, 2], num_heads: [2, 4], window_size: 4, num_classes: 10 };
const CARDS: Record<string, Record<string, unknown>> = {
  'ViT': { timm_class: 'VisionTransformer', timm_kwargs: vit() },
  'DeiT distilled': { timm_class: 'VisionTransformerDistilled', timm_kwargs: vit() },
  'DeiT III': { timm_class: 'VisionTransformer', timm_kwargs: vit({ init_values: 0.1, no_embed_class: true }) },
  'DINOv2 reg4': { timm_class: 'VisionTransformer', timm_kwargs: vit({ init_values: 0.1, reg_tokens: 4, no_embed_class: true }) },
  'CLIP QuickGELU': { timm_class: 'VisionTransformer', timm_kwargs: vit({ pre_norm: true, act_layer: 'quick_gelu' }), layer_norm_eps: 1e-5 },
  'SigLIP (map pool)': { timm_class: 'VisionTransformer', timm_kwargs: vit({ class_token: false, global_pool: 'map', act_layer: 'gelu_tanh' }) },
  'MAE (avg pool, fc_norm)': { timm_class: 'VisionTransformer', timm_kwargs: vit({ global_pool: 'avg' }) },
  'Swin': { timm_class: 'SwinTransformer', timm_kwargs: swin },
  'Swin V2': { timm_class: 'SwinTransformerV2', timm_kwargs: { ...swin, pretrained_window_sizes: [0, 0] } },
  'MLP-Mixer': { timm_class: 'MlpMixer', timm_kwargs: { img_size: 32, patch_size: 4, embed_dim: 48, num_blocks: 2, num_classes: 10 } },
  'BEiT': { timm_class: 'Beit', timm_kwargs: { ...vit(), use_abs_pos_emb: false, use_rel_pos_bias: true, init_values: 0.1 } },
};

/** Seeded N(0, σ) tensors by role, for any tensor a model asks for (a checkpoint for any spec). */
class RandomCheckpoint implements TensorSource {
  readonly file = '<random>';
  private readonly made = new Map<string, Tensor>();
  private state: number;
  constructor(seed: number) {
    this.state = seed;
  }
  private gauss(): number {
    const u = () => ((this.state = (this.state * 1103515245 + 12345) % 2 ** 31) + 0.5) / 2 ** 31;
    return Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  }
  names(): string[] {
    return [...this.made.keys()];
  }
  tensor(name: string, shape?: readonly number[]): Tensor {
    const known = this.made.get(name);
    if (known) return known;
    const s = [...(shape ?? [1])];
    const n = s.reduce((a, b) => a * b, 1);
    const [mean, std] = name.endsWith('logit_scale') ? [Math.log(10), 0.3]
      : /(^|\.)(norm\w*|fc_norm|norm_pre)\.weight$|norm\d\.weight$/.test(name) ? [1, 0.1]
      : /gamma(_\d)?$/.test(name) ? [0.3, 0.1]
      : name.endsWith('.weight') && s.length >= 2 ? [0, 1 / Math.sqrt(n / s[0])]
      : name.endsWith('bias') ? [0, 0.1]
      : [0, 0.5];
    const t = new Tensor(Float32Array.from({ length: n }, () => mean + std * this.gauss()), s);
    this.made.set(name, t);
    return t;
  }
}

const same = (a: number[], b: number[]) => a.filter((v, i) => v === b[i]).length;
const started = machine();
const t0 = performance.now();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-families-deploy-'));
const lines: string[] = [];
const worst = { sim: 1, web: 1, q8: 1 };
try {
  const sampleData = await openImageFolder(jpegSample);
  const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1].split(',') : null;
  for (const [family, card] of Object.entries(CARDS)) {
    if (only && !only.includes(family)) continue;
    const spec = specFromCard({ name: family, ...card, ...CIFAR }, family);
    const model = buildModel(spec, new RandomCheckpoint(1));
    const s = spec.preprocess.inputSize;
    const calib = await loadCalibration(await openDataset(CALIB), 32, 0, spec.preprocess);
    const test = await firstImages(TEST, 500, spec.preprocess);
    const files: string[] = [];
    const pixels = new Float32Array(sampleData.size * 3 * s * s);
    for (let i = 0; i < sampleData.size; i++) {
      files.push(sampleData.itemName(i));
      pixels.set(evalTransform(await sampleData.image(i), spec.preprocess), i * 3 * s * s);
    }
    const sample: Batch = { data: pixels, dims: [sampleData.size, 3, s, s] };
    const fp32 = await exportOnnx(model, {});
    for (const bits of [8, 6]) {
      const points = await calibrate(model, calib.images, calib.labels, methodConfig('ptq4vit', { weightBits: bits, activationBits: bits }));
      const quantized = await exportOnnx(model, { quant: points });
      const simulation = new QuantRunner(points);
      const node = await openOrtNode(quantized), web = await openOrtWeb(quantized);
      let simSame = 0, webSame = 0, total = 0;
      const classes = new Set<number>();
      for (const batch of test) {
        const feed = { data: batch.data, dims: [...batch.shape] };
        const a = argmaxRows(await node.run(feed)), b = argmaxRows(await web.run(feed));
        const logits = await model.forward(batch, simulation);
        const sim = argmaxRows({ data: logits.data, dims: [...logits.shape] });
        simSame += same(a, sim);
        webSame += same(a, b);
        total += a.length;
        a.forEach((c) => classes.add(c));
      }
      const nodeSample = argmaxRows(await node.run(sample));
      await node.release();
      await web.release();
      const hf = path.join(dir, `${family.replace(/\W+/g, '_')}-w${bits}`);
      writeHfDir(hf, spec, { fp32, quantized }, [...sampleData.classes]);
      const q8 = await runTransformersJs(hf, files, { dtype: 'q8' });
      const toIndex = (labels: string[]) => labels.map((l) => sampleData.classes.indexOf(l));
      const q8Same = same(toIndex(q8.labels), nodeSample);
      worst.sim = Math.min(worst.sim, simSame / total);
      worst.web = Math.min(worst.web, webSame / total);
      worst.q8 = Math.min(worst.q8, q8Same / files.length);
      const row = `| ${family} | W${bits}A${bits} | ${simSame}/${total} | ${webSame}/${total} | ${q8Same}/${files.length} | ${classes.size} |`;
      lines.push(row);
      process.stderr.write(`${row}\n`);
    }
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

const body = [
  "Random-weight 32×32, 10-class models of every family (scripts/families_deploy.ts: weights drawn by role, seed 1; most families have no trained checkpoint in ../shared), PTQ4ViT on calib32 (default search). Integer ONNX graph (`exportOnnx` with the points, as `ptq4vit export` writes it) under onnxruntime-node against the simulation (the fake-quant runner calibration scores with) and against onnxruntime-web (wasm, 1 thread), top-1 on the 500 bundled test images; the `export --hf-dir` folder (`writeHfDir`) loaded offline by transformers.js `pipeline('image-classification')` (dtype q8) on the 100 JPEGs of jpeg_sample against onnxruntime-node on our preprocessing (32×32 images: no resize, the same pixels). Last column: distinct classes onnxruntime-node predicts on the 500 images.",
  '',
  '| family | bits | simulation = ort-node | ort-web = ort-node | transformers.js q8 = ort-node | classes |',
  '|---|---|---:|---:|---:|---:|',
  ...lines,
  '',
  `Lowest agreement over the rows: simulation ${(100 * worst.sim).toFixed(1)}%, onnxruntime-web ${(100 * worst.web).toFixed(1)}%, transformers.js ${(100 * worst.q8).toFixed(1)}% (issue 20 asks ≥ 99.5% of onnxruntime-web). Where a row is short of all images, a float op computed with another rounding (onnxruntime-web's kernels, or the simulation's own LayerNorm / L2 norm / softmax in front of a quantizer) moved one activation across a rounding boundary — the integer products themselves are exact in all three.`,
  '',
  `\`npx tsc -p . && node dist/scripts/families_deploy.js\` — ${started}; ${((performance.now() - t0) / 1000).toFixed(0)} s.`,
];
replaceSection('RESULTS.md', 'Deploy: every family (random weights)', body.join('\n'), '# Results');
process.stdout.write(body.join('\n') + '\n');
