/**
 * Calibration at ImageNet sizes: wall time, time per phase and peak RSS of a PTQ4ViT W8A8 calibration of
 * random-weight timm models (ViT-S/16, ViT-B/16, DeiT-S/16, Swin-T at 224²) on random images, each job in
 * its own child process so its peak RSS is its own (`process.resourceUsage().maxRSS` at the end: model load,
 * recording and search). The weights are seeded random tensors written as a safetensors file and opened as
 * a user's checkpoint would be; the images are seeded random RGB bytes through timm's eval transform.
 *
 *   npx tsc -p . && node dist/scripts/bench_scale.js [--jobs vit_s:32,vit_b:32] [--n 100] [--rounds 3] [--threads 2] [--no-write]
 *       [--group-mib M] [--record-file-mib F] [--no-pipeline] [--no-recompute] [--search-workers W] [--groups K]
 *
 * Job names: vit_s, vit_b, deit_s, swin_t, each with its image count (vit_s:128 for 128 images).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openDataset } from '../src/data/datasets.js';
import { seededRandom } from '../src/grad/loss.js';
import { writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { specFromPreset } from '../src/models/config.js';
import { buildModel, openModel } from '../src/open.js';
import type { TensorSource } from '../src/models/weights.js';
import { calibrateMany, DEFAULT_GROUP_BYTES } from '../src/quant/calibrate.js';
import { loadCalibration } from '../src/quant/calibset.js';
import { methodConfig } from '../src/quant/methods.js';
import { profile, setOrtThreads } from '../src/tensor/ort.js';
import { Tensor } from '../src/tensor/tensor.js';
import { gitRevision, machine, replaceSection } from './markdown.js';

const PRESETS: Record<string, string> = {
  vit_s: 'vit_small_patch16_224',
  vit_b: 'vit_base_patch16_224',
  deit_s: 'deit_small_patch16_224',
  swin_t: 'swin_tiny_patch4_window7_224',
};

const { values } = parseArgs({
  options: {
    jobs: { type: 'string', default: 'vit_s:32,vit_b:32,deit_s:32,swin_t:32,vit_s:128' },
    n: { type: 'string', default: '100' },
    rounds: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
    'group-mib': { type: 'string' },
    /** Record-file budget per group (CalibrationOptions.recordFileBytes; 0: records in memory only). */
    'record-file-mib': { type: 'string' },
    chunk: { type: 'string' },
    /** Stop after this many groups (recorded and searched): peak RSS of the first groups, when a full run is too long. */
    groups: { type: 'string' },
    'no-write': { type: 'boolean' },
    /** Record every group with a whole forward+backward pass (the baseline before block recompute). */
    'no-recompute': { type: 'boolean' },
    'no-pipeline': { type: 'boolean' },
    /** Points searched at once in worker threads (default: calibrate's, 2 on 2+ threads; 0 = in this thread). */
    'search-workers': { type: 'string' },
    child: { type: 'string' },
    images: { type: 'string' },
    dir: { type: 'string' },
  },
});

/** Seeded random weights for every tensor the model asks for (timm-like scales). */
function randomCheckpoint(preset: string, file: string): number {
  const rand = seededRandom(2024);
  const tensors: Record<string, TensorToWrite> = {};
  let params = 0;
  const source: TensorSource = {
    file,
    names: () => Object.keys(tensors),
    tensor(name, shape) {
      if (!shape) throw new Error(`random checkpoint: '${name}' was asked for without a shape`);
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
      const norm = /norm\d?\.weight$/.test(name);
      for (let i = 0; i < data.length; i++) data[i] = (norm ? 1 : 0) + 0.0346 * (rand() - 0.5) * (name.endsWith('.bias') ? 0.5 : 2);
      tensors[name] = { dtype: 'F32', shape: [...shape], data };
      params += data.length;
      return new Tensor(data, [...shape]);
    },
  };
  buildModel(specFromPreset(preset), source);
  writeSafetensors(file, tensors);
  return params;
}

/** `count` seeded random RGB images (224², one class) as a raw-uint8-hwc manifest. */
function randomImages(dir: string, count: number): string {
  const rand = seededRandom(7);
  const side = 256;
  const pixels = Uint8Array.from({ length: count * side * side * 3 }, () => Math.floor(rand() * 256));
  fs.writeFileSync(path.join(dir, 'images.u8'), pixels);
  fs.writeFileSync(path.join(dir, 'labels.u8'), new Uint8Array(count));
  const manifest = path.join(dir, 'random.json');
  fs.writeFileSync(manifest, JSON.stringify({ format: 'raw-uint8-hwc', images: 'images.u8', labels: 'labels.u8', count, height: side, width: side, channels: 3, classes: ['random'] }));
  return manifest;
}

class StopBench extends Error {}

interface ChildResult {
  preset: string;
  images: number;
  seconds: number;
  record_seconds: number;
  search_seconds: number;
  groups: number;
  /** Recording work in whole forward+backward passes (block recompute: one whole pass + each group's segments). */
  pass_equivalents: number | null;
  /** Groups recorded and searched (fewer than `groups` with --groups). */
  groups_done: number;
  points_searched: number;
  points: number;
  peak_rss_bytes: number;
  rss_after_load_bytes: number;
  /** CPU seconds of the whole calibration (user + system, every thread): less load-dependent than wall time. */
  cpu_seconds: number;
  /** Most point searches that ran at once in search workers. */
  concurrent_searches: number | null;
  /** Groups recorded while earlier groups' searches ran (pipelined calibration). */
  recorded_during_search: number | null;
  /** Groups whose records went (partly) to a record file. */
  groups_in_files: number | null;
}

async function child(): Promise<void> {
  setOrtThreads(Number(values.threads));
  const preset = values.child!;
  const dir = values.dir!;
  const images = Number(values.images);
  const { model } = openModel({ weights: path.join(dir, `${preset}.safetensors`), arch: preset });
  const calib = await openDataset(path.join(dir, 'random.json'));
  const { images: x } = await loadCalibration(calib, images, 0, model.spec.preprocess);
  const rssAfterLoad = process.memoryUsage().rss;
  const opts = methodConfig('ptq4vit', { weightBits: 8, activationBits: 8, n: Number(values.n), rounds: Number(values.rounds), loss: 'pseudo' });
  const groupBytes = values['group-mib'] ? Number(values['group-mib']) * 2 ** 20 : undefined;
  const chunkSize = values.chunk ? Number(values.chunk) : undefined;
  let lastPass = 0, searched = 0, totalGroups = 0;
  const stopAfter = values.groups ? Number(values.groups) : Infinity;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  let recordMs = 0, passStart = t0;
  let timing: { recordSeconds: number; searchSeconds: number; groups: number; passEquivalents?: number; concurrentSearches?: number; recordedDuringSearch?: number; groupsInFiles?: number } | null = null;
  try {
    timing = (await calibrateMany(model, x, null, [
      {
        ...opts,
        groupBytes,
        recordFileBytes: values['record-file-mib'] === undefined ? undefined : Number(values['record-file-mib']) * 2 ** 20,
        chunkSize,
        recompute: !values['no-recompute'],
        pipeline: !values['no-pipeline'],
        searchWorkers: values['search-workers'] === undefined ? undefined : Number(values['search-workers']),
        onProgress: (e) => {
          if (e.phase === 'record' && e.group > stopAfter) throw new StopBench();
          if (e.phase === 'record' && e.images === e.totalImages && e.group !== lastPass) {
            lastPass = e.group;
            totalGroups = e.groups;
            recordMs += performance.now() - passStart;
            process.stderr.write(`${preset}: pass ${e.group}/${e.groups} recorded at ${((performance.now() - t0) / 1000).toFixed(0)} s, RSS ${(process.memoryUsage().rss / 2 ** 30).toFixed(2)} GiB\n`);
          }
          if (e.phase === 'search') {
            searched = e.done;
            passStart = performance.now();
          }
        },
      },
    ])).timing;
  } catch (e) {
    if (!(e instanceof StopBench)) throw e;
  }
  const seconds = (performance.now() - t0) / 1000;
  const result: ChildResult = {
    preset,
    images,
    seconds,
    record_seconds: timing?.recordSeconds ?? recordMs / 1000,
    search_seconds: timing?.searchSeconds ?? seconds - recordMs / 1000,
    groups: timing?.groups ?? totalGroups,
    pass_equivalents: timing?.passEquivalents ?? null,
    groups_done: timing ? timing.groups : Math.min(stopAfter, totalGroups),
    points_searched: searched,
    points: model.quantPoints.length,
    peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
    rss_after_load_bytes: rssAfterLoad,
    cpu_seconds: ((c) => (c.user + c.system) / 1e6)(process.cpuUsage(cpu0)),
    concurrent_searches: timing?.concurrentSearches ?? null,
    recorded_during_search: timing?.recordedDuringSearch ?? null,
    groups_in_files: timing?.groupsInFiles ?? null,
  };
  if (process.env.PTQ4VIT_PROFILE) {
    // Where the time went, by ORT graph signature (runGraph's profile): the search's scoring graphs by kind.
    const rows = [...profile.entries()].sort((a, b) => b[1].ms - a[1].ms);
    for (const [key, e] of rows.slice(0, 30)) process.stderr.write(`${(e.ms / 1000).toFixed(1).padStart(8)} s ${String(e.calls).padStart(7)} calls  ${key}\n`);
  }
  console.log(JSON.stringify(result));
}

async function parent(): Promise<void> {
  const here = fileURLToPath(import.meta.url);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-bench-scale-'));
  try {
    const jobs = values.jobs!.split(',').map((j) => {
      const [name, count] = j.split(':');
      if (!PRESETS[name]) throw new Error(`unknown job '${name}' (${Object.keys(PRESETS).join(', ')})`);
      return { name, preset: PRESETS[name], images: Number(count ?? 32) };
    });
    randomImages(dir, Math.max(...jobs.map((j) => j.images)));
    const header = machine();
    const rows: string[] = [];
    const results: [string, ChildResult][] = [];
    for (const job of jobs) {
      const file = path.join(dir, `${job.preset}.safetensors`);
      const params = fs.existsSync(file) ? NaN : randomCheckpoint(job.preset, file);
      const loadBefore = os.loadavg().map((l) => l.toFixed(2)).join(' / ');
      const args = [here, '--child', job.preset, '--dir', dir, '--images', String(job.images), '--n', values.n!, '--rounds', values.rounds!, '--threads', values.threads!];
      if (values['group-mib']) args.push('--group-mib', values['group-mib']);
      if (values['record-file-mib'] !== undefined) args.push('--record-file-mib', values['record-file-mib']);
      if (values.chunk) args.push('--chunk', values.chunk);
      if (values.groups) args.push('--groups', values.groups);
      if (values['no-recompute']) args.push('--no-recompute');
      if (values['no-pipeline']) args.push('--no-pipeline');
      if (values['search-workers'] !== undefined) args.push('--search-workers', values['search-workers']);
      const p = spawnSync(process.execPath, [...process.execArgv, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (p.status !== 0) throw new Error(`${job.preset}: child failed (exit ${p.status} ${p.signal ?? ''})`);
      const r = JSON.parse(p.stdout.trim().split('\n').at(-1)!) as ChildResult;
      results.push([`${job.name}:${job.images}`, r]);
      const gib = (b: number) => (b / 2 ** 30).toFixed(2);
      const partial = r.groups_done < r.groups ? ` — first ${r.groups_done} of ${r.groups} groups (${r.points_searched}/${r.points} points)` : '';
      const passes = r.pass_equivalents === null ? `${r.groups_done} passes` : `${r.pass_equivalents.toFixed(1)} pass equivalents for ${r.groups} groups`;
      console.log(`${job.preset} ${job.images} images${partial}: ${r.seconds.toFixed(0)} s (record ${r.record_seconds.toFixed(0)} s in ${passes}, search ${r.search_seconds.toFixed(0)} s; ${r.cpu_seconds.toFixed(0)} CPU s; ${r.concurrent_searches ?? 0} searches at once at most; ${r.recorded_during_search ?? 0} groups recorded during searches; ${r.groups_in_files ?? 0} in record files), peak RSS ${gib(r.peak_rss_bytes)} GiB`);
      const command = `node dist/scripts/bench_scale.js --jobs ${job.name}:${job.images} --n ${values.n} --rounds ${values.rounds}${values['group-mib'] ? ` --group-mib ${values['group-mib']}` : ''}${values['record-file-mib'] !== undefined ? ` --record-file-mib ${values['record-file-mib']}` : ''}${values.chunk ? ` --chunk ${values.chunk}` : ''}${values.groups ? ` --groups ${values.groups}` : ''}${values['no-recompute'] ? ' --no-recompute' : ''}${values['no-pipeline'] ? ' --no-pipeline' : ''}${values['search-workers'] !== undefined ? ` --search-workers ${values['search-workers']}` : ''}`;
      const loadAfter = os.loadavg().map((l) => l.toFixed(2)).join(' / ');
      rows.push(`| ${job.preset}${Number.isFinite(params) ? ` (${(params / 1e6).toFixed(1)} M)` : ''} | ${job.images} | ${r.groups_done}/${r.groups} (${r.points_searched}/${r.points} points) | ${r.seconds.toFixed(0)} | ${r.record_seconds.toFixed(0)}${r.pass_equivalents === null ? '' : ` (${r.pass_equivalents.toFixed(1)} pass eq.)`} | ${r.search_seconds.toFixed(0)} | ${gib(r.peak_rss_bytes)} GiB | ${gib(r.rss_after_load_bytes)} GiB | ${loadBefore} → ${loadAfter} | \`${command}\` at ${gitRevision()}, ${new Date().toISOString().slice(0, 16)}Z |`);
    }
    // Issue 23's calibration targets (full PTQ4ViT W8A8, n 100, 3 rounds) beside this run's jobs.
    const TARGETS: Record<string, { seconds: number; rssGiB?: number }> = { 'vit_s:128': { seconds: 600, rssGiB: 3 }, 'vit_b:128': { seconds: 1500, rssGiB: 3 }, 'vit_b:32': { seconds: 480 } };
    for (const [key, r] of results) {
      const t = TARGETS[key];
      if (!t) continue;
      const full = values.n === '100' && values.rounds === '3' && r.groups_done === r.groups;
      const rss = r.peak_rss_bytes / 2 ** 30;
      console.log(`target ${key}: ${r.seconds.toFixed(0)} s (≤ ${t.seconds} s: ${r.seconds <= t.seconds ? 'yes' : 'no'})${t.rssGiB ? `, peak RSS ${rss.toFixed(2)} GiB (≤ ${t.rssGiB} GiB: ${rss <= t.rssGiB ? 'yes' : 'no'})` : ''}${full ? '' : ' — not the target configuration (n 100, 3 rounds, all groups)'}`);
    }
    // Rows of earlier runs for other jobs stay (each row names its command, revision and time).
    const heading = `Calibration at ImageNet sizes (n ${values.n}, ${values.rounds} rounds)`;
    const ran = new Set(jobs.map((j) => `${j.preset}|${j.images}`));
    const earlier = earlierRows(heading).filter((row) => {
      const [model, images] = row.split('|').slice(1, 3).map((c) => c.trim());
      return !ran.has(`${model.split(' ')[0]}|${images}`);
    });
    const table = [
      `\`node dist/scripts/bench_scale.js\` — ${header} (the last run; each row names its own command, revision, time and load); search n ${values.n}, ${values.rounds} rounds, group budget ${values['group-mib'] ?? DEFAULT_GROUP_BYTES / 2 ** 20} MiB, chunk ${values.chunk ?? 'per model (defaultChunkSize)'}. Rows run with \`--groups K\` are partial: the first K groups recorded and searched, so their peak RSS is over those groups only and their seconds are not a full calibration.`,
      '',
      '| model | images | groups done | seconds | recording (s) | search (s) | peak RSS | RSS after load | load (1/5/15 min) before → after | command |',
      '|---|---|---|---|---|---|---|---|---|---|',
      ...earlier,
      ...rows,
    ].join('\n');
    console.log(table);
    if (!values['no-write']) replaceSection('BENCHMARKS.md', heading, table);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The table rows of an existing BENCHMARKS.md section (none if it is not there). */
function earlierRows(heading: string): string[] {
  const text = fs.existsSync('BENCHMARKS.md') ? fs.readFileSync('BENCHMARKS.md', 'utf8') : '';
  const start = text.indexOf(`## ${heading}\n`);
  if (start < 0) return [];
  const end = text.indexOf('\n## ', start + 4);
  return text.slice(start, end < 0 ? undefined : end).split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| model |'));
}

if (values.child) await child();
else await parent();
