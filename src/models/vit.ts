/**
 * timm's VisionTransformer (with the optional parts its pretrained families use) and
 * VisionTransformerDistilled (DeiT):
 *
 *   x = patch_embed(img)                                  (no bias with pre_norm: CLIP)
 *   x = [cls, reg×k, x] + pos_embed                       (no_embed_class: pos_embed on the patches only — DeiT III, DINOv2)
 *   x = norm_pre(x)                                       (pre_norm: CLIP)
 *   for each block:  x = x + ls1 ⊙ proj(attn(norm1(x)))  ;  x = x + ls2 ⊙ fc2(act(fc1(norm2(x))))
 *                    (ls1/ls2: LayerScale, DeiT III / DINOv2; act: GELU, gelu_tanh or QuickGELU;
 *                     optional q/k norms, a norm before proj / fc2, no proj biases)
 *   x = norm(x)                                           (unless fc_norm or final_norm=False)
 *   logits = head(fc_norm(pool(x)))                       pool: cls token, or avg / max / avgmax over the patch tokens
 *   (distilled: mean of head(x[:,0]) and head_dist(x[:,1]); headPool 'token+patch-mean', transformers' Dinov2
 *    classifier: head(cat(x[:,0], mean of the patch tokens)))
 *
 * Attention is softmax(q·kᵀ · d^-½)·v with the scale applied after the product, as the PTQ4ViT reference
 * quantizes q·kᵀ itself.
 */
import { Ptq4vitError } from '../errors.js';
import type { Activation } from '../tensor/activation.js';
import { averageOp, clsAndPatchMeanOp, poolTokensOp, prependTokensOp, selectTokenOp, type LayoutOp } from '../tensor/layout.js';
import { fp32Runner, type Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';
import { applyLinear, Attention, feedsFrom, kernelsOf, LayerNorm, LayerScale, Mlp, PatchEmbed } from './layers.js';
import { WeightReader, type Linear, type TensorSource } from './weights.js';
import type { ModelSpec, QuantPoint, VisionModel, VitArch, VitGlobalPool } from './types.js';

/** A VitArch with every optional part resolved to its value (timm's defaults where the arch leaves it out). */
export interface VitVariant {
  classToken: boolean;
  regTokens: number;
  noEmbedClass: boolean;
  globalPool: VitGlobalPool;
  /** LayerNorm after the pool (fc_norm) rather than before it (norm); neither when finalNorm is false. */
  fcNorm: boolean;
  finalNorm: boolean;
  preNorm: boolean;
  layerScale: boolean;
  activation: Activation;
  normEps: number;
  qkNorm: boolean;
  projBias: boolean;
  scaleAttnNorm: boolean;
  scaleMlpNorm: boolean;
}

export function vitVariant(a: VitArch): VitVariant {
  const globalPool = a.globalPool ?? 'token';
  return {
    classToken: a.classToken ?? true,
    regTokens: a.regTokens ?? 0,
    noEmbedClass: a.noEmbedClass ?? false,
    globalPool,
    fcNorm: a.fcNorm ?? globalPool !== 'token', // timm: fc_norm=None means "after the pool" for avg / max / avgmax
    finalNorm: a.finalNorm ?? true,
    preNorm: a.preNorm ?? false,
    layerScale: a.initValues !== undefined,
    activation: a.activation ?? 'gelu',
    normEps: a.normEps ?? 1e-6,
    qkNorm: a.qkNorm ?? false,
    projBias: a.projBias ?? true,
    scaleAttnNorm: a.scaleAttnNorm ?? false,
    scaleMlpNorm: a.scaleMlpNorm ?? false,
  };
}

/** timm's Block: pre-norm attention and MLP residuals, each optionally scaled per channel (LayerScale). */
class VitBlock {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  readonly ls1: LayerScale | null;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  readonly ls2: LayerScale | null;

  constructor(reader: WeightReader, name: string, a: VitArch, v: VitVariant) {
    const D = a.embedDim;
    const eps = v.normEps;
    this.norm1 = new LayerNorm(reader, `${name}.norm1`, D, eps);
    this.attn = new Attention(reader, `${name}.attn`, {
      features: D,
      heads: a.numHeads,
      qkvBias: a.qkvBias,
      scale: 'scores',
      projBias: v.projBias,
      qkNormEps: v.qkNorm ? eps : undefined,
      outNormEps: v.scaleAttnNorm ? eps : undefined,
    });
    this.ls1 = v.layerScale ? new LayerScale(reader, `${name}.ls1.gamma`, D) : null;
    this.norm2 = new LayerNorm(reader, `${name}.norm2`, D, eps);
    this.mlp = new Mlp(reader, `${name}.mlp`, D, a.mlpRatio, { activation: v.activation, bias: v.projBias, normEps: v.scaleMlpNorm ? eps : undefined });
    this.ls2 = v.layerScale ? new LayerScale(reader, `${name}.ls2.gamma`, D) : null;
    feedsFrom(this.attn.qkv, this.norm1);
    feedsFrom(this.mlp.fc1, this.norm2);
  }

  get points(): QuantPoint[] {
    return [...this.attn.points, ...this.mlp.points];
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    let branch = await this.attn.forward(runner, await this.norm1.forward(k, x));
    if (this.ls1) branch = this.ls1.forward(k, branch);
    x = k.add(x, branch);
    branch = await this.mlp.forward(runner, await this.norm2.forward(k, x));
    if (this.ls2) branch = this.ls2.forward(k, branch);
    return k.add(x, branch);
  }
}

/**
 * The head: pool the tokens (cls token, or avg / max / avgmax over the non-prefix tokens), fc_norm, then the
 * classifier(s). Kept in one place: everything after the final norm.
 */
class VitHead {
  readonly fcNorm: LayerNorm | null;
  readonly heads: Linear[];
  private readonly pools: LayoutOp[];

  constructor(reader: WeightReader, a: VitArch, v: VitVariant, numPrefix: number, distilled: boolean) {
    const D = a.embedDim;
    this.fcNorm = v.finalNorm && v.fcNorm ? new LayerNorm(reader, 'fc_norm', D, v.normEps) : null;
    // headPool 'token+patch-mean' (transformers' Dinov2ForImageClassification): the head reads cat(cls, mean of
    // the patch tokens), 2·D wide, right after the final norm.
    const clsAndMean = a.headPool === 'token+patch-mean';
    this.heads = [reader.linear('head', a.numClasses, clsAndMean ? 2 * D : D)];
    if (distilled) this.heads.push(reader.linear('head_dist', a.numClasses, D));
    // Distilled: head on the cls token, head_dist on the dist token; else timm's global_pool.
    this.pools = distilled
      ? [selectTokenOp(0), selectTokenOp(1)]
      : [clsAndMean ? clsAndPatchMeanOp(numPrefix) : v.globalPool === 'token' ? selectTokenOp(0) : poolTokensOp(v.globalPool, numPrefix)];
  }

  get points(): QuantPoint[] {
    return this.heads.map((h) => h.point);
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    const logits: Tensor[] = [];
    for (let t = 0; t < this.heads.length; t++) {
      let pooled = k.layout(this.pools[t], [x]);
      if (this.fcNorm) pooled = await this.fcNorm.forward(k, pooled);
      logits.push(await applyLinear(runner, this.heads[t], pooled));
    }
    // The distilled model averages head(cls) and head_dist(dist) at inference.
    return logits.length === 1 ? logits[0] : k.layout(averageOp, logits);
  }
}

export class VisionTransformer implements VisionModel {
  readonly spec: ModelSpec;
  readonly quantPoints: readonly QuantPoint[];
  private readonly arch: VitArch;
  private readonly patchEmbed: PatchEmbed;
  /** cls / dist / register tokens prepended, position embeddings added. */
  private readonly embed: LayoutOp;
  private readonly normPre: LayerNorm | null;
  private readonly blocks: VitBlock[];
  private readonly norm: LayerNorm | null;
  private readonly head: VitHead;

  constructor(spec: ModelSpec, weights: TensorSource) {
    if (spec.arch.family === 'swin') throw new Ptq4vitError(`${spec.name}: VisionTransformer needs a ViT architecture, got family 'swin'`);
    this.spec = spec;
    const a = (this.arch = spec.arch);
    const v = vitVariant(a);
    const D = a.embedDim;
    const distilled = a.family === 'deit-distilled';
    const gridSize = a.imgSize / a.patchSize;
    if (!Number.isInteger(gridSize)) throw new Ptq4vitError(`${spec.name}: img_size ${a.imgSize} is not a multiple of patch_size ${a.patchSize}`);
    const numPatches = gridSize * gridSize;
    const reader = new WeightReader(weights);

    this.patchEmbed = new PatchEmbed(reader, 'patch_embed', { inChans: a.inChans, embedDim: D, patch: a.patchSize, bias: !v.preNorm });
    // Prefix tokens in timm's order: cls, (dist,) registers.
    const prefixParts: Tensor[] = [];
    if (v.classToken) prefixParts.push(reader.tensor('cls_token', [1, 1, D]));
    if (distilled) prefixParts.push(reader.tensor('dist_token', [1, 1, D]));
    if (v.regTokens > 0) prefixParts.push(reader.tensor('reg_token', [1, v.regTokens, D]));
    const numPrefix = prefixParts.reduce((n, t) => n + t.shape[1], 0);
    const prefix = new Tensor(concat(prefixParts.map((t) => t.data)), [numPrefix, D]);
    // no_embed_class: pos_embed covers the patches only — the same as a table whose prefix rows are zero.
    const posRows = v.noEmbedClass ? numPatches : numPatches + numPrefix;
    const pos = reader.tensor('pos_embed', [1, posRows, D]).data;
    const position = new Tensor(v.noEmbedClass ? concat([new Float32Array(numPrefix * D), pos]) : pos, [numPrefix + numPatches, D]);
    this.embed = prependTokensOp(prefix, position);
    this.normPre = v.preNorm ? new LayerNorm(reader, 'norm_pre', D, v.normEps) : null;
    this.blocks = Array.from({ length: a.depth }, (_, i) => new VitBlock(reader, `blocks.${i}`, a, v));
    this.norm = v.finalNorm && !v.fcNorm ? new LayerNorm(reader, 'norm', D, v.normEps) : null;
    this.head = new VitHead(reader, a, v, numPrefix, distilled);
    reader.checkAllUsed(spec.name);
    this.quantPoints = [...this.patchEmbed.points, ...this.blocks.flatMap((b) => b.points), ...this.head.points];
  }

  async forward(images: Tensor, runner: Runner = fp32Runner): Promise<Tensor> {
    const a = this.arch;
    if (images.rank !== 4 || images.shape[1] !== a.inChans || images.shape[2] !== a.imgSize || images.shape[3] !== a.imgSize) {
      throw new Ptq4vitError(`${this.spec.name} expects images [B, ${a.inChans}, ${a.imgSize}, ${a.imgSize}], got [${images.shape.join(', ')}]`);
    }
    const k = kernelsOf(runner);
    let x = k.layout(this.embed, [await this.patchEmbed.forward(runner, images)]);
    if (this.normPre) x = await this.normPre.forward(k, x);
    for (const block of this.blocks) x = await block.forward(runner, x);
    if (this.norm) x = await this.norm.forward(k, x);
    return this.head.forward(runner, x);
  }
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
