/**
 * Sub-8-bit weights that ship (issue 22): packed codes round-trip for every width and sign, a packed file
 * (format /3) evaluates exactly as the in-memory quantized model, its ONNX export holds the weights packed
 * (bytes counted) and predicts as the simulation does, and bad packed data is refused with one line (exit 2).
 *
 * One quick calibration of vit_tiny_c10 (4 images, 5 candidates, 1 round) with per-channel weight scales and
 * a policy giving its points 2-, 3-, 4- and 6-bit weights covers every container: 2 bits, 4 bits, int8.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { seededRandom } from '../src/grad/loss.js';
import { exportOptionsFor } from '../src/export/graph.js';
import { exportOnnx } from '../src/export/onnx.js';
import { SafeTensors } from '../src/io/safetensors.js';
import { openModel, type LoadedModel } from '../src/open.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { calibrate } from '../src/quant/calibrate.js';
import { QUANTIZED_FORMAT, QUANTIZED_FORMAT_V2, saveQuantizedModel } from '../src/quant/file.js';
import { methodConfig } from '../src/quant/methods.js';
import { containerBits, packCodes, packedRowBytes, unpackCodes, weightCodeBytes } from '../src/quant/packing.js';
import type { BitPolicy, LinearQuant, PointQuant } from '../src/quant/params.js';
import { QuantRunner } from '../src/quant/runner.js';
import { openDataset, loadBatch } from '../src/data/datasets.js';
import { Tensor } from '../src/tensor/tensor.js';
import { assertEvalRefusesFile, scratchDir, sharedDir, onnxInitializers } from './helpers.js';
import { joinSafetensors, splitSafetensors, withMetadata } from './mutate.js';
import { openOrtNode, transformersJsVsNode, argmaxPerRow } from './runtimes.js';
import { HF_FILES, HF_Q4_FILE, writeHfDir } from '../src/export/hfdir.js';

const MODEL = 'assets/models/vit_tiny_c10.safetensors';
const CALIB = 'assets/cifar10-calib32/calib32.json';
const TEST = 'assets/cifar10-test500';
const scratch = scratchDir('int4');

/** A deterministic generator (mulberry32) for the property test. */
const rng = seededRandom;

describe('packing', () => {
  test('containers: 2 → 2 bits, 3–4 → 4 bits, 5–8 → int8, 9–16 → int16', () => {
    assert.deepEqual([2, 3, 4, 5, 6, 7, 8, 9, 16].map(containerBits), [2, 4, 4, 8, 8, 8, 8, 16, 16]);
    assert.equal(weightCodeBytes(3, 5, 4), 3 * 3, 'rows padded to whole bytes');
    assert.equal(weightCodeBytes(3, 5, 2), 3 * 2);
    assert.equal(weightCodeBytes(3, 5, 6), 15);
    assert.equal(weightCodeBytes(3, 5, 12), 30);
  });

  test('round-trips random codes of every packed width and sign, any row length (property)', () => {
    const next = rng(22);
    for (const bits of [2, 3, 4]) {
      const lo = -(2 ** (bits - 1)), hi = 2 ** (bits - 1) - 1;
      for (let trial = 0; trial < 60; trial++) {
        const rows = 1 + Math.floor(next() * 5), cols = 1 + Math.floor(next() * 13);
        // The extremes of both signs always appear; the rest is uniform over the range.
        const codes = Int8Array.from({ length: rows * cols }, (_, i) => (i === 0 ? lo : i === 1 ? hi : lo + Math.floor(next() * (hi - lo + 1))));
        const packed = packCodes(codes, rows, bits);
        assert.equal(packed.length, rows * packedRowBytes(cols, containerBits(bits)));
        assert.equal(packed.length, weightCodeBytes(rows, cols, bits));
        assert.deepEqual(unpackCodes(packed, rows, cols, bits, 'w'), codes, `${bits}-bit ${rows}×${cols}`);
      }
    }
  });

  test('the documented layout: low bits first, offset 2^(c−1), rows padded with zero bits', () => {
    // 4-bit codes −8, 7, 1 → u = 0, 15, 9: byte 0 = 0 | 15 << 4, byte 1 = 9.
    assert.deepEqual([...packCodes(Int8Array.of(-8, 7, 1), 1, 4)], [0xf0, 0x09]);
    // 2-bit codes −2, 1, 0, −1, 1 → u = 0, 3, 2, 1, 3: byte 0 = 0 | 3<<2 | 2<<4 | 1<<6, byte 1 = 3.
    assert.deepEqual([...packCodes(Int8Array.of(-2, 1, 0, -1, 1), 1, 2)], [0b01101100, 0b11]);
  });

  test('bad packed bytes are refused naming the tensor: length, out-of-range code, padding', () => {
    const refused = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (e: unknown) => e instanceof Ptq4vitError && pattern.test(e.message) && e.message.startsWith('w: '));
    refused(() => unpackCodes(new Uint8Array(3), 2, 3, 4, 'w'), /3 bytes of packed 4-bit codes, expected 4/);
    // u = 15 is code 7: a 4-bit code, outside the 3-bit range of a 3-bit weight in its 4-bit container.
    refused(() => unpackCodes(Uint8Array.of(0xf8), 1, 2, 3, 'w'), /code 7 outside the 3-bit range \[-4, 3\]/);
    refused(() => unpackCodes(Uint8Array.of(0x88, 0x18), 1, 3, 4, 'w'), /non-zero padding bits/);
  });
});

describe('a packed quantized file', () => {
  let file = '';
  let bytes: Uint8Array;
  let points: PointQuant[];
  let images: Tensor;
  let inMemory: Tensor;
  let loaded: LoadedModel;
  /** Weight widths by point: every container appears (2, 3 and 4 bits packed, 6 bits int8). */
  const widthOf = (i: number) => [2, 3, 4, 6][i % 4];

  before(async () => {
    const float = openModel({ weights: MODEL });
    const calib = await openDataset(CALIB);
    const { images: calibImages, labels } = await loadCalibration(calib, 4, 0, float.model.spec.preprocess);
    const policy: BitPolicy = Object.fromEntries(float.model.quantPoints.filter((p) => p.kind !== 'matmul').map((p, i) => [p.name, { weight: widthOf(i) }]));
    points = await calibrate(float.model, calibImages, labels, { ...methodConfig('ptq4vit', { weightBits: 4, activationBits: 8, n: 4, rounds: 1 }), policy, weightScales: 'channel' });
    file = path.join(scratch.next(), 'w4.safetensors');
    saveQuantizedModel(file, float.weights, { spec: float.model.spec, points, provenance: { method: 'ptq4vit', w_bits: 4, a_bits: 8 } });
    bytes = fs.readFileSync(file);
    const test = await openDataset(TEST);
    images = (await loadBatch(test, [0, 1, 2, 3, 4, 5, 6, 7], float.model.spec.preprocess)).images;
    inMemory = await float.model.forward(images, new QuantRunner(points));
    loaded = openModel({ weights: file });
  });

  test('stores each weight in its container, packed below 8 bits, per-channel Δs', () => {
    const st = SafeTensors.read(file);
    assert.equal(st.metadata['ptq4vit.format'], QUANTIZED_FORMAT);
    const linear = points.filter((p): p is LinearQuant => p.kind !== 'matmul');
    const seen = new Set<number>();
    for (const q of linear) {
      const info = st.info(`${q.point}.weight`);
      const weight = openModel({ weights: MODEL }).weights.tensor(`${q.point}.weight`);
      const [rows, cols] = [weight.shape[0], weight.size / weight.shape[0]];
      assert.equal(q.weightDeltas.length, rows, `${q.point}: one Δ per output channel`);
      const c = containerBits(q.weightBits);
      seen.add(c);
      if (c < 8) assert.deepEqual([info.dtype, info.shape], ['U8', [rows, packedRowBytes(cols, c)]], q.point);
      else assert.equal(info.dtype, 'I8', q.point);
      assert.equal(info.end - info.begin, weightCodeBytes(rows, cols, q.weightBits), `${q.point}: bytes`);
    }
    assert.deepEqual([...seen].sort((a, b) => a - b), [2, 4, 8], 'every container is exercised');
  });

  test("the file's model computes exactly what the in-memory quantized model does", async () => {
    const fromFile = await loaded.model.forward(images, loaded.runner);
    assert.deepEqual(fromFile.data, inMemory.data);
  });

  test('the ONNX export keeps ≤ 4-bit weights packed (bytes counted) and predicts as the simulation', async () => {
    const onnx = await exportOnnx(loaded.model, exportOptionsFor(loaded));
    const inits = onnxInitializers(onnx);
    const byName = new Map(inits.map((t) => [t.name, t]));
    let packedBytes = 0, expected = 0;
    for (const q of points) {
      if (q.kind === 'matmul' || containerBits(q.weightBits) >= 8) continue;
      const st = SafeTensors.read(file).info(`${q.point}.weight`);
      const [rows, rowBytes] = st.shape;
      const init = byName.get(`${q.point}.weight_packed`);
      assert.ok(init, `${q.point}: a packed initializer`);
      assert.equal(init.type, 2, 'uint8');
      assert.equal(init.bytes, rows * rowBytes, `${q.point}: ${q.weightBits}-bit codes in ${containerBits(q.weightBits)}-bit containers`);
      packedBytes += init.bytes;
      expected += st.shape[0] * st.shape[1];
      assert.ok(!inits.some((t) => t.name.startsWith(`${q.point}.`) && t.type === 3 && t.bytes >= rows), `${q.point}: no int8 weight codes stored`);
    }
    assert.ok(packedBytes > 0);
    assert.equal(packedBytes, expected);
    // Weight initializers (codes and Δs) of the packed graph: well under half of an 8-bit graph's.
    const eight = await exportOnnx(loaded.model, { ...exportOptionsFor(loaded), quant: points.map((q) => (q.kind === 'matmul' ? q : { ...q, weightBits: 8 })), codes: undefined });
    const weightBytes = (list: typeof inits) => list.filter((t) => /weight/.test(t.name) && t.type !== 1).reduce((s, t) => s + t.bytes, 0);
    assert.ok(weightBytes(inits) < 0.6 * weightBytes(onnxInitializers(eight)), `${weightBytes(inits)} vs ${weightBytes(onnxInitializers(eight))}`);

    const session = await openOrtNode(onnx);
    const logits = await session.run({ data: images.data, dims: [...images.shape] });
    await session.release();
    const classes = loaded.model.spec.arch.numClasses;
    assert.deepEqual(argmaxPerRow(logits.data, classes), argmaxPerRow(inMemory.data, classes));
    let max = 0;
    for (let i = 0; i < logits.data.length; i++) max = Math.max(max, Math.abs(logits.data[i] - inMemory.data[i]));
    assert.ok(max < 1e-3, `integer graph vs simulation: max |Δ logit| ${max}`);
  });

  test("transformers.js loads the 4-bit folder offline with dtype 'q4' and predicts as onnxruntime-node", async () => {
    const onnx = await exportOnnx(loaded.model, exportOptionsFor(loaded));
    const dir = path.join(scratch.next(), 'vit_tiny_c10_q4');
    writeHfDir(dir, loaded.model.spec, { fp32: await exportOnnx(loaded.model, {}), q4: onnx });
    assert.ok(fs.existsSync(path.join(dir, HF_Q4_FILE)) && !fs.existsSync(path.join(dir, HF_FILES.quantized)));
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, HF_FILES.config), 'utf8'))['transformers.js_config'], { dtype: 'q4' });
    // A few JPEGs at the model's resolution (no resize: both runtimes see the same pixels up to float rounding).
    const { got, node } = await transformersJsVsNode(dir, onnx, loaded.model.spec, path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample'), 10, 'q4');
    assert.deepEqual(got, node);
  });

  /** The file with one tensor's bytes edited. */
  const editTensor = (name: string, edit: (data: Uint8Array) => void): Uint8Array => {
    const { header, data } = splitSafetensors(bytes);
    const copy = new Uint8Array(data); // a copy (Buffer.slice would be a view of the file bytes)
    const [begin, end] = (header[name] as { data_offsets: [number, number] }).data_offsets;
    edit(copy.subarray(begin, end));
    return joinSafetensors(header, copy);
  };
  const refused = (edited: Uint8Array, pattern: RegExp) => assertEvalRefusesFile(path.join(scratch.next(), 'bad.safetensors'), edited, TEST, pattern);
  const pointOfWidth = (bits: number) => points.find((p): p is LinearQuant => p.kind !== 'matmul' && p.weightBits === bits)!;

  test('bad packed data: codes out of range, wrong length for the width, wrong format version → exit 2, one line', () => {
    const three = pointOfWidth(3);
    refused(editTensor(`${three.point}.weight`, (d) => (d[0] = 0xff)), new RegExp(`tensor '${three.point}.weight'.*code 7 outside the 3-bit range`));
    const four = pointOfWidth(4);
    refused(withMetadata(bytes, (m) => {
      const ps = JSON.parse(m['ptq4vit.quant']);
      ps.find((p: { point: string }) => p.point === four.point).weight_bits = 2;
      m['ptq4vit.quant'] = JSON.stringify(ps);
    }), new RegExp(`tensor '${four.point}.weight' holds packed 2-bit codes of shape \\[\\d+, \\d+\\], expected`));
    refused(withMetadata(bytes, (m) => (m['ptq4vit.format'] = 'ptq4vit-quantized-model/9')), /unsupported quantized model format "ptq4vit-quantized-model\/9"/);
    // A /2 file never held packed codes: U8 codes there are refused, not unpacked.
    refused(withMetadata(bytes, (m) => (m['ptq4vit.format'] = QUANTIZED_FORMAT_V2)), /is U8, but \d-bit weight codes .* are stored as I8 before format/);
  });
});
