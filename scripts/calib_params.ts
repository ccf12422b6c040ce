/**
 * The parameters a full calibration chooses, as JSON (with its wall time): for comparing two
 * implementations of the search on the real configurations (e.g. this branch against main's tree).
 *
 *   npx tsc -p . && node dist/scripts/calib_params.js --model vit_tiny_c10 --bits 6 --out params.json [--method ptq4vit]
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { calibrate } from '../src/quant/calibrate.js';
import { methodConfig, type Method } from '../src/quant/methods.js';
import { setOrtThreads } from '../src/tensor/ort.js';
import { openSharedModel, sharedCalib32 } from './shared.js';

const { values } = parseArgs({ options: { model: { type: 'string', default: 'vit_tiny_c10' }, bits: { type: 'string', default: '6' }, method: { type: 'string', default: 'ptq4vit' }, out: { type: 'string' }, threads: { type: 'string', default: '2' } } });
setOrtThreads(Number(values.threads));
const { model } = openSharedModel(values.model);
const { images, labels } = await sharedCalib32(model.spec.preprocess);
const bits = Number(values.bits);
const load0 = os.loadavg().map((l) => l.toFixed(2)).join(' / ');
const t0 = performance.now();
const points = await calibrate(model, images, labels, methodConfig(values.method as Method, { weightBits: bits, activationBits: bits }));
const seconds = (performance.now() - t0) / 1000;
const load1 = os.loadavg().map((l) => l.toFixed(2)).join(' / ');
fs.writeFileSync(values.out ?? `${values.model}.${values.method}-w${bits}.params.json`, JSON.stringify({ model: values.model, method: values.method, bits, seconds, load: `${load0} → ${load1}`, points }, null, 1) + '\n');
console.log(`${values.model} ${values.method} W${bits}A${bits}: ${seconds.toFixed(1)} s (load ${load0} → ${load1})`);
