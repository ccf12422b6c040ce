/**
 * Random-weight CIFAR-size (32×32, 10 classes) models of the families without a trained checkpoint in
 * ../shared (MlpMixer, Beit; a plain ViT as a control), written as checkpoint + card: for quantize → file → eval round trips
 * (test/mixer_beit.test.ts) and the method ablation (scripts/mixer_beit_ablation.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';

/** Seeded N(0, σ) tensors by name: unit-gain weights, norms near 1, small biases, O(1) tables and gammas ~0.3. */
function randomCheckpointFile(file: string, shapes: Record<string, number[]>, seed: number): void {
  let s = seed;
  const uniform = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) + 0.5) / 2 ** 31;
  const gauss = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const [mean, std] = /norm\.weight$|norm\d\.weight$/.test(name) ? [1, 0.2] : /gamma_\d$/.test(name) ? [0.3, 0.1] : name.endsWith('bias') ? [0, 0.2] : name.endsWith('.weight') ? [0, 1 / Math.sqrt(n / shape[0])] : [0, 0.5];
    tensors[name] = { dtype: 'F32', shape, data: Float32Array.from({ length: n }, () => mean + std * gauss()) };
  }
  writeSafetensors(file, tensors);
}

function linearShapes(s: Record<string, number[]>, name: string, out: number, inp: number, bias = true): void {
  s[`${name}.weight`] = [out, inp];
  if (bias) s[`${name}.bias`] = [out];
}
function normShapes(s: Record<string, number[]>, name: string, c: number): void {
  s[`${name}.weight`] = [c];
  s[`${name}.bias`] = [c];
}

export interface RandomModelSize {
  patch: number;
  width: number;
  depth: number;
  heads: number;
}

/**
 * A random 32×32, 10-class model as NAME.safetensors + NAME.json in `dir`: a Mixer, a BEiT (relative position
 * bias, q/v bias, gammas), or a plain ViT (cls token + absolute positions; the control of the ablation).
 * Default size: patch 4 (64 tokens), width 32, 2 blocks, 4 heads.
 */
export function writeRandomCifarModel(dir: string, family: 'mixer' | 'beit' | 'vit', seed = 7, size: RandomModelSize = { patch: 4, width: 32, depth: 2, heads: 4 }): { model: string; card: string } {
  const [img, patch, D, depth, heads, classes] = [32, size.patch, size.width, size.depth, size.heads, 10];
  const grid = img / patch, tokens = grid * grid;
  const s: Record<string, number[]> = {};
  const stem = family === 'mixer' ? 'stem' : 'patch_embed';
  s[`${stem}.proj.weight`] = [D, 3, patch, patch];
  s[`${stem}.proj.bias`] = [D];
  if (family !== 'mixer') s.cls_token = [1, 1, D];
  if (family === 'vit') s.pos_embed = [1, tokens + 1, D];
  for (let i = 0; i < depth; i++) {
    const p = `blocks.${i}`;
    normShapes(s, `${p}.norm1`, D);
    normShapes(s, `${p}.norm2`, D);
    if (family === 'mixer') {
      linearShapes(s, `${p}.mlp_tokens.fc1`, Math.floor(D / 2), tokens);
      linearShapes(s, `${p}.mlp_tokens.fc2`, tokens, Math.floor(D / 2));
      linearShapes(s, `${p}.mlp_channels.fc1`, 4 * D, D);
      linearShapes(s, `${p}.mlp_channels.fc2`, D, 4 * D);
      continue;
    }
    linearShapes(s, `${p}.attn.qkv`, 3 * D, D, family === 'vit');
    linearShapes(s, `${p}.attn.proj`, D, D);
    linearShapes(s, `${p}.mlp.fc1`, 4 * D, D);
    linearShapes(s, `${p}.mlp.fc2`, D, 4 * D);
    if (family === 'beit') {
      s[`${p}.attn.q_bias`] = [D];
      s[`${p}.attn.v_bias`] = [D];
      s[`${p}.attn.relative_position_bias_table`] = [(2 * grid - 1) ** 2 + 3, heads];
      s[`${p}.gamma_1`] = [D];
      s[`${p}.gamma_2`] = [D];
    }
  }
  normShapes(s, family === 'beit' ? 'fc_norm' : 'norm', D);
  linearShapes(s, 'head', classes, D);
  const name = `random_${family}_c10`;
  const model = path.join(dir, `${name}.safetensors`), card = path.join(dir, `${name}.json`);
  randomCheckpointFile(model, s, seed);
  const common = { img_size: img, patch_size: patch, embed_dim: D, num_classes: classes };
  const [timmClass, kwargs] = family === 'mixer'
    ? ['MlpMixer', { ...common, num_blocks: depth }]
    : family === 'beit'
      ? ['Beit', { ...common, depth, num_heads: heads, use_abs_pos_emb: false, use_rel_pos_bias: true, init_values: 0.1 }]
      : ['VisionTransformer', { ...common, depth, num_heads: heads }];
  const cifar = { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] };
  fs.writeFileSync(card, JSON.stringify({ name, timm_class: timmClass, timm_kwargs: kwargs, ...cifar }));
  return { model, card };
}
