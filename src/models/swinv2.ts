/**
 * Swin Transformer V2 inference with timm's semantics (timm/models/swin_transformer_v2.py, NHWC layout):
 *
 *   patch_embed: conv(kernel = stride = patch) → LayerNorm                        tokens [B, H·W, C]
 *   layers.N:    (N ≥ 1) downsample = 2×2 patch merging → reduction → LayerNorm   [B, H/2·W/2, 2C]
 *                blocks alternating plain and shifted windows, with res-post-norm (the norm after the branch):
 *                  x = x + norm1(windowReverse(cosineAttn(windowPartition(x))))
 *                  x = x + norm2(fc2(gelu(fc1(x))))
 *   norm → mean over tokens → head.fc
 *
 * Cosine attention per window and head (the paper's eq. 2):
 *   Sim(q, k) = (q/‖q‖)·(k/‖k‖)ᵀ · τ_h + B,   τ_h = exp(min(logit_scale_h, ln 100)),
 *   B = 16·σ(cpb_mlp(log-spaced relative coordinates)) gathered per query/key pair (+ the shifted-window mask).
 * The two attention products are the quantization points `matmul1` = normalize(q)·normalize(k)ᵀ (operands
 * in [−1, 1]) and `matmul2` = softmax·v, as in the parity fixture.
 *
 * Geometry, masks, the bias gather and patch merging are Swin v1's (swin.ts); only what V2 changes is here.
 */
import { Ptq4vitError } from '../errors.js';
import { headScaleOp, meanOverTokensOp, mergeHeadsOp, splitHeadsOp, windowPartitionOp, windowReverseAddOp, type LayoutOp } from '../tensor/layout.js';
import { fp32Runner, type Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';
import type { WindowGrid } from '../tensor/window.js';
import { applyLinear, kernelsOf, LayerNorm, Mlp, PatchEmbed, qkvWithQvBias, checkImageBatch, runSegments, segmentChain, type SegmentStep } from './layers.js';
import { attentionBias, LN_EPS, oldLayoutHint, PatchMerging, stageGeometry, stagePoints, type Stage, type StageGeometry } from './swin.js';
import type { ForwardSegments, ModelSpec, QuantPoint, SwinV2Arch, VisionModel } from './types.js';
import { WeightReader, type Linear, type TensorSource } from './weights.js';

/** F.normalize's eps in timm's cosine attention. */
const NORMALIZE_EPS = 1e-12;
/** timm clamps logit_scale at log(1/0.01): the temperature τ never exceeds 100. */
const MAX_LOGIT_SCALE = Math.log(100);
/** timm's cpb_mlp: Linear(2, 512) → ReLU → Linear(512, heads, bias=False). */
const CPB_HIDDEN = 512;
/** The coordinate table is normalized to [−8, 8] before the log spacing. */
const CPB_RANGE = 8;

/**
 * timm's relative_coords_table for a window: (Δy, Δx) for Δ ∈ (−(w−1) … w−1), row-major [(2w−1)², 2],
 * each divided by (pretrained window − 1) — or (w − 1) without one — times 8, then sign(t)·log2(|t| + 1)/log2(8).
 */
export function relativeCoordsTable(window: number, pretrainedWindow: number): Float64Array {
  const span = 2 * window - 1;
  const divisor = (pretrainedWindow > 0 ? pretrainedWindow : window) - 1;
  const logSpaced = (delta: number): number => {
    const t = (delta / divisor) * CPB_RANGE;
    return (Math.sign(t) * Math.log2(Math.abs(t) + 1)) / Math.log2(CPB_RANGE);
  };
  const out = new Float64Array(span * span * 2);
  for (let i = 0; i < span; i++) {
    for (let j = 0; j < span; j++) {
      out[(i * span + j) * 2] = logSpaced(i - (window - 1));
      out[(i * span + j) * 2 + 1] = logSpaced(j - (window - 1));
    }
  }
  return out;
}

/**
 * The continuous position bias table [(2w−1)², heads] = 16·σ(cpb_mlp(coords)). The MLP's input is a constant of
 * the window geometry, so the whole bias is folded here, once, in float64 (like v1's stored table), and cpb_mlp.0
 * and cpb_mlp.2 are not quantization points: they run on no image data (the fixture lists them as
 * `input_independent_points`), and quantizing them would only add a fixed error to a fixed table.
 */
export function continuousPositionBias(reader: WeightReader, name: string, window: number, pretrainedWindow: number, heads: number): Tensor {
  const w0 = reader.tensor(`${name}.cpb_mlp.0.weight`, [CPB_HIDDEN, 2]).data;
  const b0 = reader.tensor(`${name}.cpb_mlp.0.bias`, [CPB_HIDDEN]).data;
  const w2 = reader.tensor(`${name}.cpb_mlp.2.weight`, [heads, CPB_HIDDEN]).data;
  const coords = relativeCoordsTable(window, pretrainedWindow);
  const rows = coords.length / 2;
  const table = new Float32Array(rows * heads);
  const hidden = new Float64Array(CPB_HIDDEN);
  for (let r = 0; r < rows; r++) {
    const [dy, dx] = [coords[2 * r], coords[2 * r + 1]];
    for (let u = 0; u < CPB_HIDDEN; u++) hidden[u] = Math.max(0, w0[2 * u] * dy + w0[2 * u + 1] * dx + b0[u]);
    for (let h = 0; h < heads; h++) {
      let z = 0;
      for (let u = 0; u < CPB_HIDDEN; u++) z += w2[h * CPB_HIDDEN + u] * hidden[u];
      table[r * heads + h] = 16 / (1 + Math.exp(-z));
    }
  }
  return new Tensor(table, [rows, heads]);
}

/**
 * Multi-head cosine attention over windows [G, N, C]: qkv projection (bias cat(q_bias, 0, v_bias), as timm's
 * F.linear call), L2-normalized q and k, `matmul1` = q̂·k̂ᵀ, per-head temperature, softmax with the position
 * bias (+ mask), `matmul2` = softmax·v, output projection.
 */
class CosineWindowAttention {
  readonly qkv: Linear;
  readonly proj: Linear;
  private readonly split: [LayoutOp, LayoutOp, LayoutOp];
  private readonly temperature: LayoutOp;
  private readonly merge: LayoutOp;

  readonly heads: number;

  constructor(reader: WeightReader, readonly name: string, options: { dim: number; heads: number; qkvBias: boolean }) {
    const { dim, heads, qkvBias } = options;
    this.heads = heads;
    // timm keeps k's bias a zero buffer (not in the checkpoint): q and v have one, k has none.
    this.qkv = qkvBias ? qkvWithQvBias(reader, name, dim) : reader.linear(`${name}.qkv`, 3 * dim, dim, false);
    this.qkv.point.weightGroups = 3;
    this.proj = reader.linear(`${name}.proj`, dim, dim);
    const logitScale = reader.tensor(`${name}.logit_scale`, [heads, 1, 1]).data;
    this.temperature = headScaleOp(Float32Array.from(logitScale, (s) => Math.exp(Math.min(s, MAX_LOGIT_SCALE))));
    this.split = [0, 1, 2].map((part) => splitHeadsOp({ heads, part, parts: 3 })) as [LayoutOp, LayoutOp, LayoutOp];
    this.merge = mergeHeadsOp(heads);
  }

  /**
   * matmul1's operands are bounded in [−1, 1], but they get the searched uniform quantizer like every attention
   * operand: measured against the fixed grid Δ = 1/2^(k−1) that covers the bound, the search halves matmul1's
   * own error at 8, 6 and 4 bits (RESULTS.md, "Swin V2: the quantizer of the cosine-similarity product").
   */
  get points(): QuantPoint[] {
    return [
      this.qkv.point,
      this.proj.point,
      { name: `${this.name}.matmul1`, kind: 'matmul', heads: this.heads, transB: true },
      { name: `${this.name}.matmul2`, kind: 'matmul', heads: this.heads, input: 'post-softmax' },
    ];
  }

  async forward(runner: Runner, x: Tensor, scoreBias: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    const packed = await applyLinear(runner, this.qkv, x);
    const [q, key, value] = this.split.map((op) => k.layout(op, [packed]));
    const qHat = await k.l2Normalize(q, NORMALIZE_EPS), kHat = await k.l2Normalize(key, NORMALIZE_EPS);
    const cosine = await runner.matmul(`${this.name}.matmul1`, qHat, kHat, true); // [G·heads, N, N] in [−1, 1]
    const probs = await k.softmax(k.layout(this.temperature, [cosine]), 1, scoreBias);
    const context = await runner.matmul(`${this.name}.matmul2`, probs, value, false);
    return applyLinear(runner, this.proj, k.layout(this.merge, [context]));
  }
}

/** One V2 block: (shifted) window cosine attention and MLP, each normalized after the branch, before its residual. */
class SwinV2Block {
  readonly attn: CosineWindowAttention;
  readonly norm1: LayerNorm;
  readonly mlp: Mlp;
  readonly norm2: LayerNorm;
  /** Position bias [heads, N, N], or bias + shifted-window mask [nW·heads, N, N] (see swin.ts attentionBias). */
  readonly attnBias: Tensor;
  private readonly partition: LayoutOp;
  private readonly reverseAdd: LayoutOp;

  constructor(reader: WeightReader, arch: SwinV2Arch, g: StageGeometry, grid: WindowGrid, pretrainedWindow: number, name: string) {
    this.attn = new CosineWindowAttention(reader, `${name}.attn`, { dim: g.dim, heads: g.heads, qkvBias: arch.qkvBias });
    this.attnBias = attentionBias(continuousPositionBias(reader, `${name}.attn`, grid.window, pretrainedWindow, g.heads), grid, g.heads);
    this.norm1 = new LayerNorm(reader, `${name}.norm1`, g.dim, LN_EPS);
    this.mlp = new Mlp(reader, `${name}.mlp`, g.dim, arch.mlpRatio);
    this.norm2 = new LayerNorm(reader, `${name}.norm2`, g.dim, LN_EPS);
    this.partition = windowPartitionOp(grid);
    this.reverseAdd = windowReverseAddOp(grid);
  }

  get points(): QuantPoint[] {
    return [...this.attn.points, ...this.mlp.points];
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    const attended = await this.attn.forward(runner, k.layout(this.partition, [x]), this.attnBias);
    // LayerNorm is per token, so norm1 before the window reverse equals timm's norm1 after it.
    const y = k.layout(this.reverseAdd, [x, await this.norm1.forward(k, attended)]);
    return k.add(y, await this.norm2.forward(k, await this.mlp.forward(runner, y)));
  }
}

type SwinV2Stage = Stage<SwinV2Block>;

/** Non-persistent buffers timm may have saved: recomputed here from the geometry, so never read. */
const TIMM_BUFFERS = /(relative_position_index|relative_coords_table|attn_mask|k_bias)$/;

export class SwinTransformerV2 implements VisionModel {
  readonly spec: ModelSpec;
  readonly quantPoints: readonly QuantPoint[];
  private readonly arch: SwinV2Arch;
  private readonly patchEmbed: PatchEmbed;
  private readonly stages: SwinV2Stage[];
  private readonly norm: LayerNorm;
  private readonly head: Linear;

  constructor(spec: ModelSpec, weights: TensorSource) {
    if (spec.arch.family !== 'swinv2') {
      throw new Ptq4vitError(`${spec.name}: SwinTransformerV2 needs a swinv2 architecture, got family '${spec.arch.family}'`);
    }
    this.spec = spec;
    const arch = (this.arch = spec.arch);
    const geometry = stageGeometry(spec.name, arch);
    geometry.forEach((g, i) => {
      // timm divides the coordinate table by (window − 1): a 1×1 window (a 1×1 grid) makes it 0/0, a NaN bias.
      if (g.window < 2 && !(arch.pretrainedWindowSizes[i] > 1)) {
        throw new Ptq4vitError(`${spec.name}: unsupported Swin V2 configuration: stage ${i}'s ${g.height}×${g.width} grid leaves a 1×1 window, whose position bias timm computes as 0/0 (use a larger img_size)`);
      }
    });
    const reader = new WeightReader(weights);
    try {
      const { inChans, patchSize: patch, embedDim } = arch;
      this.patchEmbed = new PatchEmbed(reader, 'patch_embed', { inChans, embedDim, patch, normEps: LN_EPS });
      this.stages = geometry.map((g, i) => ({
        downsample: i > 0 ? new PatchMerging(reader, `layers.${i}.downsample`, geometry[i - 1], g, { order: 'reduce-norm' }) : null,
        blocks: Array.from({ length: arch.depths[i] }, (_, j) => {
          const grid: WindowGrid = { height: g.height, width: g.width, window: g.window, shift: j % 2 === 0 ? 0 : g.shift };
          return new SwinV2Block(reader, arch, g, grid, arch.pretrainedWindowSizes[i], `layers.${i}.blocks.${j}`);
        }),
      }));
      const features = geometry[geometry.length - 1].dim;
      this.norm = new LayerNorm(reader, 'norm', features, LN_EPS);
      this.head = reader.linear('head.fc', arch.numClasses, features);
      reader.checkAllUsed(`${spec.name} (Swin V2, depths [${arch.depths.join(', ')}], embed_dim ${arch.embedDim})`, TIMM_BUFFERS);
    } catch (e) {
      throw e instanceof Ptq4vitError ? new Ptq4vitError(e.message + oldLayoutHint(weights)) : e;
    }
    // In forward order: the fixture's quant_points without the folded cpb_mlp layers.
    this.quantPoints = [
      ...this.patchEmbed.points,
      ...stagePoints(this.stages),
      this.head.point,
    ];
  }

  /** images: normalized [B, C, H, W] → logits [B, numClasses]. */
  async forward(images: Tensor, runner: Runner = fp32Runner): Promise<Tensor> {
    checkImageBatch(this.spec, images);
    return runSegments(this.segments, images, runner);
  }

  /** Segments: the patch embedding, each stage's patch merging and blocks, then norm + pool + head. */
  get segments(): ForwardSegments {
    const layers = this.stages.flatMap((stage) => [...(stage.downsample ? [stage.downsample] : []), ...stage.blocks]);
    return segmentChain([
      (runner, images) => this.patchEmbed.forward(runner, images),
      ...layers.map((layer): SegmentStep => (runner, x) => layer.forward(runner, x)),
      async (runner, x) => {
        const k = kernelsOf(runner);
        return applyLinear(runner, this.head, k.layout(meanOverTokensOp, [await this.norm.forward(k, x)]));
      },
    ]);
  }
}
