/**
 * timm's VisionTransformer and VisionTransformerDistilled (DeiT):
 *
 *   x = patch_embed(img) ; x = [cls, (dist,) x] + pos_embed
 *   for each block:  x = x + proj(attn(norm1(x)))  ;  x = x + fc2(gelu(fc1(norm2(x))))
 *   logits = head(norm(x)[:, 0])          (distilled: mean of head(x[:,0]) and head_dist(x[:,1]))
 *
 * LayerNorms use eps = 1e-6 as timm's ViT does. Attention is softmax(q·kᵀ · d^-½)·v with the scale
 * applied after the product, as the PTQ4ViT reference quantizes q·kᵀ itself.
 */
import { Ptq4vitError } from '../errors.js';
import { averageOp, prependTokensOp, selectTokenOp, type LayoutOp } from '../tensor/layout.js';
import { fp32Runner, type Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';
import { applyLinear, Attention, feedsFrom, kernelsOf, LayerNorm, Mlp, PatchEmbed } from './layers.js';
import { WeightReader, type Linear, type TensorSource } from './weights.js';
import type { ForwardSegments, ModelSpec, QuantPoint, VisionModel, VitArch } from './types.js';

const LN_EPS = 1e-6;

class VitBlock {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;

  constructor(reader: WeightReader, name: string, a: VitArch) {
    const D = a.embedDim;
    this.norm1 = new LayerNorm(reader, `${name}.norm1`, D, LN_EPS);
    this.attn = new Attention(reader, `${name}.attn`, { features: D, heads: a.numHeads, qkvBias: a.qkvBias, scale: 'scores' });
    this.norm2 = new LayerNorm(reader, `${name}.norm2`, D, LN_EPS);
    this.mlp = new Mlp(reader, `${name}.mlp`, D, a.mlpRatio);
    feedsFrom(this.attn.qkv, this.norm1);
    feedsFrom(this.mlp.fc1, this.norm2);
  }

  get points(): QuantPoint[] {
    return [...this.attn.points, ...this.mlp.points];
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    x = k.add(x, await this.attn.forward(runner, await this.norm1.forward(k, x)));
    return k.add(x, await this.mlp.forward(runner, await this.norm2.forward(k, x)));
  }
}

export class VisionTransformer implements VisionModel {
  readonly spec: ModelSpec;
  readonly quantPoints: readonly QuantPoint[];
  private readonly arch: VitArch;
  private readonly patchEmbed: PatchEmbed;
  /** cls (and dist) tokens prepended, position embeddings added. */
  private readonly embed: LayoutOp;
  private readonly blocks: VitBlock[];
  private readonly norm: LayerNorm;
  /** head on the cls token (and head_dist on the dist token). */
  private readonly heads: Linear[];
  private readonly pickToken: LayoutOp[];

  constructor(spec: ModelSpec, weights: TensorSource) {
    if (spec.arch.family === 'swin') throw new Ptq4vitError(`${spec.name}: VisionTransformer needs a ViT architecture, got family 'swin'`);
    this.spec = spec;
    const a = (this.arch = spec.arch);
    const D = a.embedDim;
    const distilled = a.family === 'deit-distilled';
    const gridSize = a.imgSize / a.patchSize;
    if (!Number.isInteger(gridSize)) throw new Ptq4vitError(`${spec.name}: img_size ${a.imgSize} is not a multiple of patch_size ${a.patchSize}`);
    const numPrefix = distilled ? 2 : 1;
    const numTokens = gridSize * gridSize + numPrefix;
    const reader = new WeightReader(weights);

    this.patchEmbed = new PatchEmbed(reader, 'patch_embed', { inChans: a.inChans, embedDim: D, patch: a.patchSize });
    const cls = reader.tensor('cls_token', [1, 1, D]);
    const prefix = distilled ? new Tensor(Float32Array.from([...cls.data, ...reader.tensor('dist_token', [1, 1, D]).data]), [2, D]) : cls.reshape([1, D]);
    this.embed = prependTokensOp(prefix, reader.tensor('pos_embed', [1, numTokens, D]).reshape([numTokens, D]));
    this.blocks = Array.from({ length: a.depth }, (_, i) => new VitBlock(reader, `blocks.${i}`, a));
    this.norm = new LayerNorm(reader, 'norm', D, LN_EPS);
    this.heads = [reader.linear('head', a.numClasses, D)];
    if (distilled) this.heads.push(reader.linear('head_dist', a.numClasses, D));
    this.pickToken = this.heads.map((_, t) => selectTokenOp(t));
    reader.checkAllUsed(spec.name);
    this.quantPoints = [...this.patchEmbed.points, ...this.blocks.flatMap((b) => b.points), ...this.heads.map((h) => h.point)];
  }

  async forward(images: Tensor, runner: Runner = fp32Runner): Promise<Tensor> {
    const a = this.arch;
    if (images.rank !== 4 || images.shape[1] !== a.inChans || images.shape[2] !== a.imgSize || images.shape[3] !== a.imgSize) {
      throw new Ptq4vitError(`${this.spec.name} expects images [B, ${a.inChans}, ${a.imgSize}, ${a.imgSize}], got [${images.shape.join(', ')}]`);
    }
    const segments = this.segments;
    let x = images;
    for (let s = 0; s < segments.count; s++) x = await segments.run(s, x, runner);
    return x;
  }

  /** Segments: the embedding, each block, then norm + head(s). */
  get segments(): ForwardSegments {
    return {
      count: this.blocks.length + 2,
      run: async (index, x, runner) => {
        const k = kernelsOf(runner);
        if (index === 0) return k.layout(this.embed, [await this.patchEmbed.forward(runner, x)]);
        if (index <= this.blocks.length) return this.blocks[index - 1].forward(runner, x);
        x = await this.norm.forward(k, x);
        // Head on the cls token; the distilled model averages head(cls) and head_dist(dist) at inference.
        const logits: Tensor[] = [];
        for (let t = 0; t < this.heads.length; t++) logits.push(await applyLinear(runner, this.heads[t], k.layout(this.pickToken[t], [x])));
        return logits.length === 1 ? logits[0] : k.layout(averageOp, logits);
      },
    };
  }
}
