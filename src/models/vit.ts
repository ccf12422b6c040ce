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
 *   logits = head(fc_norm(pool(x)))                       pool: cls token, avg / max / avgmax over the patch tokens,
 *                                                         or attention pooling over them (map: SigLIP)
 *   (distilled: mean of head(x[:,0]) and head_dist(x[:,1]); headPool 'token+patch-mean', transformers' Dinov2
 *    classifier: head(cat(x[:,0], mean of the patch tokens)))
 *   num_classes 0 (timm's Identity head): the pooled embedding fc_norm(pool(x)) itself (distilled: mean of x[:,0], x[:,1])
 *
 * Attention is softmax(q·kᵀ · d^-½)·v with the scale applied after the product, as the PTQ4ViT reference
 * quantizes q·kᵀ itself.
 */
import { Ptq4vitError } from '../errors.js';
import type { Activation } from '../tensor/activation.js';
import { averageOp, batchOfTokensOp, clsAndPatchMeanOp, dropTokensOp, mergeHeadsOp, poolTokensOp, prependTokensOp, selectTokenOp, splitHeadsOp, type LayoutOp, type TokenPool } from '../tensor/layout.js';
import { fp32Runner, type Runner } from '../tensor/runner.js';
import { concatFloat32, Tensor } from '../tensor/tensor.js';
import { applyLinear, Attention, feedsFrom, kernelsOf, LayerNorm, Mlp, checkImageBatch, PatchEmbed, PreNormBlock, runSegments } from './layers.js';
import { WeightReader, type Linear, type TensorSource } from './weights.js';
import { isVitArch, type ForwardSegments, type ModelSpec, type QuantPoint, type VisionModel, type VitArch, type VitGlobalPool } from './types.js';

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
    fcNorm: a.fcNorm ?? globalPool in TOKEN_POOLS, // timm: fc_norm=None means "after the pool" for avg / max / avgmax
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

/** timm's Block with the variant's optional parts: LayerScale, activation, norm eps, q/k norms, projection biases, inner norms. */
function vitBlock(reader: WeightReader, name: string, a: VitArch, v: VitVariant): PreNormBlock {
  const eps = v.normEps;
  return new PreNormBlock(reader, name, {
    features: a.embedDim,
    eps,
    attention: { heads: a.numHeads, qkvBias: a.qkvBias, scale: 'scores', projBias: v.projBias, qkNormEps: v.qkNorm ? eps : undefined, outNormEps: v.scaleAttnNorm ? eps : undefined },
    mlpRatio: a.mlpRatio,
    mlp: { activation: v.activation, bias: v.projBias, normEps: v.scaleMlpNorm ? eps : undefined },
    layerScale: v.layerScale ? ['ls1.gamma', 'ls2.gamma'] : undefined,
  });
}

const TOKEN_POOLS: Record<string, TokenPool> = { avg: 'avg', max: 'max', avgmax: 'avgmax' };

/**
 * timm's AttentionPoolLatent (global_pool='map', SigLIP): one learned latent query attends over the tokens,
 *
 *   q = q(latent) ; k, v = kv(x) ; y = proj(softmax(q·kᵀ·d^-½)·v) ; y = y + mlp(norm(y)) ; out = y[:, 0]
 *
 * Every linear is a quantization point (q's input is the constant latent, recorded like any other input) and
 * so are both attention products; fc2's input is post-GELU as in the blocks.
 */
export class AttentionPoolLatent {
  readonly q: Linear;
  readonly kv: Linear;
  readonly proj: Linear;
  readonly norm: LayerNorm;
  readonly mlp: Mlp;
  private readonly latent: LayoutOp;
  private readonly splits: [LayoutOp, LayoutOp, LayoutOp];
  private readonly merge: LayoutOp;
  private readonly scale: number;
  private readonly pickLatent = selectTokenOp(0);
  readonly heads: number;

  constructor(reader: WeightReader, readonly name: string, options: { features: number; heads: number; mlpRatio: number; normEps: number; activation: Activation }) {
    const { features: D, heads } = options;
    this.latent = batchOfTokensOp(reader.tensor(`${name}.latent`, [1, 1, D]).reshape([1, D]));
    this.q = reader.linear(`${name}.q`, D, D);
    this.kv = reader.linear(`${name}.kv`, 2 * D, D);
    this.kv.point.weightGroups = 2; // k and v rows get their own Δ, as q, k, v do in qkv
    this.proj = reader.linear(`${name}.proj`, D, D);
    this.norm = new LayerNorm(reader, `${name}.norm`, D, options.normEps);
    this.mlp = new Mlp(reader, `${name}.mlp`, D, options.mlpRatio, { activation: options.activation });
    feedsFrom(this.mlp.fc1, this.norm);
    this.splits = [splitHeadsOp({ heads, part: 0, parts: 1 }), splitHeadsOp({ heads, part: 0, parts: 2 }), splitHeadsOp({ heads, part: 1, parts: 2 })];
    this.merge = mergeHeadsOp(heads);
    this.scale = (D / heads) ** -0.5;
    this.heads = heads;
  }

  get points(): QuantPoint[] {
    return [
      this.q.point,
      this.kv.point,
      { name: `${this.name}.matmul1`, kind: 'matmul', heads: this.heads, transB: true },
      { name: `${this.name}.matmul2`, kind: 'matmul', heads: this.heads, input: 'post-softmax' },
      this.proj.point,
      ...this.mlp.points,
    ];
  }

  /** Tokens [B, N, D] → pooled [B, D] (timm drops the prefix tokens first: `numPrefix`). */
  async forward(runner: Runner, x: Tensor, numPrefix: number): Promise<Tensor> {
    const k = kernelsOf(runner);
    if (numPrefix > 0) x = k.layout(dropTokensOp(numPrefix), [x]);
    const q = k.layout(this.splits[0], [await applyLinear(runner, this.q, k.layout(this.latent, [x]))]); // [B·H, 1, d]
    const kv = await applyLinear(runner, this.kv, x);
    const [key, value] = [k.layout(this.splits[1], [kv]), k.layout(this.splits[2], [kv])];
    const scores = await runner.matmul(`${this.name}.matmul1`, q, key, true); // [B·H, 1, N]
    const probs = await k.softmax(scores, this.scale);
    const context = await runner.matmul(`${this.name}.matmul2`, probs, value, false); // [B·H, 1, d]
    const y = await applyLinear(runner, this.proj, k.layout(this.merge, [context])); // [B, 1, D]
    const out = k.add(y, await this.mlp.forward(runner, await this.norm.forward(k, y)));
    return k.layout(this.pickLatent, [out]); // latent_len 1: timm's pool_type 'token' takes it
  }
}

/**
 * The head: pool the tokens (cls token, avg / max / avgmax over the non-prefix tokens, or attention pooling),
 * fc_norm, then the classifier(s). Kept in one place: everything after the final norm.
 */
class VitHead {
  readonly fcNorm: LayerNorm | null;
  readonly heads: Linear[];
  readonly attnPool: AttentionPoolLatent | null;
  private readonly pools: LayoutOp[];

  constructor(reader: WeightReader, a: VitArch, v: VitVariant, private readonly numPrefix: number, distilled: boolean) {
    const D = a.embedDim;
    this.attnPool = v.globalPool === 'map' ? new AttentionPoolLatent(reader, 'attn_pool', { features: D, heads: a.numHeads, mlpRatio: a.mlpRatio, normEps: v.normEps, activation: v.activation }) : null;
    this.fcNorm = v.finalNorm && v.fcNorm ? new LayerNorm(reader, 'fc_norm', D, v.normEps) : null;
    // headPool 'token+patch-mean' (transformers' Dinov2ForImageClassification): the head reads cat(cls, mean of
    // the patch tokens), 2·D wide, right after the final norm.
    const clsAndMean = a.headPool === 'token+patch-mean';
    if (clsAndMean && a.numClasses === 0) throw new Ptq4vitError(`${a.family}: head_pool "token+patch-mean" describes a classifier's input; a model without classifier (num_classes 0) has none`);
    // num_classes 0 (timm: head = Identity): no classifier, the model's output is the pooled embedding.
    this.heads = a.numClasses === 0 ? [] : [reader.linear('head', a.numClasses, clsAndMean ? 2 * D : D)];
    if (distilled && a.numClasses > 0) this.heads.push(reader.linear('head_dist', a.numClasses, D));
    // Distilled: head on the cls token, head_dist on the dist token; else timm's global_pool.
    const pool = clsAndMean ? clsAndPatchMeanOp(numPrefix) : v.globalPool === 'token' || v.globalPool === 'map' ? selectTokenOp(0) : poolTokensOp(TOKEN_POOLS[v.globalPool], numPrefix);
    this.pools = distilled ? [selectTokenOp(0), selectTokenOp(1)] : [pool];
  }

  get points(): QuantPoint[] {
    return [...(this.attnPool?.points ?? []), ...this.heads.map((h) => h.point)];
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    const outputs: Tensor[] = [];
    for (let t = 0; t < this.pools.length; t++) {
      let pooled = this.attnPool ? await this.attnPool.forward(runner, x, this.numPrefix) : k.layout(this.pools[t], [x]);
      if (this.fcNorm) pooled = await this.fcNorm.forward(k, pooled);
      // Without classifier the pooled features are the output (the embedding).
      outputs.push(this.heads.length === 0 ? pooled : await applyLinear(runner, this.heads[t], pooled));
    }
    // The distilled model averages head(cls) and head_dist(dist) at inference (without classifier: cls and dist).
    return outputs.length === 1 ? outputs[0] : k.layout(averageOp, outputs);
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
  private readonly blocks: PreNormBlock[];
  private readonly norm: LayerNorm | null;
  private readonly head: VitHead;

  constructor(spec: ModelSpec, weights: TensorSource) {
    if (!isVitArch(spec.arch)) throw new Ptq4vitError(`${spec.name}: VisionTransformer needs a ViT architecture, got family '${spec.arch.family}'`);
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
    const prefix = new Tensor(concatFloat32(prefixParts.map((t) => t.data)), [numPrefix, D]);
    // no_embed_class: pos_embed covers the patches only — the same as a table whose prefix rows are zero.
    const posRows = v.noEmbedClass ? numPatches : numPatches + numPrefix;
    const pos = reader.tensor('pos_embed', [1, posRows, D]).data;
    const position = new Tensor(v.noEmbedClass ? concatFloat32([new Float32Array(numPrefix * D), pos]) : pos, [numPrefix + numPatches, D]);
    this.embed = prependTokensOp(prefix, position);
    this.normPre = v.preNorm ? new LayerNorm(reader, 'norm_pre', D, v.normEps) : null;
    this.blocks = Array.from({ length: a.depth }, (_, i) => vitBlock(reader, `blocks.${i}`, a, v));
    this.norm = v.finalNorm && !v.fcNorm ? new LayerNorm(reader, 'norm', D, v.normEps) : null;
    this.head = new VitHead(reader, a, v, numPrefix, distilled);
    reader.checkAllUsed(spec.name);
    this.quantPoints = [...this.patchEmbed.points, ...this.blocks.flatMap((b) => b.points), ...this.head.points];
  }

  async forward(images: Tensor, runner: Runner = fp32Runner): Promise<Tensor> {
    checkImageBatch(this.spec, images);
    return runSegments(this.segments, images, runner);
  }

  /** Segments: the embedding (tokens, positions, norm_pre), each block, then the final norm + head (pool, classifier). */
  get segments(): ForwardSegments {
    return {
      count: this.blocks.length + 2,
      run: async (index, x, runner) => {
        const k = kernelsOf(runner);
        if (index === 0) {
          const tokens = k.layout(this.embed, [await this.patchEmbed.forward(runner, x)]);
          return this.normPre ? this.normPre.forward(k, tokens) : tokens;
        }
        if (index <= this.blocks.length) return this.blocks[index - 1].forward(runner, x);
        return this.head.forward(runner, this.norm ? await this.norm.forward(k, x) : x);
      },
    };
  }
}

