/**
 * Writes test/assets/calib_reference.json: the quantization parameters chosen by small calibrations of
 * vit_tiny_c10 and swin_micro_c10 (the first 8 or 12 images of calib32 — 12 is two chunks —, n 8, 1 or 2 rounds), which test/calib_groups.test.ts
 * compares against. It was generated from main at 2d22ff4 — the code before grouped recording and integer
 * scoring — so that the test checks the new code makes the same choices as the old one. Regenerate only when
 * the search itself changes on purpose (and say so in the commit).
 *
 *   npx tsc -p . && node dist/scripts/make_calib_fixture.js
 */
import fs from 'node:fs';
import path from 'node:path';
import { calibrate } from '../src/quant/calibrate.js';
import { methodConfig } from '../src/quant/methods.js';
import { Tensor } from '../src/tensor/tensor.js';
import { calibrationFixtureJobs } from '../test/calib_fixture_jobs.js';
import { openSharedModel, sharedCalib32 } from './shared.js';

const out: Record<string, unknown> = { generated_from: process.argv[2] ?? 'unknown', jobs: [] as unknown[] };
for (const job of calibrationFixtureJobs) {
  const { model } = openSharedModel(job.model);
  const { images, labels } = await sharedCalib32(model.spec.preprocess);
  const per = images.size / images.shape[0];
  const few = new Tensor(images.data.slice(0, job.images * per), [job.images, ...images.shape.slice(1)]);
  const points = await calibrate(model, few, labels!.slice(0, job.images), methodConfig(job.method, { weightBits: job.bits, activationBits: job.bits, n: job.n, rounds: job.rounds }));
  (out.jobs as unknown[]).push({ ...job, points });
  console.log(`${job.model} ${job.method} W${job.bits}: ${points.length} points`);
}
fs.writeFileSync(path.join('test', 'assets', 'calib_reference.json'), JSON.stringify(out, null, 1) + '\n');
