/**
 * Which integer product form each runtime runs fast: one linear layer's product [M, K]·[K, N] as
 *   float   MatMul (float32 activations and weights; the FP32 graph)
 *   i2f-s8  com.microsoft MatMulIntegerToFloat, uint8 activations × int8 weights (the integer graph today)
 *   i2f-u8  MatMulIntegerToFloat, uint8 × uint8 weights (zero point 128)
 *   mmi-s8  MatMulInteger (uint8 × int8) → Cast → Mul
 *   mmi-u8  MatMulInteger (uint8 × uint8, zero point 128) → Cast → Mul
 * under onnxruntime-node (CPU EP) or onnxruntime-web (wasm, --threads), passes interleaved, median of --repeat.
 * Prints each form's time relative to float MatMul in the same run, with the load average.
 *
 *   npx tsc -p . && node dist/scripts/wasm_ops.js [--runtime web|node] [--threads 1] [--shape 2080x192x576] [--repeat 7]
 */
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import ortNode from 'onnxruntime-node';
import { GraphBuilder } from '../src/onnx/builder.js';
import { encodeModel, OnnxType } from '../src/onnx/proto.js';

const { values } = parseArgs({ options: { runtime: { type: 'string', default: 'web' }, threads: { type: 'string', default: '1' }, shape: { type: 'string', default: '2080x192x576' }, repeat: { type: 'string', default: '7' }, iters: { type: 'string', default: '10' } } });
const [M, K, N] = values.shape!.split('x').map(Number);
const threads = Number(values.threads), repeat = Number(values.repeat), iters = Number(values.iters);
const web = values.runtime === 'web';

type Form = 'float' | 'i2f-s8' | 'i2f-u8' | 'mmi-s8' | 'mmi-u8';
const FORMS: Form[] = ['float', 'i2f-s8', 'i2f-u8', 'mmi-s8', 'mmi-u8'];

function graph(form: Form): Uint8Array {
  const g = new GraphBuilder();
  const x = g.reserve('x');
  const signed = form.endsWith('s8');
  const w = form === 'float'
    ? g.floats('w', Float32Array.from({ length: K * N }, (_, i) => Math.sin(i) * 0.02), [K, N])
    : signed ? g.int8s('w', Int8Array.from({ length: K * N }, (_, i) => Math.round(Math.sin(i) * 100)), [K, N]) : g.uint8s('w', Array.from({ length: K * N }, (_, i) => 128 + Math.round(Math.sin(i) * 100)));
  const wShaped = form === 'float' || signed ? w : g.reshape(w, [K, N], 'w2');
  const scales = g.floats('ws', Float32Array.from({ length: N }, (_, i) => 0.001 + i * 1e-6), [N]);
  const xzp = g.uint8('xzp', 128);
  const wzp = signed ? '' : g.uint8('wzp', 128);
  let y: string;
  if (form === 'float') y = g.op('MatMul', [x, wShaped]);
  else if (form.startsWith('i2f')) y = g.op('MatMulIntegerToFloat', [x, wShaped, g.float('xs', 0.03), scales, xzp, wzp], undefined, 'i2f', 'com.microsoft');
  else y = g.op('Mul', [g.op('Cast', [g.op('MatMulInteger', [x, wShaped, xzp, ...(wzp ? [wzp] : [])])], { to: OnnxType.FLOAT }), scales]);
  g.reserve('y');
  g.opInto('y', 'Identity', [y]);
  return encodeModel(g.finish(form, [{ name: 'x', elemType: form === 'float' ? OnnxType.FLOAT : OnnxType.UINT8, shape: [M, K] }], [{ name: 'y', elemType: OnnxType.FLOAT, shape: [M, N] }], 17));
}

interface Session {
  run(x: Float32Array | Uint8Array): Promise<void>;
}

async function open(bytes: Uint8Array): Promise<Session> {
  if (web) {
    const ortWeb = await import('onnxruntime-web');
    const require = createRequire(import.meta.url);
    ortWeb.env.wasm.wasmPaths = `${pathToFileURL(path.dirname(require.resolve('onnxruntime-web'))).href}/`;
    ortWeb.env.wasm.numThreads = threads;
    ortWeb.env.logLevel = 'error';
    const s = await ortWeb.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    return { run: async (x) => void (await s.run({ x: new ortWeb.Tensor(x instanceof Float32Array ? 'float32' : 'uint8', x, [M, K]) })) };
  }
  const s = await ortNode.InferenceSession.create(bytes, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', logSeverityLevel: 3 });
  return { run: async (x) => void (await s.run({ x: new ortNode.Tensor(x instanceof Float32Array ? 'float32' : 'uint8', x, [M, K]) })) };
}

const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' / ');
const loadBefore = load();
const xf = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i * 0.7));
const xu = Uint8Array.from({ length: M * K }, (_, i) => 128 + Math.round(Math.sin(i * 0.7) * 60));
const sessions = await Promise.all(FORMS.map(async (f) => open(graph(f))));
const input = (f: Form) => (f === 'float' ? xf : xu);
for (let i = 0; i < FORMS.length; i++) await sessions[i].run(input(FORMS[i]));
const times: number[][] = FORMS.map(() => []);
for (let r = 0; r < repeat; r++) {
  for (let i = 0; i < FORMS.length; i++) {
    const t0 = performance.now();
    for (let k = 0; k < iters; k++) await sessions[i].run(input(FORMS[i]));
    times[i].push((performance.now() - t0) / iters);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const f = median(times[0]);
console.log(`${web ? 'onnxruntime-web wasm' : 'onnxruntime-node'} ${threads} thread(s), [${M}, ${K}]·[${K}, ${N}], load ${loadBefore} → ${load()}`);
FORMS.forEach((form, i) => console.log(`  ${form.padEnd(7)} ${median(times[i]).toFixed(2).padStart(8)} ms   float/this ${(f / median(times[i])).toFixed(2)}×`));
process.exit(0);
