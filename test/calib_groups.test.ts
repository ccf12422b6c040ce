/**
 * Calibration in groups of points (bounded memory) makes the same choices as the all-at-once recording
 * it replaced: test/assets/calib_reference.json holds the parameters chosen by main at 2d22ff4 (before
 * grouped recording and integer scoring; scripts/make_calib_fixture.ts) on small configurations.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { openDataset } from '../src/data/datasets.js';
import { computeGradients } from '../src/grad/gradients.js';
import { openModel } from '../src/open.js';
import type { VisionModel } from '../src/models/types.js';
import { calibrateMany, planGroups, type CalibrationProgress } from '../src/quant/calibrate.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { methodConfig } from '../src/quant/methods.js';
import type { PointQuant } from '../src/quant/params.js';
import { profile } from '../src/tensor/ort.js';
import { Tensor } from '../src/tensor/tensor.js';
import { calibrationFixtureJobs, type FixtureJob } from './calib_fixture_jobs.js';
import { repoRoot, sharedDir } from './helpers.js';

const haveShared = fs.existsSync(path.join(sharedDir, 'models', 'vit_tiny_c10.safetensors'));
const reference = JSON.parse(fs.readFileSync(path.join(repoRoot, 'test', 'assets', 'calib_reference.json'), 'utf8')) as { jobs: (FixtureJob & { points: PointQuant[] })[] };

const models = new Map<string, VisionModel>();
function model(name: string): VisionModel {
  let m = models.get(name);
  if (!m) {
    m = openModel({ weights: path.join(sharedDir, 'models', `${name}.safetensors`), config: path.join(sharedDir, 'models', `${name}.json`) }).model;
    models.set(name, m);
  }
  return m;
}

async function calibImages(m: VisionModel, count: number): Promise<{ images: Tensor; labels: Int32Array }> {
  const calib = await openDataset(path.join(sharedDir, 'data', 'cifar10', 'calib32.json'));
  const { images, labels } = await loadCalibration(calib, 32, 0, m.spec.preprocess);
  const per = images.size / images.shape[0];
  return { images: new Tensor(images.data.slice(0, count * per), [count, ...images.shape.slice(1)]), labels: labels!.slice(0, count) };
}

/** The first point whose parameters differ, for a readable failure. */
function firstDifference(ours: PointQuant[], theirs: PointQuant[]): string | null {
  for (let i = 0; i < theirs.length; i++) {
    const a = JSON.stringify(ours[i]), b = JSON.stringify(theirs[i]);
    if (a !== b) return `point ${i}:\n  now    ${a}\n  before ${b}`;
  }
  return ours.length === theirs.length ? null : `${ours.length} points vs ${theirs.length}`;
}

describe('grouped calibration = the all-at-once calibration of main@2d22ff4', { skip: !haveShared && 'no ../shared/models' }, () => {
  for (const job of calibrationFixtureJobs) {
    // Many small groups means many passes: run that on one ViT and one Swin job to keep the suite short
    // (16 MiB: a few groups for vit_tiny_c10 on 12 images; 1 byte: every point its own group).
    const budgets: [string, number | undefined][] = [['default group budget (one group)', undefined]];
    if (job.model === 'vit_tiny_c10' && job.method === 'base') budgets.push(['16 MiB groups', 16 * 2 ** 20]);
    if (job.model === 'swin_micro_c10' && job.method === 'ptq4vit') budgets.push(['every point its own group', 1]);
    // Every point searched in a worker thread (two at once, one onnxruntime thread each): the same choices.
    const inWorkers = job.method === 'ptq4vit' && job.bits === 8;
    if (inWorkers) budgets.push(['every point in a search worker', undefined]);
    // …and in 32 MiB groups (planned at 16 MiB), each recorded while the previous one's points are searched.
    if (inWorkers && job.model === 'vit_tiny_c10') budgets.push(['search workers, the next group recorded meanwhile', 32 * 2 ** 20]);
    // …and with 8 MiB in memory and 96 MiB per group in record files: a few large groups, each point read
    // back for its search, two at once, the next group recorded meanwhile.
    if (inWorkers && job.model === 'vit_tiny_c10') budgets.push(['search workers, groups in record files', 8 * 2 ** 20]);
    for (const [what, groupBytes] of budgets) {
      // The in-memory budgets test grouping itself: no record files there.
      const recordFileBytes = what.endsWith('record files') ? 96 * 2 ** 20 : 0;
      const workers = what.startsWith('every point in a search worker') || what.startsWith('search workers') ? { searchWorkers: 2, searchWorkerMinFloats: 0 } : { searchWorkers: 0 };
      // Candidates are scored in batches; a smaller batch budget (1–4 candidates per batch here, no row
      // blocks) must not change any score, so W8 also runs with one.
      const batchFloats = groupBytes === undefined && job.bits === 8 && job.method === 'ptq4vit' && workers.searchWorkers === 0 ? 1_200_000 : undefined;
      test(`${job.model} ${job.method} W${job.bits}A${job.bits}, ${job.images} images, n ${job.n}, ${job.rounds} rounds — ${what}${batchFloats ? ', small candidate batches' : ''}`, async () => {
        const m = model(job.model);
        const { images, labels } = await calibImages(m, job.images);
        const opts = methodConfig(job.method, { weightBits: job.bits, activationBits: job.bits, n: job.n, rounds: job.rounds });
        const events: CalibrationProgress[] = [];
        const { results, timing } = await calibrateMany(m, images, labels, [{ ...opts, groupBytes, recordFileBytes, batchFloats, ...workers, onProgress: (e) => events.push(e) }]);
        const expected = reference.jobs.find((j) => j.model === job.model && j.method === job.method && j.bits === job.bits)!;
        const ours = JSON.parse(JSON.stringify(results[0])) as PointQuant[];
        const diff = firstDifference(ours, expected.points);
        assert.equal(diff, null, `chosen parameters differ from main@2d22ff4 — ${diff}`);
        const points = m.quantPoints.length;
        if (workers.searchWorkers > 0) assert.equal(timing.concurrentSearches, 2, 'two points were searched at once');
        if (workers.searchWorkers > 0 && groupBytes !== undefined) assert.ok(timing.recordedDuringSearch! > 0, `groups recorded while earlier ones were searched: ${timing.recordedDuringSearch} of ${timing.groups}`);
        if (groupBytes === undefined) assert.equal(timing.groups, 1);
        else if (groupBytes === 1) assert.equal(timing.groups, points);
        else if (recordFileBytes > 0) {
          assert.ok(timing.groups > 1 && timing.groups <= 5, `${timing.groups} groups`);
          assert.equal(timing.groupsInFiles, timing.groups);
        }
        else assert.ok(timing.groups > 3 && timing.groups < points, `${timing.groups} groups`);
        // Progress: every pass reports all images, the search every point once, in order.
        const searches = events.filter((e) => e.phase === 'search');
        assert.deepEqual(searches.map((e) => e.done), Array.from({ length: points }, (_, i) => i + 1));
        const passEnds = events.filter((e) => e.phase === 'record' && e.images === job.images);
        assert.equal(passEnds.length, timing.groups);
      });
    }
  }

  for (const recordFileBytes of [0, 24 * 2 ** 20]) {
    test(`pipelined with workers${recordFileBytes ? ', groups in record files' : ''}, a search that fails: calibration rejects with its error (no hang)`, async () => {
      const m = model('vit_tiny_c10');
      const { images, labels } = await calibImages(m, 12);
      // Group-wise scales with 6-bit weights: every linear layer's search refuses (group-wise is for ≤ 4 bits).
      const opts = { ...methodConfig('ptq4vit', { weightBits: 6, activationBits: 6, n: 4, rounds: 1 }), weightScales: 'group32' as const, groupBytes: (recordFileBytes ? 8 : 32) * 2 ** 20, recordFileBytes, searchWorkers: 2, searchWorkerMinFloats: 0 };
      await assert.rejects(calibrateMany(m, images, labels, [opts]), (e: Error) => /group-wise weight scales \(group32\) are for weights of at most 4 bits/.test(e.message));
    });
  }

  test('record files in a directory that cannot be written: one line naming it, not a stack trace', async () => {
    const m = model('vit_tiny_c10');
    const { images, labels } = await calibImages(m, 4);
    const opts = { ...methodConfig('base', { weightBits: 8, activationBits: 8, n: 4, rounds: 1 }), groupBytes: 2 ** 20, recordFileBytes: 8 * 2 ** 20, searchWorkers: 0 };
    const before = process.env.TMPDIR;
    process.env.TMPDIR = path.join(repoRoot, 'no-such-dir', 'tmp');
    try {
      await assert.rejects(calibrateMany(m, images, labels, [opts]), (e: Error) => e.name === 'Ptq4vitError' && /could not write records to a temporary file in .*no-such-dir\/tmp \(ENOENT\)/.test(e.message));
    } finally {
      if (before === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = before;
    }
  });

  test('two configurations (Hessian and cosine) on shared recordings, in groups = each alone', async () => {
    const m = model('swin_micro_c10');
    const { images, labels } = await calibImages(m, 12);
    const jobs = calibrationFixtureJobs.filter((j) => j.model === 'swin_micro_c10');
    const configs = jobs.map((j) => ({ ...methodConfig(j.method, { weightBits: j.bits, activationBits: j.bits, n: j.n, rounds: j.rounds }), groupBytes: 2 * 2 ** 20, recordFileBytes: 0 }));
    const { results, timing } = await calibrateMany(m, images, labels, configs);
    assert.ok(timing.groups > 1, `2 MiB groups split swin_micro_c10 on 12 images (got ${timing.groups})`);
    jobs.forEach((job, i) => {
      const expected = reference.jobs.find((j) => j.model === job.model && j.method === job.method && j.bits === job.bits)!;
      assert.equal(firstDifference(JSON.parse(JSON.stringify(results[i])), expected.points), null, job.method);
    });
  });
});

describe('planGroups', () => {
  test('greedy consecutive groups under the budget; an oversized point is a group of its own', () => {
    const pts = [10, 20, 30, 100, 5, 5].map((bytes, i) => ({ name: `p${i}`, bytes }));
    assert.deepEqual(planGroups(pts, 60), [['p0', 'p1', 'p2'], ['p3'], ['p4', 'p5']]);
    assert.deepEqual(planGroups(pts, 1), pts.map((p) => [p.name]));
    assert.deepEqual(planGroups(pts, Infinity), [pts.map((p) => p.name)]);
    assert.deepEqual(planGroups([], 10), []);
    // The first group with its own budget (a pipelined calibration's later groups get half).
    assert.deepEqual(planGroups(pts, 60, 30), [['p0', 'p1', 'p2'], ['p3'], ['p4', 'p5']]);
    assert.deepEqual(planGroups(pts, 30, 110), [['p0', 'p1'], ['p2'], ['p3', 'p4', 'p5']]);
  });
});

describe('Tape backward restricted to some points', { skip: !haveShared && 'no ../shared/models' }, () => {
  test('same ∂L/∂O for the wanted points, nothing else reported, and the pass stops below them', async () => {
    const m = model('vit_tiny_c10');
    const { images, labels } = await calibImages(m, 4);
    // Count the ORT products the backward passes run (profile is filled while PTQ4VIT_PROFILE is set).
    const products = () => [...profile.entries()].filter(([k]) => k.startsWith('matmul')).reduce((s, [, e]) => s + e.calls, 0);
    const saved = process.env.PTQ4VIT_PROFILE;
    process.env.PTQ4VIT_PROFILE = '1';
    try {
      const all = new Map<string, Float32Array>();
      let before = products();
      await computeGradients(m, images, labels, { loss: 'label' }, (_c, point, g) => void all.set(point, g.data.slice()));
      const fullCost = products() - before;
      const wanted = new Set(['blocks.10.mlp.fc1', 'blocks.10.attn.matmul2']);
      const some = new Map<string, Float32Array>();
      before = products();
      await computeGradients(m, images, labels, { loss: 'label', points: () => wanted }, (_c, point, g) => void some.set(point, g.data.slice()));
      const partCost = products() - before;
      assert.deepEqual([...some.keys()].sort(), [...wanted].sort());
      for (const p of wanted) assert.deepEqual(some.get(p), all.get(p), p);
      // The forward passes cost the same; the backward stops in block 10 of 12, so far fewer products.
      assert.ok(partCost < 0.75 * fullCost, `products: ${partCost} restricted vs ${fullCost} full`);
    } finally {
      if (saved === undefined) delete process.env.PTQ4VIT_PROFILE;
      else process.env.PTQ4VIT_PROFILE = saved;
    }
  });
});
