/**
 * The parameters a full calibration chooses, as JSON (with its wall time): for comparing two
 * implementations of the search on the real configurations (e.g. this branch against main's tree).
 *
 *   npx tsc -p . && node dist/scripts/calib_params.js --model vit_tiny_c10 --bits 6 --out params.json [--method ptq4vit] [--no-prune]
 *
 * Prints how many candidate × row-block scorings the search ran, of those that scoring every candidate takes.
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { calibrate } from '../src/quant/calibrate.js';
import { methodConfig, type Method } from '../src/quant/methods.js';
import { setOrtThreads } from '../src/tensor/ort.js';
import { openSharedModel, sharedCalib32 } from './shared.js';

const { values } = parseArgs({ options: { model: { type: 'string', default: 'vit_tiny_c10' }, bits: { type: 'string', default: '6' }, method: { type: 'string', default: 'ptq4vit' }, out: { type: 'string' }, threads: { type: 'string', default: '2' }, 'no-prune': { type: 'boolean', default: false } } });
setOrtThreads(Number(values.threads));
const { model } = openSharedModel(values.model);
const { images, labels } = await sharedCalib32(model.spec.preprocess);
const bits = Number(values.bits);
const load0 = os.loadavg().map((l) => l.toFixed(2)).join(' / ');
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const stats = { scored: 0, full: 0 };
const points = await calibrate(model, images, labels, { ...methodConfig(values.method as Method, { weightBits: bits, activationBits: bits }), prune: !values['no-prune'], stats });
const seconds = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
const load1 = os.loadavg().map((l) => l.toFixed(2)).join(' / ');
fs.writeFileSync(values.out ?? `${values.model}.${values.method}-w${bits}.params.json`, JSON.stringify({ model: values.model, method: values.method, bits, seconds, load: `${load0} → ${load1}`, points }, null, 1) + '\n');
console.log(`${values.model} ${values.method} W${bits}A${bits}: ${seconds.toFixed(1)} s, CPU ${cpuSeconds.toFixed(1)} s (load ${load0} → ${load1}); scored ${stats.scored} of ${stats.full} candidate × row-block pairs (${((100 * stats.scored) / Math.max(1, stats.full)).toFixed(1)}%)`);
