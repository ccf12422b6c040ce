/**
 * RESULTS.md, section "Swin V2: the quantizer of the cosine-similarity product": Swin V2's matmul1 multiplies
 * L2-normalized q and k, so both operands lie in [−1, 1] whatever the input. Which quantizer should they get —
 * the fixed grid that covers that bound, Δ = 1/2^(k−1) (no calibration needed), or the PTQ4ViT-searched uniform Δ
 * every other product gets? Measured on a random-weight Swin V2 at CIFAR-10 size (no pretrained Swin V2 fits the
 * 32×32 images here): PTQ4ViT calibration on calib32, then KL(FP32 ‖ quantized) and top-1 agreement with FP32 on
 * the first 300 test images, (a) as calibrated, (b) with every matmul1 operand replaced by the fixed grid.
 *
 *   npx tsc -p . && nice -n 10 node dist/scripts/swinv2_matmul1.js
 */
import path from 'node:path';
import { seededRandom } from '../src/grad/loss.js';
import { encodeSafetensors, SafeTensors, type TensorToWrite } from '../src/io/safetensors.js';
import { specFromCard } from '../src/models/config.js';
import { buildModel } from '../src/models/load.js';
import { calibrateMany } from '../src/quant/calibrate.js';
import { methodConfig } from '../src/quant/methods.js';
import type { ActivationQuant, PointQuant } from '../src/quant/params.js';
import { QuantRunner } from '../src/quant/runner.js';
import type { Runner } from '../src/models/types.js';
import { fp32Runner } from '../src/tensor/runner.js';
import { Divergence, firstImages } from './divergence.js';
import { machine, replaceSection } from './markdown.js';
import { sharedCalib32, sharedDir } from './shared.js';

const log = (s: string) => process.stderr.write(`${s}\n`);

/** img 32, patch 2, window 4, width 32, depths 2-2-2, heads 2-4-8 (head_dim 16), 10 classes; seeded weights. */
function randomSwinV2(seed: number) {
  const u = seededRandom(seed);
  const randn = () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
  const [D, depths, heads, patch] = [32, [2, 2, 2], [2, 4, 8], 2];
  const t: Record<string, TensorToWrite> = {};
  const put = (name: string, shape: number[], std: number, mean = 0) => {
    t[name] = { dtype: 'F32', shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => mean + std * randn()) };
  };
  const lin = (name: string, o: number, i: number, bias = true) => {
    put(`${name}.weight`, [o, i], 1 / Math.sqrt(i));
    if (bias) put(`${name}.bias`, [o], 0.1);
  };
  const norm = (name: string, c: number) => {
    put(`${name}.weight`, [c], 0.1, 1);
    put(`${name}.bias`, [c], 0.1);
  };
  put('patch_embed.proj.weight', [D, 3, patch, patch], 1 / Math.sqrt(3 * patch * patch));
  put('patch_embed.proj.bias', [D], 0.1);
  norm('patch_embed.norm', D);
  depths.forEach((depth, i) => {
    const dim = D * 2 ** i;
    if (i > 0) {
      lin(`layers.${i}.downsample.reduction`, dim, 2 * dim, false);
      norm(`layers.${i}.downsample.norm`, dim);
    }
    for (let j = 0; j < depth; j++) {
      const p = `layers.${i}.blocks.${j}`;
      put(`${p}.attn.logit_scale`, [heads[i], 1, 1], 0.5, Math.log(10)); // timm's init ln 10, perturbed
      put(`${p}.attn.q_bias`, [dim], 0.1);
      put(`${p}.attn.v_bias`, [dim], 0.1);
      lin(`${p}.attn.qkv`, 3 * dim, dim, false);
      lin(`${p}.attn.cpb_mlp.0`, 512, 2);
      lin(`${p}.attn.cpb_mlp.2`, heads[i], 512, false);
      lin(`${p}.attn.proj`, dim, dim);
      norm(`${p}.norm1`, dim);
      lin(`${p}.mlp.fc1`, 4 * dim, dim);
      lin(`${p}.mlp.fc2`, dim, 4 * dim);
      norm(`${p}.norm2`, dim);
    }
  });
  const last = D * 2 ** (depths.length - 1);
  norm('norm', last);
  lin('head.fc', 10, last);
  const card = {
    name: `random-swinv2-${seed}`,
    timm_class: 'SwinTransformerV2',
    timm_kwargs: { img_size: 32, patch_size: patch, window_size: 4, embed_dim: D, depths, num_heads: heads, num_classes: 10 },
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.247, 0.2435, 0.2616],
  };
  return buildModel(specFromCard(card, card.name), SafeTensors.parse(encodeSafetensors(t), card.name));
}

/** The grid that covers [−1, 1] with k-bit symmetric codes: Δ = 1/2^(k−1) (codes −2^(k−1) … 2^(k−1)−1). */
const fixedGrid = (bits: number): ActivationQuant => ({ kind: 'uniform', bits, deltas: [1 / 2 ** (bits - 1)] });

function withFixedMatmul1(points: readonly PointQuant[]): PointQuant[] {
  return points.map((p) => (p.kind === 'matmul' && p.point.endsWith('.matmul1') ? { ...p, a: fixedGrid(p.a.bits), b: fixedGrid(p.b.bits) } : p));
}

/** Searched Δ of the matmul1 operands relative to the fixed grid's, min–max over points (and heads). */
function searchedRatio(points: readonly PointQuant[], field: 'a' | 'b'): string {
  const ratios = points.flatMap((p) => (p.kind === 'matmul' && p.point.endsWith('.matmul1') && p[field].kind === 'uniform' ? (p[field] as { deltas: number[] }).deltas.map((d) => d * 2 ** (p[field].bits - 1)) : []));
  return `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}`;
}

/** Only the matmul1 products quantized (`points`' operands), everything else FP32: matmul1's own share of the error. */
function matmul1Only(points: readonly PointQuant[]): Runner {
  const quant = new QuantRunner(points);
  return {
    linear: fp32Runner.linear,
    matmul: (point, a, b, transB) => (point.endsWith('.matmul1') ? quant.matmul(point, a, b, transB) : fp32Runner.matmul(point, a, b, transB)),
  };
}

async function main(): Promise<void> {
  const header = machine();
  const rows: string[] = [];
  let searchedWins = 0;
  const ablation: string[] = [];
  for (const seed of [1]) {
    const model = randomSwinV2(seed);
    const { images, labels } = await sharedCalib32(model.spec.preprocess);
    const divergence = await Divergence.of(model, await firstImages(path.join(sharedDir, 'data', 'cifar10', 'test.json'), 300, model.spec.preprocess));
    for (const bits of [8, 6, 4]) {
      log(`seed ${seed}, W${bits}A${bits}: calibrating`);
      const [points] = (await calibrateMany(model, images, labels, [methodConfig('ptq4vit', { weightBits: bits, activationBits: bits })])).results;
      const searched = await divergence.measure(new QuantRunner(points));
      const fixed = await divergence.measure(new QuantRunner(withFixedMatmul1(points)));
      const aloneSearched = await divergence.measure(matmul1Only(points));
      const aloneFixed = await divergence.measure(matmul1Only(withFixedMatmul1(points)));
      const kl = (m: { kl: number }) => m.kl.toExponential(2);
      const row = `| ${seed} | W${bits}A${bits} | ${kl(searched)} (${(searched.agree * 100).toFixed(1)}%) | ${kl(fixed)} (${(fixed.agree * 100).toFixed(1)}%) | ${kl(aloneSearched)} | ${kl(aloneFixed)} | ${searchedRatio(points, 'a')} | ${searchedRatio(points, 'b')} |`;
      log(row);
      rows.push(row);
      if (aloneSearched.kl < aloneFixed.kl) searchedWins++;
      if (bits === 6) {
        // The paper's ablation on this family: Base PTQ W6A6 (cosine metric, no twins) against PTQ4ViT W6A6.
        log(`seed ${seed}, Base PTQ W6A6: calibrating`);
        const [base] = (await calibrateMany(model, images, labels, [methodConfig('base', { weightBits: 6, activationBits: 6 })])).results;
        const b = await divergence.measure(new QuantRunner(base));
        ablation.push(`seed ${seed}: KL(FP32 ‖ ·) ${b.kl.toExponential(2)} for Base PTQ W6A6 (top-1 agreement ${(b.agree * 100).toFixed(1)}%) against ${searched.kl.toExponential(2)} (${(searched.agree * 100).toFixed(1)}%) for PTQ4ViT W6A6`);
      }
    }
  }
  replaceSection(
    'RESULTS.md',
    'Swin V2: the quantizer of the cosine-similarity product',
    `Swin V2's \`matmul1\` = normalize(q)·normalize(k)ᵀ has both operands in [−1, 1]. Candidates: the PTQ4ViT-searched
uniform Δ per head (what every attention operand gets) and the fixed grid Δ = 1/2^(k−1) that covers the bound with
no calibration. Random-weight Swin V2 (img 32, patch 2, window 4, width 32, depths 2-2-2, heads 2-4-8, logit_scale
ln 10 ± 0.5; seed 1), PTQ4ViT calibration on calib32, KL(FP32 ‖ quantized) and top-1 agreement with FP32 on the
first 300 CIFAR-10 test images (top-1 agreement in brackets); "fixed" replaces only the matmul1 operands of the same
calibrated model. "matmul1 only": every other point left in FP32, so the KL is matmul1's own error. Δ ratio =
searched Δ / (1/2^(k−1)), min–max over points and heads.

| seed | config | whole model, searched | whole model, fixed | matmul1 only, searched | matmul1 only, fixed | Δ ratio q̂ | Δ ratio k̂ |
|---|---|---|---|---|---|---|---|
${rows.join('\n')}

The searched Δ is smaller than the fixed grid's (ratio < 1: it clips the rare |cosine| near 1 to resolve the bulk
finer) and gives matmul1 the smaller error in ${searchedWins} of ${rows.length} rows: matmul1 keeps the searched uniform
quantizer (per head, as every attention operand), so the bound needs no special case. In the whole model matmul1's
share of the error is small, and either choice gives nearly the same KL.

The method's ablation on the same model: ${ablation.join('; ')}.

\`npx tsc -p . && nice -n 10 node dist/scripts/swinv2_matmul1.js\` — ${header}.`,
    '# Results',
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
