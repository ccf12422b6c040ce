/**
 * Block recompute (calibrate.ts): groups recorded from segment boundaries — one whole forward + backward
 * pass keeps the activations and ∂L/∂ between the model's segments, each later group runs only its own
 * segments — hold the same records, byte for byte, as whole recording passes, with fewer segments run.
 * (The chosen parameters against main's are checked by calib_groups.test.ts, which now records this way.)
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { openDataset } from '../src/data/datasets.js';
import { openModel } from '../src/open.js';
import { CalibrationSession, sessionOptions } from '../src/quant/calibrate.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { methodConfig } from '../src/quant/methods.js';
import { Tensor } from '../src/tensor/tensor.js';
import { sharedDir } from './helpers.js';

const haveShared = fs.existsSync(path.join(sharedDir, 'models', 'vit_tiny_c10.safetensors'));

interface Recorded {
  records: Map<string, Float32Array[]>;
  groups: number;
  passEquivalents: number;
  groupsInFiles: number;
}

/** A bundled CIFAR model of ../shared/models, or a parity fixture of ../shared/fixtures (the other families). */
function source(name: string): { weights: string; config: string } {
  const dir = name.endsWith('_fixture') ? path.join(sharedDir, 'fixtures') : path.join(sharedDir, 'models');
  return { weights: path.join(dir, `${name}.safetensors`), config: path.join(dir, `${name}.json`) };
}

async function record(name: string, count: number, opts: { recompute: boolean; groupBytes: number; hessian: boolean; boundaryBytes?: number; twice?: boolean; recordFileBytes?: number }): Promise<Recorded> {
  const { model } = openModel(source(name));
  const calib = await openDataset(path.join(sharedDir, 'data', 'cifar10', 'calib32.json'));
  const { images, labels } = await loadCalibration(calib, 32, 0, model.spec.preprocess);
  const per = images.size / images.shape[0];
  const x = new Tensor(images.data.slice(0, count * per), [count, ...images.shape.slice(1)]);
  const config = { ...methodConfig(opts.hessian ? 'ptq4vit' : 'base', { weightBits: 8, activationBits: 8, loss: 'pseudo' }), chunkSize: 2 };
  const session = new CalibrationSession(model, x, labels!.slice(0, count), { ...sessionOptions(model, [config]), groupBytes: opts.groupBytes, recompute: opts.recompute, boundaryBytes: opts.boundaryBytes, recordFileBytes: opts.recordFileBytes ?? 0 });
  const records = new Map<string, Float32Array[]>();
  await session.forEachPoint(async ({ point, records: r }) => {
    records.set(point.name, [...r.inputs, r.output, ...(r.grad ? [r.grad] : [])].map((t) => t.data.slice()));
  });
  const passes = session.passEquivalents, groupsInFiles = session.groupsInFiles;
  if (opts.recompute && opts.twice) {
    // A second traversal (as mixed precision makes) records every group again, group 0 included, from the boundaries.
    await session.forEachPoint(async ({ point, records: r }) => {
      const again = [...r.inputs, r.output, ...(r.grad ? [r.grad] : [])];
      again.forEach((t, i) => assert.ok(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(Buffer.from(records.get(point.name)![i].buffer)), `${point.name}: second traversal, record ${i}`));
    });
  }
  const out = { records, groups: session.groups, passEquivalents: passes, groupsInFiles };
  await session.close();
  return out;
}

describe('block recompute = whole recording passes', { skip: !haveShared && 'no ../shared/models' }, () => {
  const cases = [
    // A short last chunk, and the boundaries in a temporary file (no memory budget).
    { model: 'vit_tiny_c10', images: 3, groupBytes: 3 * 2 ** 20, hessian: true, boundaryBytes: 0 },
    { model: 'swin_micro_c10', images: 2, groupBytes: 2 ** 20, hessian: true, twice: true },
    { model: 'vit_tiny_c10', images: 2, groupBytes: 2 ** 20, hessian: false }, // forward only (cosine metric)
    // The other families' segments (Mixer's token MLPs, BEiT's relative bias blocks, Swin V2's stages), on their fixtures.
    { model: 'mixer_p16_224_fixture', images: 2, groupBytes: 2 ** 20, hessian: true },
    { model: 'beit_p16_224_fixture', images: 2, groupBytes: 2 ** 20, hessian: true },
    { model: 'swinv2_p4_w8_256_fixture', images: 1, groupBytes: 2 ** 20, hessian: true },
    // ViT's optional parts in its segments: norm_pre in the embedding (CLIP), fc_norm after the pool and no final norm (MAE).
    { model: 'vit_clip_p16_224_fixture', images: 1, groupBytes: 2 ** 20, hessian: true },
    { model: 'vit_avgpool_p16_224_fixture', images: 1, groupBytes: 2 ** 20, hessian: true },
  ];
  for (const c of cases) {
    test(`${c.model}, ${c.images} images, ${c.groupBytes} B groups, ${c.hessian ? 'with ∂L/∂O' : 'forward only'}`, async () => {
      const whole = await record(c.model, c.images, { recompute: false, groupBytes: c.groupBytes, hessian: c.hessian });
      const recomputed = await record(c.model, c.images, { recompute: true, groupBytes: c.groupBytes, hessian: c.hessian, boundaryBytes: c.boundaryBytes, twice: c.twice });
      assert.ok(whole.groups > 3, `several groups (${whole.groups})`);
      assert.equal(recomputed.groups, whole.groups);
      assert.deepEqual([...recomputed.records.keys()], [...whole.records.keys()]);
      for (const [point, tensors] of whole.records) {
        const ours = recomputed.records.get(point)!;
        assert.equal(ours.length, tensors.length, point);
        tensors.forEach((t, i) => assert.ok(Buffer.from(ours[i].buffer).equals(Buffer.from(t.buffer)), `${point}: record ${i} differs`));
      }
      // Whole passes: one per group; recompute: one whole pass, then each group's own segments.
      assert.equal(whole.passEquivalents, whole.groups);
      assert.ok(recomputed.passEquivalents < whole.groups / 2, `${recomputed.passEquivalents} pass equivalents for ${whole.groups} groups`);
      console.log(`${c.model}: ${whole.groups} groups, ${recomputed.passEquivalents.toFixed(2)} pass equivalents with recompute`);
    });
  }

  // Records beyond the memory budget in record files: larger groups (fewer passes), the same bytes. The file
  // budget is a few of the memory budgets, so that group 0 is part memory, part file, and later groups files.
  const filed = [
    { model: 'vit_tiny_c10', images: 3, groupBytes: 2 ** 20, recordFileBytes: 4 * 2 ** 20, hessian: true, recompute: true, twice: true },
    { model: 'swin_micro_c10', images: 2, groupBytes: 2 ** 20, recordFileBytes: 3 * 2 ** 20, hessian: true, recompute: true },
    { model: 'vit_tiny_c10', images: 2, groupBytes: 2 ** 20, recordFileBytes: 3 * 2 ** 20, hessian: false, recompute: false }, // whole forward passes
  ];
  for (const c of filed) {
    test(`${c.model}, ${c.images} images, ${c.groupBytes} B in memory + ${c.recordFileBytes} B record files per group, ${c.hessian ? 'with ∂L/∂O' : 'forward only'}${c.recompute ? '' : ', whole passes'}`, async () => {
      const inMemory = await record(c.model, c.images, { recompute: false, groupBytes: c.groupBytes, hessian: c.hessian });
      const filedRun = await record(c.model, c.images, { recompute: c.recompute, groupBytes: c.groupBytes, hessian: c.hessian, twice: c.twice, recordFileBytes: c.recordFileBytes });
      assert.ok(filedRun.groups > 1 && filedRun.groups < inMemory.groups / 2, `${filedRun.groups} groups with record files, ${inMemory.groups} in memory alone`);
      assert.equal(filedRun.groupsInFiles, filedRun.groups, 'every group has points in its file');
      assert.deepEqual([...filedRun.records.keys()], [...inMemory.records.keys()]);
      for (const [point, tensors] of inMemory.records) {
        const ours = filedRun.records.get(point)!;
        tensors.forEach((t, i) => assert.ok(Buffer.from(ours[i].buffer).equals(Buffer.from(t.buffer)), `${point}: record ${i} differs`));
      }
      assert.ok(filedRun.passEquivalents < inMemory.passEquivalents / 2, `${filedRun.passEquivalents} pass equivalents, ${inMemory.passEquivalents} in memory alone`);
    });
  }
});
