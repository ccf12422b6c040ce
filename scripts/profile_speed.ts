/**
 * FP32 graph vs W8A8 integer graph, in one run: images/s with interleaved passes (FP32, integer, FP32, …;
 * median of --repeat) and, with --profile, onnxruntime-node's own profile (kernel time by operator type) of
 * each graph. Models: random-weight ViT-S/16-224 (vit_s), ViT-B/16-224 (vit_b), Swin-T/224 (swin_t), or the
 * bundled vit_tiny_c10 / swin_micro_c10; quantization parameters shaped like PTQ4ViT's (speed_models.ts).
 * --runtime web runs onnxruntime-web's wasm backend in Node with --threads wasm threads (env.wasm.numThreads).
 * --baseline DIR adds the integer graph exported by another built ptq4vit tree (e.g. `git archive main` built in
 * /tmp/base) to the same interleaved passes: before/after ratios from one run. Besides images per wall-clock
 * second, images per CPU-second of this process are printed (robust to other processes on a shared machine; with
 * --threads 1 onnxruntime-node's thread spinning is turned off so CPU time is kernel work).
 * The machine is shared: the load average is printed with every number.
 *
 *   npx tsc -p . && node dist/scripts/profile_speed.js [--models vit_s,swin_t,vit_tiny_c10] [--runtime node|web]
 *       [--threads 2] [--batch 16] [--images 64] [--repeat 5] [--profile] [--bits 8] [--baseline DIR] [--json]
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import ortNode from 'onnxruntime-node';
import { exportOnnx } from '../src/export/onnx.js';
import { speedModel, syntheticQuant } from './speed_models.js';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'vit_s,swin_t,vit_tiny_c10' },
    runtime: { type: 'string', default: 'node' },
    threads: { type: 'string', default: '2' },
    batch: { type: 'string', default: '16' },
    images: { type: 'string', default: '64' },
    repeat: { type: 'string', default: '5' },
    bits: { type: 'string', default: '8' },
    profile: { type: 'boolean', default: false },
    baseline: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const threads = Number(values.threads), batch = Number(values.batch), images = Number(values.images), repeat = Number(values.repeat), bits = Number(values.bits);
const web = values.runtime === 'web';
const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' / ');

interface Session {
  run(x: Float32Array, dims: number[]): Promise<void>;
  release(): Promise<void>;
}

async function open(bytes: Uint8Array, profileDir?: string): Promise<Session> {
  if (web) {
    const ortWeb = await import('onnxruntime-web');
    const require = createRequire(import.meta.url);
    ortWeb.env.wasm.wasmPaths = `${pathToFileURL(path.dirname(require.resolve('onnxruntime-web'))).href}/`;
    ortWeb.env.wasm.numThreads = threads;
    ortWeb.env.logLevel = 'error';
    const s = await ortWeb.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    return { run: async (x, dims) => void (await s.run({ pixel_values: new ortWeb.Tensor('float32', x, dims) })), release: () => s.release() };
  }
  const s = await ortNode.InferenceSession.create(bytes, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all', logSeverityLevel: 3,
    ...(threads === 1 ? { extra: { session: { intra_op: { allow_spinning: '0' } } } } : {}),
    ...(profileDir ? { enableProfiling: true, profileFilePrefix: path.join(profileDir, 'ort') } : {}),
  });
  return { run: async (x, dims) => void (await s.run({ pixel_values: new ortNode.Tensor('float32', x, dims) })), release: () => s.release() };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Kernel time per batch by operator type (onnxruntime-node's profile over `runs` batches). */
async function profileByOp(bytes: Uint8Array, x: Float32Array, dims: number[], runs: number): Promise<Map<string, number>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-profile-'));
  const s = await open(bytes, dir);
  for (let r = 0; r < runs; r++) await s.run(x, dims);
  await s.release();
  const file = fs.readdirSync(dir).map((f) => path.join(dir, f))[0];
  const events = JSON.parse(fs.readFileSync(file, 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
  fs.rmSync(dir, { recursive: true, force: true });
  const byOp = new Map<string, number>();
  for (const e of events) if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) byOp.set(e.args?.op_name ?? '?', (byOp.get(e.args?.op_name ?? '?') ?? 0) + e.dur / 1000 / runs);
  return byOp;
}

/** The integer graph of another built ptq4vit tree (its own export code and synthetic parameters). */
async function baselineGraph(dir: string, name: string): Promise<Uint8Array> {
  const url = (file: string) => pathToFileURL(path.resolve(dir, 'dist', file)).href;
  const onnx = (await import(url('src/export/onnx.js'))) as { exportOnnx: typeof exportOnnx };
  const models = (await import(url('scripts/speed_models.js'))) as { speedModel: typeof speedModel; syntheticQuant: typeof syntheticQuant };
  const model = models.speedModel(name);
  return onnx.exportOnnx(model, { quant: models.syntheticQuant(model, bits) });
}

for (const name of values.models!.split(',')) {
  const model = speedModel(name);
  const { inChans, imgSize } = model.spec.arch;
  const fp32 = await exportOnnx(model, {});
  const int = await exportOnnx(model, { quant: syntheticQuant(model, bits) });
  const per = inChans * imgSize * imgSize;
  const x = Float32Array.from({ length: images * per }, (_, i) => Math.sin(i * 0.13) * 1.2);
  const graphs = [{ label: 'FP32', bytes: fp32 }, { label: `W${bits}A${bits}`, bytes: int }];
  if (values.baseline) graphs.push({ label: `W${bits}A${bits} baseline`, bytes: await baselineGraph(values.baseline, name) });
  const loadBefore = load();
  const sessions = await Promise.all(graphs.map((gr) => open(gr.bytes)));
  for (const s of sessions) await s.run(x.subarray(0, batch * per), [batch, inChans, imgSize, imgSize]);
  const rates: number[][] = graphs.map(() => []);
  const cpuRates: number[][] = graphs.map(() => []);
  for (let pass = 0; pass < repeat; pass++) {
    for (let i = 0; i < sessions.length; i++) {
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      for (let start = 0; start < images; start += batch) {
        const n = Math.min(batch, images - start);
        await sessions[i].run(x.subarray(start * per, (start + n) * per), [n, inChans, imgSize, imgSize]);
      }
      const cpu = process.cpuUsage(cpu0);
      rates[i].push(images / ((performance.now() - t0) / 1000));
      cpuRates[i].push(images / ((cpu.user + cpu.system) / 1e6));
    }
  }
  for (const s of sessions) await s.release();
  const [f, q] = rates.map(median);
  /** Median over passes of graph i's rate over graph j's in the same pass. */
  const ratio = (of: number[][], i: number, j: number) => median(of[i].map((r, k) => r / of[j][k]));
  const ratios = rates[1].map((r, i) => r / rates[0][i]);
  const base = values.baseline ? `; baseline W${bits}A${bits} ${median(rates[2]).toFixed(1)} img/s → ${ratio(rates, 2, 0).toFixed(2)}× FP32, this tree / baseline ${ratio(rates, 1, 2).toFixed(2)}×` : '';
  const line = `${name} ${web ? 'onnxruntime-web wasm' : 'onnxruntime-node'} ${threads} thread(s), batch ${batch}: FP32 ${f.toFixed(1)} img/s, W${bits}A${bits} ${q.toFixed(1)} img/s → ${ratio(rates, 1, 0).toFixed(2)}× (median of the per-pass ratios; ratio of the medians ${(q / f).toFixed(2)}×; per-pass ratios ${ratios.map((r) => r.toFixed(2)).join(' ')}${base}; load ${loadBefore} → ${load()})`;
  console.log(line);
  const cpuBase = values.baseline ? `, baseline ${ratio(cpuRates, 2, 0).toFixed(2)}×, this tree / baseline ${ratio(cpuRates, 1, 2).toFixed(2)}×` : '';
  console.log(`  per CPU-second: FP32 ${median(cpuRates[0]).toFixed(2)} img, W${bits}A${bits} ${median(cpuRates[1]).toFixed(2)} img → ${ratio(cpuRates, 1, 0).toFixed(2)}×${cpuBase}`);
  if (values.json) console.log(JSON.stringify({ model: name, runtime: web ? 'web' : 'node', threads, batch, fp32: f, int: q, ratio: q / f, passes: rates, cpuPasses: cpuRates, labels: graphs.map((gr) => gr.label), load: [loadBefore, load()] }));
  if (values.profile && !web) {
    const dims = [batch, inChans, imgSize, imgSize];
    const profiles: Map<string, number>[] = [];
    for (const gr of graphs) profiles.push(await profileByOp(gr.bytes, x.subarray(0, batch * per), dims, 3));
    const ops = [...new Set(profiles.flatMap((p) => [...p.keys()]))];
    const totals = profiles.map((p) => [...p.values()].reduce((a, b) => a + b, 0));
    ops.sort((a, b) => Math.max(...profiles.map((p) => p.get(b) ?? 0)) - Math.max(...profiles.map((p) => p.get(a) ?? 0)));
    console.log(`| op (${name}, batch ${batch}, ${threads} threads, ms per batch) | FP32 | W${bits}A${bits} |`);
    console.log('|---|---|---|');
    for (const op of ops) console.log(`| ${op} | ${profiles.map((p, i) => (p.has(op) ? `${p.get(op)!.toFixed(1)} (${((100 * p.get(op)!) / totals[i]).toFixed(0)}%)` : '—')).join(' | ')} |`);
    console.log(`| total kernel time | ${totals.map((t) => t.toFixed(1)).join(' | ')} |`);
  }
}
