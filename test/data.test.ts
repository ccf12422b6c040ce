/** Image decoding, PIL-exact resampling, timm's eval transform, datasets and batch loading. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import { loadBatch } from '../src/data/batch.js';
import { openDataset } from '../src/data/datasets.js';
import { decodeImage, ImageDecodeError, type RgbImage } from '../src/data/decode.js';
import { resizeRgb, type ResampleFilter } from '../src/data/resize.js';
import { centerCrop, evalTransform, roundHalfEven, shorterSideSize } from '../src/data/transform.js';
import { Ptq4vitError } from '../src/errors.js';
import { SafeTensors } from '../src/io/safetensors.js';
import type { Preprocess } from '../src/models/types.js';
import { fixturesDir, repoRoot, scratchDir, sharedDir } from './helpers.js';
import { bigPng } from './mutate.js';

const assetsDir = path.join(repoRoot, 'test', 'assets');
const cifarDir = path.join(sharedDir, 'data', 'cifar10');
const IMAGENET: Preprocess = {
  inputSize: 224,
  cropPct: 0.875,
  interpolation: 'bicubic',
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
};

const scratch = scratchDir('data');
const tmpRoot = scratch.root;
const tmpDir = scratch.next;

/** Deterministic bytes; test/assets/make_pil_refs.py generates the same ones in Python. */
function hashPixels(w: number, h: number): Uint8Array {
  return Uint8Array.from({ length: w * h * 3 }, (_, i) => Math.imul(i, 2654435761) >>> 24);
}

function rgbAt(img: RgbImage, x: number, y: number): number[] {
  const p = (y * img.width + x) * 3;
  return Array.from(img.data.subarray(p, p + 3));
}

// ---- a minimal PNG writer, so each colour type / bit depth is exactly what the test says ----

function pngChunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(body));
  return Buffer.concat([head, body, crc]);
}

/** colorType: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA; rows are unfiltered scanlines. */
function png(width: number, bitDepth: number, colorType: number, rows: number[][], extra: Buffer[] = []): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(rows.length, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colorType;
  const scanlines = Buffer.concat(rows.map((r) => Buffer.from([0, ...r])));
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    pngChunk('IHDR', ihdr),
    ...extra,
    pngChunk('IDAT', zlib.deflateSync(scanlines)),
    pngChunk('IEND', new Uint8Array(0)),
  ]);
}

async function decodeBytes(name: string, bytes: Uint8Array): Promise<RgbImage> {
  const file = path.join(tmpDir(), name);
  fs.writeFileSync(file, bytes);
  return decodeImage(file);
}

// ---------------------------------------------------------------------------------------------

describe('preprocessing parity with timm/torchvision/PIL', () => {
  const dir = path.join(fixturesDir, 'preprocess');
  const readme = JSON.parse(fs.readFileSync(path.join(dir, 'README.json'), 'utf8')) as { images: string[] };
  const expected = SafeTensors.read(path.join(dir, 'expected_224.safetensors'));

  test('the fixture lists four photos, each with a [3, 224, 224] reference', () => {
    assert.equal(readme.images.length, 4);
    assert.deepEqual([...expected.names()].sort(), [...readme.images].sort());
  });

  for (const name of readme.images) {
    test(`${name} matches the reference tensor`, async (t) => {
      const actual = evalTransform(await decodeImage(path.join(dir, name)), IMAGENET);
      const want = expected.tensor(name, [3, 224, 224]).data;
      assert.equal(actual.length, want.length);
      let sum = 0, max = 0, differing = 0;
      for (let i = 0; i < want.length; i++) {
        const d = Math.abs(actual[i] - want[i]);
        sum += d;
        max = Math.max(max, d);
        if (d > 0) differing++;
      }
      const mean = sum / want.length;
      t.diagnostic(`mean abs diff ${mean}, max ${max}, ${differing} of ${want.length} values differ`);
      assert.ok(mean <= 0.02, `mean abs diff ${mean} > 0.02`);
      assert.ok(max <= 0.25, `max abs diff ${max} > 0.25`);
    });
  }
});

describe('PIL-exact resampling', () => {
  const refs = JSON.parse(fs.readFileSync(path.join(assetsDir, 'pil_refs.json'), 'utf8')) as {
    resize: { w: number; h: number; width: number; height: number; filter: ResampleFilter; expected: string }[];
    cmyk: { file: string; rgb: string };
  };

  for (const c of refs.resize) {
    test(`${c.filter} ${c.w}x${c.h} → ${c.width}x${c.height} is byte-identical to Pillow`, () => {
      const out = resizeRgb({ width: c.w, height: c.h, data: hashPixels(c.w, c.h) }, c.width, c.height, c.filter);
      assert.equal(out.width, c.width);
      assert.equal(out.height, c.height);
      const want = Buffer.from(c.expected, 'base64');
      const wrong = out.data.reduce((n, v, i) => n + (v !== want[i] ? 1 : 0), 0);
      assert.equal(out.data.length, want.length);
      assert.equal(wrong, 0, `${wrong} of ${want.length} bytes differ from Pillow`);
    });
  }

  test('same size is a copy, not a resample', () => {
    const img = { width: 5, height: 4, data: hashPixels(5, 4) };
    const out = resizeRgb(img, 5, 4, 'bicubic');
    assert.deepEqual(out.data, img.data);
    assert.notEqual(out.data, img.data);
  });

  test('a CMYK JPEG converts with PIL\'s formula, not an ICC transform', async () => {
    const img = await decodeImage(path.join(assetsDir, refs.cmyk.file));
    assert.deepEqual(Buffer.from(img.data), Buffer.from(refs.cmyk.rgb, 'base64'));
  });
});

describe('eval transform geometry', () => {
  test('the long side is truncated like torchvision 0.14', () => {
    assert.deepEqual(shorterSideSize(375, 500, 256), { width: 256, height: 341 }); // 341.33
    assert.deepEqual(shorterSideSize(500, 375, 256), { width: 341, height: 256 });
    assert.deepEqual(shorterSideSize(263, 376, 256), { width: 256, height: 365 }); // 365.99 → 365
    assert.deepEqual(shorterSideSize(300, 300, 256), { width: 256, height: 256 });
  });

  test('round half to even, like Python', () => {
    assert.deepEqual([0.5, 1.5, 2.5, 3.5, -0.5, 2.4, 2.6].map(roundHalfEven), [0, 2, 2, 4, 0, 2, 3]);
  });

  test('center crop offsets use round-half-even: (37 − 32) / 2 = 2.5 → 2, (39 − 32) / 2 = 3.5 → 4', () => {
    const img = { width: 37, height: 39, data: hashPixels(37, 39) };
    const out = centerCrop(img, 32);
    assert.deepEqual(rgbAt(out, 0, 0), rgbAt(img, 2, 4));
    assert.deepEqual(rgbAt(out, 31, 31), rgbAt(img, 33, 35));
  });

  test('a crop larger than the image pads with black, the odd pixel on the right/bottom', () => {
    const img = { width: 3, height: 2, data: new Uint8Array(18).fill(200) };
    const out = centerCrop(img, 6); // pad left 1, right 2, top 2, bottom 2
    const column = (x: number) => Array.from({ length: 6 }, (_, y) => rgbAt(out, x, y)[0]);
    assert.deepEqual(column(0), [0, 0, 0, 0, 0, 0]);
    assert.deepEqual(column(1), [0, 0, 200, 200, 0, 0]);
    assert.deepEqual(column(3), [0, 0, 200, 200, 0, 0]);
    assert.deepEqual(column(4), [0, 0, 0, 0, 0, 0]);
  });

  test('normalization is float32 (x/255 − mean)/std, laid out CHW', () => {
    // 256 = 224 / 0.875, so this image is only cropped: every output pixel is (255, 0, 128).
    const data = new Uint8Array(256 * 256 * 3);
    for (let i = 0; i < data.length; i += 3) data.set([255, 0, 128], i);
    const out = evalTransform({ width: 256, height: 256, data }, IMAGENET);
    assert.equal(out.length, 3 * 224 * 224);
    const f = Math.fround;
    const expected = [255, 0, 128].map((v, c) => f(f(f(v / 255) - f(IMAGENET.mean[c])) / f(IMAGENET.std[c])));
    const plane = 224 * 224;
    for (let c = 0; c < 3; c++) {
      assert.equal(out[c * plane], expected[c]);
      assert.equal(out[c * plane + plane - 1], expected[c]);
    }
    assert.equal(out[plane], f(f(-0.456) / f(0.224)));
  });
});

describe('decodeImage', () => {
  const photos = path.join(fixturesDir, 'preprocess');

  test('an RGB JPEG decodes to width × height × 3 bytes', async () => {
    const img = await decodeImage(path.join(photos, 'n01443537_goldfish.JPEG'));
    assert.equal(img.width, 376);
    assert.equal(img.height, 263);
    assert.equal(img.data.length, 376 * 263 * 3);
  });

  test('a grayscale JPEG is replicated to three equal channels', async () => {
    const img = await decodeImage(path.join(photos, 'n02692877_airship.JPEG'));
    assert.equal(img.width, 350);
    assert.equal(img.height, 156);
    let unequal = 0;
    const levels = new Set<number>();
    for (let i = 0; i < img.data.length; i += 3) {
      if (img.data[i] !== img.data[i + 1] || img.data[i] !== img.data[i + 2]) unequal++;
      levels.add(img.data[i]);
    }
    assert.equal(unequal, 0);
    assert.ok(levels.size > 50, 'a photo has many gray levels');
  });

  test('EXIF orientation is not applied (PIL does not rotate)', async () => {
    const dir = tmpDir();
    const raw = { raw: { width: 37, height: 29, channels: 3 as const } };
    await sharp(Buffer.from(hashPixels(37, 29)), raw).jpeg({ quality: 90 }).toFile(path.join(dir, 'plain.jpg'));
    await sharp(Buffer.from(hashPixels(37, 29)), raw).jpeg({ quality: 90 }).withMetadata({ orientation: 6 }).toFile(path.join(dir, 'rotated.jpg'));
    assert.equal((await sharp(path.join(dir, 'rotated.jpg')).metadata()).orientation, 6);
    const plain = await decodeImage(path.join(dir, 'plain.jpg'));
    const rotated = await decodeImage(path.join(dir, 'rotated.jpg'));
    assert.deepEqual([rotated.width, rotated.height], [37, 29]);
    assert.deepEqual(rotated.data, plain.data);
  });

  test('an embedded ICC profile is not applied (PIL ignores it)', async () => {
    const raw = { raw: { width: 37, height: 29, channels: 3 as const } };
    const plain = await sharp(Buffer.from(hashPixels(37, 29)), raw).jpeg({ quality: 90 }).toBuffer();
    // Same compressed pixels plus a Display P3 profile in an APP2 segment right after SOI.
    const icc = (await sharp(plain).withIccProfile('p3').jpeg().toBuffer({ resolveWithObject: true }).then((r) => sharp(r.data).metadata())).icc;
    assert.ok(icc && icc.length > 100);
    const tag = Buffer.from('ICC_PROFILE\0\x01\x01', 'latin1');
    const length = Buffer.alloc(2);
    length.writeUInt16BE(2 + tag.length + icc.length);
    const tagged = Buffer.concat([plain.subarray(0, 2), Buffer.from([0xff, 0xe2]), length, tag, icc, plain.subarray(2)]);
    assert.equal((await sharp(tagged).metadata()).hasProfile, true);
    const a = await decodeBytes('plain.jpg', plain);
    const b = await decodeBytes('p3.jpg', tagged);
    assert.deepEqual(b.data, a.data);
    const converted = await sharp(tagged).raw().toBuffer(); // what sharp does by default: a colour transform
    assert.notDeepEqual(new Uint8Array(converted), a.data);
  });

  test('RGBA PNG: alpha is dropped, not composited (a transparent pixel keeps its colour)', async () => {
    const img = await decodeBytes('rgba.png', png(2, 8, 6, [[10, 20, 30, 0, 40, 50, 60, 128]]));
    assert.deepEqual(Array.from(img.data), [10, 20, 30, 40, 50, 60]);
  });

  test('gray+alpha PNG replicates gray and drops alpha', async () => {
    const img = await decodeBytes('la.png', png(2, 8, 4, [[7, 0, 250, 128]]));
    assert.deepEqual(Array.from(img.data), [7, 7, 7, 250, 250, 250]);
  });

  test('palette PNG with tRNS transparency expands the palette and ignores transparency', async () => {
    const plte = pngChunk('PLTE', Uint8Array.from([10, 20, 30, 40, 50, 60, 250, 0, 5]));
    const trns = pngChunk('tRNS', Uint8Array.from([0, 128]));
    const img = await decodeBytes('p.png', png(3, 8, 3, [[0, 1, 2], [2, 2, 0]], [plte, trns]));
    assert.deepEqual([img.width, img.height], [3, 2]);
    assert.deepEqual(Array.from(img.data), [10, 20, 30, 40, 50, 60, 250, 0, 5, 250, 0, 5, 250, 0, 5, 10, 20, 30]);
  });

  test('16-bit RGB PNG keeps the high byte (PIL truncates, it does not round)', async () => {
    const img = await decodeBytes('rgb16.png', png(2, 16, 2, [[0x12, 0xff, 0x80, 0x80, 0xff, 0xff, 0, 1, 1, 44, 0x7f, 0x80]]));
    assert.deepEqual(Array.from(img.data), [0x12, 0x80, 0xff, 0, 1, 0x7f]);
  });

  test('16-bit gray PNG is clamped to 0..255 as PIL\'s I → RGB conversion does', async () => {
    const row = [0x12, 0xff, 1, 44, 0, 200, 0xff, 0xff];
    const clamped = [255, 255, 255, 255, 255, 255, 200, 200, 200, 255, 255, 255];
    assert.deepEqual(Array.from((await decodeBytes('gray16.png', png(4, 16, 0, [row]))).data), clamped);
    // A tRNS chunk does not change PIL's mode (still I), although sharp then reports an alpha channel.
    const trns = pngChunk('tRNS', Uint8Array.from([0, 200]));
    assert.deepEqual(Array.from((await decodeBytes('gray16t.png', png(4, 16, 0, [row], [trns]))).data), clamped);
  });

  test('16-bit gray+alpha PNG keeps the high byte (PIL reads it as 8-bit RGBA)', async () => {
    const img = await decodeBytes('la16.png', png(2, 16, 4, [[0x12, 0xff, 0, 0, 0, 200, 0xff, 0xff]]));
    assert.deepEqual(Array.from(img.data), [0x12, 0x12, 0x12, 0, 0, 0]);
  });

  test('1-bit PNG maps to black and white', async () => {
    const img = await decodeBytes('bw.png', png(4, 1, 0, [[0b10100000]]));
    assert.deepEqual(Array.from(img.data), [255, 255, 255, 0, 0, 0, 255, 255, 255, 0, 0, 0]);
  });

  test('BMP: 24-bit bottom-up rows and a 4-bit palette image', async () => {
    const bmp = (w: number, h: number, bits: number, rowsTopDown: number[][], palette: number[][] = []): Buffer => {
      const stride = Math.ceil((w * bits) / 32) * 4;
      const pixels = Buffer.concat([...rowsTopDown].reverse().map((r) => Buffer.concat([Buffer.from(r), Buffer.alloc(stride - r.length)])));
      const pal = Buffer.from(palette.flatMap(([r, g, b]) => [b, g, r, 0]));
      const info = Buffer.alloc(40);
      info.writeUInt32LE(40, 0);
      info.writeInt32LE(w, 4);
      info.writeInt32LE(h, 8);
      info.writeUInt16LE(1, 12);
      info.writeUInt16LE(bits, 14);
      info.writeUInt32LE(palette.length, 32);
      const file = Buffer.alloc(14);
      file.write('BM', 0, 'latin1');
      file.writeUInt32LE(14 + 40 + pal.length + pixels.length, 2);
      file.writeUInt32LE(14 + 40 + pal.length, 10);
      return Buffer.concat([file, info, pal, pixels]);
    };
    const rgb = await decodeBytes('rgb.bmp', bmp(2, 2, 24, [[3, 2, 1, 6, 5, 4], [9, 8, 7, 12, 11, 10]]));
    assert.deepEqual(Array.from(rgb.data), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const palette = Array.from({ length: 16 }, (_, i) => [i * 16, 255 - i * 16, i * 3]);
    const p4 = await decodeBytes('p4.bmp', bmp(3, 1, 4, [[0x1f, 0x20]], palette));
    assert.deepEqual(Array.from(p4.data), [16, 239, 3, 240, 15, 45, 32, 223, 6]);
    const cut = bmp(2, 2, 24, [[3, 2, 1, 6, 5, 4], [9, 8, 7, 12, 11, 10]]).subarray(0, 60);
    await assert.rejects(decodeBytes('cut.bmp', cut), (e: unknown) =>
      e instanceof ImageDecodeError && /^cannot decode image .*cut\.bmp: BMP pixel data is truncated$/.test(e.message));
  });

  test('a corrupt file fails with a Ptq4vitError naming the file and the cause', async () => {
    const file = path.join(tmpDir(), 'noise.jpg');
    fs.writeFileSync(file, Buffer.from(hashPixels(20, 20)));
    await assert.rejects(decodeImage(file), (e: unknown) => {
      assert.ok(e instanceof ImageDecodeError && e instanceof Ptq4vitError);
      assert.equal(e.file, file);
      assert.match(e.message, /^cannot decode image .*noise\.jpg: .*unsupported image format/);
      assert.ok(!e.message.includes('\n'), 'one line, no libvips log');
      return true;
    });
  });

  test('a truncated JPEG and a missing file fail the same way', async () => {
    const good = fs.readFileSync(path.join(photos, 'n04367480_swab.JPEG'));
    const file = path.join(tmpDir(), 'cut.jpg');
    fs.writeFileSync(file, good.subarray(0, good.length >> 1));
    await assert.rejects(decodeImage(file), /^ImageDecodeError: cannot decode image .*cut\.jpg: .+/);
    await assert.rejects(decodeImage(path.join(tmpRoot, 'absent.png')), /cannot decode image .*absent\.png: no such file/);
  });

  test('formats PIL cannot read are refused even though sharp could', async () => {
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>';
    await assert.rejects(decodeBytes('vector.png', Buffer.from(svg)), /vector\.png: svg images are not supported/);
  });
});

describe('image folder datasets', () => {
  test('CIFAR jpeg_sample: 10 sorted classes, 100 images, label = class folder', async () => {
    const root = path.join(cifarDir, 'jpeg_sample');
    const ds = await openDataset(root);
    const meta = JSON.parse(fs.readFileSync(path.join(cifarDir, 'test.json'), 'utf8')) as { classes: string[] };
    assert.deepEqual(ds.classes, meta.classes);
    assert.deepEqual(ds.classes, [...ds.classes].sort());
    assert.equal(ds.size, 100);
    assert.deepEqual(ds.ignored, []);
    const perClass = new Array<number>(10).fill(0);
    for (let i = 0; i < ds.size; i++) {
      const file = ds.itemName(i);
      assert.equal(path.basename(path.dirname(file)), ds.classes[ds.label(i)], `item ${i}`);
      perClass[ds.label(i)]++;
      if (i > 0) assert.ok(ds.label(i) > ds.label(i - 1) || ds.itemName(i - 1) < file, 'ImageFolder order');
    }
    assert.deepEqual(perClass, new Array(10).fill(10));
    const img = await ds.image(0);
    assert.deepEqual([img.width, img.height, img.data.length], [32, 32, 32 * 32 * 3]);
  });

  test('ImageFolder order: classes and files by code unit, case-insensitive extensions, subfolders by path', async () => {
    const root = tmpDir();
    const jpeg = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#808080' } }).jpeg().toBuffer();
    const put = (rel: string, bytes: Uint8Array | string = jpeg) => {
      fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      fs.writeFileSync(path.join(root, rel), bytes);
    };
    ['b/b.png', 'b/A.JPG', 'b/a.jpeg', 'b/sub/z.jpg', 'b/notes.txt', 'Zebra/x.webp', 'a/1.bmp'].forEach((f) => put(f));
    put('README.md', 'hello');
    const ds = await openDataset(root);
    assert.deepEqual(ds.classes, ['Zebra', 'a', 'b']);
    const rel = Array.from({ length: ds.size }, (_, i) => path.relative(root, ds.itemName(i)));
    assert.deepEqual(rel, ['Zebra/x.webp', 'a/1.bmp', 'b/A.JPG', 'b/a.jpeg', 'b/b.png', 'b/sub/z.jpg']);
    assert.deepEqual(Array.from({ length: ds.size }, (_, i) => ds.label(i)), [0, 1, 2, 2, 2, 2]);
    assert.deepEqual(ds.ignored.map((f) => [path.relative(root, f.file), f.reason]), [
      ['README.md', 'not inside a class folder'],
      ['b/notes.txt', 'not an image extension (.txt)'],
    ]);
    assert.throws(() => ds.label(6), /image index 6 is out of range \(the dataset has 6 images\)/);
  });

  test('an empty folder is refused, naming it', async () => {
    const root = tmpDir();
    await assert.rejects(openDataset(root), (e: unknown) => e instanceof Ptq4vitError && e.message.startsWith(`image folder ${root} is empty`));
  });

  test('a folder of files without class subfolders is refused', async () => {
    const root = tmpDir();
    fs.writeFileSync(path.join(root, 'a.txt'), 'x');
    fs.writeFileSync(path.join(root, 'b.csv'), 'y');
    await assert.rejects(openDataset(root), new RegExp(`image folder ${root} has no class subfolders \\(only 2 files\\)`));
  });

  test('class folders holding only non-image files are named', async () => {
    const root = tmpDir();
    fs.mkdirSync(path.join(root, 'cat'));
    fs.mkdirSync(path.join(root, 'dog'));
    fs.mkdirSync(path.join(root, 'emu'));
    fs.writeFileSync(path.join(root, 'cat', 'notes.txt'), 'x');
    fs.writeFileSync(path.join(root, 'dog', 'd.png'), png(1, 8, 0, [[5]]));
    await assert.rejects(openDataset(root), /image folder .*: class folders with no images: cat, emu \(expected one subfolder per class/);
  });

  test('a missing path and a non-.json file are explained', async () => {
    await assert.rejects(openDataset(path.join(tmpRoot, 'nope')), /cannot open dataset .*nope: no such file or directory/);
    await assert.rejects(openDataset(path.join(cifarDir, 'test_labels.u8')), /expected an image folder .* or a \.json manifest/);
  });

  test('loadBatch skips a corrupt .jpg among good images and reports it', async () => {
    const root = tmpDir();
    for (const [cls, shade] of [['cat', 40], ['dog', 200]] as const) {
      fs.mkdirSync(path.join(root, cls));
      for (const n of [0, 1]) {
        await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: shade, g: shade, b: shade } } })
          .png().toFile(path.join(root, cls, `${n}.png`));
      }
    }
    const corrupt = path.join(root, 'cat', '0b.jpg');
    fs.writeFileSync(corrupt, Buffer.from(hashPixels(10, 10)));
    const ds = await openDataset(root);
    assert.equal(ds.size, 5); // cat/0.png, cat/0b.jpg, cat/1.png, dog/0.png, dog/1.png
    const p: Preprocess = { ...IMAGENET, inputSize: 16 };
    const batch = await loadBatch(ds, [4, 1, 0, 2], p);
    assert.deepEqual(batch.indices, [4, 0, 2]);
    assert.deepEqual(Array.from(batch.labels), [1, 0, 0]);
    assert.deepEqual(batch.images.shape, [3, 3, 16, 16]);
    assert.equal(batch.skipped.length, 1);
    assert.equal(batch.skipped[0].index, 1);
    assert.equal(batch.skipped[0].file, corrupt);
    assert.match(batch.skipped[0].reason, /unsupported image format/);
    const plane = 16 * 16;
    const f = Math.fround;
    const value = (shade: number) => f(f(f(shade / 255) - f(0.485)) / f(0.229));
    assert.equal(batch.images.data[0], value(200)); // row 0 is dog/1.png
    assert.equal(batch.images.data[3 * plane], value(40)); // row 1 is cat/0.png
  });
});

describe('raw-uint8-hwc manifests', () => {
  const test1k = path.join(cifarDir, 'test1k.json');

  test('test1k.json: 1000 images of 32x32, labels as in the labels file', async () => {
    const ds = await openDataset(test1k);
    const labels = fs.readFileSync(path.join(cifarDir, 'test1k_labels.u8'));
    const pixels = fs.readFileSync(path.join(cifarDir, 'test1k_images.u8'));
    assert.equal(ds.size, 1000);
    assert.equal(ds.classes.length, 10);
    assert.deepEqual(ds.ignored, []);
    assert.deepEqual(Array.from({ length: 1000 }, (_, i) => ds.label(i)), Array.from(labels));
    const img = await ds.image(999);
    assert.deepEqual([img.width, img.height], [32, 32]);
    assert.deepEqual(Buffer.from(img.data), pixels.subarray(999 * 3072, 1000 * 3072));
    assert.equal(ds.itemName(7), `${test1k}#7`);
    await assert.rejects(ds.image(1000), /image index 1000 is out of range/);
  });

  test('loadBatch on a manifest stacks the transformed images in order', async () => {
    const ds = await openDataset(test1k);
    const p: Preprocess = { ...IMAGENET, inputSize: 32, cropPct: 0.9 };
    const batch = await loadBatch(ds, [3, 0, 2], p);
    assert.deepEqual(batch.images.shape, [3, 3, 32, 32]);
    assert.deepEqual(batch.indices, [3, 0, 2]);
    assert.deepEqual(Array.from(batch.labels), [ds.label(3), ds.label(0), ds.label(2)]);
    assert.deepEqual(batch.skipped, []);
    const second = batch.images.data.subarray(3 * 32 * 32, 2 * 3 * 32 * 32);
    assert.deepEqual(second, evalTransform(await ds.image(0), p));
  });

  /** A small valid manifest in a temp dir, with `edit` applied to its JSON or files. */
  function writeManifest(edit: (m: Record<string, unknown>, dir: string) => void = () => {}): string {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'img.u8'), Buffer.alloc(4 * 2 * 3 * 3, 7));
    fs.writeFileSync(path.join(dir, 'lab.u8'), Buffer.from([0, 1, 2, 1]));
    const m: Record<string, unknown> = {
      format: 'raw-uint8-hwc', images: 'img.u8', labels: 'lab.u8',
      count: 4, height: 2, width: 3, channels: 3, classes: ['a', 'b', 'c'],
    };
    edit(m, dir);
    const file = path.join(dir, 'm.json');
    fs.writeFileSync(file, JSON.stringify(m));
    return file;
  }

  test('the valid temp manifest opens (so the failures below are caused by their edits)', async () => {
    const ds = await openDataset(writeManifest());
    assert.equal(ds.size, 4);
    assert.equal(ds.label(3), 1);
  });

  test('a truncated images file: expected vs actual bytes', async () => {
    const file = writeManifest((_, dir) => fs.truncateSync(path.join(dir, 'img.u8'), 70));
    await assert.rejects(openDataset(file), new RegExp(
      `^Ptq4vitError: manifest ${file}: images file .*img\\.u8 has 70 bytes, expected 72 \\(count 4 × height 2 × width 3 × channels 3\\)$`));
  });

  test('a short labels file', async () => {
    const file = writeManifest((_, dir) => fs.writeFileSync(path.join(dir, 'lab.u8'), Buffer.from([0, 1, 2])));
    await assert.rejects(openDataset(file), /manifest .*m\.json: labels file .*lab\.u8 has 3 bytes, expected 4 \(one uint8 label per image, count 4\)/);
  });

  test('a wrong format string', async () => {
    const file = writeManifest((m) => (m.format = 'raw-float32-chw'));
    await assert.rejects(openDataset(file), /manifest .*m\.json: field "format" is "raw-float32-chw", expected "raw-uint8-hwc"/);
  });

  test('a missing images file', async () => {
    const file = writeManifest((m) => (m.images = 'gone.u8'));
    await assert.rejects(openDataset(file), /manifest .*m\.json: images file .*gone\.u8 \(field "images"\) does not exist/);
  });

  test('a label out of range', async () => {
    const file = writeManifest((_, dir) => fs.writeFileSync(path.join(dir, 'lab.u8'), Buffer.from([0, 3, 2, 9])));
    await assert.rejects(openDataset(file), /manifest .*m\.json: label 3 at index 1 is out of range: 3 classes, so labels must be 0\.\.2 \(2 labels out of range\)/);
  });

  test('unsupported channels, bad count, invalid JSON', async () => {
    await assert.rejects(openDataset(writeManifest((m) => (m.channels = 4))), /field "channels" is 4, expected 3 \(RGB\) or 1 \(grayscale\)/);
    await assert.rejects(openDataset(writeManifest((m) => (m.count = '4'))), /field "count" is "4", expected a positive integer/);
    const broken = path.join(tmpDir(), 'broken.json');
    fs.writeFileSync(broken, '{"format": ');
    await assert.rejects(openDataset(broken), /manifest .*broken\.json: not valid JSON/);
  });

  test('one channel is replicated to RGB', async () => {
    const file = writeManifest((m, dir) => {
      m.channels = 1;
      fs.writeFileSync(path.join(dir, 'img.u8'), Buffer.from(Array.from({ length: 24 }, (_, i) => i)));
    });
    const img = await (await openDataset(file)).image(1);
    assert.deepEqual(Array.from(img.data.subarray(0, 6)), [6, 6, 6, 7, 7, 7]);
    assert.equal(img.data.length, 18);
  });
});

describe('issue 9: a pixel limit of our own, and decoder failures that say what is wrong', () => {
  test('a valid 15000×15000 PNG is skipped from its header, quickly, with the size and the limit', async () => {
    const file = path.join(tmpDir(), 'huge.png');
    fs.writeFileSync(file, bigPng(15000, 15000));
    const start = performance.now();
    await assert.rejects(decodeImage(file), (e: unknown) => {
      assert.ok(e instanceof ImageDecodeError, String(e));
      assert.match(e.reason, /^image is 15000×15000 \(225\.0 megapixels\), above the limit of 89\.5 megapixels for one image/);
      return true;
    });
    const ms = performance.now() - start;
    assert.ok(ms < 2000, `refused from the header, not decoded: ${ms.toFixed(0)} ms`);
    // Just under the limit still decodes (9000×9000 = 81 MP).
    const ok = path.join(tmpDir(), 'ok.png');
    fs.writeFileSync(ok, bigPng(9000, 9000));
    const img = await decodeImage(ok);
    assert.deepEqual([img.width, img.height, Array.from(img.data.subarray(0, 3))], [9000, 9000, [10, 20, 30]]);
  });

  test('a BMP header claiming 20000×20000 pixels is refused before anything is allocated', async () => {
    const header = Buffer.alloc(54);
    header.write('BM', 0, 'ascii');
    header.writeUInt32LE(54, 10);
    header.writeUInt32LE(40, 14);
    header.writeInt32LE(20000, 18);
    header.writeInt32LE(20000, 22);
    header.writeUInt16LE(1, 26);
    header.writeUInt16LE(24, 28);
    const file = path.join(tmpDir(), 'huge.bmp');
    fs.writeFileSync(file, header);
    await assert.rejects(decodeImage(file), (e: unknown) => e instanceof ImageDecodeError && /^image is 20000×20000 \(400\.0 megapixels\), above the limit/.test(e.reason));
  });

  test('48 corrupt JPEGs decoded at once: every reason says what is wrong (no empty "corrupt header:")', async () => {
    const dir = tmpDir();
    const jpegDir = path.join(cifarDir, 'jpeg_sample', 'cat');
    const good = fs.readFileSync(path.join(jpegDir, fs.readdirSync(jpegDir).sort()[0]));
    const files = Array.from({ length: 48 }, (_, k) => {
      const bad = Buffer.from(good);
      bad.fill(0xab, 4, 30 + (k % 5)); // destroys the APP0 segment: libjpeg stops at a premature end
      const f = path.join(dir, `bad${k}.jpg`);
      fs.writeFileSync(f, bad);
      return f;
    });
    const results = await Promise.allSettled(files.map((f) => decodeImage(f)));
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      const e = (r as PromiseRejectedResult).reason as ImageDecodeError;
      assert.ok(e instanceof ImageDecodeError, String(e));
      assert.ok(!/:\s*$/.test(e.reason), `reason ends in an empty detail: ${JSON.stringify(e.reason)}`);
      assert.match(e.reason, /^corrupt JPEG data: \S/, e.reason);
    }
  });
});
