/**
 * Where an exported graph's time goes: onnxruntime's own profile (`enableProfiling`) of a model file's
 * whole-model ONNX graph (a quantized file → the integer graph, or with --fp32 the graph of its float
 * weights; a float checkpoint needs --config), kernel time summed by operator over --runs batches.
 *
 *   npx tsc -p . && node dist/scripts/profile_onnx.js --model out/agreement/swin_micro_c10.ptq4vit-w8a8.safetensors [--fp32] [--threads 1] [--batch 64] [--runs 6]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import { exportOptionsFor } from '../src/export/graph.js';
import { exportOnnx } from '../src/export/onnx.js';
import { openModel } from '../src/open.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, config: { type: 'string' }, fp32: { type: 'boolean', default: false }, threads: { type: 'string', default: '1' }, batch: { type: 'string', default: '64' }, runs: { type: 'string', default: '6' } } });
if (!values.model) throw new Error('--model FILE is required');
const loaded = openModel({ weights: values.model, config: values.config });
const bytes = await exportOnnx(loaded.model, values.fp32 ? {} : exportOptionsFor(loaded));
const { inChans, imgSize } = loaded.model.spec.arch;
const batch = Number(values.batch), runs = Number(values.runs);
const data = Float32Array.from({ length: batch * inChans * imgSize * imgSize }, (_, i) => Math.sin(i * 0.13));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-profile-'));
const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: Number(values.threads), interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: path.join(dir, 'ort') });
for (let r = 0; r < runs; r++) await session.run({ pixel_values: new ort.Tensor('float32', data, [batch, inChans, imgSize, imgSize]) });
await session.release(); // writes the profile
const file = fs.readdirSync(dir).map((f) => path.join(dir, f))[0];
const events = JSON.parse(fs.readFileSync(file, 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
fs.rmSync(dir, { recursive: true, force: true });
const byOp = new Map<string, number>();
for (const e of events) if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) byOp.set(e.args?.op_name ?? '?', (byOp.get(e.args?.op_name ?? '?') ?? 0) + e.dur);
const total = [...byOp.values()].reduce((a, b) => a + b, 0);
console.log(`${path.basename(values.model)} (${values.fp32 ? 'FP32' : loaded.quantized ? 'integer' : 'FP32'} graph), batch ${batch}, ${values.threads} thread(s): ${(total / 1000 / runs).toFixed(1)} ms kernel time per batch`);
for (const [op, d] of [...byOp].sort((a, b) => b[1] - a[1])) console.log(`${op.padEnd(24)} ${(d / 1000 / runs).toFixed(1).padStart(8)} ms  ${((100 * d) / total).toFixed(1).padStart(5)}%`);
