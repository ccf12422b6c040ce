/**
 * Swin Transformer V2: parity with timm 1.0.28 on the fixture (logits, every recorded point, ∂L/∂O), the folded
 * continuous position bias, other sizes (a tiny random model checked against finite differences, another input
 * size), config/preset/hub round trips, and one quick quantize → file → eval = integer ONNX graph (onnxruntime-node
 * and -web, transformers.js).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import ort from 'onnxruntime-node';
import { computeGradients } from '../src/grad/gradients.js';
import { crossEntropyGrad, seededRandom } from '../src/grad/loss.js';
import { encodeSafetensors, SafeTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { Ptq4vitError } from '../src/errors.js';
import { archFromTimm, cardFromSpec, PRESETS, specFromCard, specFromPreset } from '../src/models/config.js';
import { specFromHubConfig } from '../src/models/hub.js';
import { buildModel } from '../src/models/load.js';
import { stageGeometry } from '../src/models/swin.js';
import { continuousPositionBias, relativeCoordsTable } from '../src/models/swinv2.js';
import { WeightReader } from '../src/models/weights.js';
import type { Runner, SwinV2Arch, VisionModel } from '../src/models/types.js';
import { exportOnnx } from '../src/export/onnx.js';
import { readOnnxInfo } from '../src/onnx/read.js';
import { linear as linearFp, matmul as matmulFp } from '../src/tensor/gemm.js';
import { fastKernels } from '../src/tensor/kernels.js';
import { RecordingRunner } from '../src/tensor/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { loadBatch } from '../src/data/batch.js';
import { openDataset } from '../src/data/datasets.js';
import { openImageFolder } from '../src/data/folder.js';
import { evalTransform } from '../src/data/transform.js';
import { evaluate } from '../src/eval/evaluate.js';
import { openModel } from '../src/open.js';
import { assertClose, fixturesDir, maxAbs, maxAbsDiff, repoRoot, runCli, scratchDir, sharedDir, showRun } from './helpers.js';
import { openOrtNode, openOrtWeb, runTransformersJs } from './runtimes.js';

const FIXTURE = 'swinv2_p4_w8_256_fixture';

interface Card {
  timm_kwargs: Record<string, unknown>;
  quant_points: string[];
  recorded_points: string[];
  input_independent_points: string[];
  labels: number[];
  loss_value: number;
}

const card = JSON.parse(fs.readFileSync(path.join(fixturesDir, `${FIXTURE}.json`), 'utf8')) as Card;
const weights = SafeTensors.read(path.join(fixturesDir, `${FIXTURE}.safetensors`));
const acts = SafeTensors.read(path.join(fixturesDir, `${FIXTURE}.activations.safetensors`));
const spec = specFromCard(card, FIXTURE);
const isCpb = (p: string) => /\.cpb_mlp\.\d+$/.test(p);

/** [..., M, N] → [..., N, M]. */
function transposeLast2(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let base = 0; base < data.length; base += rows * cols) {
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[base + c * rows + r] = data[base + r * cols + c];
  }
  return out;
}

/** timm records the patch conv NCHW; ours is [B, patches, D]. */
function toTimmLayout(point: string, t: Tensor): Float32Array {
  if (point !== 'patch_embed.proj') return t.data;
  const [b, patches, d] = t.shape;
  const out = new Float32Array(t.size);
  for (let i = 0; i < b; i++) for (let p = 0; p < patches; p++) for (let c = 0; c < d; c++) out[(i * d + c) * patches + p] = t.data[(i * patches + p) * d + c];
  return out;
}

describe('SwinTransformerV2: timm 1.0.28 fixture parity', () => {
  const model = buildModel(spec, weights);

  test('quantization points: the card\'s, minus the cpb_mlp layers folded into constant bias tables', () => {
    // cpb_mlp.0/.2 run on the constant coordinate table only (the card's input_independent_points): folded.
    assert.deepEqual(card.quant_points.filter(isCpb), card.input_independent_points.filter(isCpb));
    assert.equal(card.input_independent_points.length, card.input_independent_points.filter(isCpb).length);
    assert.deepEqual(model.quantPoints.map((p) => p.name), card.quant_points.filter((p) => !isCpb(p)));
    const byName = new Map(model.quantPoints.map((p) => [p.name, p]));
    assert.equal(byName.get('layers.0.blocks.0.attn.qkv')?.bias, undefined, 'qkv\'s bias is cat(q_bias, 0, v_bias), no checkpoint tensor of its own');
    assert.equal(byName.get('layers.0.blocks.0.attn.qkv')?.weightGroups, 3);
    assert.equal(byName.get('layers.2.blocks.1.attn.matmul2')?.input, 'post-softmax');
    assert.equal(byName.get('layers.2.blocks.1.mlp.fc2')?.input, 'post-gelu');
    for (const p of model.quantPoints) if (p.weight) assert.ok(weights.has(p.weight), p.weight);
  });

  test('the coordinate table is timm\'s relative_coords_table (log-spaced, window 8)', () => {
    const ref = acts.tensor('layers.1.blocks.0.attn.cpb_mlp.0.in0'); // [1, 15, 15, 2]
    assertClose(Float32Array.from(relativeCoordsTable(8, 0)), ref.data, 'relative_coords_table', 1e-6);
  });

  test('the folded bias table is 16·σ(cpb_mlp(table)) as timm computes it', () => {
    const out = acts.tensor('layers.1.blocks.0.attn.cpb_mlp.2.out'); // [1, 15, 15, heads] before 16·σ
    const table = continuousPositionBias(new WeightReader(weights), 'layers.1.blocks.0.attn', 8, 0, 2);
    assertClose(table.data, Float32Array.from(out.data, (z) => 16 / (1 + Math.exp(-z))), 'cpb table');
  });

  test('logits and every recorded point (outputs and inputs)', async () => {
    const input = acts.tensor('input');
    const runner = new RecordingRunner();
    const logits = await model.forward(input, runner);
    assertClose(logits.data, acts.tensor('logits').data, 'logits');
    let checked = 0;
    for (const point of card.recorded_points.filter((p) => !isCpb(p))) {
      const rec = runner.records.get(point);
      assert.ok(rec, `${point} was not called`);
      const out = acts.tensor(`${point}.out`), in0 = acts.tensor(`${point}.in0`);
      assert.equal(rec.output.size, out.size, `${point}.out size`);
      assertClose(toTimmLayout(point, rec.output), out.data, `${point}.out`);
      if (point.endsWith('.matmul1') || point.endsWith('.matmul2')) {
        const [windows, heads, n] = out.shape;
        assert.deepEqual(rec.output.shape, [windows * heads, n, out.shape[3]], `${point}.out shape`);
        assertClose(rec.inputs[0].data, in0.data, `${point}.in0`);
        const in1 = acts.tensor(`${point}.in1`);
        const [, , r, c] = in1.shape;
        assertClose(rec.inputs[1].data, point.endsWith('.matmul1') ? transposeLast2(in1.data, r, c) : in1.data, `${point}.in1`);
        if (point.endsWith('.matmul1')) {
          assert.ok(maxAbs(rec.inputs[0].data) <= 1 + 1e-6 && maxAbs(rec.inputs[1].data) <= 1 + 1e-6, `${point}: normalized operands lie in [−1, 1]`);
        }
      } else if (point !== 'patch_embed.proj') {
        assert.equal(rec.inputs[0].size, in0.size, `${point}.in0 size`);
        assertClose(rec.inputs[0].data, in0.data, `${point}.in0`);
      }
      checked++;
    }
    assert.equal(checked, card.recorded_points.filter((p) => !isCpb(p)).length);
  });

  test('∂L/∂O at every recorded point matches torch autograd', async () => {
    const images = acts.tensor('input');
    const batch = images.shape[0];
    const grads = new Map<string, Float32Array>();
    const loss = await computeGradients(model, images, Int32Array.from(card.labels), { loss: 'label', chunkSize: 1 }, (chunk, point, g) => {
      const per = g.size / chunk.count;
      const all = grads.get(point) ?? new Float32Array(per * batch);
      all.set(toTimmLayout(point, g), chunk.start * per);
      grads.set(point, all);
    });
    assert.ok(Math.abs(loss - card.loss_value) < 1e-4 * (1 + card.loss_value), `loss ${loss} vs ${card.loss_value}`);
    for (const point of card.recorded_points.filter((p) => !isCpb(p))) {
      const ref = acts.tensor(`${point}.grad_out`).data;
      const ours = grads.get(point);
      assert.ok(ours, `no gradient for ${point}`);
      const { max, at } = maxAbsDiff(ours, ref);
      assert.ok(max <= 1e-3 * maxAbs(ref), `${point}.grad_out: max abs error ${max} at ${at} (${ours[at]} vs ${ref[at]})`);
    }
  });

  test('FP32 ONNX export matches timm\'s logits', async () => {
    const bytes = await exportOnnx(model);
    const session = await ort.InferenceSession.create(bytes);
    const input = acts.tensor('input');
    const y = (await session.run({ pixel_values: new ort.Tensor('float32', input.data, input.shape as number[]) })).logits;
    assertClose(y.data as Float32Array, acts.tensor('logits').data, 'exported logits');
  });
});

describe('SwinTransformerV2: another input size than the checkpoint\'s', () => {
  test('the 256 fixture builds and runs at 128: bias tables recomputed where the window is clamped', async () => {
    const at128 = specFromCard({ ...card, timm_kwargs: { ...card.timm_kwargs, img_size: 128 } }, `${FIXTURE}@128`);
    const small = buildModel(at128, weights);
    const runner = new RecordingRunner();
    const images = new Tensor(Float32Array.from({ length: 3 * 128 * 128 }, (_, i) => Math.sin(i * 0.37)), [1, 3, 128, 128]);
    const logits = await small.forward(images, runner);
    assert.deepEqual(logits.shape, [1, 16]);
    assert.ok(logits.data.every(Number.isFinite));
    // Grids 32, 16, 8, 4: stage 3's window 8 is clamped to the 4×4 grid (16 tokens, one window, no shift).
    assert.deepEqual(runner.records.get('layers.3.blocks.1.attn.matmul1')?.output.shape, [8, 16, 16]);
    assert.deepEqual(runner.records.get('layers.0.blocks.1.attn.matmul1')?.output.shape, [16, 64, 64]);
    // The top-left 8×8 window of the first block sees the same 32 input pixels at either size (the patch
    // conv and its norm are per patch, window 0 has no shift): its attention output is the 256 model's.
    const big = new RecordingRunner();
    const image256 = new Float32Array(3 * 256 * 256);
    for (let c = 0; c < 3; c++) for (let y = 0; y < 128; y++) for (let x = 0; x < 128; x++) image256[(c * 256 + y) * 256 + x] = images.data[(c * 128 + y) * 128 + x];
    await buildModel(spec, weights).forward(new Tensor(image256, [1, 3, 256, 256]), big);
    const first = (r: RecordingRunner) => r.records.get('layers.0.blocks.0.attn.matmul2')!.output.data.subarray(0, 64 * 2);
    assertClose(first(runner), first(big), 'window 0 of block 0 at 128 vs 256', 1e-6);
  });

  test('a 1×1 last-stage window (timm\'s 0/0 bias) is refused with one line', () => {
    const at32 = specFromCard({ ...card, timm_kwargs: { ...card.timm_kwargs, img_size: 32 } }, 'at32');
    assert.throws(() => buildModel(at32, weights), (e: unknown) => e instanceof Ptq4vitError && /stage 3.*1×1 window/.test(e.message));
  });
});

// ---------------------------------------------------------------------------------------------
// A tiny random Swin V2 of another geometry: ∂L/∂O against finite differences, and the quantized round trip.

function gaussian(seed: number): () => number {
  const u = seededRandom(seed);
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

interface TinyV2 {
  card: Record<string, unknown>;
  tensors: Record<string, TensorToWrite>;
}

/** img 32, patch 2, window 4, depths [2, 2], heads [2, 4], pre-trained windows [6, 3]; seeded random weights. */
function tinySwinV2(): TinyV2 {
  const [img, patch, window, D, depths, heads, classes] = [32, 2, 4, 16, [2, 2], [2, 4], 10];
  const kwargs = { img_size: img, patch_size: patch, window_size: window, embed_dim: D, depths, num_heads: heads, num_classes: classes, pretrained_window_sizes: [6, 3] };
  const rand = gaussian(201);
  const tensors: Record<string, TensorToWrite> = {};
  const put = (name: string, shape: number[], std: number, mean = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    tensors[name] = { dtype: 'F32', shape, data: Float32Array.from({ length: n }, () => mean + std * rand()) };
  };
  const lin = (name: string, o: number, i: number, bias = true) => {
    put(`${name}.weight`, [o, i], 1 / Math.sqrt(i));
    if (bias) put(`${name}.bias`, [o], 0.2);
  };
  const norm = (name: string, c: number) => {
    put(`${name}.weight`, [c], 0.2, 1);
    put(`${name}.bias`, [c], 0.2);
  };
  put('patch_embed.proj.weight', [D, 3, patch, patch], 1 / Math.sqrt(3 * patch * patch));
  put('patch_embed.proj.bias', [D], 0.2);
  norm('patch_embed.norm', D);
  for (let i = 0; i < depths.length; i++) {
    const dim = D * 2 ** i;
    if (i > 0) {
      lin(`layers.${i}.downsample.reduction`, dim, 2 * dim, false);
      norm(`layers.${i}.downsample.norm`, dim);
    }
    for (let j = 0; j < depths[i]; j++) {
      const p = `layers.${i}.blocks.${j}`;
      put(`${p}.attn.logit_scale`, [heads[i], 1, 1], 0.5, 1); // τ = e^logit_scale ≈ 1.6–4.5: a smooth enough loss for differences
      put(`${p}.attn.q_bias`, [dim], 0.3);
      put(`${p}.attn.v_bias`, [dim], 0.3);
      lin(`${p}.attn.qkv`, 3 * dim, dim, false);
      lin(`${p}.attn.cpb_mlp.0`, 512, 2);
      lin(`${p}.attn.cpb_mlp.2`, heads[i], 512, false);
      lin(`${p}.attn.proj`, dim, dim);
      norm(`${p}.norm1`, dim);
      lin(`${p}.mlp.fc1`, 4 * dim, dim);
      lin(`${p}.mlp.fc2`, dim, 4 * dim);
      norm(`${p}.norm2`, dim);
    }
  }
  const last = D * 2 ** (depths.length - 1);
  norm('norm', last);
  lin('head.fc', classes, last);
  return { card: { name: 'tiny-swinv2', timm_class: 'SwinTransformerV2', timm_kwargs: kwargs, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] }, tensors };
}

const BATCH = 2;
const CALIB = 'assets/cifar10-calib32/calib32.json';

function argmax(logits: Float32Array, classes: number): number[] {
  return Array.from({ length: logits.length / classes }, (_, r) => {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[r * classes + c] > logits[r * classes + best]) best = c;
    return best;
  });
}
const LABELS = Int32Array.of(1, 3);

async function lossWith(model: VisionModel, images: Tensor, runner: Runner): Promise<number> {
  return crossEntropyGrad(await model.forward(images, runner), LABELS, BATCH).loss;
}

/** fp32 forward with the output of `point` moved by step·d. */
function shifted(point: string, d: Float32Array, step: number): Runner {
  const move = (p: string, y: Tensor) => (p === point ? new Tensor(Float32Array.from(y.data, (v, i) => v + step * d[i]), y.shape) : y);
  return {
    linear: async (p, x, w, b) => move(p, await linearFp(x, w, b)),
    matmul: async (p, a, b, t) => move(p, await matmulFp(a, b, t)),
    kernels: fastKernels,
  };
}

describe('SwinTransformerV2: a tiny random model of another size (window 4, heads 2-4, pre-trained windows 6-3)', () => {
  const tiny = tinySwinV2();
  const tinySpec = specFromCard(tiny.card, 'tiny-swinv2');
  const model = buildModel(tinySpec, SafeTensors.parse(encodeSafetensors(tiny.tensors), 'tiny-swinv2'));
  const images = new Tensor(Float32Array.from({ length: BATCH * 3 * 32 * 32 }, gaussian(7)), [BATCH, 3, 32, 32]);

  test('∂L/∂O at every quantization point matches central differences of the loss (random ±1 direction)', async (ctx) => {
    const grads = new Map<string, Float32Array>();
    await computeGradients(model, images, LABELS, { loss: 'label', chunkSize: BATCH }, (_chunk, point, g) => {
      grads.set(point, Float32Array.from(g.data));
    });
    assert.deepEqual([...grads.keys()].sort(), model.quantPoints.map((p) => p.name).sort());
    const rand = seededRandom(5);
    let worst = 0;
    for (const { name } of model.quantPoints) {
      const g = grads.get(name)!;
      const d = Float32Array.from(g, () => (rand() < 0.5 ? -1 : 1));
      let scale = 0, analytic = 0;
      for (let i = 0; i < g.length; i++) {
        scale += Math.abs(g[i]);
        analytic += g[i] * d[i];
      }
      assert.ok(scale > 0, `${name}: ∂L/∂O is identically zero`);
      // Richardson-extrapolated central differences.
      const fd = async (h: number) => ((await lossWith(model, images, shifted(name, d, h))) - (await lossWith(model, images, shifted(name, d, -h)))) / (2 * h);
      const h = 1e-3;
      const numeric = (4 * (await fd(h)) - (await fd(2 * h))) / 3;
      const error = Math.abs(numeric - analytic) / scale;
      // Observed ≤ 7e-5 relative to Σ|gᵢ·dᵢ|.
      assert.ok(error <= 1e-3, `${name}: analytic ${analytic} vs FD ${numeric} (error ${error.toExponential(2)})`);
      worst = Math.max(worst, error);
    }
    ctx.diagnostic(`${model.quantPoints.length} points, max relative error ${worst.toExponential(2)}`);
  });

  test('quantize (PTQ4ViT W8A8) → file → eval equals the exported integer graph (onnxruntime-node and -web)', async (ctx) => {
    const dir = scratchDir('swinv2').next();
    const ckpt = path.join(dir, 'tiny-swinv2.safetensors');
    writeSafetensors(ckpt, tiny.tensors);
    fs.writeFileSync(path.join(dir, 'tiny-swinv2.json'), JSON.stringify(tiny.card));
    const file = path.join(dir, 'tiny-swinv2.w8a8.safetensors');
    const q = runCli(['quantize', '--model', ckpt, '--calib', CALIB, '--bits', '8', '--n', '8', '--rounds', '1', '--calib-size', '4', '--out', file]);
    assert.equal(q.status, 0, showRun(q));
    const onnx = path.join(dir, 'tiny-swinv2.onnx');
    const hf = path.join(dir, 'hf');
    const x = runCli(['export', '--model', file, '--out', onnx, '--hf-dir', hf]);
    assert.equal(x.status, 0, showRun(x));
    // The quantized file stores its spec as a card: pretrained_window_sizes survive the round trip.
    const loaded = openModel({ weights: file });
    assert.deepEqual(loaded.model.spec.arch, tinySpec.arch);
    const data = await openDataset(path.join(repoRoot, CALIB));
    const sim = await evaluate(loaded.model, data, { runner: loaded.runner, keepLogits: true });
    const batch = await loadBatch(data, Array.from({ length: data.size }, (_, i) => i), loaded.model.spec.preprocess);
    const pixels = { data: batch.images.data, dims: [...batch.images.shape] };
    const bytes = fs.readFileSync(onnx);
    // What onnxruntime runs: every product with a quantized input is integer (the image's patch conv stays float).
    const optimized = path.join(dir, 'optimized.onnx');
    await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all', optimizedModelFilePath: optimized });
    const ops = readOnnxInfo(fs.readFileSync(optimized)).ops;
    const integerProducts = ops.filter((op) => /MatMulInteger/.test(op)).length;
    const floatProducts = ops.filter((op) => /(^|::)(MatMul|Gemm|FusedMatMul|FusedGemm)$/.test(op)).length;
    assert.ok(integerProducts >= loaded.model.quantPoints.length - 1, `${integerProducts} integer products for ${loaded.model.quantPoints.length} points`);
    assert.ok(floatProducts <= 1, `${floatProducts} float products left`);
    assert.ok(ops.some((op) => /ReduceL2/.test(op)), 'the cosine attention\'s L2 norm is in the graph');
    const node = await openOrtNode(bytes);
    const onNode = argmax((await node.run(pixels)).data, 10);
    await node.release();
    const web = await openOrtWeb(bytes);
    const onWeb = argmax((await web.run(pixels)).data, 10);
    await web.release();
    const simulated = argmax(sim.logits!, 10);
    const top1 = (pred: number[]) => pred.filter((c, i) => c === batch.labels[i]).length / pred.length;
    const same = simulated.filter((c, i) => c === onNode[i]).length;
    ctx.diagnostic(`${data.size} images: simulation and integer graph agree on ${same}; onnxruntime-web = -node on ${onWeb.filter((c, i) => c === onNode[i]).length}`);
    assert.ok(new Set(onNode).size > 1, 'one class for every image: agreement would prove nothing');
    assert.equal(top1(onNode), sim.top1, 'top-1 of the quantized file (simulation) and of its integer ONNX graph');
    assert.ok(same >= data.size - 1, `simulation and integer graph disagree on ${data.size - same} images`);
    assert.deepEqual(onWeb, onNode, 'onnxruntime-web and -node predict differently');

    // export --hf-dir: transformers.js's pipeline('image-classification') loads the integer graph offline and
    // ranks 10 JPEGs of jpeg_sample (32×32: no resize) as onnxruntime-node does on our preprocessing.
    const folder = await openImageFolder(path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample'));
    const picked = Array.from({ length: 10 }, (_, i) => i * 10);
    const size = loaded.model.spec.preprocess.inputSize;
    const jpegPixels = new Float32Array(picked.length * 3 * size * size);
    for (const [k, i] of picked.entries()) jpegPixels.set(evalTransform(await folder.image(i), loaded.model.spec.preprocess), k * 3 * size * size);
    const reference = await openOrtNode(bytes);
    const expected = argmax((await reference.run({ data: jpegPixels, dims: [picked.length, 3, size, size] })).data, 10);
    await reference.release();
    const pipeline = await runTransformersJs(hf, picked.map((i) => folder.itemName(i)), { dtype: 'q8' });
    assert.deepEqual(pipeline.scores.map((row) => argmax(row, 10)[0]), expected, 'transformers.js top-1 vs onnxruntime-node');
  });
  test('a timm hub folder (swinv2 architecture + model_args) opens with --model DIR; an unsupported model_arg is exit 2', async () => {
    const dir = scratchDir('swinv2-hub').next();
    writeSafetensors(path.join(dir, 'model.safetensors'), tiny.tensors);
    const config = (modelArgs: Record<string, unknown>) => ({
      architecture: 'swinv2_tiny_window8_256',
      num_classes: 10,
      model_args: { ...(tiny.card.timm_kwargs as Record<string, unknown>), ...modelArgs },
      pretrained_cfg: { input_size: [3, 32, 32], crop_pct: 1.0, interpolation: 'bicubic', mean: tiny.card.mean, std: tiny.card.std, fixed_input_size: true },
    });
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config({})));
    const r = runCli(['eval', '--model', dir, '--data', CALIB, '--json']);
    assert.equal(r.status, 0, showRun(r));
    const fp32 = await evaluate(model, await openDataset(path.join(repoRoot, CALIB)));
    assert.equal((JSON.parse(r.stdout.trim().split('\n').pop()!) as { top1: number }).top1, fp32.top1);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config({ always_partition: true })));
    const bad = runCli(['eval', '--model', dir, '--data', CALIB]);
    assert.equal(bad.status, 2, showRun(bad));
    assert.match(bad.stderr, /^ptq4vit: error: .*config\.json: model_args\.always_partition = true is not supported[^\n]*\n$/, showRun(bad));
  });
});

describe('SwinTransformerV2: config, presets, hub folders', () => {
  test('archFromTimm ↔ cardFromSpec round trip (pretrained_window_sizes kept)', () => {
    const tinyCard = tinySwinV2().card;
    const s = specFromCard(tinyCard, 'tiny');
    assert.equal(s.arch.family, 'swinv2');
    assert.deepEqual(specFromCard(cardFromSpec(s), 'again'), s);
    assert.deepEqual((cardFromSpec(s).timm_kwargs as Record<string, unknown>).pretrained_window_sizes, [6, 3]);
    assert.equal(cardFromSpec(spec).timm_class, 'SwinTransformerV2');
  });

  test('presets: timm\'s swinv2 registrations with their preprocessing', () => {
    const names = Object.keys(PRESETS).filter((n) => n.startsWith('swinv2_'));
    for (const n of ['swinv2_tiny_window8_256', 'swinv2_tiny_window16_256', 'swinv2_small_window8_256', 'swinv2_base_window8_256', 'swinv2_base_window12to16_192to256']) {
      assert.ok(names.includes(n), n);
    }
    const tiny = specFromPreset('swinv2_tiny_window8_256');
    assert.deepEqual([tiny.timmClass, tiny.arch.imgSize, tiny.preprocess.cropPct, tiny.preprocess.interpolation], ['SwinTransformerV2', 256, 0.9, 'bicubic']);
    const ft = specFromPreset('swinv2_base_window12to16_192to256');
    assert.ok(ft.arch.family === 'swinv2' && ft.arch.windowSize === 16);
    assert.deepEqual(ft.arch.family === 'swinv2' && ft.arch.pretrainedWindowSizes, [12, 12, 12, 6]);
    assert.equal(specFromPreset('swinv2_base_window12to24_192to384').preprocess.cropPct, 1.0);
    // Every preset's windows tile its stage grids (the model would build).
    for (const n of names) {
      const a = specFromPreset(n).arch;
      assert.equal(stageGeometry(n, a as SwinV2Arch).length, 4, n);
    }
  });

  test('a timm hub folder of a swinv2 name opens with model_args (the fixture\'s weights)', async () => {
    const { embed_dim, depths, num_heads } = card.timm_kwargs;
    const hub = specFromHubConfig({ architecture: 'swinv2_tiny_window8_256', num_classes: 16, model_args: { embed_dim, depths, num_heads }, pretrained_cfg: { input_size: [3, 256, 256], crop_pct: 0.9, interpolation: 'bicubic' } }, 'config.json');
    const logits = await buildModel(hub, weights).forward(acts.tensor('input'));
    assertClose(logits.data, acts.tensor('logits').data, 'hub-folder logits');
  });

  test('unsupported kwargs and inconsistent pretrained windows are refused, naming the field', () => {
    const refuse = (kwargs: Record<string, unknown>, pattern: RegExp) =>
      assert.throws(() => archFromTimm('SwinTransformerV2', { ...card.timm_kwargs, ...kwargs }, 'card.json'), (e: unknown) => e instanceof Ptq4vitError && pattern.test(e.message) && !e.message.includes('\n'));
    refuse({ always_partition: true }, /card\.json: timm_kwargs\.always_partition = true is not supported/);
    refuse({ strict_img_size: false }, /timm_kwargs\.strict_img_size/);
    refuse({ act_layer: 'relu' }, /timm_kwargs\.act_layer is not supported/);
    refuse({ pretrained_window_sizes: [8, 8] }, /timm_kwargs\.pretrained_window_sizes must list one window per stage \(4\)/);
    refuse({ pretrained_window_sizes: [8, 1, 8, 8] }, /pretrained_window_sizes/);
  });

  test('a checkpoint without a q_bias, or with a v1 relative_position_bias_table, is refused naming the tensor', () => {
    const all: Record<string, TensorToWrite> = {};
    for (const n of weights.names()) {
      const t = weights.tensor(n);
      all[n] = { dtype: 'F32', shape: t.shape, data: t.data };
    }
    const { ['layers.2.blocks.1.attn.q_bias']: _, ...rest } = all;
    const parse = (t: Record<string, TensorToWrite>) => SafeTensors.parse(encodeSafetensors(t), 'ckpt.safetensors');
    assert.throws(() => buildModel(spec, parse(rest)), (e: unknown) => e instanceof Ptq4vitError && /layers\.2\.blocks\.1\.attn\.q_bias/.test(e.message));
    const v1 = { ...all, 'layers.0.blocks.0.attn.relative_position_bias_table': { dtype: 'F32' as const, shape: [225, 1], data: new Float32Array(225) } };
    assert.throws(() => buildModel(spec, parse(v1)), (e: unknown) => e instanceof Ptq4vitError && /not used.*relative_position_bias_table/.test(e.message));
  });
});
