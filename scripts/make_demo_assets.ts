/**
 * Builds the bundled demo data from shared/ (run once by a developer; the product then needs only assets/):
 * every 20th CIFAR-10 test image (500 images, 50 per class: the test split is sorted by class), written
 * as a lossless PNG image folder. The 32 calibration images are copied as their raw-uint8-hwc manifest
 * (assets/cifar10-calib32/calib32.json): they include no horse, and an image folder takes its classes
 * from its subfolders, so as a folder their labels would shift.
 *   npx tsc -p . && node dist/scripts/make_demo_assets.js
 */
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';

const shared = path.resolve('..', 'shared', 'data', 'cifar10');
const meta = JSON.parse(fs.readFileSync(path.join(shared, 'test.json'), 'utf8')) as { classes: string[] };

async function exportSplit(prefix: string, count: number, step: number, outDir: string): Promise<void> {
  const images = fs.readFileSync(path.join(shared, `${prefix}_images.u8`));
  const labels = fs.readFileSync(path.join(shared, `${prefix}_labels.u8`));
  fs.rmSync(outDir, { recursive: true, force: true });
  for (const c of meta.classes) fs.mkdirSync(path.join(outDir, c), { recursive: true });
  for (let k = 0; k < count; k++) {
    const i = k * step;
    const pixels = images.subarray(i * 3072, (i + 1) * 3072);
    const file = path.join(outDir, meta.classes[labels[i]], `${prefix}_${String(i).padStart(5, '0')}.png`);
    await sharp(pixels, { raw: { width: 32, height: 32, channels: 3 } }).png({ compressionLevel: 9 }).toFile(file);
  }
  console.log(`${outDir}: ${count} images`);
}

await exportSplit('test', 500, 20, path.join('assets', 'cifar10-test500'));
fs.mkdirSync(path.join('assets', 'cifar10-calib32'), { recursive: true });
for (const f of ['calib32.json', 'calib32_images.u8', 'calib32_labels.u8']) fs.copyFileSync(path.join(shared, f), path.join('assets', 'cifar10-calib32', f));
