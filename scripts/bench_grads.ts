/**
 * Benchmark (not a test) of the backward pass: ∂L/∂O at every quantization point, the input of
 * PTQ4ViT's Hessian-guided metric. Acceptance (b) and (c) of "Backward pass: ∂L/∂O at every
 * quantization point":
 *  - seconds for computeGradients over the 32 calibration images of vit_tiny_c10 and swin_micro_c10
 *    (loss 'label'; the default chunk size and chunks of 32; median of --repeat runs after one warm-up),
 *    beside PyTorch autograd doing the same work on the same CPU (scripts/pytorch_baseline.py grads);
 *  - peak RSS of a ViT-B/16-224-sized model (86 M parameters, seeded random weights) producing every
 *    gradient for 32 images, measured in a child process so the number is that run alone.
 * Prints a table and replaces the section "## Backward pass (∂L/∂O for the Hessian metric)" of
 * BENCHMARKS.md (creating the file if needed).
 *
 *   npx tsc -p . && node dist/scripts/bench_grads.js [--repeat 3] [--threads 2] [--max-load 1.5] [--load-tries 10]
 *                         [--memory-chunks 8,32] [--no-pytorch] [--no-memory] [--no-write] [--out BENCHMARKS.md]
 *   node dist/scripts/bench_grads.js --memory-child [--chunk 8] [--threads 2]   one ViT-B-sized run, prints a JSON line
 *
 * The machine has 2 cores and is shared: before measuring, the script waits (60 s at a time, up to
 * --load-tries times) for the 1-minute load average to drop below --max-load, and records the load.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDataset, loadBatch } from '../src/data/datasets.js';
import { computeGradients } from '../src/grad/gradients.js';
import { seededRandom } from '../src/grad/loss.js';
import { encodeSafetensors, SafeTensors, type TensorToWrite } from '../src/io/safetensors.js';
import { specFromPreset } from '../src/models/config.js';
import { buildModel } from '../src/models/load.js';
import { loadModel } from '../src/open.js';
import type { VisionModel } from '../src/models/types.js';
import { setOrtThreads } from '../src/tensor/ort.js';
import { Tensor, numel } from '../src/tensor/tensor.js';
import { gitRevision, replaceSection } from './markdown.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..'); // dist/scripts → repository
const shared = path.resolve(repoRoot, '..', 'shared');
const SCRIPT = 'node dist/scripts/bench_grads.js';
const HEADING = 'Backward pass (∂L/∂O for the Hessian metric)';
const MODELS = ['vit_tiny_c10', 'swin_micro_c10'];
const DEFAULT_CHUNK = 8; // computeGradients' default (src/grad/gradients.ts)
const GIB = 1024 ** 3;

// ---------------------------------------------------------------------------------------------
// Arguments

interface Options {
  repeat: number;
  maxLoad: number;
  loadTries: number;
  pytorch: boolean;
  memory: boolean;
  write: boolean;
  memoryChild: boolean;
  chunk: number;
  /** The markdown file to update (default: BENCHMARKS.md at the repository root). */
  out: string;
  /** onnxruntime intra-op threads for us, torch.set_num_threads for PyTorch. */
  threads: number;
  /** Chunk sizes of the ViT-B-sized memory runs (one child process each). */
  memoryChunks: number[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { repeat: 3, maxLoad: 1.5, loadTries: 10, pytorch: true, memory: true, write: true, memoryChild: false, chunk: DEFAULT_CHUNK, memoryChunks: [DEFAULT_CHUNK, 32], threads: 2, out: path.join(repoRoot, 'BENCHMARKS.md') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === '--repeat') o.repeat = Math.round(num());
    else if (a === '--max-load') o.maxLoad = num();
    else if (a === '--load-tries') o.loadTries = Math.round(num());
    else if (a === '--chunk') o.chunk = Math.round(num());
    else if (a === '--threads') o.threads = Math.round(num());
    else if (a === '--out') o.out = path.resolve(argv[++i] ?? '');
    else if (a === '--memory-chunks') o.memoryChunks = (argv[++i] ?? '').split(',').map((c) => Math.round(Number(c)));
    else if (a === '--no-pytorch') o.pytorch = false;
    else if (a === '--no-memory') o.memory = false;
    else if (a === '--no-write') o.write = false;
    else if (a === '--memory-child') o.memoryChild = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Machine and load

interface Machine {
  date: string;
  nproc: string;
  cpu: string;
  node: string;
  memGiB: number;
}

function machine(): Machine {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  let nproc = String(os.availableParallelism());
  try {
    nproc = execFileSync('nproc', { encoding: 'utf8' }).trim();
  } catch {
    // keep availableParallelism
  }
  return { date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'), nproc, cpu: model, node: process.version, memGiB: os.totalmem() / GIB };
}

const loadString = (): string => os.loadavg().map((l) => l.toFixed(2)).join(' / ');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait until the 1-minute load average is below `max` (at most `tries` × 60 s); returns the load seen. */
async function waitForLowLoad(max: number, tries: number, what: string): Promise<string> {
  for (let t = 0; t < tries && os.loadavg()[0] >= max; t++) {
    console.log(`  load ${loadString()} ≥ ${max} before ${what}: waiting 60 s (${t + 1}/${tries})`);
    await sleep(60_000);
  }
  const load = loadString();
  if (os.loadavg()[0] >= max) console.log(`  load still ${load} before ${what}; measuring anyway (noted in BENCHMARKS.md)`);
  return load;
}

// ---------------------------------------------------------------------------------------------
// Our side: computeGradients

interface GradRun {
  seconds: number;
  loss: number;
  points: number;
  checksum: number;
}

/** One computeGradients over all images; the sink sums the squares of every gradient (as the Hessian metric would). */
async function gradientsOnce(model: VisionModel, images: Tensor, labels: Int32Array, chunkSize: number): Promise<GradRun> {
  const seen = new Set<string>();
  let checksum = 0;
  const t0 = performance.now();
  const loss = await computeGradients(model, images, labels, { loss: 'label', chunkSize }, (_chunk, point, g) => {
    seen.add(point);
    let s = 0;
    for (let i = 0; i < g.size; i++) s += g.data[i] * g.data[i];
    checksum += s;
  });
  return { seconds: (performance.now() - t0) / 1000, loss, points: seen.size, checksum };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

interface ChunkResult {
  chunk: number;
  median: number;
  runs: number[];
  loss: number;
  points: number;
}

interface ModelResult {
  name: string;
  totalPoints: number;
  images: number;
  load: string;
  ours: ChunkResult[];
  pytorch: { seconds: number; runs: number[]; loss: number; points: number; torch: string; threads: number; blas: string; command: string } | null;
  pytorchError?: string;
}

async function benchModel(name: string, o: Options): Promise<ModelResult> {
  const model = loadModel({ weights: path.join(shared, 'models', `${name}.safetensors`), config: path.join(shared, 'models', `${name}.json`) });
  const ds = await openDataset(path.join(shared, 'data', 'cifar10', 'calib32.json'));
  const batch = await loadBatch(ds, Array.from({ length: ds.size }, (_, i) => i), model.spec.preprocess);
  if (batch.skipped.length) throw new Error(`${name}: ${batch.skipped.length} calibration images could not be read`);
  const load = await waitForLowLoad(o.maxLoad, o.loadTries, name);
  console.log(`${name}: ${batch.images.shape[0]} images, ${model.quantPoints.length} quantization points, load ${load}`);
  const ours: ChunkResult[] = [];
  for (const chunk of [DEFAULT_CHUNK, 32]) {
    await gradientsOnce(model, batch.images, batch.labels, chunk); // warm-up: ORT sessions, JIT
    const runs: GradRun[] = [];
    for (let r = 0; r < o.repeat; r++) runs.push(await gradientsOnce(model, batch.images, batch.labels, chunk));
    const res = { chunk, median: median(runs.map((r) => r.seconds)), runs: runs.map((r) => r.seconds), loss: runs[0].loss, points: runs[0].points };
    console.log(`  ours, chunk ${chunk}: median ${res.median.toFixed(3)} s of [${res.runs.map((s) => s.toFixed(3)).join(', ')}], loss ${res.loss.toFixed(4)}, ${res.points}/${model.quantPoints.length} points`);
    ours.push(res);
  }
  const result: ModelResult = { name, totalPoints: model.quantPoints.length, images: batch.images.shape[0], load, ours, pytorch: null };
  if (o.pytorch) {
    const args = ['scripts/pytorch_baseline.py', 'grads', '--model', name, '--threads', String(o.threads)];
    const command = `/usr/bin/python3 ${args.join(' ')}`;
    const p = spawnSync('/usr/bin/python3', args, { cwd: repoRoot, encoding: 'utf8', maxBuffer: 16 << 20 });
    const lines = (p.stdout ?? '').trim().split('\n');
    try {
      if (p.status !== 0) throw new Error(`exit ${p.status}: ${(p.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
      const j = JSON.parse(lines[lines.length - 1]);
      result.pytorch = { seconds: j.seconds, runs: j.runs_seconds, loss: j.loss, points: j.quant_points, torch: j.torch, threads: j.threads, blas: j.blas ?? 'BLAS not reported', command };
      console.log(`  PyTorch ${j.torch}: median ${j.seconds.toFixed(3)} s of [${j.runs_seconds.map((s: number) => s.toFixed(3)).join(', ')}], loss ${j.loss.toFixed(4)}, ${j.quant_points} points`);
    } catch (e) {
      result.pytorchError = `${command}: ${(e as Error).message}`;
      console.log(`  PyTorch baseline failed: ${result.pytorchError}`);
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Memory: a ViT-B/16-224-sized model in a child process

/** timm VisionTransformer parameter names and shapes. */
function vitShapes(D: number, depth: number, patch: number, img: number, classes: number): Record<string, number[]> {
  const s: Record<string, number[]> = {
    'patch_embed.proj.weight': [D, 3, patch, patch],
    'patch_embed.proj.bias': [D],
    cls_token: [1, 1, D],
    pos_embed: [1, (img / patch) ** 2 + 1, D],
  };
  for (let i = 0; i < depth; i++) {
    const p = `blocks.${i}`;
    for (const [n, shape] of [
      ['norm1.weight', [D]], ['norm1.bias', [D]],
      ['attn.qkv.weight', [3 * D, D]], ['attn.qkv.bias', [3 * D]],
      ['attn.proj.weight', [D, D]], ['attn.proj.bias', [D]],
      ['norm2.weight', [D]], ['norm2.bias', [D]],
      ['mlp.fc1.weight', [4 * D, D]], ['mlp.fc1.bias', [4 * D]],
      ['mlp.fc2.weight', [D, 4 * D]], ['mlp.fc2.bias', [D]],
    ] as [string, number[]][]) s[`${p}.${n}`] = shape;
  }
  s['norm.weight'] = [D];
  s['norm.bias'] = [D];
  s['head.weight'] = [classes, D];
  s['head.bias'] = [classes];
  return s;
}

interface MemoryResult {
  chunk: number;
  params: number;
  images: number;
  points: number;
  totalPoints: number;
  seconds: number;
  loss: number;
  rssAfterBuildKiB: number;
  maxRssKiB: number;
}

/** The child: build ViT-B/16-224 with seeded random weights, 32 random images, all gradients; print JSON. */
async function memoryChild(chunk: number): Promise<void> {
  const spec = specFromPreset('vit_base_patch16_224');
  const shapes = vitShapes(768, 12, 16, 224, 1000);
  const rand = seededRandom(2024);
  const tensors: Record<string, TensorToWrite> = {};
  let params = 0;
  for (const [name, shape] of Object.entries(shapes)) {
    const data = new Float32Array(numel(shape));
    const norm = /norm\d?\.weight$/.test(name);
    // timm-like scale: weights uniform with std 0.02 (timm: trunc-normal 0.02), LayerNorm scales ≈ 1, small biases
    for (let i = 0; i < data.length; i++) data[i] = (norm ? 1 : 0) + 0.0346 * (rand() - 0.5) * (name.endsWith('.bias') ? 0.5 : 2);
    tensors[name] = { dtype: 'F32', shape, data };
    params += data.length;
  }
  const model = buildModel(spec, SafeTensors.parse(encodeSafetensors(tensors), 'vit_base_patch16_224-random'));
  for (const k of Object.keys(tensors)) delete tensors[k];
  const batch = 32;
  const images = Tensor.zeros([batch, 3, 224, 224]);
  const gauss = seededRandom(7);
  for (let i = 0; i < images.size; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - gauss())), a = 2 * Math.PI * gauss();
    images.data[i] = r * Math.cos(a);
    images.data[i + 1] = r * Math.sin(a);
  }
  const labels = Int32Array.from({ length: batch }, (_, i) => (i * 37) % 1000);
  (globalThis as { gc?: () => void }).gc?.(); // the parent passes --expose-gc: drop the encoded checkpoint first
  const rssAfterBuildKiB = Math.round(process.memoryUsage().rss / 1024);
  const run = await gradientsOnce(model, images, labels, chunk);
  const result: MemoryResult = {
    chunk,
    params,
    images: batch,
    points: run.points,
    totalPoints: model.quantPoints.length,
    seconds: run.seconds,
    loss: run.loss,
    rssAfterBuildKiB,
    maxRssKiB: process.resourceUsage().maxRSS,
  };
  console.log(JSON.stringify(result));
}

function runMemoryChild(chunk: number, threads: number): MemoryResult {
  const p = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), '--memory-child', '--chunk', String(chunk), '--threads', String(threads)], {
    cwd: repoRoot,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (p.status !== 0) throw new Error(`memory child (chunk ${chunk}) failed: exit ${p.status} ${p.signal ?? ''}`);
  const lines = p.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as MemoryResult;
}

// ---------------------------------------------------------------------------------------------
// Report

const fmtS = (s: number): string => (s >= 10 ? s.toFixed(1) : s.toFixed(2)) + ' s';
const fmtGiB = (kib: number): string => `${((kib * 1024) / GIB).toFixed(2)} GiB`;

function markdown(m: Machine, loadBefore: string, loadAfter: string, models: ModelResult[], memory: { load: string; runs: MemoryResult[] } | null, o: Options): string {
  const L: string[] = [];
  const torch = models.find((r) => r.pytorch)?.pytorch;
  L.push(
    `Measured ${m.date} at ${gitRevision()} on this machine: \`nproc\` = ${m.nproc}, CPU "${m.cpu}" (/proc/cpuinfo), ` +
      `${m.memGiB.toFixed(0)} GiB RAM, Node ${m.node}, onnxruntime-node with ${o.threads} intra-op threads` +
      `${torch ? `, PyTorch ${torch.torch} with ${torch.threads} threads on ${torch.blas}` : ''}. ` +
      `Load average (1 / 5 / 15 min, as \`uptime\`) ${loadBefore} when the run started and ${loadAfter} when it ended; ` +
      'the machine is shared with other engineers\' jobs, so the load before each measurement is given beside it.',
    '',
  );
  L.push(
    'Workload: forward + backward of the mean cross-entropy against the labels (`--loss label`) over the 32 calibration images ' +
      '(`../shared/data/cifar10/calib32.json`), ∂L/∂O at every quantization point (patch_embed.proj, qkv, proj, both attention ' +
      'products, fc1, fc2, Swin downsample.reduction, head); activation gradients only, no parameter gradients, on either side. ' +
      `Ours: \`computeGradients\` with the given chunk size (images per forward+backward; ${DEFAULT_CHUNK} is the default), the sink ` +
      `summing the squares of every gradient; median of ${o.repeat} runs after one warm-up run. ` +
      'PyTorch: autograd with `retain_grad` on every quantization point\'s output, median of its 3 runs (the first of which is its warm-up; ' +
      'the median discards it when it is the slowest).',
    '',
  );
  L.push('| model | points with ∂L/∂O | ours, chunk 8 (default) | ours, chunk 32 | PyTorch autograd | ours (chunk 8) / PyTorch | loss: ours / PyTorch | load before |');
  L.push('|---|---|---|---|---|---|---|---|');
  for (const r of models) {
    const c8 = r.ours.find((c) => c.chunk === DEFAULT_CHUNK)!, c32 = r.ours.find((c) => c.chunk === 32)!;
    const pt = r.pytorch;
    L.push(
      `| ${r.name} | ${c8.points}/${r.totalPoints}${pt ? ` (PyTorch ${pt.points})` : ''} | ${fmtS(c8.median)} | ${fmtS(c32.median)} | ` +
        `${pt ? fmtS(pt.seconds) : 'n/a'} | ${pt ? (c8.median / pt.seconds).toFixed(2) + '×' : 'n/a'} | ${c8.loss.toFixed(4)} / ${pt ? pt.loss.toFixed(4) : 'n/a'} | ${r.load} |`,
    );
  }
  L.push('');
  L.push('Runs (seconds):', '');
  for (const r of models) {
    for (const c of r.ours) L.push(`- ${r.name}, ours, chunk ${c.chunk}: ${c.runs.map((s) => s.toFixed(3)).join(', ')} — \`${SCRIPT}\``);
    if (r.pytorch) L.push(`- ${r.name}, PyTorch: ${r.pytorch.runs.map((s) => s.toFixed(3)).join(', ')} — \`${r.pytorch.command}\``);
    if (r.pytorchError) L.push(`- ${r.name}, PyTorch: failed (${r.pytorchError})`);
  }
  L.push('');
  if (memory) {
    L.push(
      '**Memory** (target: < 8 GiB peak RSS). A ViT-B/16-224-sized VisionTransformer (embed 768, depth 12, 12 heads, patch 16, ' +
        `224², 1000 classes; ${(memory.runs[0].params / 1e6).toFixed(1)} M parameters, seeded random weights built in memory through ` +
        'encodeSafetensors + SafeTensors.parse) and 32 random normalized images; one `computeGradients` producing every gradient ' +
        '(sink summing their squares), alone in a child process; peak RSS = `process.resourceUsage().maxRSS` of that process ' +
        `at the end (it includes building the model). "RSS before the gradients" is the 0.35 GB of weights plus what building them in memory (random tensors, encoded checkpoint) left mapped in the allocator; the tape of one chunk comes on top of it. Load before: ${memory.load}.`,
      '',
    );
    L.push('| chunk | points with ∂L/∂O | peak RSS | RSS before the gradients | seconds | under 8 GiB | command |');
    L.push('|---|---|---|---|---|---|---|');
    for (const r of memory.runs) {
      L.push(
        `| ${r.chunk} | ${r.points}/${r.totalPoints} | ${fmtGiB(r.maxRssKiB)} | ${fmtGiB(r.rssAfterBuildKiB)} | ${fmtS(r.seconds)} | ${r.maxRssKiB * 1024 < 8 * GIB ? 'yes' : 'NO'} | \`node --expose-gc dist/scripts/bench_grads.js --memory-child --chunk ${r.chunk} --threads ${o.threads}\` |`,
      );
    }
    L.push('');
  }
  L.push(`All of this section: \`npx tsc -p . && ${SCRIPT}${o.threads !== 2 ? ` --threads ${o.threads}` : ''}\` (it runs the PyTorch commands and the memory children itself).`, '');
  return L.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  setOrtThreads(o.threads);
  if (o.memoryChild) return memoryChild(o.chunk);
  const m = machine();
  console.log(`${m.date}: nproc ${m.nproc}, ${m.cpu}, Node ${m.node}, load ${loadString()}`);
  const loadBefore = await waitForLowLoad(o.maxLoad, o.loadTries, 'the benchmark');
  const models: ModelResult[] = [];
  for (const name of MODELS) models.push(await benchModel(name, o));
  let memory: { load: string; runs: MemoryResult[] } | null = null;
  if (o.memory) {
    const load = await waitForLowLoad(o.maxLoad, o.loadTries, 'the memory run');
    console.log(`ViT-B/16-224-sized memory run (child process), load ${load}`);
    const runs: MemoryResult[] = [];
    for (const chunk of o.memoryChunks) {
      const r = runMemoryChild(chunk, o.threads);
      console.log(`  chunk ${r.chunk}: peak RSS ${fmtGiB(r.maxRssKiB)} (after build ${fmtGiB(r.rssAfterBuildKiB)}), ${fmtS(r.seconds)}, ${r.points}/${r.totalPoints} points, ${(r.params / 1e6).toFixed(2)} M params`);
      runs.push(r);
    }
    memory = { load, runs };
  }
  const loadAfter = loadString();
  console.log('');
  console.log('model            points   ours chunk 8   ours chunk 32   PyTorch    ratio');
  for (const r of models) {
    const c8 = r.ours[0], c32 = r.ours[1];
    console.log(
      `${r.name.padEnd(16)} ${`${c8.points}/${r.totalPoints}`.padEnd(8)} ${fmtS(c8.median).padStart(12)} ${fmtS(c32.median).padStart(15)} ${(r.pytorch ? fmtS(r.pytorch.seconds) : 'n/a').padStart(9)} ${(r.pytorch ? (c8.median / r.pytorch.seconds).toFixed(2) + '×' : 'n/a').padStart(8)}`,
    );
  }
  for (const r of memory?.runs ?? []) console.log(`ViT-B/16-224 chunk ${r.chunk}: peak RSS ${fmtGiB(r.maxRssKiB)} (target < 8 GiB)`);
  if (o.write) {
    const file = o.out;
    replaceSection(file, HEADING, markdown(m, loadBefore, loadAfter, models, memory, o));
    console.log(`\nwrote the section "${HEADING}" of ${file}`);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
