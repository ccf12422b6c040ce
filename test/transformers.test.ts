/**
 * Hugging Face transformers folders (issue 21 items 1–2) and position-embedding resampling (issue 20 item 5):
 *  - the public fixtures ../shared/fixtures/hf/{vit,deit,swin,dinov2}: our preprocessing of the README's JPEGs is
 *    the processor's `input`, the mapped model's logits are transformers' `logits`;
 *  - the same mapping on random models of other sizes (patch, width, heads, depth, windows, classes): a model
 *    written under transformers' names equals the timm-named model it came from, bit for bit;
 *  - torch's bicubic interpolation (plain and antialiased) by its properties and against our PIL-exact resize;
 *  - bad folders end with one line naming the file and field;
 *  - quantize → export --hf-dir → transformers.js pipeline('image-classification') offline, for vit and dinov2;
 *  - --img-size: timm's resample_abs_pos_embed, recorded in the quantized file.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import ort from 'onnxruntime-node';
import { decodeImage } from '../src/data/decode.js';
import { openImageFolder } from '../src/data/folder.js';
import { resizeRgb } from '../src/data/resize.js';
import { evalTransform } from '../src/data/transform.js';
import { Ptq4vitError } from '../src/errors.js';
import { wholeModelGraph } from '../src/export/graph.js';
import { HF_FILES } from '../src/export/hfdir.js';
import { SafeTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { cardFromSpec, specFromCard } from '../src/models/config.js';
import { checkSpecStorable, specFromStoredCard } from '../src/quant/file.js';
import { buildModel } from '../src/models/load.js';
import { interpolateBicubic, resampleAbsPosEmbed, withInputSize } from '../src/models/posembed.js';
import { dinov2PositionEmbeddings } from '../src/models/transformers.js';
import type { TensorSource } from '../src/models/weights.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { encodeModel, OnnxType } from '../src/onnx/proto.js';
import { openModel } from '../src/open.js';
import { clsAndPatchMeanOp } from '../src/tensor/layout.js';
import { RecordingRunner } from '../src/tensor/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { assertClose, maxAbs, maxAbsDiff, runCli, scratchDir, sharedDir, showRun } from './helpers.js';
import { argmaxRows, runHfProcessor, runTransformersJs } from './runtimes.js';

const hfDir = path.join(sharedDir, 'fixtures', 'hf');
const TYPES = ['vit', 'deit', 'swin', 'dinov2'] as const;
const scratch = scratchDir('transformers');

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

function randomTensor(shape: number[], seed: number, scale = 1): Tensor {
  const next = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(Float32Array.from({ length: n }, () => next() * scale), shape);
}

const readme = (type: string) => JSON.parse(fs.readFileSync(path.join(hfDir, type, 'README.json'), 'utf8')) as { images: string[] };
const expectError = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (e: unknown) => e instanceof Ptq4vitError && pattern.test(e.message) && !e.message.includes('\n'));

describe('transformers fixtures: preprocessing and logits', () => {
  for (const type of TYPES) {
    test(`${type}: processor input bit for bit, logits within 1e-4`, async () => {
      const dir = path.join(hfDir, type);
      const { model } = openModel({ weights: dir });
      const expected = SafeTensors.read(path.join(dir, 'expected.safetensors'));
      const input = expected.tensor('input');
      const S = model.spec.preprocess.inputSize;
      const per = 3 * S * S;
      const images = readme(type).images;
      assert.equal(input.shape[0], images.length);
      for (let i = 0; i < images.length; i++) {
        const ours = evalTransform(await decodeImage(path.join(sharedDir, '..', images[i])), model.spec.preprocess);
        // transformers' numpy arithmetic (float64 rescale, float32 normalize) reproduced exactly: no difference at all.
        assert.equal(maxAbsDiff(ours, input.data.subarray(i * per, (i + 1) * per)).max, 0, `${images[i]}: preprocessing`);
      }
      const logits = await model.forward(input);
      assert.deepEqual(logits.shape, expected.tensor('logits').shape);
      assertClose(logits.data, expected.tensor('logits').data, `${type} logits`, 1e-4);
      assert.deepEqual(model.spec.labelNames?.slice(0, 3), ['airplane', 'automobile', 'bird'], 'id2label → class names');
      // A quantized file stores the spec as a card (with the folder's config and processor) and reads it back.
      checkSpecStorable(model.spec);
      assert.deepEqual(specFromStoredCard(JSON.parse(JSON.stringify(cardFromSpec(model.spec))), 'card'), model.spec);
    });
  }

  test('dinov2: the position rule matters — size-based or antialiased interpolation misses the logits', async () => {
    const dir = path.join(hfDir, 'dinov2');
    const loaded = openModel({ weights: dir });
    const expected = SafeTensors.read(path.join(dir, 'expected.safetensors'));
    const stored = SafeTensors.read(path.join(dir, 'model.safetensors')).tensor('dinov2.embeddings.position_embeddings');
    const D = stored.shape[2];
    for (const rule of [{ antialias: false }, { antialias: true }] as const) {
      // The same model with the patch grid resampled by `size` (in/out scale) instead of transformers' scale_factor.
      const patches = new Tensor(stored.data.slice(D), [37 * 37, D]);
      const other = interpolateBicubic(patches, [37, 37], { size: [16, 16], ...rule });
      const table = new Float32Array((256 + 1) * D);
      table.set(stored.data.subarray(0, D));
      table.set(other.data, D);
      const weights: TensorSource = { file: 'x', names: () => loaded.weights.names(), tensor: (n, s) => (n === 'pos_embed' ? new Tensor(table, [1, 257, D]) : loaded.weights.tensor(n, s)) };
      const logits = await buildModel(loaded.model.spec, weights).forward(expected.tensor('input'));
      const want = expected.tensor('logits').data;
      assert.ok(maxAbsDiff(logits.data, want).max > 1e-4 * (1 + maxAbs(want)), `rule ${JSON.stringify(rule)} should not reproduce transformers`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Random models of other sizes: timm names → transformers names (written here, independently of the mapping).

/** A TensorSource inventing a seeded random tensor for every name the model asks for (and remembering it). */
function randomTimmSource(): { source: TensorSource; made: Map<string, Tensor> } {
  const made = new Map<string, Tensor>();
  let seed = 1;
  const source: TensorSource = {
    file: 'random',
    names: () => [...made.keys()],
    tensor(name, shape) {
      if (!made.has(name)) {
        const s = shape ?? [1];
        const fanIn = s.length > 1 ? s.slice(1).reduce((a, b) => a * b, 1) : 1;
        const t = randomTensor([...s], seed++, s.length > 1 ? 1.7 / Math.sqrt(fanIn) : 0.5);
        if (/norm\d?\.weight$|gamma$/.test(name)) for (let i = 0; i < t.size; i++) t.data[i] = 1 + 0.2 * t.data[i];
        made.set(name, t);
      }
      return made.get(name)!;
    },
  };
  return { source, made };
}

function splitRows(t: Tensor, parts: number): Tensor[] {
  const rows = t.shape[0] / parts, per = t.size / parts;
  return Array.from({ length: parts }, (_, i) => new Tensor(t.data.slice(i * per, (i + 1) * per), [rows, ...t.shape.slice(1)]));
}

/** timm name → transformers name(s), per model type: the inverse of what transformers.ts reads. */
function toTransformers(type: string, made: Map<string, Tensor>): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  const P = type === 'swin' ? 'swin' : type;
  const dinov2 = type.startsWith('dinov2');
  const registers = type === 'dinov2_with_registers';
  for (const [name, t] of made) {
    let m: RegExpMatchArray | null;
    if ((m = name.match(/^(blocks|layers\.\d+\.blocks)\.(\d+)\.attn\.qkv\.(weight|bias)$/))) {
      const base = type === 'swin' ? `swin.encoder.${m[1]}.${m[2]}.attention.self` : `${P}.encoder.layer.${m[2]}.attention.attention`;
      splitRows(t, 3).forEach((part, i) => (out[`${base}.${['query', 'key', 'value'][i]}.${m![3]}`] = part));
      continue;
    }
    const vitBlock: [RegExp, string][] = [
      [/^blocks\.(\d+)\.norm1\./, dinov2 ? 'norm1.' : 'layernorm_before.'],
      [/^blocks\.(\d+)\.norm2\./, dinov2 ? 'norm2.' : 'layernorm_after.'],
      [/^blocks\.(\d+)\.attn\.proj\./, 'attention.output.dense.'],
      [/^blocks\.(\d+)\.mlp\.fc1\./, dinov2 ? 'mlp.fc1.' : 'intermediate.dense.'],
      [/^blocks\.(\d+)\.mlp\.fc2\./, dinov2 ? 'mlp.fc2.' : 'output.dense.'],
      [/^blocks\.(\d+)\.ls1\.gamma$/, 'layer_scale1.lambda1'],
      [/^blocks\.(\d+)\.ls2\.gamma$/, 'layer_scale2.lambda1'],
    ];
    const swinBlock: [RegExp, string][] = [
      [/^layers\.(\d+\.blocks\.\d+)\.norm1\./, 'layernorm_before.'],
      [/^layers\.(\d+\.blocks\.\d+)\.norm2\./, 'layernorm_after.'],
      [/^layers\.(\d+\.blocks\.\d+)\.attn\.proj\./, 'attention.output.dense.'],
      [/^layers\.(\d+\.blocks\.\d+)\.attn\.relative_position_bias_table$/, 'attention.self.relative_position_bias_table'],
      [/^layers\.(\d+\.blocks\.\d+)\.mlp\.fc1\./, 'intermediate.dense.'],
      [/^layers\.(\d+\.blocks\.\d+)\.mlp\.fc2\./, 'output.dense.'],
    ];
    const rule = (type === 'swin' ? swinBlock : vitBlock).find(([re]) => re.test(name));
    if (rule) {
      const [re, to] = rule;
      const idx = name.match(re)![1];
      out[name.replace(re, type === 'swin' ? `swin.encoder.layers.${idx}.${to}` : `${P}.encoder.layer.${idx}.${to}`)] = t;
      continue;
    }
    if ((m = name.match(/^layers\.(\d+)\.downsample\.(.*)$/))) {
      out[`swin.encoder.layers.${Number(m[1]) - 1}.downsample.${m[2]}`] = t; // transformers: the end of the previous stage
      continue;
    }
    const fixed: Record<string, string> = type === 'swin'
      ? { 'patch_embed.proj.weight': 'swin.embeddings.patch_embeddings.projection.weight', 'patch_embed.proj.bias': 'swin.embeddings.patch_embeddings.projection.bias', 'patch_embed.norm.weight': 'swin.embeddings.norm.weight', 'patch_embed.norm.bias': 'swin.embeddings.norm.bias', 'norm.weight': 'swin.layernorm.weight', 'norm.bias': 'swin.layernorm.bias', 'head.fc.weight': 'classifier.weight', 'head.fc.bias': 'classifier.bias' }
      : {
          cls_token: `${P}.embeddings.cls_token`,
          dist_token: `${P}.embeddings.distillation_token`,
          pos_embed: `${P}.embeddings.position_embeddings`,
          'patch_embed.proj.weight': `${P}.embeddings.patch_embeddings.projection.weight`,
          'patch_embed.proj.bias': `${P}.embeddings.patch_embeddings.projection.bias`,
          'norm.weight': `${P}.layernorm.weight`,
          'norm.bias': `${P}.layernorm.bias`,
          'head.weight': type === 'deit' ? 'cls_classifier.weight' : 'classifier.weight',
          'head.bias': type === 'deit' ? 'cls_classifier.bias' : 'classifier.bias',
          'head_dist.weight': 'distillation_classifier.weight',
          'head_dist.bias': 'distillation_classifier.bias',
        };
    if (registers && (name === 'cls_token' || name === 'pos_embed' || name === 'reg_token')) continue; // below
    assert.ok(fixed[name], `no transformers name for ${name}`);
    out[fixed[name]] = t;
  }
  const D = made.get('cls_token')?.shape[2] ?? 0;
  if (dinov2) out[`${P}.embeddings.mask_token`] = randomTensor([1, D], 99);
  if (registers) {
    // transformers adds a position to cls (timm's no_embed_class folds it into cls_token): split it back off.
    const cls = made.get('cls_token')!, pos = made.get('pos_embed')!, posCls = randomTensor([D], 98);
    out[`${P}.embeddings.cls_token`] = new Tensor(Float32Array.from(cls.data, (v, i) => v - posCls.data[i]), [1, 1, D]);
    out[`${P}.embeddings.position_embeddings`] = new Tensor(Float32Array.from([...posCls.data, ...pos.data]), [1, pos.shape[1] + 1, D]);
    out[`${P}.embeddings.register_tokens`] = made.get('reg_token')!;
  }
  return out;
}

function writeFolder(dir: string, config: Record<string, unknown>, processor: Record<string, unknown>, tensors: Record<string, Tensor | TensorToWrite>): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  if (Object.keys(processor).length > 0) fs.writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify(processor, null, 2));
  const st: Record<string, TensorToWrite> = {};
  for (const [k, t] of Object.entries(tensors)) st[k] = t instanceof Tensor ? { dtype: 'F32', shape: t.shape, data: t.data } : t;
  writeSafetensors(path.join(dir, 'model.safetensors'), st, { format: 'pt' });
  return dir;
}

const labels = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [String(i), `class ${i}`]));
const vitProcessor = (S: number) => ({ image_processor_type: 'ViTImageProcessor', do_resize: true, size: { height: S, width: S }, resample: 2, do_rescale: true, rescale_factor: 1 / 255, do_normalize: true, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5] });

/** Another geometry per type: the timm card, the transformers config.json describing the same model. */
const RANDOM_MODELS = {
  vit: {
    card: { timm_class: 'VisionTransformer', timm_kwargs: { img_size: 40, patch_size: 8, embed_dim: 24, depth: 3, num_heads: 2, mlp_ratio: 3, num_classes: 7 }, layer_norm_eps: 1e-12 },
    config: { model_type: 'vit', image_size: 40, patch_size: 8, hidden_size: 24, num_hidden_layers: 3, num_attention_heads: 2, intermediate_size: 72, layer_norm_eps: 1e-12, hidden_act: 'gelu', qkv_bias: true, id2label: labels(7) },
  },
  deit: {
    card: { timm_class: 'VisionTransformerDistilled', timm_kwargs: { img_size: 36, patch_size: 12, embed_dim: 32, depth: 2, num_heads: 4, mlp_ratio: 2, num_classes: 5 }, layer_norm_eps: 1e-12 },
    config: { model_type: 'deit', image_size: 36, patch_size: 12, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, hidden_act: 'gelu', id2label: labels(5) },
  },
  dinov2: {
    card: { timm_class: 'VisionTransformer', timm_kwargs: { img_size: 30, patch_size: 6, embed_dim: 16, depth: 2, num_heads: 2, mlp_ratio: 2, num_classes: 3, init_values: 1 }, layer_norm_eps: 1e-6, head_pool: 'token+patch-mean' },
    config: { model_type: 'dinov2', image_size: 30, patch_size: 6, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, mlp_ratio: 2, layer_norm_eps: 1e-6, hidden_act: 'gelu', use_swiglu_ffn: false, id2label: labels(3) },
  },
  dinov2_with_registers: {
    card: { timm_class: 'VisionTransformer', timm_kwargs: { img_size: 28, patch_size: 7, embed_dim: 12, depth: 2, num_heads: 3, mlp_ratio: 2, num_classes: 4, init_values: 1, reg_tokens: 2, no_embed_class: true }, head_pool: 'token+patch-mean' },
    config: { model_type: 'dinov2_with_registers', image_size: 28, patch_size: 7, hidden_size: 12, num_hidden_layers: 2, num_attention_heads: 3, mlp_ratio: 2, num_register_tokens: 2, layer_norm_eps: 1e-6, hidden_act: 'gelu', id2label: labels(4) },
  },
  swin: {
    // 16×16 → 8×8 → 4×4 patch grids: shifted windows of 4 in the first two stages, one clamped unshifted window in the last.
    card: { timm_class: 'SwinTransformer', timm_kwargs: { img_size: 32, patch_size: 2, embed_dim: 8, depths: [2, 2, 2], num_heads: [1, 2, 4], window_size: 4, mlp_ratio: 2, num_classes: 6 } },
    config: { model_type: 'swin', image_size: 32, patch_size: 2, embed_dim: 8, depths: [2, 2, 2], num_heads: [1, 2, 4], window_size: 4, mlp_ratio: 2, hidden_size: 32, layer_norm_eps: 1e-5, hidden_act: 'gelu', use_absolute_embeddings: false, id2label: labels(6) },
  },
} as const;

describe('the mapping on random models of other sizes (patch, width, heads, depth, windows, classes)', () => {
  for (const [type, { card, config }] of Object.entries(RANDOM_MODELS)) {
    test(`${type}: the transformers-named folder is the timm-named model, bit for bit`, async () => {
      const S = card.timm_kwargs.img_size;
      const spec = specFromCard({ ...card, input_size: [3, S, S] }, `${type} card`);
      const { source, made } = randomTimmSource();
      const timm = buildModel(spec, source);
      const dir = writeFolder(path.join(scratch.next(), type), config, vitProcessor(S), toTransformers(type, made));
      const { model } = openModel({ weights: dir });
      const x = randomTensor([2, 3, S, S], 7);
      const [want, got] = [await timm.forward(x), await model.forward(x)];
      assert.ok(maxAbs(want.data) > 0.1, 'logits are not trivially small');
      // Bit for bit, except where transformers' cls + pos_cls is folded into one tensor (float rounding of the split).
      if (type === 'dinov2_with_registers') assertClose(got.data, want.data, type, 1e-5);
      else assert.deepEqual(Array.from(got.data), Array.from(want.data));
      assert.equal(model.quantPoints.length, timm.quantPoints.length);
    });
  }
});

// ---------------------------------------------------------------------------------------------

describe('backbones: a transformers folder without its classifier (Dinov2Model, ViTModel, SwinModel)', () => {
  /** The fixture folder's tensors without the classifier, optionally saved as the bare encoder (no `dinov2.` prefix). */
  const backboneFolder = (type: string, { bare }: { bare: boolean }) => {
    const src = path.join(hfDir, type);
    const st = SafeTensors.read(path.join(src, 'model.safetensors'));
    const prefix = `${type}.`;
    const tensors = Object.fromEntries(st.names().filter((n) => !n.startsWith('classifier.')).map((n) => [bare ? n.slice(prefix.length) : n, st.tensor(n)]));
    const config = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
    const processor = JSON.parse(fs.readFileSync(path.join(src, 'preprocessor_config.json'), 'utf8')) as Record<string, unknown>;
    return writeFolder(path.join(scratch.next(), type), { ...config, architectures: ['Dinov2Model'] }, processor, tensors);
  };

  test('dinov2: num_classes 0, the embedding = the classifier model\'s cls half of its head input, with or without the model prefix', async () => {
    const input = SafeTensors.read(path.join(hfDir, 'dinov2', 'expected.safetensors')).tensor('input');
    const classifier = openModel({ weights: path.join(hfDir, 'dinov2') }).model;
    const recorder = new RecordingRunner();
    await classifier.forward(input, recorder);
    const headInput = recorder.records.get('head')!.inputs[0]; // [B, 2D]: cat(cls, mean of patches)
    const D = headInput.shape[1] / 2;
    for (const bare of [false, true]) {
      const { model } = openModel({ weights: backboneFolder('dinov2', { bare }) });
      assert.equal(model.spec.arch.numClasses, 0);
      assert.equal(model.spec.labelNames, undefined);
      assert.ok(!model.quantPoints.some((p) => p.name === 'head'), 'no head point');
      const embedding = await model.forward(input);
      assert.deepEqual(embedding.shape, [input.shape[0], D]);
      const cls = new Float32Array(embedding.size);
      for (let b = 0; b < input.shape[0]; b++) cls.set(headInput.data.subarray(b * 2 * D, b * 2 * D + D), b * D);
      assertClose(embedding.data, cls, `dinov2 backbone (${bare ? 'bare encoder' : 'dinov2. prefix'}) embedding`, 1e-5);
    }
  });

  test('dinov2 without classifier quantizes without labels (the embedding loss) and evaluates its embedding fidelity', () => {
    const dir = scratch.next();
    const file = path.join(dir, 'dinov2_backbone.w8a8.safetensors');
    const q = runCli(['quantize', '--model', backboneFolder('dinov2', { bare: true }), '--calib', path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample'), '--calib-size', '4', '--n', '2', '--rounds', '1', '--out', file, '--json']);
    assert.equal(q.status, 0, showRun(q));
    const summary = JSON.parse(q.stdout.trim().split('\n').pop()!) as { loss: string };
    assert.equal(summary.loss, 'projection', 'the default loss of a model without classifier');
    assert.equal(openModel({ weights: file }).model.spec.arch.numClasses, 0);
  });

  test('a DeiT folder without its classifiers is refused by name', () => {
    const src = path.join(hfDir, 'deit');
    const st = SafeTensors.read(path.join(src, 'model.safetensors'));
    const tensors = Object.fromEntries(st.names().filter((n) => !n.includes('classifier.')).map((n) => [n, st.tensor(n)]));
    const config = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
    const processor = JSON.parse(fs.readFileSync(path.join(src, 'preprocessor_config.json'), 'utf8')) as Record<string, unknown>;
    expectError(() => openModel({ weights: writeFolder(path.join(scratch.next(), 'deit'), config, processor, tensors) }), /model\.safetensors: no classifier \(cls_classifier\.weight\): a DeiT backbone \(DeiTModel\) is not supported/);
  });
});

describe('bad transformers folders: one line naming the file and the field', () => {
  const vitFixture = path.join(hfDir, 'vit');
  const config = () => JSON.parse(fs.readFileSync(path.join(vitFixture, 'config.json'), 'utf8')) as Record<string, unknown>;
  const processor = () => JSON.parse(fs.readFileSync(path.join(vitFixture, 'preprocessor_config.json'), 'utf8')) as Record<string, unknown>;
  const weights = () => {
    const st = SafeTensors.read(path.join(vitFixture, 'model.safetensors'));
    return Object.fromEntries(st.names().map((n) => [n, st.tensor(n)]));
  };
  const folder = (c: Record<string, unknown>, p: Record<string, unknown>, w = weights()) => writeFolder(path.join(scratch.next(), 'm'), c, p, w);

  test('unsupported model_type, missing preprocessor_config.json, unsupported processor fields', () => {
    expectError(() => openModel({ weights: folder({ ...config(), model_type: 'beit' }, processor()) }), /config\.json: model_type "beit" is not supported \(supported: vit, deit, swin, dinov2, dinov2_with_registers\)/);
    expectError(() => openModel({ weights: folder(config(), {}) }), /preprocessor_config\.json is missing/);
    expectError(() => openModel({ weights: folder(config(), { ...processor(), resample: 1 }) }), /preprocessor_config\.json: resample 1 is not supported/);
    expectError(() => openModel({ weights: folder(config(), { ...processor(), image_processor_type: 'ConvNextImageProcessor' }) }), /preprocessor_config\.json: image_processor_type "ConvNextImageProcessor" is not supported/);
    expectError(() => openModel({ weights: folder(config(), { ...processor(), size: { height: 224, width: 200 } }) }), /preprocessor_config\.json: size 224×200 is not square/);
    expectError(() => openModel({ weights: folder({ ...config(), hidden_act: 'relu' }, processor()) }), /config\.json: hidden_act "relu" is not supported/);
  });

  test('a config that disagrees with the weights', () => {
    expectError(() => openModel({ weights: folder({ ...config(), hidden_size: 60, intermediate_size: 240 }, processor()) }), /model\.safetensors: tensor 'vit\.embeddings\.patch_embeddings\.projection\.weight' has shape \[48, 3, 16, 16\], but config\.json implies \[60, 3, 16, 16\]/);
    expectError(() => openModel({ weights: folder({ ...config(), num_hidden_layers: 1 }, processor()) }), /model\.safetensors: tensors not described by .*config\.json .*vit\.encoder\.layer\.1\./);
    expectError(() => openModel({ weights: folder({ ...config(), num_hidden_layers: 3 }, processor()) }), /model\.safetensors: tensor 'vit\.encoder\.layer\.2\.layernorm_before\.weight' is missing/);
    const { 9: _, ...nine } = config().id2label as Record<string, string>;
    expectError(() => openModel({ weights: folder({ ...config(), id2label: nine }, processor()) }), /tensor 'classifier\.weight' has shape \[10, 48\], but config\.json implies \[9, 48\]/);
    expectError(() => openModel({ weights: folder(config(), { ...processor(), size: { height: 192, width: 192 } }) }), /config\.json: image_size 224 differs from the 192×192 input of preprocessor_config\.json/);
    expectError(() => openModel({ weights: folder({ ...config(), num_attention_heads: 5 }, processor()) }), /config\.json: num_attention_heads \/ num_heads 5 must divide/);
  });

  test('swin: a stored relative_position_index that is not the window it claims', () => {
    const src = path.join(hfDir, 'swin');
    const dir = path.join(scratch.next(), 'swin');
    fs.mkdirSync(dir);
    for (const f of ['config.json', 'preprocessor_config.json', 'model.safetensors']) fs.copyFileSync(path.join(src, f), path.join(dir, f));
    const file = path.join(dir, 'model.safetensors');
    const st = SafeTensors.read(file);
    const name = 'swin.encoder.layers.1.blocks.1.attention.self.relative_position_index';
    const bytes = fs.readFileSync(file);
    const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
    const entry = (JSON.parse(bytes.subarray(8, dataStart).toString()) as Record<string, { data_offsets: [number, number] }>)[name];
    assert.ok(st.has(name) && entry);
    bytes.writeBigInt64LE(5n, dataStart + entry.data_offsets[0] + 8 * 3); // [0, 3]
    fs.writeFileSync(file, bytes);
    expectError(() => openModel({ weights: dir }), /relative_position_index' \[0, 3\] is 5, not the relative position index 81 of a 7×7 window/);
  });

  test('CLI: exit 2 with the message', () => {
    const r = runCli(['eval', '--model', folder({ ...config(), model_type: 'clip' }, processor()), '--data', path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample')]);
    assert.equal(r.status, 2, showRun(r));
    assert.match(r.stderr, /config\.json: model_type "clip" is not supported/);
    assert.equal(r.stderr.trim().split('\n').length, 1, showRun(r));
  });
});

// ---------------------------------------------------------------------------------------------

describe("torch's bicubic interpolation (posembed.ts)", () => {
  const grid = randomTensor([7 * 9, 5], 3);
  test('the same size is the identity, with and without antialias', () => {
    for (const antialias of [false, true]) assert.deepEqual(Array.from(interpolateBicubic(grid, [7, 9], { size: [7, 9], antialias }).data), Array.from(grid.data));
    assert.equal(resampleAbsPosEmbed(new Tensor(grid.data.slice(0, 50 * 5), [50, 5]), 1, 7).shape[0], 50, 'a 7×7 grid + cls stays');
  });

  test('constants stay constant (weights sum to 1), up- and downscaling, both modes', () => {
    const ones = new Tensor(new Float32Array(7 * 9 * 2).fill(1.5), [63, 2]);
    for (const size of [[3, 4], [16, 13]] as [number, number][]) {
      for (const antialias of [false, true]) assertClose(interpolateBicubic(ones, [7, 9], { size, antialias }).data, new Float32Array(size[0] * size[1] * 2).fill(1.5), `${size} aa ${antialias}`, 1e-6);
    }
  });

  test('antialias on vs off: different kernels (a = −0.5 vs −0.75), the same interpolation inside an upscale at equal a', () => {
    const [up, down] = [{ size: [15, 20] as [number, number] }, { size: [3, 4] as [number, number] }];
    const diff = (a: Tensor, b: Tensor) => maxAbsDiff(a.data, b.data).max;
    assert.ok(diff(interpolateBicubic(grid, [7, 9], { ...down, antialias: true }), interpolateBicubic(grid, [7, 9], { ...down, antialias: false })) > 1e-2, 'downscaling: the antialiased kernel is wider');
    assert.ok(diff(interpolateBicubic(grid, [7, 9], { ...up, antialias: true }), interpolateBicubic(grid, [7, 9], { ...up, antialias: false })) > 1e-3, 'upscaling: torch uses a = −0.5 with antialias, −0.75 without');
    // With the same a, antialias changes only the borders when upscaling (taps cut and renormalized vs clamped).
    const aa = interpolateBicubic(grid, [7, 9], { ...up, antialias: true });
    const plain = interpolateBicubic(grid, [7, 9], { ...up, antialias: false, a: -0.5 });
    for (let y = 5; y < 10; y++) for (let x = 5; x < 14; x++) for (let c = 0; c < 5; c++) assert.ok(Math.abs(aa.data[(y * 20 + x) * 5 + c] - plain.data[(y * 20 + x) * 5 + c]) < 1e-5);
  });

  test("antialiased = PIL's resize (our byte-exact one) on 8-bit images, up and down", () => {
    const [H, W] = [23, 31];
    // A smooth image inside [38, 218]: bicubic overshoot never reaches PIL's clamp to 0…255 between its passes.
    const pixels = Uint8Array.from({ length: H * W * 3 }, (_, i) => {
      const [y, x, c] = [Math.floor(i / (3 * W)), Math.floor(i / 3) % W, i % 3];
      return Math.round(128 + 60 * Math.sin(x / 3 + c) * Math.cos(y / 4) + 30 * Math.sin((x + y) / 7));
    });
    const img = { width: W, height: H, data: pixels };
    const asGrid = new Tensor(Float32Array.from(pixels), [H * W, 3]);
    for (const [h, w] of [[9, 12], [50, 70], [23, 10]]) {
      const pil = resizeRgb(img, w, h, 'bicubic');
      const ours = interpolateBicubic(asGrid, [H, W], { size: [h, w], antialias: true });
      // PIL rounds to 8 bits after each pass in 22-bit fixed point: within a level or two of the float result.
      const worst = maxAbsDiff(Float32Array.from(ours.data, (v) => Math.min(255, Math.max(0, v))), pil.data).max;
      assert.ok(worst <= 2, `${H}×${W} → ${h}×${w}: max ${worst} levels from PIL`);
    }
  });

  test("dinov2's rule: scale_factor (g + 0.1)/g0, cls kept; a table already at the input grid is used as stored", () => {
    const table = randomTensor([1, 10 * 10 + 1, 4], 5);
    const out = dinov2PositionEmbeddings(table, 10, 6, 'x');
    assert.deepEqual(out.shape, [1, 37, 4]);
    assert.deepEqual(Array.from(out.data.subarray(0, 4)), Array.from(table.data.subarray(0, 4)));
    assert.deepEqual(Array.from(dinov2PositionEmbeddings(table, 10, 10, 'x').data), Array.from(table.data));
    expectError(() => dinov2PositionEmbeddings(table, 9, 6, 'pos'), /pos: 101 positions, config\.json's image_size \/ patch_size implies 9² \+ 1 = 82/);
  });

  test('clsAndPatchMean: ONNX translation = eager kernel; adjoint is the transpose', async () => {
    const x = randomTensor([3, 6, 4], 8);
    const g = new GraphBuilder();
    const xin = g.reserve('x');
    g.reserve('y');
    g.opInto('y', 'Identity', [clsAndPatchMeanOp(2).onnx(g, [xin], [x.shape])]);
    const bytes = encodeModel(g.finish('op', [{ name: 'x', elemType: OnnxType.FLOAT, shape: ['n', 6, 4] }], [{ name: 'y', elemType: OnnxType.FLOAT, shape: ['n', 8] }], 17));
    const session = await ort.InferenceSession.create(bytes);
    const y = (await session.run({ x: new ort.Tensor('float32', x.data, x.shape as number[]) })).y;
    const expected = clsAndPatchMeanOp(2).forward([x]);
    assertClose(y.data as Float32Array, expected.data, 'clsAndPatchMean onnx', 1e-6);
    const gOut = randomTensor([3, 8], 9);
    const [gIn] = clsAndPatchMeanOp(2).adjoint(gOut, [x]);
    const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i], 0);
    assert.ok(Math.abs(dot(expected.data, gOut.data) - dot(x.data, gIn!.data)) < 1e-4, '⟨Ax, g⟩ = ⟨x, Aᵀg⟩');
  });
});

// ---------------------------------------------------------------------------------------------

describe('quantize → export --hf-dir → transformers.js, drop-in', () => {
  const data = path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample');
  for (const type of TYPES) {
    test(`${type}: same model_type, id2label and preprocessor_config.json; pipeline top-1 = our integer graph`, async (t) => {
      const src = path.join(hfDir, type);
      const dir = scratch.next();
      const file = path.join(dir, `${type}.w8a8.safetensors`);
      const q = runCli(['quantize', '--model', src, '--calib', path.join(sharedDir, 'data', 'cifar10', 'calib32.json'), '--calib-size', '4', '--n', '2', '--rounds', '1', '--out', file]);
      assert.equal(q.status, 0, showRun(q));
      const out = path.join(dir, 'hf');
      const r = runCli(['export', '--model', file, '--hf-dir', out]);
      assert.equal(r.status, 0, showRun(r));
      const [inCfg, outCfg] = [path.join(src, 'config.json'), path.join(out, HF_FILES.config)].map((f) => JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, unknown>);
      assert.equal(outCfg.model_type, inCfg.model_type);
      assert.deepEqual(outCfg.id2label, inCfg.id2label);
      assert.deepEqual(outCfg.architectures, inCfg.architectures);
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, HF_FILES.preprocessor), 'utf8')), JSON.parse(fs.readFileSync(path.join(src, 'preprocessor_config.json'), 'utf8')));
      assert.ok(fs.statSync(path.join(out, HF_FILES.quantized)).size > 0);

      // The quantized file remembers its folder: its spec carries model_type, config and processor.
      const loaded = openModel({ weights: file });
      assert.equal(loaded.model.spec.transformers?.modelType, type);
      const folder = await openImageFolder(data);
      const files = Array.from({ length: 12 }, (_, i) => folder.itemName(i * 8));
      const got = await runTransformersJs(out, files, { dtype: 'q8' });
      // transformers.js resizes with sharp (corner-aligned), not PIL: compare the graphs on the pixels it computed…
      const pixels = await runHfProcessor(out, files);
      const S = loaded.model.spec.preprocess.inputSize;
      const batch = new Float32Array(files.length * 3 * S * S);
      pixels.forEach((p, i) => batch.set(p.data, i * 3 * S * S));
      const graph = await wholeModelGraph(loaded, file);
      const logits = await graph.forward(new Tensor(batch, [files.length, 3, S, S]));
      const ours = argmaxRows({ data: logits.data, dims: [...logits.shape] }).map((c) => loaded.model.spec.labelNames![c]);
      assert.deepEqual(got.labels, ours, 'transformers.js q8 top-1 = ptq4vit integer graph on the same pixel_values');
      // …and say how often our own (PIL-exact) preprocessing leads to the same class.
      const own = new Float32Array(batch.length);
      for (let i = 0; i < files.length; i++) own.set(evalTransform(await decodeImage(files[i]), loaded.model.spec.preprocess), i * 3 * S * S);
      const ownTop = argmaxRows({ data: (await graph.forward(new Tensor(own, [files.length, 3, S, S]))).data, dims: [files.length, logits.shape[1]] });
      t.diagnostic(`${type}: on ptq4vit's own preprocessing ${ownTop.filter((c, i) => loaded.model.spec.labelNames![c] === got.labels[i]).length}/${files.length} images get transformers.js's class`);
    });
  }
});

describe('--img-size: timm resample_abs_pos_embed', () => {
  const card = path.join(sharedDir, 'models', 'vit_tiny_c10.json');
  const ckpt = path.join(sharedDir, 'models', 'vit_tiny_c10.safetensors');
  test('the native size changes nothing; another size resamples pos_embed (cls kept) and the file records it', async () => {
    const native = openModel({ weights: ckpt, config: card });
    assert.equal(openModel({ weights: ckpt, config: card, imgSize: 32 }).inputResized, undefined);
    const big = openModel({ weights: ckpt, config: card, imgSize: 48 });
    assert.deepEqual(big.inputResized, { from: 32, to: 48 });
    assert.equal(big.model.spec.preprocess.inputSize, 48);
    const pos = big.weights.tensor('pos_embed', [1, 1 + 12 * 12, 192]);
    const stored = native.weights.tensor('pos_embed', [1, 65, 192]);
    assert.deepEqual(Array.from(pos.data.subarray(0, 192)), Array.from(stored.data.subarray(0, 192)), 'the cls position is kept');
    const expected = interpolateBicubic(new Tensor(stored.data.slice(192), [64, 192]), [8, 8], { size: [12, 12], antialias: true });
    assert.deepEqual(Array.from(pos.data.subarray(192)), Array.from(expected.data));
    expectError(() => openModel({ weights: ckpt, config: card, imgSize: 30 }), /--img-size 30 is not a multiple of .* patch size 4/);
    // no_embed_class (DINOv2 reg4): pos_embed holds the patches only, so timm resamples it with no prefix rows.
    const reg4 = path.join(sharedDir, 'fixtures', 'vit_reg4_p14_224_fixture');
    const regSpec = specFromCard(JSON.parse(fs.readFileSync(`${reg4}.json`, 'utf8')), 'reg4');
    const regWeights = SafeTensors.read(`${reg4}.safetensors`);
    const small = withInputSize(regSpec, regWeights, 112);
    const regPos = regWeights.tensor('pos_embed', [1, 256, 48]);
    assert.deepEqual(Array.from(small.weights.tensor('pos_embed', [1, 64, 48]).data), Array.from(interpolateBicubic(regPos.reshape([256, 48]), [16, 16], { size: [8, 8], antialias: true }).data));
    assert.deepEqual((await buildModel(small.spec, small.weights).forward(randomTensor([1, 3, 112, 112], 4))).shape, [1, 16]);

    // The file records it: quantize a tiny random ViT (1 block) at 48 instead of its 32.
    const dir = scratch.next();
    const tinyCard = { timm_class: 'VisionTransformer', timm_kwargs: { img_size: 32, patch_size: 8, embed_dim: 16, depth: 1, num_heads: 2, num_classes: 10 }, input_size: [3, 32, 32], crop_pct: 1 };
    const { source, made } = randomTimmSource();
    buildModel(specFromCard(tinyCard, 'tiny'), source);
    writeSafetensors(path.join(dir, 'tiny.safetensors'), Object.fromEntries([...made].map(([n, t]) => [n, { dtype: 'F32', shape: t.shape, data: t.data }])));
    fs.writeFileSync(path.join(dir, 'tiny.json'), JSON.stringify(tinyCard));
    const file = path.join(dir, 'w8.safetensors');
    const q = runCli(['quantize', '--model', path.join(dir, 'tiny.safetensors'), '--img-size', '48', '--calib', path.join(sharedDir, 'data', 'cifar10', 'calib32.json'), '--calib-size', '4', '--n', '2', '--rounds', '1', '--out', file]);
    assert.equal(q.status, 0, showRun(q));
    const st = SafeTensors.read(file);
    assert.deepEqual(JSON.parse(st.metadata['ptq4vit.provenance']).img_size, { checkpoint: 32, used: 48 });
    assert.equal(JSON.parse(st.metadata['ptq4vit.spec']).timm_kwargs.img_size, 48);
    assert.deepEqual(st.info('pos_embed').shape, [1, 1 + 6 * 6, 16]);
    expectError(() => openModel({ weights: file, imgSize: 32 }), /--img-size 32: .* calibrated at 48×48/);
    assert.equal(openModel({ weights: file }).model.spec.preprocess.inputSize, 48);
  });
});
