/**
 * Channel smoothing (src/quant/smooth.ts, `quantize --smooth α`):
 *  - the rewritten checkpoint is the same float model (ViT and Swin, logits within float rounding), with the
 *    norm → linear pairs the layers declare (Swin's patch merging included) and flatter input channels;
 *  - s follows the formula (max|X_j|^α / max|W_j|^(1−α), geometric mean 1) on one hand-checked channel;
 *  - the same inputs give the same checkpoint, bit for bit;
 *  - `quantize --smooth` writes the smoothed norm and weights into the file, whose eval equals the in-memory
 *    result, and records α in the provenance and the report; a bad α ends with exit 2 and one line, before any calibration.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { openDataset } from '../src/data/datasets.js';
import { Ptq4vitError } from '../src/errors.js';
import { SafeTensors } from '../src/io/safetensors.js';
import { openModel } from '../src/open.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { parseMetadata } from '../src/quant/file.js';
import { checkSmoothAlpha, smoothChannels } from '../src/quant/smooth.js';
import { fp32Runner } from '../src/tensor/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { runCli, scratchDir, sharedDir, showRun } from './helpers.js';

const MODEL = 'assets/models/vit_tiny_c10.safetensors';
const CARD = 'assets/models/vit_tiny_c10.json';
const CALIB = 'assets/cifar10-calib32/calib32.json';
const TEST = 'assets/cifar10-test500';
const scratch = scratchDir('smooth');

async function calibImages(preprocess: Parameters<typeof loadCalibration>[3], count: number): Promise<Tensor> {
  return (await loadCalibration(await openDataset(CALIB), count, 0, preprocess)).images;
}

function maxRelDiff(a: Tensor, b: Tensor): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < a.size; i++) (diff = Math.max(diff, Math.abs(a.data[i] - b.data[i]))), (scale = Math.max(scale, Math.abs(a.data[i])));
  return diff / scale;
}

describe('channel smoothing', () => {
  for (const [name, weights, pairs] of [
    ['vit_tiny_c10', MODEL, 24],
    ['swin_micro_c10', path.join(sharedDir, 'models', 'swin_micro_c10.safetensors'), -1],
  ] as const) {
    test(`${name}: the same float model, every norm → linear pair rescaled, flatter input channels`, async () => {
      const loaded = openModel({ weights });
      const images = await calibImages(loaded.model.spec.preprocess, 8);
      const s = await smoothChannels(loaded.model, loaded.weights, images, 0.5);
      const expected = loaded.model.quantPoints.filter((p) => p.inputNorm !== undefined);
      if (pairs > 0) assert.equal(expected.length, pairs);
      if (name === 'swin_micro_c10') assert.ok(expected.some((p) => p.name.endsWith('downsample.reduction')), 'patch merging: norm → reduction');
      assert.deepEqual(s.norms.flatMap((n) => n.layers).sort(), expected.map((p) => p.name).sort());
      const mean = (f: (n: (typeof s.norms)[number]) => number) => s.norms.reduce((a, n) => a + f(n), 0) / s.norms.length;
      assert.ok(mean((n) => n.rangeRatioAfter) < mean((n) => n.rangeRatioBefore), 'α 0.5: flatter input channels on average');
      // α = 1 moves the whole range into the weights: every input channel then has the same max|X_j|.
      for (const n of (await smoothChannels(loaded.model, loaded.weights, images, 1)).norms) assert.ok(Math.abs(n.rangeRatioAfter - 1) < 1e-9, `${n.norm}: α 1 leaves max/mean ${n.rangeRatioAfter}`);
      for (const n of s.norms) {
        const before = loaded.weights.tensor(`${n.norm}.weight`).data, after = s.weights.tensor(`${n.norm}.weight`).data;
        assert.ok(before.some((v, j) => v !== after[j]), `${n.norm}.weight rewritten`);
      }
      const held = await calibImages(loaded.model.spec.preprocess, 16); // 8 of them not seen by the smoothing
      const [fp, sm] = [await loaded.model.forward(held), await s.model.forward(held)];
      assert.ok(maxRelDiff(fp, sm) < 1e-4, `logits differ by ${maxRelDiff(fp, sm)} of their range`);
    });
  }

  test('s_j = max|X_j|^α / max|W_j|^(1−α), normalized to geometric mean 1; deterministic', async () => {
    const loaded = openModel({ weights: MODEL });
    const images = await calibImages(loaded.model.spec.preprocess, 4);
    const alpha = 0.3;
    const s = await smoothChannels(loaded.model, loaded.weights, images, alpha);
    // Channel scales of blocks.0.norm1 → blocks.0.attn.qkv from the outputs: s_j = γ_j / γ'_j.
    const gamma = loaded.weights.tensor('blocks.0.norm1.weight').data, gammaS = s.weights.tensor('blocks.0.norm1.weight').data;
    const w = loaded.weights.tensor('blocks.0.attn.qkv.weight'), wS = s.weights.tensor('blocks.0.attn.qkv.weight');
    const C = gamma.length;
    const scale = Array.from(gamma, (g, j) => g / gammaS[j]);
    assert.ok(Math.abs(scale.reduce((a, v) => a + Math.log(v), 0) / C) < 1e-5, 'geometric mean 1');
    for (let i = 0; i < 3 * C; i += 97) assert.ok(Math.abs(wS.data[i] - w.data[i] * scale[i % C]) <= 1e-6 * Math.abs(w.data[i] * scale[i % C]) + 1e-12, `weight ${i}`);
    // By hand for two channels: the ratio s_a/s_b does not depend on the normalization.
    const xMax = new Float64Array(C);
    await loaded.model.forward(images, {
      linear: (point, x, weight, bias) => {
        if (point === 'blocks.0.attn.qkv') for (let i = 0; i < x.size; i++) xMax[i % C] = Math.max(xMax[i % C], Math.abs(x.data[i]));
        return fp32Runner.linear(point, x, weight, bias);
      },
      matmul: fp32Runner.matmul,
    });
    const wMax = (j: number) => Math.max(...Array.from({ length: 3 * C }, (_, r) => Math.abs(w.data[r * C + j])));
    const raw = (j: number) => xMax[j] ** alpha / wMax(j) ** (1 - alpha);
    for (const [a, b] of [[0, 1], [5, 100]]) assert.ok(Math.abs(scale[a] / scale[b] - raw(a) / raw(b)) < 1e-4 * (raw(a) / raw(b)), `s_${a}/s_${b}`);
    const again = await smoothChannels(loaded.model, loaded.weights, images, alpha);
    for (const n of s.norms) for (const t of [`${n.norm}.weight`, `${n.norm}.bias`, ...n.layers.map((l) => `${l}.weight`)]) assert.deepEqual(again.weights.tensor(t).data, s.weights.tensor(t).data, t);
  });

  test('α outside [0, 1] is refused', () => {
    for (const bad of [-0.1, 1.5, Number.NaN]) assert.throws(() => checkSmoothAlpha(bad), Ptq4vitError);
    checkSmoothAlpha(0);
    checkSmoothAlpha(1);
  });

  test('quantize --smooth: the file holds the smoothed checkpoint, eval of it = in memory, α in the provenance', () => {
    const dir = scratch.next();
    const out = path.join(dir, 'smoothed.safetensors'), report = path.join(dir, 'report.html');
    const r = runCli(['quantize', '--model', MODEL, '--config', CARD, '--calib', CALIB, '--calib-size', '8', '--n', '4', '--rounds', '1', '--bits', '4', '--smooth', '0.5', '--out', out, '--eval', TEST, '--limit', '100', '--report', report, '--json']);
    assert.equal(r.status, 0, showRun(r));
    const q = JSON.parse(r.stdout.trimEnd().split('\n').at(-1)!) as { top1: number; fp32_top1: number; smoothing: { alpha: number; norms: unknown[] } };
    assert.equal(q.smoothing.alpha, 0.5);
    assert.equal(q.smoothing.norms.length, 24);
    assert.match(fs.readFileSync(report, 'utf8'), /SmoothQuant channel smoothing before calibration, α = 0\.5, at the 24 LayerNorms/, 'the report says the checkpoint was smoothed');
    const e = runCli(['eval', '--model', out, '--data', TEST, '--limit', '100', '--json']);
    assert.equal(e.status, 0, showRun(e));
    assert.equal((JSON.parse(e.stdout.trimEnd().split('\n').at(-1)!) as { top1: number }).top1, q.top1, 'top-1 of the file = in memory');

    const st = SafeTensors.read(out);
    const { provenance } = parseMetadata(st.metadata, out);
    assert.deepEqual((provenance.smoothing as { alpha: number }).alpha, 0.5);
    const original = SafeTensors.read(MODEL);
    const gamma = original.tensor('blocks.3.norm2.weight').data, stored = st.tensor('blocks.3.norm2.weight').data;
    assert.ok(gamma.some((g, j) => g !== stored[j]), 'the file stores the smoothed norm');
    // FP32 in the report is the checkpoint as given (the smoothed one is the same function, rounded otherwise).
    const plain = runCli(['eval', '--model', MODEL, '--config', CARD, '--data', TEST, '--limit', '100', '--json']);
    assert.equal((JSON.parse(plain.stdout.trimEnd().split('\n').at(-1)!) as { top1: number }).top1, q.fp32_top1);
  });

  for (const [value, message] of [['1.5', /--smooth must be a number from 0 to 1, got '1.5'/], ['half', /--smooth must be a number from 0 to 1, got 'half'/], ['-0.2', /--smooth must be a number from 0 to 1/]] as const) {
    test(`quantize --smooth ${value}: exit 2, one line, nothing written`, () => {
      const dir = scratch.next();
      const r = runCli(['quantize', '--model', MODEL, '--config', CARD, '--calib', CALIB, '--smooth', value, '--out', path.join(dir, 'x.safetensors')]);
      assert.equal(r.status, 2, showRun(r));
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.deepEqual(fs.readdirSync(dir), []);
    });
  }
});
