/**
 * Where calibration time goes: runs one calibration with PTQ4VIT_PROFILE set and prints the ORT time
 * per graph signature and the time outside ORT.
 *
 *   npx tsc -p . && PTQ4VIT_PROFILE=1 node dist/scripts/profile_calib.js [--model vit_tiny_c10] [--bits 6] [--n 100] [--rounds 3]
 */
import { parseArgs } from 'node:util';
import { calibrateMany } from '../src/quant/calibrate.js';
import { methodConfig } from '../src/quant/methods.js';
import { profile, setOrtThreads } from '../src/tensor/ort.js';
import { openSharedModel, sharedCalib32 } from './shared.js';

const { values } = parseArgs({ options: { model: { type: 'string', default: 'vit_tiny_c10' }, bits: { type: 'string', default: '6' }, n: { type: 'string' }, rounds: { type: 'string' }, threads: { type: 'string', default: '2' } } });
if (!process.env.PTQ4VIT_PROFILE) throw new Error('set PTQ4VIT_PROFILE=1');
setOrtThreads(Number(values.threads));
const { model } = openSharedModel(values.model);
const { images, labels } = await sharedCalib32(model.spec.preprocess);
const bits = Number(values.bits);
const opts = methodConfig('ptq4vit', { weightBits: bits, activationBits: bits, n: values.n ? Number(values.n) : undefined, rounds: values.rounds ? Number(values.rounds) : undefined });
const t0 = performance.now();
const { timing } = await calibrateMany(model, images, labels, [opts]);
const recorded = timing.recordSeconds * 1000;
const total = performance.now() - t0;
const rows = [...profile.entries()].sort((a, b) => b[1].ms - a[1].ms);
const ort = rows.reduce((s, [, e]) => s + e.ms, 0);
console.log(`total ${(total / 1000).toFixed(1)} s, recording ${(recorded / 1000).toFixed(1)} s in ${timing.groups} passes, search ${timing.searchSeconds.toFixed(1)} s, inside ORT ${(ort / 1000).toFixed(1)} s, outside ${((total - ort) / 1000).toFixed(1)} s`);
for (const [key, e] of rows.slice(0, 25)) console.log(`${(e.ms / 1000).toFixed(2).padStart(8)} s ${String(e.calls).padStart(6)} calls  ${key}`);
