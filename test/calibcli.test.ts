/**
 * `ptq4vit quantize --calib` with data as users have it (issue 10), end to end through bin/ptq4vit.js:
 * a 1000-class model calibrated on CIFAR photos without labels (loss pseudo by default, no class-count
 * check), list files, --loss label on unlabeled data (exit 2), deterministic samples recorded by path,
 * and --skip-unreadable. The 1000-class model is a tiny random-weight ViT written to a scratch dir.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { openDataset } from '../src/data/datasets.js';
import { seededRandom } from '../src/grad/loss.js';
import { SafeTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { calibrationIndices } from '../src/quant/calibset.js';
import { runCli, scratchDir, sharedDir, showRun, type CliRun } from './helpers.js';

const scratch = scratchDir('calibcli');
const tmpDir = scratch.next;
const jpegSample = path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample');
const SEARCH = ['--n', '4', '--rounds', '1'];

/** A timm VisionTransformer with random weights: 32×32 input, patch 8, width 32, depth 2, 1000 classes. */
function writeTinyVit1000(dir: string): { model: string; card: string } {
  const D = 32, depth = 2, classes = 1000, tokens = 1 + (32 / 8) ** 2;
  const random = seededRandom(42);
  const t = (shape: number[], fill?: number): TensorToWrite => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = Float32Array.from({ length: n }, () => fill ?? (random() - 0.5) * 0.2);
    return { dtype: 'F32', shape, data };
  };
  const tensors: Record<string, TensorToWrite> = {
    cls_token: t([1, 1, D]),
    pos_embed: t([1, tokens, D]),
    'patch_embed.proj.weight': t([D, 3, 8, 8]),
    'patch_embed.proj.bias': t([D]),
  };
  for (let b = 0; b < depth; b++) {
    const p = `blocks.${b}.`;
    Object.assign(tensors, {
      [`${p}norm1.weight`]: t([D], 1), [`${p}norm1.bias`]: t([D], 0),
      [`${p}attn.qkv.weight`]: t([3 * D, D]), [`${p}attn.qkv.bias`]: t([3 * D]),
      [`${p}attn.proj.weight`]: t([D, D]), [`${p}attn.proj.bias`]: t([D]),
      [`${p}norm2.weight`]: t([D], 1), [`${p}norm2.bias`]: t([D], 0),
      [`${p}mlp.fc1.weight`]: t([4 * D, D]), [`${p}mlp.fc1.bias`]: t([4 * D]),
      [`${p}mlp.fc2.weight`]: t([D, 4 * D]), [`${p}mlp.fc2.bias`]: t([D]),
    });
  }
  Object.assign(tensors, { 'norm.weight': t([D], 1), 'norm.bias': t([D], 0), 'head.weight': t([classes, D]), 'head.bias': t([classes]) });
  const model = path.join(dir, 'vit1000.safetensors');
  const card = path.join(dir, 'vit1000.json');
  writeSafetensors(model, tensors);
  fs.writeFileSync(card, JSON.stringify({
    name: 'vit_random_1000',
    timm_class: 'VisionTransformer',
    timm_kwargs: { img_size: 32, patch_size: 8, embed_dim: D, depth, num_heads: 2, num_classes: classes },
    mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616],
  }));
  return { model, card };
}

const models = tmpDir();
const VIT1000 = writeTinyVit1000(models);

/** A folder of `count` CIFAR JPEGs (every fourth in a subfolder), named by class and number. */
function cifarPhotos(count: number): string {
  const root = tmpDir();
  if (count > 3) fs.mkdirSync(path.join(root, 'more'));
  let k = 0;
  for (const cls of fs.readdirSync(jpegSample).sort()) {
    for (const f of fs.readdirSync(path.join(jpegSample, cls)).sort().slice(0, 3)) {
      if (k >= count) break;
      const dest = k % 4 === 3 ? path.join(root, 'more', `${cls}_${f}`) : path.join(root, `${cls}_${f}`);
      fs.copyFileSync(path.join(jpegSample, cls, f), dest);
      k++;
    }
  }
  return root;
}

const quantize1000 = (calib: string, out: string, ...args: string[]): CliRun =>
  runCli(['quantize', '--model', VIT1000.model, '--config', VIT1000.card, '--calib', calib, ...SEARCH, '--out', out, ...args]);

function provenanceOf(file: string): Record<string, unknown> {
  return JSON.parse(SafeTensors.read(file).metadata['ptq4vit.provenance']) as Record<string, unknown>;
}

interface CalibrationRecord {
  data: string;
  kind: string;
  labeled: boolean;
  size: number;
  images: number;
  indices: number[];
  files?: string[];
  skipped?: { file: string; reason: string }[];
}

function assertUserError(r: CliRun, pattern: RegExp, outDir: string): void {
  assert.equal(r.status, 2, showRun(r));
  assert.match(r.stderr.split('\n')[0], /^ptq4vit: error: /, showRun(r));
  assert.match(r.stderr.split('\n')[0], pattern, showRun(r));
  assert.ok(!r.stderr.includes('    at ') && !r.stderr.includes('internal error'), showRun(r));
  assert.ok(!r.stderr.includes('recording'), `failed only after starting calibration:\n${showRun(r)}`);
  assert.deepEqual(fs.readdirSync(outDir), [], 'nothing written');
}

describe('a 1000-class model calibrated on CIFAR photos', () => {
  test('flat + nested folder without labels: loss pseudo by default, said in the report and the provenance', () => {
    const photos = cifarPhotos(24);
    const dir = tmpDir();
    const out = path.join(dir, 'q.safetensors');
    const r = quantize1000(photos, out, '--calib-size', '16', '--seed', '5');
    assert.equal(r.status, 0, showRun(r));
    assert.match(r.stderr, /--calib .* has no labels: calibrating with --loss pseudo/);
    assert.match(r.stdout, /loss\s+pseudo: cross-entropy against the FP32 model's own predictions \(the default: the calibration images have no labels\)/);
    assert.match(r.stdout, /calibration\s+16 of 24 images from \S+ \(unlabeled image folder, seed 5\)/);
    const p = provenanceOf(out);
    assert.equal(p.loss, 'pseudo');
    assert.equal(p.loss_choice, 'default for unlabeled data');
    const c = p.calibration as CalibrationRecord;
    assert.equal(c.kind, 'image-folder');
    assert.equal(c.labeled, false);
    assert.equal(c.size, 24);
    assert.equal(c.images, 16);
    assert.equal(c.files?.length, 16);
    assert.ok(c.files?.some((f) => f.startsWith('more/')), `nested images sampled too: ${c.files}`);
    assert.ok(c.files?.every((f) => fs.existsSync(path.join(photos, f))), 'recorded paths are relative to the folder');
  });

  test('the 10-class CIFAR folder: --loss pseudo ignores its labels (no class check); the default label loss is refused', () => {
    const dir = tmpDir();
    const refused = quantize1000(jpegSample, path.join(dir, 'q.safetensors'), '--calib-size', '8');
    assertUserError(refused, /jpeg_sample has 10 classes but the model predicts 1000: .*\(calibrating with --loss pseudo needs no labels\)/, dir);
    const out = path.join(dir, 'q.safetensors');
    const r = quantize1000(jpegSample, out, '--calib-size', '8', '--loss', 'pseudo', '--json');
    assert.equal(r.status, 0, showRun(r));
    const p = provenanceOf(out);
    assert.equal(p.loss, 'pseudo');
    assert.equal(p.loss_choice, '--loss');
    assert.equal((p.calibration as CalibrationRecord).kind, 'class-folders');
    assert.equal((p.calibration as CalibrationRecord).labeled, true);
  });

  test('a list file (paths relative to it, blank lines skipped): all its images, in list order', () => {
    const photos = cifarPhotos(6);
    const listDir = tmpDir();
    const names = fs.readdirSync(photos).filter((f) => f.endsWith('.jpg')).sort().reverse();
    const rel = names.map((f) => path.relative(listDir, path.join(photos, f)));
    fs.writeFileSync(path.join(listDir, 'calib.txt'), `${rel.join('\n')}\n\n`);
    const dir = tmpDir();
    const out = path.join(dir, 'q.safetensors');
    const r = quantize1000(path.join(listDir, 'calib.txt'), out);
    assert.equal(r.status, 0, showRun(r));
    assert.match(r.stderr, new RegExp(`has ${rel.length} images, fewer than the default 32: calibrating on all of them`));
    const c = provenanceOf(out).calibration as CalibrationRecord;
    assert.equal(c.kind, 'image-list');
    assert.equal(c.data, 'calib.txt');
    assert.deepEqual(c.files, rel);
    assert.deepEqual(c.indices, rel.map((_, i) => i));
  });
});

describe('unlabeled data where labels are needed: exit 2 naming the reason', () => {
  test('--loss label on a flat folder and on a list file', () => {
    const photos = cifarPhotos(8);
    const dir = tmpDir();
    assertUserError(quantize1000(photos, path.join(dir, 'q.safetensors'), '--loss', 'label'),
      /--loss label needs labels, but --calib .* has none: it is a folder of unlabeled images \(it has \d+ images at its top level, so its subfolders are not classes\); use --loss pseudo/, dir);
    const list = path.join(tmpDir(), 'l.txt');
    fs.writeFileSync(list, 'a.jpg\n');
    assertUserError(quantize1000(list, path.join(dir, 'q.safetensors'), '--loss', 'label'), /--loss label needs labels, but --calib .*l\.txt has none: it is a list of image paths/, dir);
  });

  test('eval --data on a flat folder or a list: refused (top-1 needs labels)', () => {
    const photos = cifarPhotos(3);
    const evalArgs = (data: string): string[] => ['eval', '--model', VIT1000.model, '--config', VIT1000.card, '--data', data];
    const flat = runCli(evalArgs(photos));
    assert.equal(flat.status, 2, showRun(flat));
    assert.match(flat.stderr, /^ptq4vit: error: image folder .* has no class subfolders/);
    const list = path.join(tmpDir(), 'l.txt');
    fs.writeFileSync(list, 'a.jpg\n');
    const listed = runCli(evalArgs(list));
    assert.equal(listed.status, 2, showRun(listed));
    assert.match(listed.stderr, /^ptq4vit: error: cannot open dataset .*l\.txt: .*\(a list of image paths has no labels\)/);
  });
});

describe('determinism of the sampled set', () => {
  test('same folder, size and seed → byte-identical files with the same paths; a copy elsewhere samples the same paths; another seed differs', () => {
    const photos = cifarPhotos(30);
    const copy = tmpDir();
    fs.cpSync(photos, copy, { recursive: true });
    const dir = tmpDir();
    const run = (calib: string, name: string, seed: string): Record<string, unknown> => {
      const out = path.join(dir, name);
      const r = quantize1000(calib, out, '--calib-size', '8', '--seed', seed, '--json');
      assert.equal(r.status, 0, showRun(r));
      return provenanceOf(out);
    };
    const a = run(photos, 'a.safetensors', '3');
    run(photos, 'b.safetensors', '3');
    assert.ok(fs.readFileSync(path.join(dir, 'a.safetensors')).equals(fs.readFileSync(path.join(dir, 'b.safetensors'))), 'byte-identical');
    const c = run(copy, 'c.safetensors', '3');
    const files = (p: Record<string, unknown>) => (p.calibration as CalibrationRecord).files;
    assert.deepEqual(files(c), files(a));
    const d = run(photos, 'd.safetensors', '4');
    assert.notDeepEqual(files(d), files(a));
  });
});

describe('--skip-unreadable', () => {
  test('an unreadable sampled photo: exit 2 naming it; with --skip-unreadable a replacement, recorded', async () => {
    const photos = cifarPhotos(12);
    const ds = await openDataset(photos, { allowUnlabeled: true });
    const victim = calibrationIndices(ds, 6, 0)[2];
    fs.writeFileSync(ds.itemName(victim), 'this is not a JPEG');
    const dir = tmpDir();
    const out = path.join(dir, 'q.safetensors');
    const name = ds.itemPath(victim)!;
    assertUserError(quantize1000(photos, out, '--calib-size', '6'),
      new RegExp(`calibration image ${ds.itemName(victim).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is unreadable \\(.*\\); 1 of 6 calibration images could not be read \\(--skip-unreadable replaces them\\)`), dir);
    const r = quantize1000(photos, out, '--calib-size', '6', '--skip-unreadable');
    assert.equal(r.status, 0, showRun(r));
    assert.match(r.stdout, new RegExp(`unreadable, replaced: .*${name}`));
    const c = provenanceOf(out).calibration as CalibrationRecord;
    assert.equal(c.images, 6);
    assert.ok(!c.files?.includes(name));
    assert.deepEqual(c.skipped?.map((s) => s.file), [name]);
  });

  test('--help says what happens to an unreadable calibration image', () => {
    const r = runCli(['quantize', '--help']);
    assert.equal(r.status, 0);
    assert.match(r.stdout.replace(/\s+/g, ' '), /An unreadable calibration image stops with its name, or with --skip-unreadable is replaced by the next image of the seeded draw/);
  });
});
