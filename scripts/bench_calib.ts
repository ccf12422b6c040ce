/**
 * Calibration speed: wall seconds of a full PTQ4ViT (and Base PTQ) calibration on calib32, beside the
 * authors' implementation on this CPU (`calib_seconds` in ../shared/reference/official_ptq4vit.jsonl), and
 * the README demo's wall time. Goal (issue 8): PTQ4ViT W6A6 on vit_tiny_c10 in ≤ 10% of theirs, demo ≤ 2 min.
 * With --baseline, each job also runs without candidate pruning and with 24 MB candidate batches (the search
 * as it ran before 42abd1b: every candidate scored on every row block) in the same run, for a ratio under the
 * same load; both choose the same parameters (checked here).
 *
 *   npx tsc -p . && node dist/scripts/bench_calib.js [--threads=2] [--jobs=vit6,base6,swin6,demo] [--baseline] [--no-write]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { calibrateMany, type CalibrationOptions } from '../src/quant/calibrate.js';
import { methodConfig, type Method } from '../src/quant/methods.js';
import { setOrtThreads } from '../src/tensor/ort.js';
import { openSharedModel, sharedCalib32, sharedDir } from './shared.js';
import { gitRevision, machine, replaceSection } from './markdown.js';

const arg = (name: string) => process.argv.find((x) => x.startsWith(`--${name}=`))?.split('=')[1];
const threads = Number(arg('threads') ?? 2);
const selected = (arg('jobs') ?? 'vit6,base6,swin6,demo').split(',');
const baseline = process.argv.includes('--baseline');
setOrtThreads(threads);
const refs = fs.readFileSync(path.join(sharedDir, 'reference', 'official_ptq4vit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { model: string; config: string; calib_seconds?: number });
const header = machine();
const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' / ');

const jobs: { id: string; model: string; method: Method; bits: number }[] = [
  { id: 'vit6', model: 'vit_tiny_c10', method: 'ptq4vit', bits: 6 },
  { id: 'base6', model: 'vit_tiny_c10', method: 'base', bits: 6 },
  { id: 'swin6', model: 'swin_micro_c10', method: 'ptq4vit', bits: 6 },
];
const rows: string[] = [];
for (const job of jobs.filter((j) => selected.includes(j.id))) {
  const { model } = openSharedModel(job.model);
  const { images, labels } = await sharedCalib32(model.spec.preprocess);
  const opts = methodConfig(job.method, { weightBits: job.bits, activationBits: job.bits });
  const config = `${job.method === 'base' ? 'BasePTQ' : 'PTQ4ViT'}-${job.bits}`;
  const theirs = refs.find((r) => r.model === job.model && r.config === config)?.calib_seconds;
  const runOnce = async (o: CalibrationOptions) => {
    const before = load();
    const t0 = performance.now();
    const { timing, results } = await calibrateMany(model, images, labels, [o]);
    return { seconds: (performance.now() - t0) / 1000, timing, load: `${before} → ${load()}`, points: JSON.stringify(results[0]) };
  };
  const now = await runOnce(opts);
  const old = baseline ? await runOnce({ ...opts, prune: false, batchFloats: 6_000_000 }) : null;
  if (old && old.points !== now.points) throw new Error(`${job.model} ${config}: the search without pruning chose other parameters`);
  const pct = (s: number) => (theirs ? `${((s / theirs) * 100).toFixed(1)}%` : '—');
  console.log(`${job.model} ${config}: ${now.seconds.toFixed(1)} s (recording ${now.timing.recordSeconds.toFixed(1)} s, ${now.timing.groups} passes) vs authors ${theirs ?? '—'} s → ${pct(now.seconds)}${old ? `; without pruning: ${old.seconds.toFixed(1)} s` : ''}`);
  rows.push(
    `| ${job.model} | ${config} | ${now.seconds.toFixed(1)} | ${now.timing.recordSeconds.toFixed(1)} (${now.timing.groups}) | ${now.timing.searchSeconds.toFixed(1)} | ${old ? `${old.seconds.toFixed(1)} (${(old.seconds / now.seconds).toFixed(2)}×)` : '—'} | ${theirs?.toFixed(1) ?? '—'} | ${pct(now.seconds)} | ${now.load}${old ? `; ${old.load}` : ''} |`,
  );
}

let demoLine = '';
if (selected.includes('demo')) {
  const before = load();
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['bin/ptq4vit.js', 'demo', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`demo failed: exit ${r.status}`);
  const json = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { calib_seconds: number; peak_rss_bytes: number; quantized: { top1: number }[] };
  demoLine = `\`npx ptq4vit demo\` (FP32 + W8A8 + W6A6 on 500 images, full search): **${seconds.toFixed(0)} s** wall, of which calibration ${json.calib_seconds.toFixed(0)} s; peak RSS ${(json.peak_rss_bytes / 2 ** 30).toFixed(2)} GiB; load ${before} → ${load()}.`;
  console.log(demoLine);
}

if (!process.argv.includes('--no-write')) {
  replaceSection(
    'BENCHMARKS.md',
    'Calibration time',
    `\`node dist/scripts/bench_calib.js --threads=${threads}${baseline ? ' --baseline' : ''} --jobs=${selected.join(',')}\` at ${gitRevision()} — ${header}.
Wall seconds of a whole calibration on the 32 images of calib32 (recording FP32 activations and, for PTQ4ViT,
∂L/∂O by a backward pass, then the search of every layer), in-process, beside the authors' implementation on
this CPU (PyTorch 1.13, 2 threads; \`calib_seconds\` in ../shared/reference/official_ptq4vit.jsonl, measured on a quiet machine).
"without pruning" is the same search with candidate pruning off and 24 MB candidate batches — every candidate
scored on every row block, as before 42abd1b — right after, under the same load; it chose identical parameters. Load = 1/5/15-minute load average before → after each run.

| model | config | ours (s) | recording (s) (passes) | search (s) | without pruning (s) | authors (s) | ours / authors | load |
|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}
${demoLine ? `\n${demoLine}` : ''}`,
  );
}
