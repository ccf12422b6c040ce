/**
 * timm's VisionTransformer and VisionTransformerDistilled (DeiT), inference only.
 *
 *   x = patch_embed(img) ; x = [cls, (dist,) x] + pos_embed
 *   for each block:  x = x + proj(attn(norm1(x)))  ;  x = x + fc2(gelu(fc1(norm2(x))))
 *   logits = head(norm(x)[:, 0])          (distilled: mean of head(x[:,0]) and head_dist(x[:,1]))
 *
 * LayerNorms use eps = 1e-6 as timm's ViT does. Attention is softmax(q·kᵀ · d^-½)·v with the scale
 * applied after the product, as the PTQ4ViT reference quantizes q·kᵀ itself.
 */
import { Ptq4vitError } from '../errors.js';
import { fastKernels, type Kernels } from '../tensor/kernels.js';
import { add, fromHeads, scale, scatterToken, selectToken, toHeads } from '../tensor/ops.js';
import { unfoldPatches } from '../tensor/patches.js';
import { fp32Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';
import { WeightReader, type Linear, type TensorSource } from './weights.js';
import type { ModelSpec, QuantPoint, Runner, VisionModel, VitArch } from './types.js';

const LN_EPS = 1e-6;

interface Norm {
  weight: Tensor;
  bias: Tensor;
}

interface Block {
  prefix: string;
  norm1: Norm;
  qkv: Linear;
  proj: Linear;
  norm2: Norm;
  fc1: Linear;
  fc2: Linear;
}

export class VisionTransformer implements VisionModel {
  readonly spec: ModelSpec;
  readonly quantPoints: QuantPoint[] = [];
  private readonly arch: VitArch;
  private readonly patchEmbed: Linear;
  /** cls (and dist) tokens, [prefixTokens, D]. */
  private readonly prefixTokens: Tensor;
  private readonly posEmbed: Tensor;
  private readonly blocks: Block[];
  private readonly norm: Norm;
  private readonly heads: Linear[];

  constructor(spec: ModelSpec, weights: TensorSource) {
    if (spec.arch.family === 'swin') throw new Error('VisionTransformer: got a Swin spec');
    this.spec = spec;
    const a = (this.arch = spec.arch);
    const D = a.embedDim;
    const hidden = Math.round(D * a.mlpRatio);
    const numPrefix = a.family === 'deit-distilled' ? 2 : 1;
    const gridSize = a.imgSize / a.patchSize;
    if (!Number.isInteger(gridSize)) throw new Ptq4vitError(`${spec.name}: img_size ${a.imgSize} is not a multiple of patch_size ${a.patchSize}`);
    const numTokens = gridSize * gridSize + numPrefix;
    const w = new WeightReader(weights);
    const tensor = (name: string, shape: number[]): Tensor => w.tensor(name, shape);
    const linear = (name: string, out: number, inp: number, bias = true): Linear => {
      const l = w.linear(name, out, inp, bias);
      this.quantPoints.push(l.point);
      return l;
    };
    const norm = (name: string): Norm => ({ weight: tensor(`${name}.weight`, [D]), bias: tensor(`${name}.bias`, [D]) });

    this.patchEmbed = w.patchConv('patch_embed.proj', D, a.inChans, a.patchSize);
    this.quantPoints.push(this.patchEmbed.point);
    const cls = tensor('cls_token', [1, 1, D]);
    this.prefixTokens = numPrefix === 2 ? new Tensor(Float32Array.from([...cls.data, ...tensor('dist_token', [1, 1, D]).data]), [2, D]) : cls.reshape([1, D]);
    this.posEmbed = tensor('pos_embed', [1, numTokens, D]).reshape([numTokens, D]);
    this.blocks = [];
    for (let i = 0; i < a.depth; i++) {
      const p = `blocks.${i}`;
      const norm1 = norm(`${p}.norm1`);
      const qkv = linear(`${p}.attn.qkv`, 3 * D, D, a.qkvBias);
      qkv.point.weightGroups = 3;
      const proj = linear(`${p}.attn.proj`, D, D);
      this.quantPoints.push(
        { name: `${p}.attn.matmul1`, kind: 'matmul', heads: a.numHeads, transB: true },
        { name: `${p}.attn.matmul2`, kind: 'matmul', heads: a.numHeads, input: 'post-softmax' },
      );
      const norm2 = norm(`${p}.norm2`);
      const fc1 = linear(`${p}.mlp.fc1`, hidden, D);
      const fc2 = linear(`${p}.mlp.fc2`, D, hidden);
      fc2.point.input = 'post-gelu';
      this.blocks.push({ prefix: p, norm1, qkv, proj, norm2, fc1, fc2 });
    }
    this.norm = norm('norm');
    this.heads = [linear('head', a.numClasses, D)];
    if (a.family === 'deit-distilled') this.heads.push(linear('head_dist', a.numClasses, D));
    w.checkAllUsed(spec.name);
  }

  async forward(images: Tensor, runner: Runner = fp32Runner): Promise<Tensor> {
    const a = this.arch;
    if (images.rank !== 4 || images.shape[1] !== a.inChans || images.shape[2] !== a.imgSize || images.shape[3] !== a.imgSize) {
      throw new Ptq4vitError(`${this.spec.name} expects images [B, ${a.inChans}, ${a.imgSize}, ${a.imgSize}], got [${images.shape.join(', ')}]`);
    }
    const k = runner.kernels ?? fastKernels;
    const patches = k.layout([images], (img) => unfoldPatches(img, a.patchSize), () => [null]);
    const embedded = await runner.linear('patch_embed.proj', patches, this.patchEmbed.weight, this.patchEmbed.bias);
    let x = k.layout([embedded], (e) => this.addPrefixAndPosition(e), (g) => [this.dropPrefix(g)]);
    for (const block of this.blocks) x = await this.block(block, x, runner, k);
    x = await k.layerNorm(x, this.norm.weight, this.norm.bias, LN_EPS);
    return this.classify(x, runner, k);
  }

  /** [B, P, D] patch embeddings → [B, prefix + P, D] tokens with the cls (dist) tokens and positions added. */
  private addPrefixAndPosition(patches: Tensor): Tensor {
    const [batch, numPatches, D] = patches.shape;
    const numPrefix = this.prefixTokens.shape[0];
    const tokens = numPatches + numPrefix;
    const out = new Float32Array(batch * tokens * D);
    const pos = this.posEmbed.data;
    for (let b = 0; b < batch; b++) {
      const base = b * tokens * D;
      out.set(this.prefixTokens.data, base);
      out.set(patches.data.subarray(b * numPatches * D, (b + 1) * numPatches * D), base + numPrefix * D);
      for (let j = 0; j < tokens * D; j++) out[base + j] += pos[j];
    }
    return new Tensor(out, [batch, tokens, D]);
  }

  /** Adjoint of addPrefixAndPosition with respect to the patch embeddings. */
  private dropPrefix(g: Tensor): Tensor {
    const [batch, tokens, D] = g.shape;
    const numPrefix = this.prefixTokens.shape[0];
    const numPatches = tokens - numPrefix;
    const out = new Float32Array(batch * numPatches * D);
    for (let b = 0; b < batch; b++) out.set(g.data.subarray((b * tokens + numPrefix) * D, (b + 1) * tokens * D), b * numPatches * D);
    return new Tensor(out, [batch, numPatches, D]);
  }

  private async block(blk: Block, x: Tensor, runner: Runner, k: Kernels): Promise<Tensor> {
    const heads = this.arch.numHeads;
    const headDim = this.arch.embedDim / heads;
    const qkv = await runner.linear(blk.qkv.point.name, await k.layerNorm(x, blk.norm1.weight, blk.norm1.bias, LN_EPS), blk.qkv.weight, blk.qkv.bias);
    const [q, key, v] = [0, 1, 2].map((part) => k.layout([qkv], (t) => toHeads(t, heads, part, 3), (g) => [fromHeads(g, heads, part, 3)]));
    const scores = await runner.matmul(`${blk.prefix}.attn.matmul1`, q, key, true);
    const attn = await k.softmax(scores, headDim ** -0.5);
    const context = await runner.matmul(`${blk.prefix}.attn.matmul2`, attn, v, false);
    const merged = k.layout([context], (c) => fromHeads(c, heads), (g) => [toHeads(g, heads)]);
    x = k.add(x, await runner.linear(blk.proj.point.name, merged, blk.proj.weight, blk.proj.bias));
    const hidden = await runner.linear(blk.fc1.point.name, await k.layerNorm(x, blk.norm2.weight, blk.norm2.bias, LN_EPS), blk.fc1.weight, blk.fc1.bias);
    return k.add(x, await runner.linear(blk.fc2.point.name, await k.gelu(hidden), blk.fc2.weight, blk.fc2.bias));
  }

  /** Head on the cls token; the distilled model averages head(cls) and head_dist(dist) at inference. */
  private async classify(x: Tensor, runner: Runner, k: Kernels): Promise<Tensor> {
    const tokens = x.shape[1];
    const logits: Tensor[] = [];
    for (let t = 0; t < this.heads.length; t++) {
      const token = k.layout([x], (y) => selectToken(y, t), (g) => [scatterToken(g, t, tokens)]);
      const head = this.heads[t];
      logits.push(await runner.linear(head.point.name, token, head.weight, head.bias));
    }
    if (logits.length === 1) return logits[0];
    return k.layout(logits, (l0, l1) => scale(add(l0, l1), 0.5), (g) => [scale(g, 0.5), scale(g, 0.5)]);
  }
}
