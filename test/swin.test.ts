/** Swin Transformer: parity with timm 0.9.16, a real CIFAR-10 checkpoint, and checkpoint validation. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { SafeTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { SwinTransformer } from '../src/models/swin.js';
import type { ModelSpec, SwinArch } from '../src/models/types.js';
import { RecordingRunner } from '../src/tensor/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { assertClose, fixturesDir, maxAbsDiff, sharedDir } from './helpers.js';

interface TimmSwinKwargs {
  img_size: number;
  patch_size: number;
  window_size: number;
  embed_dim: number;
  depths: number[];
  num_heads: number[];
  mlp_ratio: number;
  num_classes: number;
}

/** A ModelSpec from a card's timm kwargs (timm defaults: 3 channels, qkv bias); preprocess is unused here. */
function swinSpec(name: string, kw: TimmSwinKwargs, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]): ModelSpec {
  const arch: SwinArch = {
    family: 'swin',
    imgSize: kw.img_size,
    patchSize: kw.patch_size,
    inChans: 3,
    embedDim: kw.embed_dim,
    depths: kw.depths,
    numHeads: kw.num_heads,
    windowSize: kw.window_size,
    mlpRatio: kw.mlp_ratio,
    qkvBias: true,
    numClasses: kw.num_classes,
  };
  return {
    name,
    timmClass: 'SwinTransformer',
    arch,
    preprocess: {
      inputSize: kw.img_size,
      cropPct: 1,
      interpolation: 'bicubic',
      mean: mean as [number, number, number],
      std: std as [number, number, number],
    },
  };
}

function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

/** [..., M, N] → [..., N, M] for a tensor of any rank ≥ 2. */
function transposeLast2(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  const per = rows * cols;
  for (let base = 0; base < data.length; base += per) {
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[base + c * rows + r] = data[base + r * cols + c];
  }
  return out;
}

const fixtureName = 'swin_p4_w7_224_fixture';

describe('SwinTransformer: timm 0.9.16 fixture parity', () => {
  const card = readJson<{ timm_kwargs: TimmSwinKwargs; quant_points: string[]; recorded_points: string[] }>(
    path.join(fixturesDir, `${fixtureName}.json`),
  );
  const spec = swinSpec(fixtureName, card.timm_kwargs);
  const weights = SafeTensors.read(path.join(fixturesDir, `${fixtureName}.safetensors`));
  const acts = SafeTensors.read(path.join(fixturesDir, `${fixtureName}.activations.safetensors`));

  it('lists the quantization points of the fixture, in order', () => {
    const model = new SwinTransformer(spec, weights);
    assert.deepEqual(model.quantPoints.map((p) => p.name), card.quant_points);
    const kinds = new Map(model.quantPoints.map((p) => [p.name, p]));
    const conv = kinds.get('patch_embed.proj');
    assert.equal(conv?.kind, 'conv');
    assert.equal(conv?.weight, 'patch_embed.proj.weight');
    assert.equal(conv?.bias, 'patch_embed.proj.bias');
    const reduction = kinds.get('layers.1.downsample.reduction');
    assert.equal(reduction?.kind, 'linear');
    assert.equal(reduction?.weight, 'layers.1.downsample.reduction.weight');
    assert.equal(reduction?.bias, undefined, 'patch merging reduction has no bias');
    assert.equal(kinds.get('layers.2.blocks.1.attn.matmul2')?.kind, 'matmul');
    assert.equal(kinds.get('head.fc')?.bias, 'head.fc.bias');
    for (const p of model.quantPoints) {
      if (p.weight) assert.ok(weights.has(p.weight), p.weight);
      if (p.bias) assert.ok(weights.has(p.bias), p.bias);
    }
  });

  it('matches the logits and every recorded activation', async () => {
    const model = new SwinTransformer(spec, weights);
    const input = acts.tensor('input');
    const runner = new RecordingRunner();
    const logits = await model.forward(input, runner);
    assert.deepEqual(logits.shape, [1, 16]);
    assertClose(logits.data, acts.tensor('logits').data, 'logits');

    const [batch, chans, size] = input.shape;
    const patch = spec.arch.patchSize;
    for (const point of card.recorded_points) {
      const rec = runner.records.get(point);
      assert.ok(rec, `${point} was not called`);
      const out = acts.tensor(`${point}.out`);
      const in0 = acts.tensor(`${point}.in0`);
      if (point === 'patch_embed.proj') {
        // timm: conv on the image → NCHW [B, D, H', W']; ours: linear on unfolded patches → [B, H'·W', D].
        const [, dim, rows, cols] = out.shape;
        assert.deepEqual(rec.output.shape, [batch, rows * cols, dim]);
        assertClose(rec.output.data, transposeLast2(out.data, dim, rows * cols), `${point}.out`);
        assert.deepEqual(rec.inputs[0].shape, [batch, rows * cols, chans * patch * patch]);
        assertClose(rec.inputs[0].data, unfoldReference(in0, patch), `${point}.in0`);
        assert.equal(size, rows * patch);
        continue;
      }
      if (point.endsWith('.matmul1') || point.endsWith('.matmul2')) {
        // timm: [B·nW, heads, N, ·]; ours: [B·nW·heads, N, ·] — the same memory order.
        const [windows, heads, n, m] = out.shape;
        assert.deepEqual(rec.output.shape, [windows * heads, n, m], `${point}.out shape`);
        assertClose(rec.output.data, out.data, `${point}.out`);
        assertClose(rec.inputs[0].data, in0.data, `${point}.in0`);
        assert.deepEqual(rec.inputs[0].shape, [windows * heads, ...in0.shape.slice(2)], `${point}.in0 shape`);
        const in1 = acts.tensor(`${point}.in1`);
        if (point.endsWith('.matmul1')) {
          // timm records kᵀ [.., d, N]; we pass k [G, N, d] with transB.
          const [, , d, keys] = in1.shape;
          assert.deepEqual(rec.inputs[1].shape, [windows * heads, keys, d], `${point}.in1 shape`);
          assertClose(rec.inputs[1].data, transposeLast2(in1.data, d, keys), `${point}.in1`);
        } else {
          assert.deepEqual(rec.inputs[1].shape, [windows * heads, ...in1.shape.slice(2)], `${point}.in1 shape`);
          assertClose(rec.inputs[1].data, in1.data, `${point}.in1`);
        }
        continue;
      }
      // Linear layers: same memory order; timm may keep the grid as [B, H, W, F] where we have [B, H·W, F].
      assert.equal(rec.output.size, out.size, `${point}.out size`);
      assert.equal(rec.output.lastDim, out.lastDim, `${point}.out features`);
      assert.equal(rec.inputs[0].size, in0.size, `${point}.in0 size`);
      assert.equal(rec.inputs[0].lastDim, in0.lastDim, `${point}.in0 features`);
      assertClose(rec.output.data, out.data, `${point}.out`);
      assertClose(rec.inputs[0].data, in0.data, `${point}.in0`);
    }
  });

  describe('rejects checkpoints that do not fit the spec', () => {
    const all: Record<string, TensorToWrite> = {};
    for (const name of weights.names()) {
      const t = weights.tensor(name);
      all[name] = { dtype: 'F32', shape: t.shape, data: t.data };
    }
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'swin-test-'));
    const write = (file: string, tensors: Record<string, TensorToWrite>): SafeTensors => {
      const full = path.join(tmp, file);
      writeSafetensors(full, tensors);
      return SafeTensors.read(full);
    };
    const rejects = (ckpt: SafeTensors, pattern: RegExp) =>
      assert.throws(() => new SwinTransformer(spec, ckpt), (e: unknown) => {
        assert.ok(e instanceof Ptq4vitError, `expected a Ptq4vitError, got ${String(e)}`);
        assert.match(e.message, pattern);
        return true;
      });

    it('a missing tensor', () => {
      const { ['layers.1.blocks.0.attn.qkv.weight']: _, ...rest } = all;
      rejects(write('missing.safetensors', rest), /missing\.safetensors.*'layers\.1\.blocks\.0\.attn\.qkv\.weight'.*missing/);
    });

    it('a tensor of the wrong shape', () => {
      const bad = { ...all, 'layers.2.blocks.1.mlp.fc1.bias': { dtype: 'F32' as const, shape: [63], data: new Float32Array(63) } };
      rejects(write('misshaped.safetensors', bad), /misshaped\.safetensors.*'layers\.2\.blocks\.1\.mlp\.fc1\.bias'.*\[63\].*\[256\]/);
    });

    it('a window table for another window size', () => {
      const bad = { ...all, 'layers.3.blocks.0.attn.relative_position_bias_table': { dtype: 'F32' as const, shape: [121, 8], data: new Float32Array(968) } };
      rejects(write('table.safetensors', bad), /table\.safetensors.*relative_position_bias_table.*\[121, 8\].*\[169, 8\]/);
    });

    it('a timm < 0.9 checkpoint (patch merging at the end of each stage, head not head.fc), with a hint', () => {
      const old: Record<string, TensorToWrite> = {};
      for (const [name, t] of Object.entries(all)) {
        const renamed = name
          .replace(/^layers\.(\d+)\.downsample\./, (_, i: string) => `layers.${Number(i) - 1}.downsample.`)
          .replace(/^head\.fc\./, 'head.');
        old[renamed] = t;
      }
      rejects(write('old.safetensors', old), /old\.safetensors.*'layers\.1\.downsample\.norm\.weight'.*timm < 0\.9/);
    });

    it('parameters of a deeper model, but not timm buffers', () => {
      const deeper = {
        ...all,
        'layers.0.blocks.2.norm1.weight': { dtype: 'F32' as const, shape: [16], data: new Float32Array(16) },
        'layers.4.downsample.norm.weight': { dtype: 'F32' as const, shape: [256], data: new Float32Array(256) },
      };
      rejects(write('deeper.safetensors', deeper), /deeper\.safetensors: .*not used.*layers\.0\.blocks\.2\.norm1\.weight, layers\.4\.downsample\.norm\.weight/);
      const withBuffers = {
        ...all,
        'layers.0.blocks.1.attn.relative_position_index': { dtype: 'I32' as const, shape: [49, 49], data: new Int32Array(49 * 49) },
        'layers.0.blocks.1.attn_mask': { dtype: 'F32' as const, shape: [64, 49, 49], data: new Float32Array(64 * 49 * 49) },
      };
      new SwinTransformer(spec, write('buffers.safetensors', withBuffers));
    });

    it('cleans up', () => fs.rmSync(tmp, { recursive: true, force: true }));
  });
});

/** The conv's view of the image: [B, C, H, W] → [B, (H/p)·(W/p), C·p·p] in (c, ky, kx) order, written plainly. */
function unfoldReference(images: Tensor, p: number): Float32Array {
  const [batch, chans, h, w] = images.shape;
  const out = new Float32Array(images.size);
  const cols = w / p;
  const features = chans * p * p;
  for (let b = 0; b < batch; b++)
    for (let c = 0; c < chans; c++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          const token = Math.floor(y / p) * cols + Math.floor(x / p);
          const feature = (c * p + (y % p)) * p + (x % p);
          out[(b * (h / p) * cols + token) * features + feature] = images.data[((b * chans + c) * h + y) * w + x];
        }
  return out;
}

describe('SwinTransformer: swin_micro_c10 (windows larger than the late stages)', () => {
  const modelsDir = path.join(sharedDir, 'models');
  const card = readJson<{ timm_kwargs: TimmSwinKwargs; mean: number[]; std: number[] }>(path.join(modelsDir, 'swin_micro_c10.json'));
  const spec = swinSpec('swin_micro_c10', card.timm_kwargs, card.mean, card.std);

  it('runs stages whose grid is no larger than the window, and matches the reference logits', async () => {
    const model = new SwinTransformer(spec, SafeTensors.read(path.join(modelsDir, 'swin_micro_c10.safetensors')));
    const count = 50;
    const images = normalizedCifar(path.join(sharedDir, 'data', 'cifar10', 'test_images.u8'), count, card.mean, card.std);
    const runner = new RecordingRunner();
    const logits = await model.forward(images, runner);
    assert.deepEqual(logits.shape, [count, 10]);
    assert.ok(logits.data.every(Number.isFinite), 'logits are finite');

    // Stage 2: 4×4 grid = window 4 → one unshifted window of 16 tokens; stage 3: 2×2 grid, window clamped to 2.
    assert.deepEqual(runner.records.get('layers.2.blocks.1.attn.matmul1')?.output.shape, [count * 12, 16, 16]);
    assert.deepEqual(runner.records.get('layers.3.blocks.1.attn.matmul1')?.output.shape, [count * 24, 4, 4]);
    assert.deepEqual(runner.records.get('layers.3.blocks.1.attn.matmul2')?.output.shape, [count * 24, 4, 16]);
    assert.deepEqual(runner.records.get('layers.0.blocks.1.attn.matmul1')?.output.shape, [count * 16 * 3, 16, 16]);

    // Reference rows are test images 0, 20, 40, … (GPU TF32, so agreement is about 5e-3).
    const reference = new Float32Array(new Uint8Array(fs.readFileSync(path.join(modelsDir, 'swin_micro_c10.logits_every20.f32'))).buffer);
    for (let row = 0; row * 20 < count; row++) {
      const image = row * 20;
      const { max } = maxAbsDiff(logits.data.subarray(image * 10, image * 10 + 10), reference.subarray(row * 10, row * 10 + 10));
      assert.ok(max <= 1e-2, `image ${image}: max abs logit difference ${max} > 1e-2`);
    }
  });
});

/** The first `count` CIFAR-10 images (uint8 HWC 32×32×3) as x/255 normalized by mean/std, NCHW. */
function normalizedCifar(file: string, count: number, mean: number[], std: number[]): Tensor {
  const size = 32, chans = 3;
  const raw = fs.readFileSync(file).subarray(0, count * size * size * chans);
  const out = new Float32Array(count * chans * size * size);
  for (let b = 0; b < count; b++)
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++)
        for (let c = 0; c < chans; c++) {
          const value = raw[((b * size + y) * size + x) * chans + c] / 255;
          out[((b * chans + c) * size + y) * size + x] = (value - mean[c]) / std[c];
        }
  return new Tensor(out, [count, chans, size, size]);
}
