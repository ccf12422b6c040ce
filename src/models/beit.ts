/**
 * timm's Beit (BEiT and BEiT v2 fine-tuned classifiers; timm/models/beit.py):
 *
 *   x = [cls, patch_embed(img)] (+ pos_embed when use_abs_pos_emb)
 *   for each block:
 *     x = x + γ₁ · proj(attn(norm1(x)))      attn: softmax((q·d^-½)·kᵀ + B_rel)·v, qkv bias = cat(q_bias, 0, v_bias)
 *     x = x + γ₂ · fc2(gelu(fc1(norm2(x))))
 *   logits = head(fc_norm(mean of x over the patch tokens))       (global_pool 'avg': `norm` is Identity)
 *
 * B_rel is each block's relative position bias: relative_position_bias_table [(2g−1)² + 3, heads] read
 * through timm's gen_relative_position_index for the g×g patch grid plus the class token (three extra
 * table rows: cls→patch, patch→cls, cls→cls). It depends only on the geometry and the table, so it is
 * built once per block and added to the scores as Swin's bias is. LayerNorm eps 1e-6, exact GELU.
 */
import { Ptq4vitError } from '../errors.js';
import { meanOverPatchTokensOp, prependTokensOp, type LayoutOp } from '../tensor/layout.js';
import { fp32Runner, type Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';
import { applyLinear, kernelsOf, LayerNorm, PatchEmbed, PreNormBlock, checkImageBatch, runSegments, segmentChain, type SegmentStep } from './layers.js';
import type { BeitArch, ForwardSegments, ModelSpec, QuantPoint, VisionModel } from './types.js';
import { WeightReader, type Linear, type TensorSource } from './weights.js';

const LN_EPS = 1e-6;

/**
 * timm's gen_relative_position_index for a g×g grid with a class token in front, as a bias per head:
 * out[h, i, j] = table[index(i, j), h] over the (g² + 1)² token pairs, with T = (2g − 1)² + 3 table rows and
 *   patch i → patch j:  (Δy + g − 1)·(2g − 1) + (Δx + g − 1),   Δ = position of i − position of j
 *   cls → patch (row 0):  T − 3,   patch → cls (column 0):  T − 2,   cls → cls:  T − 1.
 */
export function beitRelativePositionBias(table: Tensor, grid: number, heads: number): Tensor {
  const patches = grid * grid;
  const n = patches + 1;
  const span = 2 * grid - 1;
  const rows = span * span + 3;
  const t = table.data;
  const index = (i: number, j: number): number => {
    if (i === 0) return j === 0 ? rows - 1 : rows - 3;
    if (j === 0) return rows - 2;
    const yi = Math.floor((i - 1) / grid), xi = (i - 1) % grid;
    const yj = Math.floor((j - 1) / grid), xj = (j - 1) % grid;
    return (yi - yj + grid - 1) * span + (xi - xj + grid - 1);
  };
  const out = new Float32Array(heads * n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const row = index(i, j) * heads;
      for (let h = 0; h < heads; h++) out[(h * n + i) * n + j] = t[row + h];
    }
  }
  return new Tensor(out, [heads, n, n]);
}

/**
 * A BEiT block: timm's pre-norm block with q/v biases, q scaled before q·kᵀ (timm's non-fused path, so matmul1 is
 * (q·d^-½)·kᵀ), the block's relative position bias added to the scores, and gamma_1/gamma_2 when init_values is set.
 */
function beitBlock(reader: WeightReader, name: string, a: BeitArch, grid: number): PreNormBlock {
  const span = 2 * grid - 1;
  const relativeBias = a.useRelPosBias
    ? beitRelativePositionBias(reader.tensor(`${name}.attn.relative_position_bias_table`, [span * span + 3, a.numHeads]), grid, a.numHeads)
    : undefined;
  return new PreNormBlock(reader, name, {
    features: a.embedDim,
    eps: LN_EPS,
    attention: { heads: a.numHeads, qkvBias: false, qvBias: a.qkvBias, scale: 'queries' },
    mlpRatio: a.mlpRatio,
    // timm: `if init_values:` — gammas exist only for a non-zero init value.
    layerScale: a.initValues !== null && a.initValues !== 0 ? ['gamma_1', 'gamma_2'] : undefined,
    scoreBias: relativeBias,
  });
}

export class Beit implements VisionModel {
  readonly spec: ModelSpec;
  readonly quantPoints: readonly QuantPoint[];
  private readonly arch: BeitArch;
  private readonly patchEmbed: PatchEmbed;
  /** The class token prepended (and pos_embed added, when use_abs_pos_emb). */
  private readonly embed: LayoutOp;
  private readonly blocks: PreNormBlock[];
  private readonly pool: LayoutOp;
  private readonly fcNorm: LayerNorm;
  private readonly head: Linear;

  constructor(spec: ModelSpec, weights: TensorSource) {
    if (spec.arch.family !== 'beit') throw new Ptq4vitError(`${spec.name}: Beit needs a beit architecture, got family '${spec.arch.family}'`);
    this.spec = spec;
    const a = (this.arch = spec.arch);
    const D = a.embedDim;
    const grid = a.imgSize / a.patchSize;
    if (!Number.isInteger(grid)) throw new Ptq4vitError(`${spec.name}: img_size ${a.imgSize} is not a multiple of patch_size ${a.patchSize}`);
    const numTokens = grid * grid + 1;
    const reader = new WeightReader(weights);

    this.patchEmbed = new PatchEmbed(reader, 'patch_embed', { inChans: a.inChans, embedDim: D, patch: a.patchSize });
    const cls = reader.tensor('cls_token', [1, 1, D]).reshape([1, D]);
    const position = a.useAbsPosEmb ? reader.tensor('pos_embed', [1, numTokens, D]).reshape([numTokens, D]) : null;
    this.embed = prependTokensOp(cls, position);
    this.blocks = Array.from({ length: a.depth }, (_, i) => beitBlock(reader, `blocks.${i}`, a, grid));
    this.pool = meanOverPatchTokensOp(1);
    this.fcNorm = new LayerNorm(reader, 'fc_norm', D, LN_EPS);
    this.head = reader.linear('head', a.numClasses, D);
    reader.checkAllUsed(`${spec.name} (Beit, depth ${a.depth}, embed_dim ${D})`);
    this.quantPoints = [...this.patchEmbed.points, ...this.blocks.flatMap((b) => b.points), this.head.point];
  }

  async forward(images: Tensor, runner: Runner = fp32Runner): Promise<Tensor> {
    checkImageBatch(this.spec, images);
    return runSegments(this.segments, images, runner);
  }

  /** Segments: the embedding (patches, cls token, positions), each block, then pool + fc_norm + head. */
  get segments(): ForwardSegments {
    return segmentChain([
      async (runner, images) => kernelsOf(runner).layout(this.embed, [await this.patchEmbed.forward(runner, images)]),
      ...this.blocks.map((block): SegmentStep => (runner, x) => block.forward(runner, x)),
      async (runner, x) => {
        const k = kernelsOf(runner);
        return applyLinear(runner, this.head, await this.fcNorm.forward(k, k.layout(this.pool, [x])));
      },
    ]);
  }
}
