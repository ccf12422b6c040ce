/**
 * Opening and sampling a calibration folder of a million files (issue 10): builds an ImageNet-train-like
 * tree of empty files under the temp dir (20 groups × 50 folders × 1000 files = 1,000,000 by default;
 * empty files take inodes, not data blocks), then times, each the median of 3 runs:
 *  - openDataset(root) as class folders, and as an unlabeled folder (one image added at the top level);
 *  - a list file of the same million paths;
 *  - calibrationIndices (the seeded sample of --calib-size 32 and 1024 from the million);
 *  - loadCalibration of 32 images (the sampled files made real JPEGs; every other file is empty, so
 *    decoding any of them would fail: this shows that only the sample is read);
 * beside two baselines in the same run: GNU `find root -type f | wc -l`, and a bare Node walk
 * (readdir withFileTypes, no sorting, no objects kept). The tree is removed at the end, also on Ctrl-C.
 *
 *   npx tsc -p . && node dist/scripts/bench_listing.js [--files=1000000] [--no-write]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { openDataset, type Dataset } from '../src/data/datasets.js';
import type { Preprocess } from '../src/models/types.js';
import { calibrationIndices, loadCalibration } from '../src/quant/calibset.js';
import { gitRevision, replaceSection } from './markdown.js';

const filesArg = process.argv.find((a) => a.startsWith('--files='));
const totalFiles = filesArg ? Number(filesArg.split('=')[1]) : 1_000_000;
const GROUPS = 20, DIRS_PER_GROUP = 50;
const perDir = Math.ceil(totalFiles / (GROUPS * DIRS_PER_GROUP));
const RUNS = 3;
const PREPROCESS: Preprocess = { inputSize: 32, cropPct: 1, interpolation: 'bicubic', mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };

const uptime = (): string => execFileSync('uptime', { encoding: 'utf8' }).trim();
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const log = (s: string): void => void process.stderr.write(`${s}\n`);

async function timed<T>(what: string, f: () => Promise<T> | T): Promise<{ seconds: number; value: T }> {
  const seconds: number[] = [];
  let value!: T;
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    value = await f();
    seconds.push((performance.now() - t0) / 1000);
  }
  log(`${what}: ${seconds.map((s) => s.toFixed(3)).join(', ')} s`);
  return { seconds: median(seconds), value };
}

/** The cheapest listing Node can do: recursive readdir, nothing sorted or kept. */
function bareWalk(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? bareWalk(path.join(dir, e.name)) : 1;
  return n;
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-bench-listing-'));
const cleanup = (): void => fs.rmSync(root, { recursive: true, force: true });
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

try {
  const stat = fs.statfsSync(root);
  if (stat.ffree < 2 * totalFiles) throw new Error(`${root}: ${stat.ffree} free inodes, need ${2 * totalFiles}`);
  const loadBefore = uptime();
  log(`load: ${loadBefore}`);

  const tree = path.join(root, 'train');
  const t0 = performance.now();
  let made = 0;
  for (let g = 0; g < GROUPS; g++) {
    for (let d = 0; d < DIRS_PER_GROUP && made < totalFiles; d++) {
      const dir = path.join(tree, `g${String(g).padStart(2, '0')}`, `n${String(g * DIRS_PER_GROUP + d).padStart(8, '0')}`);
      fs.mkdirSync(dir, { recursive: true });
      for (let f = 0; f < perDir && made < totalFiles; f++, made++) fs.closeSync(fs.openSync(path.join(dir, `img_${String(made).padStart(8, '0')}.JPEG`), 'w'));
    }
    log(`building: ${made} files`);
  }
  const buildSeconds = (performance.now() - t0) / 1000;
  log(`built ${made} empty files in ${buildSeconds.toFixed(1)} s`);

  const find = await timed('find | wc -l', () => Number(spawnSync('sh', ['-c', 'find "$1" -type f | wc -l', 'sh', tree], { encoding: 'utf8' }).stdout.trim()));
  if (find.value !== made) throw new Error(`find counted ${find.value} files, expected ${made}`);
  const bare = await timed('bare Node walk', () => bareWalk(tree));

  const classes = await timed('openDataset (class folders)', () => openDataset(tree, { allowUnlabeled: true }));
  if (classes.value.kind !== 'class-folders' || classes.value.size !== made) throw new Error(`expected ${made} images in class folders, got ${classes.value.kind} ${classes.value.size}`);

  fs.closeSync(fs.openSync(path.join(tree, 'top.JPEG'), 'w'));
  const flat = await timed('openDataset (unlabeled, recursive)', () => openDataset(tree, { allowUnlabeled: true }));
  if (flat.value.kind !== 'image-folder' || flat.value.size !== made + 1) throw new Error(`expected ${made + 1} unlabeled images, got ${flat.value.kind} ${flat.value.size}`);
  const ds: Dataset = flat.value;

  const list = path.join(root, 'calib.txt');
  fs.writeFileSync(list, Array.from({ length: ds.size }, (_, i) => path.join('train', ds.itemPath(i)!)).join('\n') + '\n');
  const listed = await timed('openDataset (list file)', () => openDataset(list, { allowUnlabeled: true }));
  if (listed.value.size !== ds.size) throw new Error(`the list has ${listed.value.size} entries, expected ${ds.size}`);

  const sample32 = await timed('calibrationIndices 32', () => calibrationIndices(ds, 32, 0));
  const sample1024 = await timed('calibrationIndices 1024', () => calibrationIndices(ds, 1024, 0));

  // Only the sample becomes real images; the other files stay empty (undecodable).
  const jpeg = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 90, g: 140, b: 200 } } }).jpeg().toBuffer();
  for (const i of sample32.value) fs.writeFileSync(ds.itemName(i), jpeg);
  const load = await timed('loadCalibration 32', () => loadCalibration(ds, 32, 0, PREPROCESS));
  if (load.value.indices.join() !== sample32.value.join()) throw new Error('loadCalibration loaded other images than the sample');
  const rssGiB = process.resourceUsage().maxRSS / 2 ** 20;
  const loadAfter = uptime();
  log(`load: ${loadAfter}`);

  const ratio = (s: number, base: number): string => `${(s / base).toFixed(2)}×`;
  const row = (what: string, s: number): string => `| ${what} | ${s.toFixed(3)} | ${ratio(s, find.seconds)} | ${ratio(s, bare.seconds)} |`;
  const table = [
    '| step | seconds (median of 3) | / find | / bare Node walk |',
    '|---|---|---|---|',
    row('baseline: `find root -type f \\| wc -l`', find.seconds),
    row('baseline: bare Node walk (readdir withFileTypes, nothing sorted or kept)', bare.seconds),
    row(`openDataset: class folders (${GROUPS} classes, ${made.toLocaleString('en-US')} images)`, classes.seconds),
    row(`openDataset: unlabeled folder, recursive (${(made + 1).toLocaleString('en-US')} images)`, flat.seconds),
    row(`openDataset: list file of ${ds.size.toLocaleString('en-US')} paths`, listed.seconds),
    row('calibrationIndices: sample 32 (seed 0)', sample32.seconds),
    row('calibrationIndices: sample 1024 (seed 0)', sample1024.seconds),
    row('loadCalibration: sample 32 and decode only those', load.seconds),
    row('**listing + sampling 32 (unlabeled folder)**', flat.seconds + sample32.seconds),
  ].join('\n');
  const command = `node dist/scripts/bench_listing.js${filesArg ? ` ${filesArg}` : ''}`;
  const body = `\`${command}\` at ${gitRevision()}, ${new Date().toISOString().slice(0, 19)}Z — ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}.
\`uptime\` before: \`${loadBefore}\`; after: \`${loadAfter}\` (the machine is shared with other developers' jobs).

A tree like ImageNet's \`train/\`: ${GROUPS} folders × ${DIRS_PER_GROUP} subfolders × ${perDir} empty \`.JPEG\` files = ${made.toLocaleString('en-US')}
files under the temp dir on ext4 (built in ${buildSeconds.toFixed(0)} s, removed afterwards), page cache warm (just written).
Opening lists directories only; sampling shuffles indices with the seed; nothing is decoded except the
sample (every other file is empty, so decoding it would fail). Peak RSS of the whole run ${rssGiB.toFixed(2)} GiB.

${table}`;
  console.log(`\n${body}`);
  if (!process.argv.includes('--no-write')) replaceSection('BENCHMARKS.md', 'Listing and sampling a million-file calibration folder', body);
} finally {
  log(`removing ${root}`);
  cleanup();
}
