/**
 * Backbones without a classifier (timm's num_classes 0, issue 21): the model outputs its pooled embedding,
 * quantizes without labels with an embedding loss whose ∂L/∂O is not zero at the FP32 point, `eval` reports
 * the embedding's cosine to FP32 and k-NN top-1, export names the output `image_embeds`, and transformers.js's
 * image-feature-extraction pipeline on the exported folder returns our embedding.
 *
 * A small random ViT (32×32 input, patch 8, width 32, depth 2) keeps it fast; its geometry differs from the
 * bundled checkpoints on purpose (the code must hold for any size).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { openDataset } from '../src/data/datasets.js';
import { cosineFidelity, embedDataset, knnTop1 } from '../src/eval/embedding.js';
import { exportOnnx, ONNX_EMBEDDING_OUTPUT } from '../src/export/onnx.js';
import { OnnxModel } from '../src/export/runtime.js';
import { computeGradients } from '../src/grad/gradients.js';
import { contrastiveGrad, projectionGrad, seededRandom } from '../src/grad/loss.js';
import { SafeTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { specFromCard } from '../src/models/config.js';
import { specFromHubConfig } from '../src/models/hub.js';
import { outputDim } from '../src/models/types.js';
import { writeBackboneView } from '../scripts/backbone_view.js';
import { VisionTransformer } from '../src/models/vit.js';
import { readOnnxInfo } from '../src/onnx/read.js';
import { openModel } from '../src/open.js';
import { Tensor } from '../src/tensor/tensor.js';
import { runCli, scratchDir, sharedDir, showRun } from './helpers.js';

const scratch = scratchDir('backbone');
const jpegSample = path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample');
const D = 32, DEPTH = 2, PATCH = 8, IMG = 32, HEADS = 2;

/** A random timm ViT checkpoint without head tensors, with its card (num_classes 0) beside it. */
function writeRandomBackbone(dir: string): string {
  const random = seededRandom(7);
  const t = (shape: number[], scale: number, offset = 0): TensorToWrite => ({ dtype: 'F32', shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => offset + (random() * 2 - 1) * scale) });
  const tokens = (IMG / PATCH) ** 2 + 1;
  const tensors: Record<string, TensorToWrite> = {
    cls_token: t([1, 1, D], 0.5),
    pos_embed: t([1, tokens, D], 0.5),
    'patch_embed.proj.weight': t([D, 3, PATCH, PATCH], 0.1),
    'patch_embed.proj.bias': t([D], 0.1),
  };
  for (let i = 0; i < DEPTH; i++) {
    const b = `blocks.${i}`;
    Object.assign(tensors, {
      [`${b}.norm1.weight`]: t([D], 0.2, 1), [`${b}.norm1.bias`]: t([D], 0.1),
      [`${b}.attn.qkv.weight`]: t([3 * D, D], 0.3), [`${b}.attn.qkv.bias`]: t([3 * D], 0.1),
      [`${b}.attn.proj.weight`]: t([D, D], 0.2), [`${b}.attn.proj.bias`]: t([D], 0.1),
      [`${b}.norm2.weight`]: t([D], 0.2, 1), [`${b}.norm2.bias`]: t([D], 0.1),
      [`${b}.mlp.fc1.weight`]: t([4 * D, D], 0.3), [`${b}.mlp.fc1.bias`]: t([4 * D], 0.1),
      [`${b}.mlp.fc2.weight`]: t([D, 4 * D], 0.1), [`${b}.mlp.fc2.bias`]: t([D], 0.1),
    });
  }
  Object.assign(tensors, { 'norm.weight': t([D], 0.2, 1), 'norm.bias': t([D], 0.1) });
  const file = path.join(dir, 'vit_backbone.safetensors');
  writeSafetensors(file, tensors);
  const card = { name: 'vit_backbone', timm_class: 'VisionTransformer', timm_kwargs: { img_size: IMG, patch_size: PATCH, embed_dim: D, depth: DEPTH, num_heads: HEADS, num_classes: 0 }, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
  fs.writeFileSync(path.join(dir, 'vit_backbone.json'), JSON.stringify(card));
  return file;
}

/** The JSON line that ends a --json report. */
const lastJson = (stdout: string) => JSON.parse(stdout.trim().split('\n').pop()!);

const dir = scratch.next();
const checkpoint = writeRandomBackbone(dir);
const randomImages = (n: number, seed: number) => {
  const r = seededRandom(seed);
  return new Tensor(Float32Array.from({ length: n * 3 * IMG * IMG }, () => r() * 4 - 2), [n, 3, IMG, IMG]);
};

describe('a model without classifier (num_classes 0)', () => {
  test('outputs the normed cls token; cards accept 0, a classifier card still needs its head', () => {
    const { model } = openModel({ weights: checkpoint });
    assert.equal(model.spec.arch.numClasses, 0);
    assert.ok(!model.quantPoints.some((p) => p.name.startsWith('head')), 'no classifier quantization point');
    const spec = specFromCard({ timm_class: 'VisionTransformer', timm_kwargs: { img_size: IMG, patch_size: PATCH, embed_dim: D, depth: DEPTH, num_heads: HEADS, num_classes: 3 } }, 'card');
    assert.throws(() => new VisionTransformer(spec, openModel({ weights: checkpoint }).weights), /head/);
    assert.throws(() => specFromCard({ timm_class: 'VisionTransformer', timm_kwargs: { num_classes: -1 } }, 'card.json'), /card\.json: timm_kwargs\.num_classes must be a positive integer, or 0/);
  });

  test("the bundled ViT and Swin as backbones: the embedding is the classifier's input (logits = head(embedding))", async () => {
    for (const [name, head] of [['vit_tiny_c10', 'head'], ['swin_micro_c10', 'head.fc']]) {
      const models = path.join(sharedDir, 'models');
      const file = writeBackboneView(path.join(models, `${name}.safetensors`), path.join(models, `${name}.json`), scratch.next(), `${name}_backbone`);
      const backbone = openModel({ weights: file }).model;
      const classifier = openModel({ weights: path.join(models, `${name}.safetensors`), config: path.join(models, `${name}.json`) });
      const images = new Tensor(Float32Array.from({ length: 2 * 3 * 32 * 32 }, (_, i) => Math.sin(i * 0.3)), [2, 3, 32, 32]);
      const e = await backbone.forward(images), logits = await classifier.model.forward(images);
      const st = classifier.weights as unknown as { tensor(n: string): Tensor };
      const w = st.tensor(`${head}.weight`), b = st.tensor(`${head}.bias`);
      const [classes, dim] = w.shape;
      assert.deepEqual(e.shape, [2, dim]);
      assert.equal(outputDim(backbone.spec.arch), dim);
      for (let r = 0; r < 2; r++) {
        for (let c = 0; c < classes; c++) {
          let y = b.data[c];
          for (let d = 0; d < dim; d++) y += e.data[r * dim + d] * w.data[c * dim + d];
          assert.ok(Math.abs(y - logits.data[r * classes + c]) < 1e-4, `${name}: head(embedding)[${r}, ${c}] ${y} vs logits ${logits.data[r * classes + c]}`);
        }
      }
    }
    // A timm hub folder may say num_classes 0 too.
    const hub = specFromHubConfig({ architecture: 'vit_tiny_patch16_224', num_classes: 0, pretrained_cfg: {} }, 'config.json');
    assert.equal(hub.arch.numClasses, 0);
  });

  test("timm parity: the embedding is the input of timm's head (DeiT-distilled: the mean of cls and dist, Swin: the pooled tokens)", async () => {
    const fixtures = path.join(sharedDir, 'fixtures');
    for (const [name, heads] of [['vit_p16_224_fixture', ['head']], ['deit_distilled_p16_224_fixture', ['head', 'head_dist']], ['swin_p4_w7_224_fixture', ['head.fc']]] as const) {
      const file = writeBackboneView(path.join(fixtures, `${name}.safetensors`), path.join(fixtures, `${name}.json`), scratch.next(), `${name}_backbone`);
      const acts = SafeTensors.read(path.join(fixtures, `${name}.activations.safetensors`));
      const e = await openModel({ weights: file }).model.forward(acts.tensor('input'));
      const inputs = heads.map((h) => acts.tensor(`${h}.in0`));
      const expected = inputs[0].data.map((v, i) => inputs.reduce((sum, t) => sum + t.data[i], 0) / inputs.length);
      assert.deepEqual(e.shape, inputs[0].shape);
      for (let i = 0; i < e.size; i++) assert.ok(Math.abs(e.data[i] - expected[i]) < 1e-4 * Math.max(1, Math.abs(expected[i])), `${name}: embedding[${i}] ${e.data[i]} vs timm ${expected[i]}`);
    }
  });

  test('embedding losses: ∂L/∂e matches finite differences, is non-zero at the FP32 point, seeded', async () => {
    const e = new Tensor(Float32Array.from({ length: 3 * 5 }, (_, i) => Math.sin(i * 1.3) + 0.2), [3, 5]);
    const refs = new Tensor(Float32Array.from({ length: 4 * 5 }, (_, i) => Math.cos(i * 0.7)), [4, 5]);
    refs.data.set(e.data, 5); // images 1..3 of 4 are this chunk's images at FP32
    const losses = {
      projection: (x: Tensor) => projectionGrad(x, 4, seededRandom(3)),
      contrastive: (x: Tensor) => contrastiveGrad(x, refs, 1),
    };
    for (const [name, f] of Object.entries(losses)) {
      const { grad } = f(e);
      assert.ok(grad.data.some((g) => Math.abs(g) > 1e-4), `${name}: gradient at the FP32 point is zero`);
      for (const i of [0, 7, 14]) {
        const h = 1e-3, plus = new Tensor(Float32Array.from(e.data), e.shape), minus = new Tensor(Float32Array.from(e.data), e.shape);
        plus.data[i] += h;
        minus.data[i] -= h;
        const numeric = (f(plus).loss - f(minus).loss) / (2 * h);
        assert.ok(Math.abs(numeric - grad.data[i]) < 2e-3 * Math.max(1, Math.abs(numeric)), `${name}: ∂L/∂e[${i}] ${grad.data[i]} vs finite difference ${numeric}`);
      }
    }

    const { model } = openModel({ weights: checkpoint });
    const images = randomImages(6, 1);
    const run = async (loss: 'projection' | 'contrastive', seed: number) => {
      const sums = new Map<string, number>();
      await computeGradients(model, images, null, { loss, seed, chunkSize: 4 }, (_c, point, g) => void sums.set(point, (sums.get(point) ?? 0) + g.data.reduce((s, v) => s + v * v, 0)));
      return sums;
    };
    for (const loss of ['projection', 'contrastive'] as const) {
      const sums = await run(loss, 0);
      assert.equal(sums.size, model.quantPoints.length);
      for (const [point, s] of sums) assert.ok(s > 0, `${loss}: ∂L/∂O is zero at ${point}`);
    }
    assert.deepEqual(await run('projection', 0), await run('projection', 0), 'same seed, same gradients');
    assert.notDeepEqual(await run('projection', 0), await run('projection', 1), 'the seed draws the directions');
    await assert.rejects(computeGradients(model, images, null, { loss: 'pseudo' }, () => {}), /loss 'pseudo' needs a classifier.*num_classes 0.*'projection' or 'contrastive'/);
  });

  test('cosine fidelity and k-NN: identical embeddings score 1, k-NN votes by cosine', () => {
    const emb = (rows: number[][], labels: number[]) => ({ data: Float32Array.from(rows.flat()), dim: rows[0].length, indices: rows.map((_, i) => i), labels: Int32Array.from(labels), skipped: [], seconds: 0 });
    const train = emb([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], [0, 0, 1, 1]);
    const test = emb([[2, 0.1], [0.2, 3], [1, 1.2]], [0, 1, 0]);
    assert.equal(knnTop1(train, test, { k: 2 }), 2 / 3);
    const c = cosineFidelity(test, test);
    assert.ok(Math.abs(c.mean - 1) < 1e-6 && Math.abs(c.p1 - 1) < 1e-6);
    const flipped = emb([[2, 0.1], [-0.2, -3], [1, 1.2]], [0, 1, 0]);
    assert.ok(Math.abs(cosineFidelity(flipped, test).p1 + 1) < 1e-6, 'the worst image is the 1st percentile');
  });

  test('quantize without labels → eval (cosine, k-NN) → export image_embeds → transformers.js feature extraction = our embedding', async (t) => {
    const out = path.join(dir, 'q.safetensors');
    const q = runCli(['quantize', '--model', checkpoint, '--calib', jpegSample, '--calib-size', '8', '--n', '8', '--rounds', '1', '--bits', '8', '--out', out, '--eval', jpegSample, '--limit', '10', '--json']);
    assert.equal(q.status, 0, showRun(q));
    const qJson = lastJson(q.stdout);
    assert.equal(qJson.loss, 'projection', 'the default loss without classifier');
    assert.equal(qJson.eval_images, 10);
    assert.equal(qJson.knn_train_images, 100, 'quantize --eval: the labelled --calib images are the k-NN neighbours');
    assert.ok(qJson.cosine_mean > 0.9 && qJson.cosine_p1 <= qJson.cosine_mean && qJson.knn_top1 >= 0 && qJson.reference_knn_top1 >= 0, JSON.stringify(qJson));
    const provenance = openModel({ weights: out }).quantized!.provenance;
    assert.equal(provenance.loss, 'projection');
    assert.equal(provenance.loss_choice, 'default without classifier');

    const e = runCli(['eval', '--model', out, '--data', jpegSample, '--knn-train', jpegSample, '--limit', '20', '--json']);
    assert.equal(e.status, 0, showRun(e));
    const r = lastJson(e.stdout);
    t.diagnostic(`cosine mean ${r.cosine_mean}, p1 ${r.cosine_p1}; k-NN ${r.knn_top1} (FP32 ${r.reference_knn_top1})`);
    assert.ok(r.cosine_mean > 0.9 && r.cosine_mean <= 1 + 1e-6 && r.cosine_p1 <= r.cosine_mean, `cosine ${r.cosine_mean} / ${r.cosine_p1}`);
    assert.equal(r.eval_images, 20);
    assert.equal(r.knn_train_images, 100);
    for (const k of [r.knn_top1, r.reference_knn_top1]) assert.ok(k >= 0 && k <= 1);
    const none = runCli(['eval', '--model', checkpoint, '--data', jpegSample]);
    assert.equal(none.status, 2, showRun(none));
    assert.match(none.stderr, /no classifier \(num_classes 0\).*--knn-train.*--reference/);

    // Export: the graph's output is the embedding; the folder loads as a feature extractor.
    const loaded = openModel({ weights: out });
    const bytes = await exportOnnx(loaded.model, { quant: loaded.quantized!.points });
    assert.deepEqual(readOnnxInfo(bytes).outputs, [ONNX_EMBEDDING_OUTPUT]);
    const hf = path.join(dir, 'hf', 'vit_backbone');
    const x = runCli(['export', '--model', out, '--hf-dir', hf]);
    assert.equal(x.status, 0, showRun(x));
    const config = JSON.parse(fs.readFileSync(path.join(hf, 'config.json'), 'utf8'));
    assert.deepEqual(config.architectures, ['ViTModel']);
    assert.equal(config.id2label, undefined);

    const data = await openDataset(jpegSample);
    const files = [0, 25, 50, 75].map((i) => path.join(jpegSample, data.itemPath(i)!));
    const { env, pipeline } = await import('@huggingface/transformers');
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = `${path.dirname(hf)}/`;
    for (const dtype of ['fp32', 'q8'] as const) {
      const graph = await OnnxModel.create(dtype === 'q8' ? bytes : await exportOnnx(loaded.model), loaded.model.spec, dtype);
      const ours = await embedDataset(graph, data, { limit: 76, batchSize: 76 });
      const extract = await pipeline('image-feature-extraction', path.basename(hf), { dtype, device: 'cpu' });
      try {
        let worst = 0;
        for (const [n, file] of files.entries()) {
          const got = (await extract(file)) as unknown as { data: Float32Array; dims: number[] };
          assert.deepEqual(got.dims, [1, D]);
          const row = ours.data.subarray([0, 25, 50, 75][n] * D, ([0, 25, 50, 75][n] + 1) * D);
          for (let d = 0; d < D; d++) worst = Math.max(worst, Math.abs(got.data[d] - row[d]));
        }
        t.diagnostic(`${dtype}: max |transformers.js − ours| ${worst.toExponential(2)}`);
        // Same pixels (32×32 images, no resize) up to float rounding; in the integer graph that can move one code step.
        assert.ok(worst <= (dtype === 'fp32' ? 1e-4 : 5e-2), `${dtype}: embeddings differ by ${worst}`);
      } finally {
        await extract.dispose();
      }
    }
  });
});
