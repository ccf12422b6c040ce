/**
 * Deployment (issue 7): the transformers.js folder (writeHfDir), transformers.js loading it offline and
 * classifying real JPEGs, onnxruntime-web's wasm backend running the ONNX bytes, and how close
 * transformers.js's preprocessing comes to ours.
 *
 * Every check takes ONNX bytes: `deployModels()` is the one place that says which models — vit_tiny_c10 exported
 * by exportOnnx as the FP32 graph and as the W8A8 integer graph (a quick PTQ4ViT calibration on 8 images: the
 * Δs only need to be plausible here; agreement with the simulation is export.test.ts's job).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { openImageFolder } from '../src/data/folder.js';
import { evalTransform } from '../src/data/transform.js';
import { Ptq4vitError } from '../src/errors.js';
import { HF_FILES, hfPreprocessorConfig, writeHfDir } from '../src/export/hfdir.js';
import { loadBatch, openDataset } from '../src/data/datasets.js';
import { exportOnnx } from '../src/export/onnx.js';
import { specFromPreset } from '../src/models/config.js';
import { openModel } from '../src/open.js';
import type { ModelSpec } from '../src/models/types.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { calibrate } from '../src/quant/calibrate.js';
import { methodConfig } from '../src/quant/methods.js';
import { assertClose, runCli, scratchDir, sharedDir, showRun } from './helpers.js';
import { compareProcessors } from './preprocess-parity.js';
import { argmaxRows, openOrtNode, runOrtWeb, runTransformersJs, softmaxRows, type Batch } from './runtimes.js';

const models_ = path.join(sharedDir, 'models');
const jpegSample = path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample');
const scratch = scratchDir('deploy');

interface DeployModels {
  spec: ModelSpec;
  fp32: Uint8Array;
  quantized: Uint8Array;
}

/** The models under test: change them here and nowhere else. */
async function deployModels(): Promise<DeployModels> {
  const { model } = openModel({ weights: path.join(models_, 'vit_tiny_c10.safetensors'), config: path.join(models_, 'vit_tiny_c10.json') });
  const calib = await openDataset(path.join(sharedDir, 'data', 'cifar10', 'calib32.json'));
  const { images, labels } = await loadCalibration(calib, 8, 0, model.spec.preprocess);
  const points = await calibrate(model, images, labels, methodConfig('ptq4vit', { weightBits: 8, activationBits: 8, n: 4, rounds: 1 }));
  return { spec: model.spec, fp32: await exportOnnx(model, {}), quantized: await exportOnnx(model, { quant: points }) };
}

/** jpeg_sample as files, labels and our preprocessing (timm's eval transform) as one batch. */
async function sampleImages(spec: ModelSpec): Promise<{ files: string[]; classes: string[]; pixels: Batch }> {
  const data = await openImageFolder(jpegSample);
  const files: string[] = [];
  const s = spec.preprocess.inputSize;
  const pixels = new Float32Array(data.size * 3 * s * s);
  for (let i = 0; i < data.size; i++) {
    files.push(data.itemName(i));
    pixels.set(evalTransform(await data.image(i), spec.preprocess), i * 3 * s * s);
  }
  return { files, classes: [...data.classes], pixels: { data: pixels, dims: [data.size, 3, s, s] } };
}

const models = await deployModels();
const sample = await sampleImages(models.spec);

describe('writeHfDir', () => {
  test('writes config.json, preprocessor_config.json and both ONNX files', () => {
    const dir = path.join(scratch.next(), 'model');
    writeHfDir(dir, models.spec, models, sample.classes);
    for (const f of Object.values(HF_FILES)) assert.ok(fs.statSync(path.join(dir, f)).size > 0, f);
    assert.deepEqual(fs.readFileSync(path.join(dir, HF_FILES.fp32)), Buffer.from(models.fp32));
    assert.deepEqual(fs.readFileSync(path.join(dir, HF_FILES.quantized)), Buffer.from(models.quantized));
    const config = JSON.parse(fs.readFileSync(path.join(dir, HF_FILES.config), 'utf8'));
    assert.equal(config.model_type, 'vit');
    assert.equal(config.num_labels, 10);
    assert.equal(config.id2label['3'], 'cat');
    assert.equal(config.label2id.truck, 9);
    assert.equal(config['transformers.js_config'], undefined, 'with a quantized model the library defaults apply');
    const pre = JSON.parse(fs.readFileSync(path.join(dir, HF_FILES.preprocessor), 'utf8'));
    assert.equal(pre.image_processor_type, 'ConvNextImageProcessor');
    assert.deepEqual(pre.size, { shortest_edge: 32 });
    assert.equal(pre.crop_pct, 1);
    assert.deepEqual(pre.image_mean, [0.4914, 0.4822, 0.4465]);
    assert.equal(pre.resample, 3, 'PIL bicubic');
  });

  test('the processor follows the model preprocessing: crop_pct below 384, shorter side + crop at 384', () => {
    const p224 = hfPreprocessorConfig(specFromPreset('deit_small_patch16_224').preprocess);
    assert.deepEqual([p224.image_processor_type, p224.size, p224.crop_pct], ['ConvNextImageProcessor', { shortest_edge: 224 }, 0.875]);
    // ConvNextImageProcessor warps at ≥ 384, timm does not: the base processor with shorter side + crop instead.
    const p384 = hfPreprocessorConfig(specFromPreset('vit_base_patch16_384').preprocess);
    assert.deepEqual([p384.image_processor_type, p384.size, p384.do_center_crop, p384.crop_size], ['ViTImageProcessor', { shortest_edge: 384 }, true, { height: 384, width: 384 }]);
  });

  test('byte-identical when written twice; a rewrite replaces the previous folder whole', () => {
    const root = scratch.next();
    const a = path.join(root, 'a'), b = path.join(root, 'b');
    writeHfDir(a, models.spec, models, sample.classes);
    writeHfDir(b, models.spec, models, sample.classes);
    for (const f of Object.values(HF_FILES)) assert.deepEqual(fs.readFileSync(path.join(a, f)), fs.readFileSync(path.join(b, f)), f);
    writeHfDir(a, models.spec, { fp32: models.fp32 }, sample.classes);
    assert.equal(fs.existsSync(path.join(a, HF_FILES.quantized)), false, 'the old quantized model must not survive');
    const config = JSON.parse(fs.readFileSync(path.join(a, HF_FILES.config), 'utf8'));
    assert.deepEqual(config['transformers.js_config'], { dtype: 'fp32' }, 'without a quantized model, default to fp32');
    assert.deepEqual(fs.readdirSync(root).sort(), ['a', 'b'], 'no temporary folders left beside it');
  });

  test('bad input: one clear error, nothing written, nothing lost', () => {
    const root = scratch.next();
    const dir = path.join(root, 'model');
    const expectError = (fn: () => void, pattern: RegExp) => assert.throws(fn, (e: unknown) => e instanceof Ptq4vitError && pattern.test(e.message));
    expectError(() => writeHfDir(dir, models.spec, models, ['a', 'b']), /labels: 2 given but model vit_tiny_c10 has 10 classes/);
    expectError(() => writeHfDir(dir, models.spec, models, [...sample.classes.slice(0, 9), 'cat']), /labels\[9\]: "cat" repeats labels\[3\]/);
    expectError(() => writeHfDir(dir, models.spec, { fp32: new TextEncoder().encode('{"not": "onnx"}') }), /FP32 model: not an ONNX model/);
    expectError(() => writeHfDir(dir, models.spec, { fp32: models.fp32, quantized: new Uint8Array(0) }), /quantized model: expected ONNX model bytes, got an empty buffer/);
    assert.deepEqual(fs.readdirSync(root), [], 'nothing written');

    // A folder holding anything else is not ours to replace.
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    expectError(() => writeHfDir(dir, models.spec, models), /already holds notes\.txt, which is not part of a transformers\.js model folder/);
    assert.equal(fs.readFileSync(path.join(dir, 'notes.txt'), 'utf8'), 'mine');
    assert.deepEqual(fs.readdirSync(dir), ['notes.txt']);

    // An unwritable location: the error names the folder, and no temporary folder is left.
    const file = path.join(root, 'plain-file');
    fs.writeFileSync(file, 'x');
    expectError(() => writeHfDir(file, models.spec, models), /plain-file: it exists and is not a directory/);
    expectError(() => writeHfDir(path.join(file, 'model'), models.spec, models), /cannot write .*plain-file\/model/);
    assert.deepEqual(fs.readdirSync(root).sort(), ['model', 'plain-file']);
  });
});

describe('transformers.js loads the folder offline and classifies jpeg_sample', () => {
  const dir = path.join(scratch.root, 'hf', 'vit_tiny_c10');
  writeHfDir(dir, models.spec, models, sample.classes);

  for (const [dtype, bytes] of [['fp32', models.fp32], ['q8', models.quantized]] as const) {
    test(`pipeline('image-classification', dtype ${dtype}) = onnxruntime-node on our preprocessing`, async (t) => {
      const ours = await openOrtNode(bytes);
      const logits = await ours.run(sample.pixels);
      await ours.release();
      const expected = softmaxRows(logits);
      const top1 = argmaxRows(logits).map((c) => sample.classes[c]);

      const got = await runTransformersJs(dir, sample.files, { dtype });
      assert.equal(got.labels.length, sample.files.length);
      let maxDiff = 0;
      for (let i = 0; i < sample.files.length; i++) {
        for (let c = 0; c < expected[i].length; c++) maxDiff = Math.max(maxDiff, Math.abs(got.scores[i][c] - expected[i][c]));
      }
      const agree = got.labels.filter((l, i) => l === top1[i]).length;
      t.diagnostic(`${sample.files.length} images: top-1 agrees on ${agree}, max |Δscore| ${maxDiff.toExponential(2)}`);
      assert.ok(new Set(top1).size > 1, 'the model predicts one class for every image: agreement would prove nothing');
      assert.equal(agree, sample.files.length, 'transformers.js top-1 differs from onnxruntime-node on our preprocessing');
      // The CIFAR images need no resize, so both runtimes see the same pixels up to float rounding (≤ 2.4e-7).
      // The FP32 graph passes that on smoothly; in the integer graph such a difference can move an activation
      // across a rounding boundary, and one code step shows in the scores (measured up to 7e-3).
      const bound = dtype === 'fp32' ? 1e-4 : 2e-2;
      assert.ok(maxDiff <= bound, `scores differ by ${maxDiff} (bound ${bound})`);
    });
  }
});

describe('onnxruntime-web (wasm backend, 1 thread) runs the ONNX models in Node', () => {
  for (const [name, bytes] of [['fp32', models.fp32], ['quantized', models.quantized]] as const) {
    test(`${name}: same logits and top-1 as onnxruntime-node on jpeg_sample`, async () => {
      const web = await runOrtWeb(bytes, sample.pixels);
      const node = await openOrtNode(bytes);
      const ref = await node.run(sample.pixels);
      await node.release();
      assert.deepEqual(web.dims, [sample.files.length, models.spec.arch.numClasses]);
      // FP32: the two builds differ only in float rounding. Integer graph: an ulp of difference in a float op
      // (LayerNorm, softmax, GELU) before a QuantizeLinear can flip one activation code, which moves the
      // logits by a quantization step (measured: 46 of 100 images differ, at most 0.032 with |logit| ≤ 4.3);
      // the integer products themselves are exact on both. What must not change is the prediction.
      assertClose(web.data, ref.data, `${name} logits, onnxruntime-web vs onnxruntime-node`, name === 'fp32' ? 1e-5 : 2e-2);
      assert.deepEqual(argmaxRows(web), argmaxRows(ref));
    });
  }
});

describe('onnxruntime-web on test1k: the top-1 of onnxruntime-node', () => {
  test('FP32 and the W8A8 integer graph', async (t) => {
    const data = await openDataset(path.join(sharedDir, 'data', 'cifar10', 'test1k.json'));
    const batch = await loadBatch(data, Array.from({ length: data.size }, (_, i) => i), models.spec.preprocess);
    const pixels: Batch = { data: batch.images.data, dims: [...batch.images.shape] };
    const accuracy = (pred: number[]) => pred.filter((c, i) => c === batch.labels[i]).length / pred.length;
    for (const [name, bytes] of [['fp32', models.fp32], ['W8A8 integer', models.quantized]] as const) {
      const web = argmaxRows(await runOrtWeb(bytes, pixels));
      const node = await openOrtNode(bytes);
      const ref = argmaxRows(await node.run(pixels));
      await node.release();
      const same = web.filter((c, i) => c === ref[i]).length;
      t.diagnostic(`${name}: top-1 ${(accuracy(web) * 100).toFixed(2)}% (web) vs ${(accuracy(ref) * 100).toFixed(2)}% (node), same prediction on ${same}/${web.length}`);
      if (name === 'fp32') assert.equal(same, web.length, 'FP32: onnxruntime-web and -node predict differently');
      else {
        // An ulp of difference in a float op can flip an activation code (see above): a handful of images
        // may change their prediction, the accuracy must not move by more than 0.3 points.
        assert.ok(same >= 0.99 * web.length, `integer graph: only ${same}/${web.length} identical predictions`);
        assert.ok(Math.abs(accuracy(web) - accuracy(ref)) <= 0.003, `top-1 ${accuracy(web)} (web) vs ${accuracy(ref)} (node)`);
      }
    }
  });
});

describe('transformers.js preprocessing vs ours (timm eval transform)', () => {
  test('CIFAR-10 JPEGs at the model resolution: the same pixels up to float rounding', async () => {
    const rows = await compareProcessors(models.spec.preprocess, sample.files);
    const max = Math.max(...rows.map((r) => r.max));
    assert.ok(max <= 1e-6, `max |Δ| ${max}`);
  });

  test('224 photos (resize 256, crop 224): same geometry, the documented resampling difference only', async (t) => {
    const dir = path.join(sharedDir, 'fixtures', 'preprocess');
    const names = (JSON.parse(fs.readFileSync(path.join(dir, 'README.json'), 'utf8')) as { images: string[] }).images;
    const rows = await compareProcessors(specFromPreset('deit_tiny_patch16_224').preprocess, names.map((n) => path.join(dir, n)));
    for (const r of rows) {
      t.diagnostic(`${path.basename(r.file)}: max |Δ| ${r.max.toFixed(3)}, mean ${r.mean.toFixed(4)}, ${r.maxLevels.toFixed(0)} levels`);
      assert.deepEqual(r.geometry.tjs, r.geometry.ours, `${r.file}: resize/crop geometry`);
      // sharp's affine resize (corner-aligned, no antialiasing) vs PIL: visible but small on average (RESULTS.md).
      assert.ok(r.mean < 0.1, `${r.file}: mean |Δ| ${r.mean}`);
    }
  });
});

describe('ptq4vit export --hf-dir: the folder a user gets from the CLI', () => {
  test('a quantized file → model.onnx + model_quantized.onnx with class names; transformers.js q8 = the exported integer graph', async () => {
    const dir = scratch.next();
    const card = path.join(models_, 'vit_tiny_c10.json');
    const file = path.join(dir, 'w8.safetensors');
    const q = runCli(['quantize', '--model', path.join(models_, 'vit_tiny_c10.safetensors'), '--config', card, '--calib', path.join(sharedDir, 'data', 'cifar10', 'calib32.json'), '--n', '4', '--rounds', '1', '--calib-size', '8', '--out', file]);
    assert.equal(q.status, 0, showRun(q));
    const labels = path.join(dir, 'names.txt');
    fs.writeFileSync(labels, sample.classes.join('\n') + '\n');
    const hf = path.join(dir, 'hf');
    const onnx = path.join(dir, 'w8.onnx');
    const r = runCli(['export', '--model', file, '--hf-dir', hf, '--out', onnx, '--labels', labels]);
    assert.equal(r.status, 0, showRun(r));
    const config = JSON.parse(fs.readFileSync(path.join(hf, HF_FILES.config), 'utf8')) as { id2label: Record<string, string> };
    assert.deepEqual(Object.values(config.id2label), sample.classes);
    const integer = fs.readFileSync(onnx);
    assert.ok(integer.equals(fs.readFileSync(path.join(hf, HF_FILES.quantized))), 'model_quantized.onnx is the integer graph --out wrote');
    const ours = await openOrtNode(integer);
    const top1 = argmaxRows(await ours.run(sample.pixels)).map((c) => sample.classes[c]);
    await ours.release();
    const got = await runTransformersJs(hf, sample.files, { dtype: 'q8' });
    assert.deepEqual(got.labels, top1);
    // Neither --out nor --hf-dir; a labels file of the wrong length.
    const none = runCli(['export', '--model', file]);
    assert.equal(none.status, 2, showRun(none));
    assert.match(none.stderr, /--out <model.onnx> and\/or --hf-dir/);
    fs.writeFileSync(labels, 'cat\ndog\n');
    const bad = runCli(['export', '--model', file, '--hf-dir', path.join(dir, 'hf2'), '--labels', labels]);
    assert.equal(bad.status, 2, showRun(bad));
    assert.match(bad.stderr, /names\.txt: 2 class names, the model has 10 classes/);
    assert.ok(!fs.existsSync(path.join(dir, 'hf2')));
  });
});
