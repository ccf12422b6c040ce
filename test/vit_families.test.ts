/**
 * timm VisionTransformer families (issue 20): DeiT III (LayerScale, no_embed_class), DINOv2 with registers,
 * CLIP (pre_norm, QuickGELU, eps 1e-5), MAE-style avg pool + fc_norm.
 *  - parity with timm on the four fixtures: logits, every recorded point's inputs/outputs, ∂L/∂O = grad_out;
 *  - the same code on random models of other sizes, patches, heads and options: ∂L/∂O against finite
 *    differences, the FP32 ONNX trace (onnxruntime-node and -web) against the eager forward, and a W8A8
 *    calibration's integer graph against its simulation;
 *  - a quick W8A8 calibration of two families: the in-memory simulation, the quantized file read back and the
 *    integer ONNX graph under onnxruntime-node give the same predictions;
 *  - bad cards and checkpoints: one Ptq4vitError naming the field or tensor.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import ort from 'onnxruntime-node';
import { Ptq4vitError } from '../src/errors.js';
import { exportOnnx } from '../src/export/onnx.js';
import { computeGradients } from '../src/grad/gradients.js';
import { crossEntropyGrad, seededRandom } from '../src/grad/loss.js';
import { encodeSafetensors, SafeTensors, type TensorToWrite } from '../src/io/safetensors.js';
import { cardFromSpec, PRESETS, specFromCard, specFromPreset } from '../src/models/config.js';
import { buildModel } from '../src/models/load.js';
import type { Runner, VisionModel } from '../src/models/types.js';
import { calibrate } from '../src/quant/calibrate.js';
import { readQuantizedModel, saveQuantizedModel } from '../src/quant/file.js';
import { methodConfig } from '../src/quant/methods.js';
import { QuantRunner } from '../src/quant/runner.js';
import { openModel } from '../src/open.js';
import { ACTIVATION_NEGATIVE_REACH, activationValue } from '../src/tensor/activation.js';
import { linear as linearFp, matmul as matmulFp } from '../src/tensor/gemm.js';
import { fastKernels } from '../src/tensor/kernels.js';
import { RecordingRunner } from '../src/tensor/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { assertClose, fixturesDir, maxAbs, maxAbsDiff, scratchDir } from './helpers.js';
import { runOrtWeb } from './runtimes.js';

const FAMILIES = ['vit_layerscale_p16_224_fixture', 'vit_reg4_p14_224_fixture', 'vit_clip_p16_224_fixture', 'vit_avgpool_p16_224_fixture'];

function fixture(name: string) {
  const card = JSON.parse(fs.readFileSync(path.join(fixturesDir, `${name}.json`), 'utf8'));
  const weights = SafeTensors.read(path.join(fixturesDir, `${name}.safetensors`));
  const acts = SafeTensors.read(path.join(fixturesDir, `${name}.activations.safetensors`));
  return { card, weights, acts, spec: specFromCard(card, name) };
}

/** Our layouts → timm's recorded ones: the conv output is NCHW there, k enters matmul1 transposed. */
function toTimmLayout(point: string, which: 'out' | 'in0' | 'in1' | 'grad_out', t: Tensor): Float32Array {
  const transpose = (g: number, n: number, d: number) => {
    const out = new Float32Array(t.size);
    for (let i = 0; i < g; i++) for (let r = 0; r < n; r++) for (let c = 0; c < d; c++) out[(i * d + c) * n + r] = t.data[(i * n + r) * d + c];
    return out;
  };
  if (point === 'patch_embed.proj' && (which === 'out' || which === 'grad_out')) return transpose(t.shape[0], t.shape[1], t.shape[2]);
  if (point.endsWith('matmul1') && which === 'in1') return transpose(t.shape[0], t.shape[1], t.shape[2]);
  return t.data;
}

describe('timm ViT families: parity with the fixtures', () => {
  for (const name of FAMILIES) {
    test(`${name}: logits, every recorded point's in/out and ∂L/∂O match timm`, async () => {
      const { card, weights, acts, spec } = fixture(name);
      const model = buildModel(spec, weights);
      assert.deepEqual(model.quantPoints.map((p) => p.name), card.quant_points);
      const runner = new RecordingRunner();
      const images = acts.tensor('input');
      const logits = await model.forward(images, runner);
      assertClose(logits.data, acts.tensor('logits').data, `${name} logits`);
      for (const point of card.recorded_points as string[]) {
        const rec = runner.records.get(point);
        assert.ok(rec, `${point} was not called`);
        for (const which of ['out', 'in0', 'in1'] as const) {
          const key = `${point}.${which}`;
          if (!acts.has(key) || (point === 'patch_embed.proj' && which === 'in0')) continue;
          const ours = which === 'out' ? rec.output : rec.inputs[which === 'in0' ? 0 : 1];
          assertClose(toTimmLayout(point, which, ours), acts.tensor(key).data, `${name} ${key}`);
        }
      }
      // ∂L/∂O at every recorded point (one chunk of 2 images), against torch autograd.
      const grads = new Map<string, Tensor>();
      const loss = await computeGradients(model, images, Int32Array.from(card.labels), { loss: 'label', chunkSize: 2 }, (_chunk, point, g) => {
        grads.set(point, g);
      });
      assert.ok(Math.abs(loss - card.loss_value) < 1e-4 * (1 + card.loss_value), `loss ${loss} vs ${card.loss_value}`);
      for (const point of card.recorded_points as string[]) {
        const g = grads.get(point);
        assert.ok(g, `no gradient for ${point}`);
        const ref = acts.tensor(`${point}.grad_out`).data;
        const { max, at } = maxAbsDiff(toTimmLayout(point, 'grad_out', g), ref);
        assert.ok(max <= 1e-3 * maxAbs(ref), `${name} ${point}.grad_out: max abs error ${max} at ${at} exceeds ${1e-3 * maxAbs(ref)}`);
      }
      // The post-activation points carry their activation (the twin quantizer's negative range follows it).
      const fc2 = model.quantPoints.find((p) => p.name === 'blocks.0.mlp.fc2')!;
      assert.equal(fc2.input, 'post-gelu');
      assert.equal(fc2.activation, card.timm_kwargs.act_layer === 'quick_gelu' ? 'quick_gelu' : undefined);
      // A quantized file stores the spec as a card: it must read back to the same spec.
      assert.deepEqual(specFromCard(JSON.parse(JSON.stringify(cardFromSpec(spec))), name), spec);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Random models of other sizes and options

function gaussian(seed: number): () => number {
  const u = seededRandom(seed);
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

/** Every tensor the spec's model reads, random (weights ~ N(0, 1/fan_in), norms ≈ 1, the rest ~ 0.3·N). */
function randomWeights(spec: ReturnType<typeof specFromCard>, seed: number): SafeTensors {
  // Ask the model which tensors it needs: a source that answers any name with zeros of the asked shape.
  const shapes = new Map<string, readonly number[]>();
  const probe = { file: 'probe', names: () => [...shapes.keys()], tensor: (n: string, shape?: readonly number[]) => (shapes.set(n, shape!), Tensor.zeros(shape!)) };
  buildModel(spec, probe);
  const rand = gaussian(seed);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, shape] of shapes) {
    const size = shape.reduce((a, b) => a * b, 1);
    const fanIn = shape.length > 1 ? size / shape[0] : 1;
    const isNormWeight = /(norm\w*|norm_pre|fc_norm)\.weight$/.test(name);
    const std = shape.length > 1 && name.endsWith('.weight') ? 1 / Math.sqrt(fanIn) : 0.3;
    const data = Float32Array.from({ length: size }, () => (isNormWeight ? 1 : 0) + std * rand());
    tensors[name] = { dtype: 'F32', shape: [...shape], data };
  }
  return SafeTensors.parse(encodeSafetensors(tensors), `random-${seed}`);
}

/** Tiny variants exercising every optional part, none at the fixtures' sizes. */
const TINY_VARIANTS: Record<string, Record<string, unknown>> = {
  'reg2 no-cls max-pool gelu_tanh qk_norm': { img_size: 32, patch_size: 8, embed_dim: 24, depth: 2, num_heads: 2, reg_tokens: 2, class_token: false, global_pool: 'max', act_layer: 'gelu_tanh', qk_norm: true, no_embed_class: true, init_values: 0.5 },
  'avgmax fc_norm=False final_norm pre_norm quick_gelu': { img_size: 24, patch_size: 6, embed_dim: 20, depth: 2, num_heads: 4, global_pool: 'avgmax', fc_norm: false, pre_norm: true, act_layer: 'quick_gelu', proj_bias: false },
  'map (SigLIP attention pooling) gelu_tanh': { img_size: 32, patch_size: 8, embed_dim: 16, depth: 1, num_heads: 2, class_token: false, global_pool: 'map', act_layer: 'gelu_tanh' },
  'token scale norms, final_norm=False, qkv_bias=False': { img_size: 28, patch_size: 7, embed_dim: 18, depth: 1, num_heads: 3, scale_attn_norm: true, scale_mlp_norm: true, final_norm: false, qkv_bias: false, mlp_ratio: 2 },
};

function tinyModel(label: string, seed: number): VisionModel {
  const card = { name: `tiny ${label}`, timm_class: 'VisionTransformer', timm_kwargs: { num_classes: 5, ...TINY_VARIANTS[label] }, layer_norm_eps: 1e-5 };
  const spec = specFromCard(card, card.name);
  assert.deepEqual(specFromCard(JSON.parse(JSON.stringify(cardFromSpec(spec))), card.name), spec, `${label}: card round trip`);
  return buildModel(spec, randomWeights(spec, seed));
}

function perturbing(point: string, dir: Float32Array, step: number): Runner {
  const bump = (p: string, y: Tensor) => (p === point ? new Tensor(Float32Array.from(y.data, (v, i) => v + step * dir[i]), y.shape) : y);
  return { linear: async (p, x, w, b) => bump(p, await linearFp(x, w, b)), matmul: async (p, a, b, t) => bump(p, await matmulFp(a, b, t)), kernels: fastKernels };
}

describe('timm ViT families: other sizes and options (random weights)', () => {
  const labels = Int32Array.of(1, 3);
  for (const [i, label] of Object.keys(TINY_VARIANTS).entries()) {
    test(`${label}: ∂L/∂O at every point matches finite differences; the ONNX trace matches the eager forward`, async () => {
      const model = tinyModel(label, 50 + i);
      const { imgSize } = model.spec.arch;
      const rand = gaussian(60 + i);
      const images = new Tensor(Float32Array.from({ length: 2 * 3 * imgSize * imgSize }, () => rand()), [2, 3, imgSize, imgSize]);
      const grads = new Map<string, Tensor>();
      await computeGradients(model, images, labels, { loss: 'label', chunkSize: 2 }, (_c, point, g) => {
        grads.set(point, g);
      });
      assert.deepEqual([...grads.keys()].sort(), model.quantPoints.map((p) => p.name).sort());
      const lossAt = async (runner: Runner) => crossEntropyGrad(await model.forward(images, runner), labels, 2).loss;
      for (const [point, g] of grads) {
        // Along the gradient direction (scaled to max 1), Richardson-extrapolated central differences.
        const m = maxAbs(g.data);
        assert.ok(m > 0, `${label} ${point}: ∂L/∂O is zero`);
        const dir = Float32Array.from(g.data, (v) => v / m);
        // A small step: max pooling is piecewise linear, and a larger step can move some channel's argmax.
        const h = 2e-3;
        const d = async (s: number) => ((await lossAt(perturbing(point, dir, s))) - (await lossAt(perturbing(point, dir, -s)))) / (2 * s);
        const fd = (4 * (await d(h)) - (await d(2 * h))) / 3;
        let analytic = 0, scale = 0;
        for (let j = 0; j < dir.length; j++) {
          analytic += g.data[j] * dir[j];
          scale += Math.abs(g.data[j] * dir[j]);
        }
        assert.ok(Math.abs(fd - analytic) <= 2e-3 * scale, `${label} ${point}: analytic ${analytic} vs FD ${fd}`);
      }
      const bytes = await exportOnnx(model);
      const session = await ort.InferenceSession.create(bytes);
      const y = (await session.run({ pixel_values: new ort.Tensor('float32', images.data, [...images.shape]) })).logits;
      const eager = (await model.forward(images)).data;
      assertClose(y.data as Float32Array, eager, `${label}: ONNX vs eager`);
      // onnxruntime-web (wasm) runs the same nodes (Tanh / Sigmoid activations, ReduceMax / ReduceMean pools).
      assertClose((await runOrtWeb(bytes, { data: images.data, dims: [...images.shape] })).data, eager, `${label}: onnxruntime-web vs eager`);
      // Every part quantizes and exports as integers: a quick W8A8 calibration, simulation = integer graph.
      const points = await calibrate(model, images, labels, methodConfig('ptq4vit', { weightBits: 8, activationBits: 8, n: 4, rounds: 1 }));
      const sim = await model.forward(images, new QuantRunner(points));
      const intSession = await ort.InferenceSession.create(await exportOnnx(model, { quant: points }));
      const int = (await intSession.run({ pixel_values: new ort.Tensor('float32', images.data, [...images.shape]) })).logits.data as Float32Array;
      assertClose(int, sim.data, `${label}: integer graph vs simulation`, 1e-3);
    });
  }
});

test('attention pooling (global_pool map) equals a hand-written AttentionPoolLatent', async () => {
  const card = { timm_class: 'VisionTransformer', timm_kwargs: { img_size: 24, patch_size: 6, embed_dim: 12, depth: 1, num_heads: 3, num_classes: 4, class_token: false, global_pool: 'map', act_layer: 'gelu_tanh', mlp_ratio: 2 } };
  const spec = specFromCard(card, 'map');
  const w = randomWeights(spec, 77);
  const model = buildModel(spec, w);
  const rand = gaussian(78);
  const images = new Tensor(Float32Array.from({ length: 2 * 3 * 24 * 24 }, () => rand()), [2, 3, 24, 24]);
  const runner = new RecordingRunner();
  await model.forward(images, runner);
  const tokens = runner.records.get('attn_pool.kv')!.inputs[0]; // the final norm's output [B, N, D]
  const pooled = runner.records.get('head')!.inputs[0]; // [B, D]
  const [B, N, D] = tokens.shape, H = 3, d = D / H;
  const t = (n: string) => w.tensor(n).data;
  const lin = (x: ArrayLike<number>, name: string, out: number): number[] =>
    Array.from({ length: out }, (_, o) => Array.from(x).reduce((acc, xi, i) => acc + xi * t(`${name}.weight`)[o * x.length + i], t(`${name}.bias`)[o]));
  const layerNorm = (x: number[], name: string): number[] => {
    const mean = x.reduce((a, b) => a + b, 0) / x.length;
    const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length;
    return x.map((v, i) => ((v - mean) / Math.sqrt(variance + 1e-6)) * t(`${name}.weight`)[i] + t(`${name}.bias`)[i]);
  };
  const q = lin(t('attn_pool.latent'), 'attn_pool.q', D);
  for (let b = 0; b < B; b++) {
    const kv = Array.from({ length: N }, (_, n) => lin(tokens.data.subarray((b * N + n) * D, (b * N + n + 1) * D), 'attn_pool.kv', 2 * D));
    const context: number[] = [];
    for (let h = 0; h < H; h++) {
      const scores = kv.map((row) => row.slice(h * d, (h + 1) * d).reduce((acc, kj, j) => acc + kj * q[h * d + j], 0) / Math.sqrt(d));
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, c) => a + c, 0);
      for (let j = 0; j < d; j++) context.push(kv.reduce((acc, row, n) => acc + (e[n] / z) * row[D + h * d + j], 0));
    }
    const y = lin(context, 'attn_pool.proj', D);
    const hidden = lin(layerNorm(y, 'attn_pool.norm'), 'attn_pool.mlp.fc1', 2 * D).map((v) => activationValue('gelu_tanh', v));
    const expected = lin(hidden, 'attn_pool.mlp.fc2', D).map((v, i) => v + y[i]);
    assertClose(pooled.data.subarray(b * D, (b + 1) * D), expected, `attention pool, image ${b}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Quantize → file → eval → integer ONNX

const scratch = scratchDir('vit-families');

function argmaxRows(logits: ArrayLike<number>, classes: number): number[] {
  return Array.from({ length: logits.length / classes }, (_, r) => {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[r * classes + c] > logits[r * classes + best]) best = c;
    return best;
  });
}

describe('timm ViT families: W8A8 quantize → file → eval → integer ONNX', () => {
  for (const name of ['vit_layerscale_p16_224_fixture', 'vit_clip_p16_224_fixture']) {
    test(`${name}: simulation, file and integer graph agree`, async () => {
      const { acts, spec, weights } = fixture(name);
      const model = buildModel(spec, weights);
      // Calibration: the two fixture images and two mixes of them (the Δs only need to be plausible).
      const input = acts.tensor('input');
      const per = input.size / 2;
      const images = new Tensor(new Float32Array(4 * per), [4, ...input.shape.slice(1)]);
      images.data.set(input.data);
      for (let i = 0; i < per; i++) {
        images.data[2 * per + i] = 0.5 * (input.data[i] + input.data[per + i]);
        images.data[3 * per + i] = 0.8 * input.data[i] - 0.4 * input.data[per + i];
      }
      const points = await calibrate(model, images, Int32Array.of(0, 1, 2, 3), methodConfig('ptq4vit', { weightBits: 8, activationBits: 8, n: 4, rounds: 1 }));
      const fc2 = points.find((p) => p.point === 'blocks.0.mlp.fc2')!;
      assert.equal(fc2.kind, 'linear');
      if (fc2.kind === 'linear') {
        assert.equal(fc2.input?.kind, 'twin-gelu');
        // R1 reaches the activation's true minimum (QuickGELU −0.16361, GELU −0.16997), to within one Δ_R2 doubling.
        const reach = fc2.input?.kind === 'twin-gelu' ? 128 * fc2.input.deltaNeg : 0;
        const min = ACTIVATION_NEGATIVE_REACH[(spec.arch.family !== 'swin' && spec.arch.activation) || 'gelu'];
        assert.ok(reach >= min && reach < 2 * min, `${name}: R1 reaches −${reach}, activation minimum −${min}`);
      }
      const sim = await model.forward(images, new QuantRunner(points));
      // The file, read back.
      const file = path.join(scratch.next(), 'q.safetensors');
      saveQuantizedModel(file, weights, { spec, points, provenance: { tool: 'ptq4vit', method: 'ptq4vit', w_bits: 8, a_bits: 8 } });
      const read = readQuantizedModel(SafeTensors.read(file));
      const fromFile = await read.model.forward(images, new QuantRunner(read.points));
      assert.deepEqual(Array.from(fromFile.data), Array.from(sim.data), 'the file evaluates exactly as the calibration in memory');
      // The integer graph.
      const bytes = await exportOnnx(read.model, { quant: read.points });
      const session = await ort.InferenceSession.create(bytes);
      const int = (await session.run({ pixel_values: new ort.Tensor('float32', images.data, [...images.shape]) })).logits.data as Float32Array;
      const classes = spec.arch.numClasses;
      assert.deepEqual(argmaxRows(int, classes), argmaxRows(sim.data, classes), 'integer graph and simulation predict the same classes');
      assertClose(int, sim.data, `${name}: integer graph vs simulation`, 1e-3);
      const web = (await runOrtWeb(bytes, { data: images.data, dims: [...images.shape] })).data;
      assert.deepEqual(argmaxRows(web, classes), argmaxRows(sim.data, classes), 'onnxruntime-web runs the integer graph to the same classes');
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Presets and bad input

describe('timm ViT families: presets and bad input', () => {
  test('presets of the families build with timm\'s kwargs and preprocessing', () => {
    for (const name of ['deit3_small_patch16_224', 'vit_small_patch14_dinov2', 'vit_base_patch14_reg4_dinov2', 'vit_base_patch16_clip_224', 'vit_base_patch16_clip_quickgelu_224', 'vit_base_patch16_siglip_224']) {
      assert.ok(PRESETS[name], `${name} is a preset`);
      const spec = specFromPreset(name);
      assert.deepEqual(specFromCard(JSON.parse(JSON.stringify(cardFromSpec(spec))), name), spec, `${name}: card round trip`);
    }
    const dino = specFromPreset('vit_small_patch14_dinov2').arch;
    assert.deepEqual([dino.imgSize, dino.patchSize, dino.family !== 'swin' && dino.initValues], [518, 14, 1e-5]);
    const clip = specFromPreset('vit_base_patch16_clip_quickgelu_224');
    assert.ok(clip.arch.family !== 'swin' && clip.arch.activation === 'quick_gelu' && clip.arch.normEps === 1e-5 && clip.arch.preNorm);
    assert.deepEqual(clip.preprocess.mean, [0.48145466, 0.4578275, 0.40821073]);
  });

  test('timm hub folders of the family presets open with model_args and match timm', async () => {
    const cases: [string, string, Record<string, unknown>][] = [
      ['vit_layerscale_p16_224_fixture', 'deit3_small_patch16_224', { embed_dim: 48, depth: 2, num_heads: 3, init_values: 0.1 }],
      ['vit_reg4_p14_224_fixture', 'vit_small_patch14_reg4_dinov2', { img_size: 224, embed_dim: 48, depth: 2, num_heads: 3, init_values: 0.1 }],
      // The preset brings what model_args cannot say: QuickGELU and nn.LayerNorm's eps 1e-5.
      ['vit_clip_p16_224_fixture', 'vit_base_patch16_clip_quickgelu_224', { embed_dim: 48, depth: 2, num_heads: 3 }],
    ];
    for (const [name, architecture, modelArgs] of cases) {
      const dir = scratch.next();
      fs.copyFileSync(path.join(fixturesDir, `${name}.safetensors`), path.join(dir, 'model.safetensors'));
      const pretrained = { input_size: [3, 224, 224], interpolation: 'bicubic', crop_pct: 1.0, crop_mode: 'center' };
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architecture, num_classes: 16, model_args: modelArgs, pretrained_cfg: pretrained }));
      const { model } = openModel({ weights: dir });
      const acts = SafeTensors.read(path.join(fixturesDir, `${name}.activations.safetensors`));
      assertClose((await model.forward(acts.tensor('input'))).data, acts.tensor('logits').data, `${architecture} hub folder (${name})`);
    }
  });

  const base = { patch_size: 16, embed_dim: 48, depth: 2, num_heads: 3, img_size: 224, num_classes: 16 };
  const refuses = (kwargs: Record<string, unknown>, pattern: RegExp, extra: Record<string, unknown> = {}) =>
    assert.throws(() => specFromCard({ timm_class: 'VisionTransformer', timm_kwargs: { ...base, ...kwargs }, ...extra }, 'card.json'), (e: unknown) => e instanceof Ptq4vitError && pattern.test(e.message) && !e.message.includes('\n'));

  test('unsupported variants and inconsistent kwargs: one line naming the field', () => {
    refuses({ global_pool: 'map' }, /card\.json: timm_kwargs\.global_pool "map" is supported without prefix tokens only/);
    refuses({ global_pool: 'prr', class_token: false }, /timm_kwargs\.global_pool = "prr" is not supported \(AttentionPoolPrr/);
    refuses({ global_pool: '' }, /timm_kwargs\.global_pool = "" is not supported/);
    refuses({ global_pool: 'token', class_token: false }, /global_pool "token" needs the class token/);
    refuses({ act_layer: 'swiglu' }, /timm_kwargs\.act_layer = "swiglu" is not supported \(SwiGLU/);
    refuses({ act_layer: 'relu6' }, /timm_kwargs\.act_layer must be one of "gelu", "gelu_tanh", "quick_gelu"/);
    refuses({ reg_tokens: -1 }, /timm_kwargs\.reg_tokens must be a non-negative integer/);
    refuses({ fc_norm: 'yes' }, /timm_kwargs\.fc_norm must be true, false or null/);
    refuses({ init_values: 'small' }, /timm_kwargs\.init_values must be a number or null/);
    refuses({ pos_embed: 'none' }, /timm_kwargs\.pos_embed = "none" is not supported/);
    refuses({ dynamic_img_size: true }, /timm_kwargs\.dynamic_img_size = true is not supported/);
    refuses({ mlp_layer: 'SwiGLUPacked' }, /timm_kwargs\.mlp_layer is not supported/);
    refuses({}, /layer_norm_eps must be a number in \(0, 1\)/, { layer_norm_eps: 0 });
    assert.throws(() => specFromCard({ timm_class: 'VisionTransformerDistilled', timm_kwargs: { ...base, init_values: 0.1 } }, 'd.json'), /d\.json: timm_kwargs\.init_values is not supported/);
  });

  test('a checkpoint that does not fit the variant: one line naming the tensor', () => {
    const { weights, card } = fixture('vit_reg4_p14_224_fixture');
    const noRegisters = { ...card, timm_kwargs: { ...card.timm_kwargs, reg_tokens: 5 } };
    assert.throws(() => buildModel(specFromCard(noRegisters, 'reg'), weights), /'reg_token' has shape \[1, 4, 48\], expected \[1, 5, 48\]/);
    const ls = fixture('vit_layerscale_p16_224_fixture');
    // LayerScale gammas of the wrong width, and LayerScale tensors the card does not ask for.
    const tensors: Record<string, TensorToWrite> = {};
    for (const n of ls.weights.names()) tensors[n] = { dtype: 'F32', shape: [...ls.weights.tensor(n).shape], data: ls.weights.tensor(n).data };
    tensors['blocks.1.ls2.gamma'] = { dtype: 'F32', shape: [24], data: new Float32Array(24) };
    const bad = SafeTensors.parse(encodeSafetensors(tensors), 'bad.safetensors');
    assert.throws(() => buildModel(ls.spec, bad), /bad\.safetensors.*'blocks\.1\.ls2\.gamma' has shape \[24\], expected \[48\]/);
    const plain = { ...ls.card, timm_kwargs: { ...ls.card.timm_kwargs, init_values: null } };
    assert.throws(() => buildModel(specFromCard(plain, 'plain'), ls.weights), /not used by .*ls1\.gamma/);
    // reg_tokens asked for, but no reg_token tensor in the checkpoint.
    const clip = fixture('vit_clip_p16_224_fixture');
    const withRegisters = { ...clip.card, timm_kwargs: { ...clip.card.timm_kwargs, reg_tokens: 4 } };
    assert.throws(() => buildModel(specFromCard(withRegisters, 'clip'), clip.weights), /'reg_token' is missing/);
  });
});
