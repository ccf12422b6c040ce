/**
 * Group-wise weight scales (issue 22, item 1): for ≤ 4-bit weights, one Δ per output row times an integer multiplier
 * m ∈ [1, 2^(8−k)] per group of G input channels, so that m·code is an int8 code. The search's per-row factor never
 * loses to factor 1 on the lattice on the Hessian score it minimizes, and the lattice is the smallest step at or above
 * each group's Δ_maxabs; a group-wise file round-trips (Δs, multipliers, codes) and evaluates exactly as the in-memory
 * model; its ONNX graph holds 4-bit codes and 4-bit multipliers (bytes counted), runs the u8 × s8 integer products
 * (no MatMulNBits) and predicts as the simulation bit for bit, in node and in web; transformers.js loads it as dtype
 * 'q4'; bad group data and group-wise requests that cannot be met are refused with one line; --pin keeps the patch
 * embedding and the classifier at 8 bits.
 *
 * One quick calibration of vit_tiny_c10 (4 images, 5 candidates, 1 round) at W4A8 group32 --pin.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { exportOptionsFor } from '../src/export/graph.js';
import { seededRandom } from '../src/grad/loss.js';
import { exportOnnx } from '../src/export/onnx.js';
import { HF_Q4_FILE, writeHfDir } from '../src/export/hfdir.js';
import { SafeTensors } from '../src/io/safetensors.js';
import { openModel, type LoadedModel } from '../src/open.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { calibrate } from '../src/quant/calibrate.js';
import { DequantizedSource, saveQuantizedModel, weightCodes } from '../src/quant/file.js';
import { fakeQuantActivation } from '../src/quant/kinds/index.js';
import { methodConfig } from '../src/quant/methods.js';
import { packedRowBytes } from '../src/quant/packing.js';
import { maxGroupMultiplier, type LinearQuant, type PointQuant } from '../src/quant/params.js';
import { maxAbsDelta } from '../src/quant/quantizers.js';
import { QuantRunner, dequantize, weightGrid } from '../src/quant/runner.js';
import { groupLattice, searchLinear, type LinearRecord, type SearchConfig } from '../src/quant/search.js';
import { maxAbs } from '../src/numeric.js';
import { openDataset, loadBatch } from '../src/data/datasets.js';
import { Tensor } from '../src/tensor/tensor.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { OnnxType } from '../src/onnx/proto.js';
import { packedWeightCodesT } from '../src/export/packed.js';
import { runGraph } from '../src/tensor/ort.js';
import { assertEvalRefusesFile, runCli, scratchDir, sharedDir, showRun, onnxInitializers } from './helpers.js';
import { withMetadata } from './mutate.js';
import { openOrtNode, openOrtWeb, transformersJsVsNode, argmaxPerRow } from './runtimes.js';

const MODEL = 'assets/models/vit_tiny_c10.safetensors';
const CALIB = 'assets/cifar10-calib32/calib32.json';
const TEST = 'assets/cifar10-test500';
const scratch = scratchDir('groupwise');

/** A deterministic generator (mulberry32, as calibration's seeded losses use). */
const rng = seededRandom;

/** A random linear record: heavy-tailed weights (so clipping below Δ_maxabs can pay), Hessian weights ≥ 0. */
function record(M: number, K: number, N: number, seed: number): LinearRecord {
  const next = rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
  const x = Float32Array.from({ length: M * K }, gauss);
  const w = Float32Array.from({ length: N * K }, () => gauss() * (next() < 0.05 ? 4 : 0.5));
  const out = new Float32Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
    out[m * N + n] = s;
  }
  const grad = Float32Array.from({ length: M * N }, () => 0.1 + next());
  return { point: 'fc', kind: 'linear', x: new Tensor(x, [M, K]), weight: new Tensor(w, [N, K]), bias: null, out: new Tensor(out, [M, N]), grad: new Tensor(grad, [M, N]), weightGroups: 1, postGelu: false };
}

/** Σ_m (g ⊙ (x̂·ŵ_nᵀ − o))² of every output row n, in float64. */
function rowScores(rec: LinearRecord, xq: Float32Array, wq: Float32Array): number[] {
  const [N, K] = rec.weight.shape;
  const M = rec.x.size / K;
  return Array.from({ length: N }, (_, n) => {
    let s = 0;
    for (let m = 0; m < M; m++) {
      let y = 0;
      for (let k = 0; k < K; k++) y += xq[m * K + k] * wq[n * K + k];
      const d = rec.grad!.data[m * N + n] * (y - rec.out.data[m * N + n]);
      s += d * d;
    }
    return s;
  });
}

const SEARCH: SearchConfig = { ...methodConfig('ptq4vit', { weightBits: 4, activationBits: 8, n: 10, rounds: 1, alpha: 0.5, beta: 1 }), weightScales: 'group32' };

describe('group-wise search', () => {
  test('the lattice: s_n = max_g Δ_maxabs/16, m the smallest multiple of s_n at or above each group\'s Δ_maxabs, m·code within int8', () => {
    const maxabs = [0.5, 0.26, 0.031, 1e-9, /* row 2 */ 2, 2, 1, 0.125];
    const { rowDeltas, multipliers } = groupLattice(maxabs, 2, 4);
    assert.deepEqual(rowDeltas, [0.5 / 16, 2 / 16]);
    assert.deepEqual(multipliers, [16, 9, 1, 1, 16, 16, 8, 1]);
    for (let i = 0; i < maxabs.length; i++) {
      const s = rowDeltas[Math.floor(i / 4)], m = multipliers[i];
      assert.ok(s * m >= maxabs[i] * (1 - 1e-12), `group ${i}: step ${s * m} below Δ_maxabs ${maxabs[i]}`);
      if (m > 1) assert.ok(s * (m - 1) < maxabs[i], `group ${i}: m − 1 would do`);
    }
    for (const bits of [2, 3, 4]) {
      const top = maxGroupMultiplier(bits), half = 2 ** (bits - 1);
      assert.ok(-half * top >= -128 && (half - 1) * top <= 127, `${bits}-bit codes × ${top} fit int8`);
    }
  });

  test('one factor per row on the lattice, never worse than factor 1 on the Hessian score (property)', async () => {
    const [M, K, N, G] = [48, 96, 12, 32];
    let improved = 0;
    for (const seed of [1, 2, 3]) {
      const rec = record(M, K, N, seed);
      // The weight half-step alone (the input on its Δ_maxabs grid): the score it minimizes is exactly rowScores.
      const q = await searchLinear(rec, { ...SEARCH, sensitivity: { operand: 'weight', images: 1, report: () => {} } });
      assert.equal(q.weightGroups?.size, G);
      assert.equal(q.weightDeltas.length, N, 'one Δ per row');
      const maxabs = Array.from({ length: N * (K / G) }, (_, i) => maxAbsDelta(maxAbs(rec.weight.data, i * G, (i + 1) * G), 4));
      const lattice = groupLattice(maxabs, N, 4);
      assert.deepEqual(q.weightGroups?.multipliers, lattice.multipliers);
      const factors = q.weightDeltas.map((d, n) => d / lattice.rowDeltas[n]);
      const xq = fakeQuantActivation(rec.x.data, q.input!);
      const dequantized = (rowDeltas: number[]) => dequantize(weightGrid(rec.weight, { ...q, weightDeltas: rowDeltas })).data;
      const chosen = rowScores(rec, xq, dequantized(q.weightDeltas));
      const naive = rowScores(rec, xq, dequantized(lattice.rowDeltas));
      for (let n = 0; n < N; n++) {
        assert.ok(chosen[n] <= naive[n] * (1 + 1e-5), `seed ${seed} row ${n}: searched ${chosen[n]} > factor 1 ${naive[n]}`);
        if (chosen[n] < naive[n] * 0.99) improved++;
      }
      assert.ok(new Set(factors.map((f) => f.toFixed(6))).size > 1, `seed ${seed}: rows chose different factors`);
    }
    assert.ok(improved > 0, 'the search beats factor 1 on some rows');
  });

  test('refuses group-wise scales for > 4-bit weights and for an input width that is not a multiple of G', async () => {
    const refused = (pattern: RegExp) => (e: unknown) => e instanceof Ptq4vitError && pattern.test(e.message) && !e.message.includes('\n');
    await assert.rejects(searchLinear(record(8, 64, 4, 1), { ...SEARCH, weightBits: 6 }), refused(/^fc: group-wise weight scales \(group32\) are for weights of at most 4 bits, got 6-bit/));
    await assert.rejects(searchLinear(record(8, 48, 4, 1), SEARCH), refused(/^fc: group-wise weight scales need the input width to be a multiple of 32, got a 4×48 weight/));
  });

  test('a layer the policy holds above 4 bits (--pin) is per channel, not group-wise', async () => {
    const q = await searchLinear(record(8, 64, 4, 1), { ...SEARCH, policy: { fc: { weight: 8, input: 8 } } });
    assert.deepEqual([q.weightBits, q.weightGroups, q.weightDeltas.length], [8, undefined, 4]);
  });
});

describe('packed group-wise codes in the graph', () => {
  test('a ViT-B fc1 at group16 (147 456 multipliers): the load-time nodes give m·code as int8, transposed', async () => {
    const [rows, cols, G] = [3072, 768, 16];
    const next = rng(7);
    const codes = Int8Array.from({ length: rows * cols }, () => Math.floor(next() * 16) - 8);
    const multipliers = Array.from({ length: (rows * cols) / G }, () => 1 + Math.floor(next() * 16));
    const graph = () => {
      const g = new GraphBuilder();
      const t = packedWeightCodesT(g, 'w', codes, rows, 4, { size: G, multipliers });
      g.reserve('y');
      g.opInto('y', 'Cast', [t], { to: OnnxType.FLOAT });
      return g.finish('packed_groups', [], [{ name: 'y', elemType: OnnxType.FLOAT, shape: [cols, rows] }], 17);
    };
    const y = await runGraph('test:packed_groups', graph, {});
    assert.deepEqual(y.shape, [cols, rows]);
    for (let n = 0; n < rows; n++) for (let k = 0; k < cols; k++) {
      const want = multipliers[(n * cols + k) / G | 0] * codes[n * cols + k];
      if (y.data[k * rows + n] !== want) assert.fail(`row ${n}, column ${k}: ${y.data[k * rows + n]}, expected ${want}`);
    }
  });
});

describe('a group-wise quantized file', () => {
  let file = '';
  let bytes: Uint8Array;
  let points: PointQuant[];
  let images: Tensor;
  let inMemory: Tensor;
  let loaded: LoadedModel;
  let onnx: Uint8Array;
  const linear = () => points.filter((p): p is LinearQuant => p.kind === 'linear' && p.weightGroups !== undefined);

  before(async () => {
    const float = openModel({ weights: MODEL });
    const calib = await openDataset(CALIB);
    const { images: calibImages, labels } = await loadCalibration(calib, 4, 0, float.model.spec.preprocess);
    // As `quantize --pin`: the patch embedding and the classifier at 8 bits.
    const policy = { 'patch_embed.proj': { weight: 8 }, head: { weight: 8, input: 8 } };
    points = await calibrate(float.model, calibImages, labels, { ...methodConfig('ptq4vit', { weightBits: 4, activationBits: 8, n: 4, rounds: 1 }), weightScales: 'group32', policy });
    file = path.join(scratch.next(), 'w4g32.safetensors');
    saveQuantizedModel(file, float.weights, { spec: float.model.spec, points, provenance: { method: 'ptq4vit', w_bits: 4, a_bits: 8 } });
    bytes = fs.readFileSync(file);
    const test = await openDataset(TEST);
    images = (await loadBatch(test, Array.from({ length: 16 }, (_, i) => i), float.model.spec.preprocess)).images;
    inMemory = await float.model.forward(images, new QuantRunner(points));
    loaded = openModel({ weights: file });
    onnx = await exportOnnx(loaded.model, exportOptionsFor(loaded));
  });

  test('every block linear layer is group-wise (N Δs, N·K/32 multipliers), the pinned ones 8-bit per channel; the file round-trips', () => {
    const float = openModel({ weights: MODEL });
    assert.equal(linear().length, 48, '4 group-wise layers in each of the 12 blocks');
    for (const q of linear()) {
      const [N, K] = float.weights.tensor(`${q.point}.weight`).shape;
      assert.equal(q.weightGroups?.size, 32, q.point);
      assert.equal(q.weightDeltas.length, N, q.point);
      assert.equal(q.weightGroups!.multipliers.length, (N * K) / 32, q.point);
      assert.ok(q.weightGroups!.multipliers.every((m) => Number.isInteger(m) && m >= 1 && m <= 16), q.point);
    }
    for (const name of ['patch_embed.proj', 'head']) {
      const q = points.find((p) => p.point === name) as LinearQuant;
      assert.deepEqual([q.weightBits, q.weightGroups, q.weightDeltas.length], [8, undefined, float.weights.tensor(`${name}.weight`).shape[0]], `${name}: 8-bit, one Δ per output channel`);
    }
    assert.deepEqual(loaded.quantized!.points, points, 'the same Δs, group sizes and multipliers back');
    const source = loaded.weights as DequantizedSource;
    const st = SafeTensors.read(file);
    for (const q of linear()) {
      const weight = float.weights.tensor(`${q.point}.weight`);
      const [N, K] = weight.shape;
      assert.deepEqual([st.info(`${q.point}.weight`).dtype, st.info(`${q.point}.weight`).shape], ['U8', [N, packedRowBytes(K, 4)]], `${q.point}: packed 4-bit`);
      assert.deepEqual(source.codes(`${q.point}.weight`, weight.shape), weightCodes(weight, q), `${q.point}: the same codes back`);
    }
  });

  test("the file's model computes exactly what the in-memory model does", async () => {
    assert.deepEqual((await loaded.model.forward(images, loaded.runner)).data, inMemory.data);
  });

  test('the ONNX graph holds 4-bit codes and 4-bit multipliers (bytes counted), no MatMulNBits, and predicts as the simulation bit for bit, in node and web', async () => {
    const float = openModel({ weights: MODEL });
    const inits = initializers(onnx);
    for (const q of linear()) {
      const [N, K] = float.weights.tensor(`${q.point}.weight`).shape;
      const codes = inits.get(`${q.point}.weight_packed`)!, m = inits.get(`${q.point}.weight_group_multipliers_packed`)!;
      assert.deepEqual([codes.type, codes.bytes], [2, (N * K) / 2], `${q.point}: uint8, two codes a byte`);
      assert.deepEqual([m.type, m.bytes], [2, (N * K) / 32 / 2], `${q.point}: uint8, two multipliers a byte`);
    }
    assert.ok(!new TextDecoder().decode(onnx).includes('MatMulNBits'), 'integer products only');
    const classes = loaded.model.spec.arch.numClasses;
    const batch = { data: images.data, dims: [...images.shape] };
    const node = await openOrtNode(onnx);
    const logits = await node.run(batch);
    await node.release();
    assert.deepEqual(logits.data, inMemory.data, 'graph = simulation, bit for bit');
    const web = await openOrtWeb(onnx);
    const webLogits = await web.run(batch);
    await web.release();
    // Integer products with int32 sums: web computes the same codes as node, so the same predictions.
    assert.deepEqual(argmaxPerRow(webLogits.data, classes), argmaxPerRow(logits.data, classes));
  });

  test('2-bit group-wise weights: multipliers up to 64 ride as one byte each in the graph, which still equals the simulation bit for bit', async () => {
    const float = openModel({ weights: MODEL });
    const calib = await openDataset(CALIB);
    const { images: calibImages, labels } = await loadCalibration(calib, 2, 0, float.model.spec.preprocess);
    const w2 = await calibrate(float.model, calibImages, labels, { ...methodConfig('ptq4vit', { weightBits: 2, activationBits: 8, n: 2, rounds: 1 }), weightScales: 'group32' });
    const grouped = w2.filter((p): p is LinearQuant => p.kind === 'linear' && p.weightGroups !== undefined);
    assert.ok(grouped.some((q) => q.weightGroups!.multipliers.some((m) => m > 16)), 'some multiplier needs more than 4 bits');
    assert.ok(grouped.every((q) => q.weightGroups!.multipliers.every((m) => m >= 1 && m <= 64)));
    const graph = await exportOnnx(float.model, { quant: w2 });
    const inits = initializers(graph);
    const fc1 = grouped.find((q) => q.point.endsWith('mlp.fc1'))!;
    const [N, K] = float.weights.tensor(`${fc1.point}.weight`).shape;
    assert.deepEqual(inits.get(`${fc1.point}.weight_group_multipliers`), { type: 3, bytes: (N * K) / 32 }, 'int8, one byte a multiplier');
    assert.deepEqual(inits.get(`${fc1.point}.weight_packed`), { type: 2, bytes: (N * K) / 4 }, 'four 2-bit codes a byte');
    const few = new Tensor(images.data.slice(0, 4 * (images.size / images.shape[0])), [4, ...images.shape.slice(1)]);
    const node = await openOrtNode(graph);
    const logits = await node.run({ data: few.data, dims: [...few.shape] });
    await node.release();
    assert.deepEqual(logits.data, (await float.model.forward(few, new QuantRunner(w2))).data);
  });

  test("transformers.js loads the group-wise folder with dtype 'q4' and predicts as onnxruntime-node", async () => {
    const dir = path.join(scratch.next(), 'vit_tiny_c10_g32');
    writeHfDir(dir, loaded.model.spec, { fp32: await exportOnnx(loaded.model, {}), q4: onnx });
    assert.ok(fs.existsSync(path.join(dir, HF_Q4_FILE)));
    const { got, node } = await transformersJsVsNode(dir, onnx, loaded.model.spec, path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample'), 6, 'q4');
    assert.deepEqual(got, node);
  });

  const refused = (edited: Uint8Array, pattern: RegExp) => assertEvalRefusesFile(path.join(scratch.next(), 'bad.safetensors'), edited, TEST, pattern);
  const editPoint = (point: string, edit: (p: Record<string, unknown>) => void) => withMetadata(bytes, (m) => {
    const ps = JSON.parse(m['ptq4vit.quant']);
    edit(ps.find((p: { point: string }) => p.point === point));
    m['ptq4vit.quant'] = JSON.stringify(ps);
  });

  test('bad group data → exit 2, one line naming the file and the point', () => {
    const fc2 = linear().find((q) => q.point.endsWith('mlp.fc2'))!;
    const fc2Name = fc2.point.replace(/\./g, '\\.');
    refused(editPoint(fc2.point, (p) => (p.weight_deltas = (p.weight_deltas as number[]).slice(1))), new RegExp(`point ${fc2Name} has 191 weight_deltas, expected 192 \\(one per output row of the group-wise \\[192, 768\\] weight`));
    refused(editPoint(fc2.point, (p) => (p.weight_group_multipliers = (p.weight_group_multipliers as number[]).slice(1))), new RegExp(`point ${fc2Name} has 4607 weight_group_multipliers, expected 4608 \\(192 rows × 24 groups of 32\\)`));
    refused(editPoint(fc2.point, (p) => ((p.weight_group_multipliers as number[])[5] = 17)), new RegExp(`\\(${fc2Name}\\): weight_group_multipliers\\[5\\] is 17, expected an integer from 1 to 16`));
    refused(editPoint(fc2.point, (p) => ((p.weight_group_multipliers as number[])[5] = 0)), /weight_group_multipliers.*\[5\].*(>=|≥|greater|too small)/i);
    // A group-wise point of an earlier development version: a float Δ per group, no multipliers.
    refused(editPoint(fc2.point, (p) => delete p.weight_group_multipliers), /points\[\d+\]\.weight_group_size: set without weight_group_multipliers \(group-wise files of an earlier development version.*\(got 32\)/);
    refused(editPoint('head', (p) => (p.weight_group_multipliers = [1])), /points\[\d+\]\.weight_group_multipliers: set without weight_group_size/);
    // 128 does not divide the 192 input channels of qkv.
    refused(editPoint('blocks.0.attn.qkv', (p) => (p.weight_group_size = 128)), /point blocks\.0\.attn\.qkv has weight_group_size 128, which does not divide the input width of the \[576, 192\] weight/);
    refused(editPoint('blocks.0.attn.qkv', (p) => (p.weight_group_size = 24)), /weight_group_size.*expected a power of two ≥ 16/);
  });

  test('quantize refuses group-wise scales it cannot meet before calibrating: > 4-bit weights, K not a multiple of G', () => {
    const run = (extra: string[]) => runCli(['quantize', '--model', MODEL, '--calib', CALIB, '--a-bits', '8', '--out', path.join(scratch.next(), 'x.safetensors'), ...extra], 120_000);
    const six = run(['--w-bits', '6', '--weight-scales', 'group32']);
    assert.equal(six.status, 2, showRun(six));
    assert.match(six.stderr.trim(), /^ptq4vit: error: --weight-scales group32: \S+: group-wise weight scales \(group32\) are for weights of at most 4 bits, got 6-bit weights/);
    const wide = run(['--w-bits', '4', '--weight-scales', 'group128']);
    assert.equal(wide.status, 2, showRun(wide));
    assert.match(wide.stderr.trim(), /^ptq4vit: error: --weight-scales group128: blocks\.0\.attn\.qkv: group-wise weight scales need the input width to be a multiple of 128, got a 576×192 weight$/);
    const pinMixed = run(['--size-mb', '3', '--pin']);
    assert.equal(pinMixed.status, 2, showRun(pinMixed));
    assert.match(pinMixed.stderr.trim(), /^ptq4vit: error: --pin is for uniform widths: mixed precision \(--size-mb\) pins the patch embedding and the classifier at 8 bits already/);
  });
});

/** Initializers of an ONNX model by name: data type and raw byte length (a minimal protobuf walk, for counting). */
function initializers(bytes: Uint8Array): Map<string, { type: number; bytes: number }> {
  return new Map(onnxInitializers(bytes).map(({ name, ...rest }) => [name, rest]));
}
