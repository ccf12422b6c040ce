/**
 * Calibration data as users have it (issue 10), at the library level: flat and nested folders of
 * unlabeled images, lists of image paths, deterministic sampling that reads only the sampled files,
 * and --skip-unreadable's deterministic replacements.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import { openDataset, type Dataset } from '../src/data/datasets.js';
import { Ptq4vitError } from '../src/errors.js';
import type { Preprocess } from '../src/models/types.js';
import { calibrationIndices, loadCalibration } from '../src/quant/calibset.js';
import { scratchDir, sharedDir } from './helpers.js';

const scratch = scratchDir('calibdata');
const tmpDir = scratch.next;
const jpegSample = path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample');
const SMALL: Preprocess = { inputSize: 8, cropPct: 1, interpolation: 'bicubic', mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };

/** A small PNG whose gray level encodes `shade`, so a loaded row says which file it came from. */
const pngOf = (shade: number): Promise<Buffer> =>
  sharp({ create: { width: 8, height: 8, channels: 3, background: { r: shade, g: shade, b: shade } } }).png().toBuffer();

async function put(root: string, rel: string, bytes?: Uint8Array | string): Promise<void> {
  fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
  fs.writeFileSync(path.join(root, rel), bytes ?? (await pngOf(100)));
}

const paths = (ds: Dataset): (string | null)[] => Array.from({ length: ds.size }, (_, i) => ds.itemPath(i));
const unlabeled = { allowUnlabeled: true };

describe('unlabeled image folders', () => {
  test('a flat folder: every image, sorted; other files ignored; no labels; refused where labels are needed', async () => {
    const root = tmpDir();
    for (const f of ['b.jpg', 'a.png', 'C.webp']) await put(root, f);
    await put(root, 'notes.txt', 'x');
    await assert.rejects(openDataset(root), new RegExp(`image folder ${root} has no class subfolders \\(only 4 files\\)`));
    const ds = await openDataset(root, unlabeled);
    assert.equal(ds.kind, 'image-folder');
    assert.equal(ds.labeled, false);
    assert.deepEqual(ds.classes, []);
    assert.deepEqual(paths(ds), ['C.webp', 'a.png', 'b.jpg']);
    assert.equal(ds.itemName(1), path.join(root, 'a.png'));
    assert.equal(ds.label(0), -1);
    assert.deepEqual(ds.ignored.map((f) => [path.relative(root, f.file), f.reason]), [['notes.txt', 'not an image extension (.txt)']]);
    assert.match(ds.description, /a folder of unlabeled images \(it has 3 images at its top level/);
    assert.equal((await ds.image(1)).width, 8);
  });

  test('a nested folder: read recursively, directories in os.walk-sorted path order', async () => {
    const root = tmpDir();
    for (const f of ['top.png', 'a/z/deep.png', 'a b/space.png', 'a/1.png', 'a/0.jpg', 'b/x.png']) await put(root, f);
    const ds = await openDataset(root, unlabeled);
    assert.equal(ds.kind, 'image-folder');
    // Directories sort as strings: '' < 'a' < 'a b' < 'a/z' < 'b' (space 0x20 sorts before '/' 0x2f).
    assert.deepEqual(paths(ds), ['top.png', 'a/0.jpg', 'a/1.png', 'a b/space.png', 'a/z/deep.png', 'b/x.png']);
  });

  test('subfolders only: class folders (labeled) unless one holds no images', async () => {
    const root = tmpDir();
    for (const f of ['cat/1.png', 'cat/2.png', 'dog/1.png']) await put(root, f);
    const classes = await openDataset(root, unlabeled);
    assert.equal(classes.kind, 'class-folders');
    assert.equal(classes.labeled, true);
    assert.deepEqual(classes.classes, ['cat', 'dog']);
    assert.deepEqual(Array.from({ length: 3 }, (_, i) => classes.label(i)), [0, 0, 1]);
    assert.deepEqual(paths(classes), ['cat/1.png', 'cat/2.png', 'dog/1.png']);

    fs.mkdirSync(path.join(root, 'empty'));
    await assert.rejects(openDataset(root), /class folders with no images: empty/);
    const photos = await openDataset(root, unlabeled);
    assert.equal(photos.kind, 'image-folder');
    assert.equal(photos.labeled, false);
    assert.match(photos.description, /its subfolders empty hold no images, so they are not classes/);
    assert.equal(photos.size, 3);
  });

  test('CIFAR jpeg_sample stays a 10-class labeled folder when unlabeled data is allowed', async () => {
    const ds = await openDataset(jpegSample, unlabeled);
    assert.equal(ds.kind, 'class-folders');
    assert.equal(ds.classes.length, 10);
    assert.equal(ds.size, 100);
  });

  test('a folder of non-image files, and an empty one, are refused naming the folder', async () => {
    const root = tmpDir();
    await put(root, 'a.txt', 'x');
    await assert.rejects(openDataset(root, unlabeled), new RegExp(`image folder ${root} holds no images \\(only 1 other files\\)`));
    const empty = tmpDir();
    await assert.rejects(openDataset(empty, unlabeled), new RegExp(`image folder ${empty} is empty`));
  });
});

describe('image lists', () => {
  test('one path per line, relative to the list or absolute; blank lines and CRLF tolerated', async () => {
    const root = tmpDir();
    await put(root, 'photos/a.png', await pngOf(10));
    await put(root, 'photos/sub/b.png', await pngOf(20));
    const elsewhere = path.join(tmpDir(), 'c.png');
    fs.writeFileSync(elsewhere, await pngOf(30));
    const listDir = path.join(root, 'lists');
    fs.mkdirSync(listDir);
    const list = path.join(listDir, 'calib.txt');
    fs.writeFileSync(list, `../photos/sub/b.png\r\n\n   \n../photos/a.png\n${elsewhere}\n`);
    await assert.rejects(openDataset(list), /cannot open dataset .*calib\.txt: expected an image folder .* or a \.json manifest \(a list of image paths has no labels\)/);
    const ds = await openDataset(list, unlabeled);
    assert.equal(ds.kind, 'image-list');
    assert.equal(ds.labeled, false);
    assert.deepEqual(paths(ds), ['../photos/sub/b.png', '../photos/a.png', elsewhere]);
    assert.equal(ds.itemName(0), path.join(root, 'photos', 'sub', 'b.png'));
    assert.equal(ds.itemName(2), elsewhere);
    const shades = await Promise.all([0, 1, 2].map(async (i) => (await ds.image(i)).data[0]));
    assert.deepEqual(shades, [20, 10, 30]);
  });

  test('an empty list, a binary file and an image given as a list are explained', async () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'empty.txt'), '\n \n');
    await assert.rejects(openDataset(path.join(dir, 'empty.txt'), unlabeled), /image list .*empty\.txt: it lists no image paths: expected a text file with one image path per line/);
    fs.writeFileSync(path.join(dir, 'data.u8'), Uint8Array.from([1, 0, 2]));
    await assert.rejects(openDataset(path.join(dir, 'data.u8'), unlabeled), /image list .*data\.u8: it is a binary file, not text/);
    fs.writeFileSync(path.join(dir, 'latin1.txt'), Uint8Array.from([0x63, 0xe9, 0x0a]));
    await assert.rejects(openDataset(path.join(dir, 'latin1.txt'), unlabeled), /it is not UTF-8 text/);
    fs.writeFileSync(path.join(dir, 'one.jpg'), await pngOf(1));
    await assert.rejects(openDataset(path.join(dir, 'one.jpg'), unlabeled), /image list .*one\.jpg: this is an image; give the folder that holds it/);
  });

  test('a listed file that is missing fails when sampled, naming the file', async () => {
    const dir = tmpDir();
    await put(dir, 'a.png');
    fs.writeFileSync(path.join(dir, 'l.txt'), 'a.png\nmissing.png\n');
    const ds = await openDataset(path.join(dir, 'l.txt'), unlabeled);
    await assert.rejects(loadCalibration(ds, 2, 0, SMALL), (e: unknown) =>
      e instanceof Ptq4vitError && e.message.includes(`calibration image ${path.join(dir, 'missing.png')} is unreadable (no such file)`));
  });
});

describe('deterministic sampling that reads only the sampled images', () => {
  test('same listing, size and seed → same paths; another seed → another sample', async () => {
    const a = await openDataset(jpegSample, unlabeled);
    const b = await openDataset(jpegSample, unlabeled);
    const sample = (ds: Dataset, seed: number) => calibrationIndices(ds, 16, seed).map((i) => ds.itemPath(i));
    assert.deepEqual(sample(a, 7), sample(b, 7));
    assert.notDeepEqual(sample(a, 7), sample(a, 8));
    const indices = calibrationIndices(a, 16, 7);
    assert.equal(new Set(indices).size, 16);
    assert.ok(indices.every((i, k) => k === 0 || i > indices[k - 1]), 'ascending');
    assert.ok(new Set(indices.map((i) => a.label(i))).size > 3, 'spread over classes, not the first folder');
  });

  test('2000 empty files: opening and sampling never read them (only the 8 sampled are decoded)', async () => {
    const root = tmpDir();
    for (let d = 0; d < 20; d++) {
      fs.mkdirSync(path.join(root, `d${d}`));
      for (let f = 0; f < 100; f++) fs.writeFileSync(path.join(root, `d${d}`, `${f}.jpg`), '');
    }
    fs.writeFileSync(path.join(root, 'top.jpg'), ''); // makes it an unlabeled folder
    const ds = await openDataset(root, unlabeled);
    assert.equal(ds.size, 2001);
    const indices = calibrationIndices(ds, 8, 3);
    // Only the sampled files become real images; decoding any other (empty) file would fail.
    for (const [k, i] of indices.entries()) fs.writeFileSync(ds.itemName(i), await pngOf(10 * (k + 1)));
    const set = await loadCalibration(ds, 8, 3, SMALL);
    assert.deepEqual(set.indices, indices);
    assert.equal(set.labels, null);
    assert.deepEqual(set.images.shape, [8, 3, 8, 8]);
    const plane = 8 * 8;
    const rowShades = indices.map((_, row) => Math.round((set.images.data[row * 3 * plane] * 0.25 + 0.5) * 255));
    assert.deepEqual(rowShades, [10, 20, 30, 40, 50, 60, 70, 80], 'rows in ascending index order');
  });
});

describe('unreadable calibration images', () => {
  /** 12 readable images, then the first two sampled (size 6, seed 1) made unreadable. */
  async function withTwoBad(): Promise<{ ds: Dataset; bad: number[]; root: string }> {
    const root = tmpDir();
    for (let i = 0; i < 12; i++) await put(root, `img${String(i).padStart(2, '0')}.png`, await pngOf(10 * i));
    const ds = await openDataset(root, unlabeled);
    const bad = calibrationIndices(ds, 6, 1).slice(0, 2);
    fs.writeFileSync(ds.itemName(bad[0]), 'not an image');
    fs.writeFileSync(ds.itemName(bad[1]), Buffer.alloc(0));
    return { ds, bad, root };
  }

  test('by default: an error naming the file and suggesting --skip-unreadable', async () => {
    const { ds, bad } = await withTwoBad();
    await assert.rejects(loadCalibration(ds, 6, 1, SMALL), (e: unknown) =>
      e instanceof Ptq4vitError &&
      e.message.startsWith(`calibration image ${ds.itemName(bad[0])} is unreadable (`) &&
      e.message.endsWith('2 of 6 calibration images could not be read (--skip-unreadable replaces them)'));
  });

  test('with skipUnreadable: replaced by the next images of the seeded draw, the same ones every time', async () => {
    const { ds, bad } = await withTwoBad();
    const first = await loadCalibration(ds, 6, 1, SMALL, { skipUnreadable: true });
    assert.equal(first.indices.length, 6);
    assert.ok(bad.every((b) => !first.indices.includes(b)), `unreadable ${bad} not in ${first.indices}`);
    const kept = calibrationIndices(ds, 6, 1).filter((i) => !bad.includes(i));
    assert.ok(kept.every((i) => first.indices.includes(i)), 'the readable part of the sample is kept');
    assert.deepEqual(first.skipped.map((s) => s.index), [...bad].sort((x, y) => x - y));
    const again = await loadCalibration(ds, 6, 1, SMALL, { skipUnreadable: true });
    assert.deepEqual(again.indices, first.indices);
    assert.ok(Buffer.from(again.images.data.buffer).equals(Buffer.from(first.images.data.buffer)));
  });

  test('with skipUnreadable but too few readable images: an error with the counts', async () => {
    const { ds } = await withTwoBad();
    await assert.rejects(loadCalibration(ds, 11, 1, SMALL, { skipUnreadable: true }),
      /calibration set .* has 12 images, but 2 of those tried are unreadable \(first: .*\), leaving fewer than the 11 requested \(--calib-size\)/);
    await assert.rejects(loadCalibration(ds, 12, 1, SMALL, { skipUnreadable: true }), /leaving fewer than the 12 requested/);
  });
});
