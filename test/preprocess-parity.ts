/**
 * transformers.js's image processor (as writeHfDir configures it) against our evalTransform, image by image.
 * Used by test/deploy.test.ts and scripts/hf_preprocess_parity.ts (which writes the RESULTS.md table).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeImage } from '../src/data/decode.js';
import { evalTransform, shorterSideSize } from '../src/data/transform.js';
import sharp from 'sharp';
import { resizeRgb } from '../src/data/resize.js';
import { hfPreprocessorConfig } from '../src/export/hfdir.js';
import type { Preprocess } from '../src/models/types.js';
import { roundHalfEven } from '../src/numeric.js';
import { runHfProcessor } from './runtimes.js';

export interface ImageParity {
  file: string;
  width: number;
  height: number;
  /** max |Δ| and mean |Δ| over the 3·S·S normalized values. */
  max: number;
  mean: number;
  /** max |Δ| in 8-bit levels: |Δ|·std·255. */
  maxLevels: number;
  /** Share of values that differ by more than float rounding (> 1e-5). */
  differing: number;
  /** Resized size and crop offset (left, top): ours (torchvision) vs transformers.js. */
  geometry: { ours: number[]; tjs: number[] };
}

/** Compare transformers.js's processor with evalTransform on image files, for one preprocessing. */
export async function compareProcessors(p: Preprocess, files: readonly string[]): Promise<ImageParity[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-hfpre-'));
  try {
    fs.writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify(hfPreprocessorConfig(p)));
    const theirs = await runHfProcessor(dir, files);
    const out: ImageParity[] = [];
    for (let i = 0; i < files.length; i++) {
      const img = await decodeImage(files[i]);
      const ours = evalTransform(img, p);
      const t = theirs[i];
      if (t.data.length !== ours.length) throw new Error(`${files[i]}: transformers.js gave [${t.dims}], ours 3×${p.inputSize}×${p.inputSize}`);
      const plane = p.inputSize * p.inputSize;
      let max = 0, sum = 0, maxLevels = 0, differing = 0;
      for (let j = 0; j < ours.length; j++) {
        const d = Math.abs(t.data[j] - ours[j]);
        max = Math.max(max, d);
        sum += d;
        maxLevels = Math.max(maxLevels, d * p.std[Math.floor(j / plane)] * 255);
        if (d > 1e-5) differing++;
      }
      out.push({ file: files[i], width: img.width, height: img.height, max, mean: sum / ours.length, maxLevels, differing: differing / ours.length, geometry: geometry(img.width, img.height, p) });
    }
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Where the two crop: torchvision's int truncation + round-half-even offset vs transformers.js's toFixed(2) + floor. */
function geometry(width: number, height: number, p: Preprocess): { ours: number[]; tjs: number[] } {
  const short = Math.floor(p.inputSize / p.cropPct);
  const o = shorterSideSize(width, height, short);
  const f = Math.max(short / width, short / height);
  const tw = Math.floor(Number((width * f).toFixed(2)));
  const th = Math.floor(Number((height * f).toFixed(2)));
  return {
    ours: [o.width, o.height, roundHalfEven((o.width - p.inputSize) / 2), roundHalfEven((o.height - p.inputSize) / 2)],
    tjs: [tw, th, Math.floor((tw - p.inputSize) / 2), Math.floor((th - p.inputSize) / 2)],
  };
}


/**
 * Where transformers.js's resize differs from PIL's, isolated on one image: mean |Δ| in 8-bit levels between
 * our PIL resize and sharp's affine transform (what transformers.js runs in Node) as transformers.js calls it
 * (pixel corners aligned) and with the output grid shifted by (scale − 1)/2 so pixel centres align. What is
 * left after the shift is the kernel itself: PIL widens it by the downscale factor (antialiasing), affine
 * does not.
 */
export async function resizeVsSharpAffine(file: string, p: Preprocess): Promise<{ cornerAligned: number; centreAligned: number; scale: number }> {
  const img = await decodeImage(file);
  const target = shorterSideSize(img.width, img.height, Math.floor(p.inputSize / p.cropPct));
  const ours = resizeRgb(img, target.width, target.height, p.interpolation);
  const sx = target.width / img.width, sy = target.height / img.height;
  const meanLevels = async (offset: { odx?: number; ody?: number }) => {
    const { data, info } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
      .affine([sx, 0, 0, sy], { interpolator: p.interpolation, ...offset })
      .raw()
      .toBuffer({ resolveWithObject: true });
    let sum = 0, n = 0;
    for (let y = 0; y < Math.min(target.height, info.height); y++) {
      for (let x = 0; x < Math.min(target.width, info.width); x++) {
        for (let c = 0; c < 3; c++, n++) sum += Math.abs(data[(y * info.width + x) * info.channels + c] - ours.data[(y * target.width + x) * 3 + c]);
      }
    }
    return sum / n;
  };
  return { cornerAligned: await meanLevels({}), centreAligned: await meanLevels({ odx: 0.5 * (sx - 1), ody: 0.5 * (sy - 1) }), scale: Math.min(sx, sy) };
}
