/**
 * How close transformers.js's image processor (configured by writeHfDir's preprocessor_config.json) comes to
 * our preprocessing (timm's eval transform, bit-identical to timm/PIL): pixel_values from
 * AutoImageProcessor + RawImage.read, as its image-classification pipeline computes them, against
 * evalTransform(decodeImage(file)) on
 *   - ../shared/data/cifar10/jpeg_sample (100 JPEGs at 32×32; vit_tiny_c10's card: crop_pct 1, CIFAR mean/std)
 *   - ../shared/fixtures/preprocess (4 photos; a 224 model with crop_pct 0.875, bicubic, ImageNet mean/std:
 *     the fixture's own transform, so ours is also checked against timm's tensors there).
 * Differences are in normalized units (what the model sees) and in 8-bit levels (|Δ|·std·255).
 *
 *   npx tsc -p . && node dist/scripts/hf_preprocess_parity.js [--write]   (--write: the RESULTS.md section)
 */
import fs from 'node:fs';
import path from 'node:path';
import { decodeImage } from '../src/data/decode.js';
import { evalTransform } from '../src/data/transform.js';
import { SafeTensors } from '../src/io/safetensors.js';
import { readCard, specFromPreset } from '../src/models/config.js';
import { compareProcessors, resizeVsSharpAffine, type ImageParity } from '../test/preprocess-parity.js';
import { gitRevision, machine, replaceSection } from './markdown.js';

const shared = path.resolve('..', 'shared');

function listImages(root: string): string[] {
  const files: string[] = [];
  for (const cls of fs.readdirSync(root).sort()) {
    for (const f of fs.readdirSync(path.join(root, cls)).sort()) files.push(path.join(root, cls, f));
  }
  return files;
}

const summary = (rows: ImageParity[]) => ({
  max: Math.max(...rows.map((r) => r.max)),
  mean: rows.reduce((s, r) => s + r.mean, 0) / rows.length,
  maxLevels: Math.max(...rows.map((r) => r.maxLevels)),
  differing: rows.reduce((s, r) => s + r.differing, 0) / rows.length,
});

async function main(): Promise<void> {
  const cifar = readCard(path.join(shared, 'models', 'vit_tiny_c10.json')).preprocess;
  const photos224 = specFromPreset('deit_tiny_patch16_224').preprocess; // resize 256, crop 224, bicubic, ImageNet
  const cifarRows = await compareProcessors(cifar, listImages(path.join(shared, 'data', 'cifar10', 'jpeg_sample')));
  const photoDir = path.join(shared, 'fixtures', 'preprocess');
  const photoNames = (JSON.parse(fs.readFileSync(path.join(photoDir, 'README.json'), 'utf8')) as { images: string[] }).images;
  const photoRows = await compareProcessors(photos224, photoNames.map((n) => path.join(photoDir, n)));

  // Ours against timm's own tensors on the photos (expected 0: evalTransform is bit-identical to timm/PIL).
  const expected = SafeTensors.read(path.join(photoDir, 'expected_224.safetensors'));
  let oursVsTimm = 0;
  for (const n of photoNames) {
    const ours = evalTransform(await decodeImage(path.join(photoDir, n)), photos224);
    const want = expected.tensor(n, [3, 224, 224]).data;
    for (let i = 0; i < want.length; i++) oursVsTimm = Math.max(oursVsTimm, Math.abs(ours[i] - want[i]));
  }

  const resizeRows: string[] = [];
  for (const n of photoNames) {
    const r = await resizeVsSharpAffine(path.join(photoDir, n), photos224);
    resizeRows.push(`| ${n} | ${r.scale.toFixed(2)}× | ${r.cornerAligned.toFixed(2)} | ${r.centreAligned.toFixed(2)} |`);
  }

  const fmt = (x: number) => (x === 0 ? '0' : x < 1e-3 ? x.toExponential(1) : x.toFixed(3));
  const levels = (x: number) => (x < 0.01 ? x.toExponential(1) : x.toFixed(1));
  const c = summary(cifarRows);
  const lines = [
    `| images | processor | max \\|Δ\\| | mean \\|Δ\\| | max \\|Δ\\| in 8-bit levels | values differing (> 1e-5) |`,
    '|---|---|---|---|---|---|',
    `| jpeg_sample, 100 CIFAR-10 JPEGs 32×32 (vit_tiny_c10: crop_pct 1) | ConvNextImageProcessor | ${fmt(c.max)} | ${fmt(c.mean)} | ${levels(c.maxLevels)} | ${(c.differing * 100).toFixed(2)}% |`,
    ...photoRows.map((r) => `| ${path.basename(r.file)} ${r.width}×${r.height} (224 model: resize 256, crop 224) | ConvNextImageProcessor | ${fmt(r.max)} | ${fmt(r.mean)} | ${levels(r.maxLevels)} | ${(r.differing * 100).toFixed(1)}% |`),
  ];
  const geo = photoRows.map((r) => `${path.basename(r.file)}: ours resize ${r.geometry.ours[0]}×${r.geometry.ours[1]} crop at (${r.geometry.ours[2]}, ${r.geometry.ours[3]}); transformers.js ${r.geometry.tjs[0]}×${r.geometry.tjs[1]} crop at (${r.geometry.tjs[2]}, ${r.geometry.tjs[3]})`);
  console.log(lines.join('\n'));
  console.log(geo.join('\n'));
  console.log(resizeRows.join('\n'));
  console.log(`ours vs timm's expected_224: max |Δ| ${oursVsTimm}`);

  if (process.argv.includes('--write')) {
    replaceSection(
      'RESULTS.md',
      'transformers.js preprocessing vs timm',
      `\`node dist/scripts/hf_preprocess_parity.js --write\` at ${gitRevision()} — ${machine()}.
pixel_values from transformers.js 4.3 (\`AutoImageProcessor\` on the \`preprocessor_config.json\` that
\`writeHfDir\` writes, images read with \`RawImage.read\`, as its image-classification pipeline does) against
ptq4vit's \`evalTransform\` (timm's eval transform; on these photos max |Δ| ${oursVsTimm} against timm's own tensors).
Δ in normalized units (what the model sees); 8-bit levels = |Δ|·std·255.

${lines.join('\n')}

Where they differ: with no resize (CIFAR-10 at its 32×32, crop_pct 1) the pixels are the same and only the
normalization arithmetic differs (float64 vs torch's float32, ≤ 1 ulp). On photos transformers.js in Node
resizes with sharp's \`affine\` (bicubic interpolator), which differs from PIL's resize in two ways: it maps
pixel corners, not centres (a (scale − 1)/2-pixel shift), and it does not widen the kernel when downscaling
(no antialiasing). Isolated on the resize alone (mean |Δ| in 8-bit levels between our PIL resize and sharp's
affine as transformers.js calls it, then with the grid shifted so pixel centres align — what remains is the
kernel):

| photo | resize scale | affine as called | centres aligned |
|---|---|---|---|
${resizeRows.join('\n')}

No processor setting changes either. Its crop offset is floor((size − S)/2) where torchvision rounds half to
even (a one-pixel shift when size − S ≡ 3 mod 4; not the case for these photos), and it applies EXIF
orientation, PIL does not.
Geometry (resize, then crop offset left/top):
${geo.map((g) => `- ${g}`).join('\n')}`,
      '# Results',
    );
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
