/**
 * Swin Transformer inference with timm ≥ 0.9 semantics (timm/models/swin_transformer.py, NHWC layout):
 *
 *   patch_embed: conv(kernel = stride = patch) → LayerNorm                       tokens [B, H·W, C]
 *   layers.N:    (N ≥ 1) downsample = 2×2 patch merging → LayerNorm → reduction   [B, H/2·W/2, 2C]
 *                blocks alternating plain and shifted windows (shift = window / 2):
 *                  x = x + windowReverse(attn(windowPartition(norm1(x))))
 *                  x = x + fc2(gelu(fc1(norm2(x))))
 *   norm → mean over tokens → head.fc   (num_classes 0: the pooled features are the output)
 *
 * Every product goes through the Runner under the names of the quantization points, so calibration
 * sees (and may replace) exactly what PTQ4ViT quantizes; everything else goes through the runner's
 * Kernels (layout maps as named ops), so the gradient tape and the ONNX tracer run this same code.
 * Everything that depends only on the geometry — relative position bias per head, shifted-window
 * masks — is computed once at construction.
 */
import { Ptq4vitError } from '../errors.js';
import { meanOverTokensOp, mergePatchesOp, windowPartitionOp, windowReverseAddOp, type LayoutOp } from '../tensor/layout.js';
import { fp32Runner, type Runner } from '../tensor/runner.js';
import { Tensor } from '../tensor/tensor.js';
import type { WindowGrid } from '../tensor/window.js';
import { applyLinear, Attention, feedsFrom, kernelsOf, LayerNorm, Mlp, PatchEmbed, checkImageBatch, runSegments } from './layers.js';
import type { ForwardSegments, ModelSpec, QuantPoint, SwinArch, VisionModel } from './types.js';
import { WeightReader, type Linear, type TensorSource } from './weights.js';

/** nn.LayerNorm's default, which timm's Swin uses (ViT uses 1e-6). */
export const LN_EPS = 1e-5;

/** timm's shifted-window mask value for query/key pairs from different regions of the rolled grid. */
const CROSS_REGION_MASK = -100;

/** Where one stage runs: its token grid, width, heads, and the window timm actually uses there. */
export interface StageGeometry {
  dim: number;
  heads: number;
  height: number;
  width: number;
  /** Window clamped to the resolution (timm's _calc_window_shift). */
  window: number;
  /** Shift of the odd blocks: window // 2 of the configured window, 0 where the resolution ≤ window. */
  shift: number;
}

/**
 * timm's PatchMerging: concatenate each 2×2 neighbourhood, then LayerNorm and the bias-free reduction to 2C —
 * in that order in Swin v1 (`norm-reduce`, norm over 4C), the other way round in Swin V2 (`reduce-norm`, norm
 * over 2C).
 */
export class PatchMerging {
  readonly norm: LayerNorm;
  readonly reduction: Linear;
  private readonly gather: LayoutOp;
  private readonly order: 'norm-reduce' | 'reduce-norm';

  constructor(reader: WeightReader, name: string, before: StageGeometry, after: StageGeometry, options: { order: 'norm-reduce' | 'reduce-norm' } = { order: 'norm-reduce' }) {
    this.order = options.order;
    const normFirst = this.order === 'norm-reduce';
    this.norm = new LayerNorm(reader, `${name}.norm`, normFirst ? 4 * before.dim : after.dim, LN_EPS);
    this.reduction = reader.linear(`${name}.reduction`, after.dim, 4 * before.dim, false);
    this.gather = mergePatchesOp(before.height, before.width);
    if (normFirst) feedsFrom(this.reduction, this.norm);
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    const gathered = k.layout(this.gather, [x]);
    if (this.order === 'reduce-norm') return this.norm.forward(k, await applyLinear(runner, this.reduction, gathered));
    return applyLinear(runner, this.reduction, await this.norm.forward(k, gathered));
  }
}

/** One Swin block: (shifted) window attention and MLP, each with its residual. */
class SwinBlock {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  /**
   * Added to the scores q·kᵀ of every window: the relative position bias [heads, N, N], or for a shifted
   * block bias + mask per window [nW·heads, N, N]. Scores are [B·nW·heads, N, N], so either repeats
   * exactly over them.
   */
  readonly attnBias: Tensor;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  private readonly partition: LayoutOp;
  private readonly reverseAdd: LayoutOp;

  constructor(reader: WeightReader, arch: SwinArch, g: StageGeometry, grid: WindowGrid, name: string) {
    const { dim, heads } = g;
    const span = 2 * grid.window - 1;
    this.norm1 = new LayerNorm(reader, `${name}.norm1`, dim, LN_EPS);
    this.attn = new Attention(reader, `${name}.attn`, { features: dim, heads, qkvBias: arch.qkvBias, scale: 'queries' });
    this.attnBias = attentionBias(reader.tensor(`${name}.attn.relative_position_bias_table`, [span * span, heads]), grid, heads);
    this.norm2 = new LayerNorm(reader, `${name}.norm2`, dim, LN_EPS);
    this.mlp = new Mlp(reader, `${name}.mlp`, dim, arch.mlpRatio);
    feedsFrom(this.attn.qkv, this.norm1); // window partition and shift move tokens, not channels
    feedsFrom(this.mlp.fc1, this.norm2);
    this.partition = windowPartitionOp(grid);
    this.reverseAdd = windowReverseAddOp(grid);
  }

  get points(): QuantPoint[] {
    return [...this.attn.points, ...this.mlp.points];
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    const windows = k.layout(this.partition, [await this.norm1.forward(k, x)]);
    const attended = await this.attn.forward(runner, windows, this.attnBias);
    const y = k.layout(this.reverseAdd, [x, attended]); // x + windowReverse(attended), in one pass
    return k.add(y, await this.mlp.forward(runner, await this.norm2.forward(k, y)));
  }
}

/** What a stage's blocks offer (Swin v1 and V2 blocks alike). */
export interface StageBlock {
  readonly points: QuantPoint[];
  forward(runner: Runner, x: Tensor): Promise<Tensor>;
}

/** One stage of a hierarchical model: patch merging (stages ≥ 1), then its blocks. */
export interface Stage<B extends StageBlock> {
  downsample: PatchMerging | null;
  blocks: B[];
}

/** The stages' quantization points in forward order: each stage's reduction, then its blocks' points. */
export function stagePoints(stages: readonly Stage<StageBlock>[]): QuantPoint[] {
  return stages.flatMap((s) => [...(s.downsample ? [s.downsample.reduction.point] : []), ...s.blocks.flatMap((b) => b.points)]);
}


type SwinStage = Stage<SwinBlock>;

export class SwinTransformer implements VisionModel {
  readonly spec: ModelSpec;
  readonly quantPoints: readonly QuantPoint[];
  private readonly arch: SwinArch;
  private readonly patchEmbed: PatchEmbed;
  private readonly stages: SwinStage[];
  private readonly norm: LayerNorm;
  private readonly head: Linear | null;

  constructor(spec: ModelSpec, weights: TensorSource) {
    if (spec.arch.family !== 'swin') {
      throw new Ptq4vitError(`${spec.name}: SwinTransformer needs a swin architecture, got family '${spec.arch.family}'`);
    }
    this.spec = spec;
    const arch = (this.arch = spec.arch);
    const geometry = stageGeometry(spec.name, arch);
    const reader = new WeightReader(weights);
    try {
      const { inChans, patchSize: patch, embedDim } = arch;
      this.patchEmbed = new PatchEmbed(reader, 'patch_embed', { inChans, embedDim, patch, normEps: LN_EPS });
      this.stages = geometry.map((g, i) => ({
        downsample: i > 0 ? new PatchMerging(reader, `layers.${i}.downsample`, geometry[i - 1], g) : null,
        blocks: Array.from({ length: arch.depths[i] }, (_, j) => {
          const grid: WindowGrid = { height: g.height, width: g.width, window: g.window, shift: j % 2 === 0 ? 0 : g.shift };
          return new SwinBlock(reader, arch, g, grid, `layers.${i}.blocks.${j}`);
        }),
      }));
      const features = geometry[geometry.length - 1].dim;
      this.norm = new LayerNorm(reader, 'norm', features, LN_EPS);
      // num_classes 0 (timm: head = Identity): no classifier, the output is the pooled embedding.
      this.head = arch.numClasses === 0 ? null : reader.linear('head.fc', arch.numClasses, features);
      reader.checkAllUsed(`${spec.name} (Swin, depths [${arch.depths.join(', ')}], embed_dim ${arch.embedDim})`);
    } catch (e) {
      throw e instanceof Ptq4vitError ? new Ptq4vitError(e.message + oldLayoutHint(weights)) : e;
    }
    // In forward order (the order of the parity fixtures' quant_points).
    this.quantPoints = [
      ...this.patchEmbed.points,
      ...stagePoints(this.stages),
      ...(this.head ? [this.head.point] : []),
    ];
  }

  /** images: normalized [B, C, H, W] → logits [B, numClasses]. */
  async forward(images: Tensor, runner: Runner = fp32Runner): Promise<Tensor> {
    checkImageBatch(this.spec, images);
    return runSegments(this.segments, images, runner);
  }

  /** The layers in forward order: patch embedding, then each stage's patch merging and blocks. */
  private get layers(): { forward(runner: Runner, x: Tensor): Promise<Tensor> }[] {
    return [this.patchEmbed, ...this.stages.flatMap((stage) => [...(stage.downsample ? [stage.downsample] : []), ...stage.blocks])];
  }

  /** Segments: each layer (patch embedding, patch merging, block), then norm + pool + head. */
  get segments(): ForwardSegments {
    const layers = this.layers;
    return {
      count: layers.length + 1,
      run: async (index, x, runner) => {
        if (index < layers.length) return layers[index].forward(runner, x);
        // Final LayerNorm, global average pool over tokens, classifier.
        const k = kernelsOf(runner);
        const pooled = k.layout(meanOverTokensOp, [await this.norm.forward(k, x)]);
        return this.head ? applyLinear(runner, this.head, pooled) : pooled;
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Geometry: resolutions, clamped windows and shifts per stage.

/** The arch fields the stage geometry depends on (shared by Swin v1 and V2). */
export type SwinGeometryArch = Pick<SwinArch, 'imgSize' | 'patchSize' | 'embedDim' | 'depths' | 'numHeads' | 'windowSize'>;

export function stageGeometry(model: string, arch: SwinGeometryArch): StageGeometry[] {
  const bad = (why: string): never => {
    throw new Ptq4vitError(`${model}: unsupported Swin configuration: ${why}`);
  };
  const { imgSize, patchSize, embedDim, depths, numHeads, windowSize } = arch;
  if (depths.length === 0 || depths.length !== numHeads.length) {
    bad(`depths [${depths.join(', ')}] and num_heads [${numHeads.join(', ')}] must be non-empty and of equal length`);
  }
  if (imgSize % patchSize !== 0) bad(`img_size ${imgSize} is not a multiple of patch_size ${patchSize}`);
  if (!(windowSize >= 1)) bad(`window_size ${windowSize}`);
  const stages: StageGeometry[] = [];
  let resolution = imgSize / patchSize;
  for (let i = 0; i < depths.length; i++) {
    if (i > 0) {
      // timm ≥ 1.0 zero-pads odd grids before merging (0.9 cannot run them); we do not.
      if (resolution % 2 !== 0) bad(`stage ${i} merges an odd ${resolution}×${resolution} grid`);
      resolution /= 2;
    }
    const dim = embedDim * 2 ** i;
    const heads = numHeads[i];
    if (!(heads >= 1) || dim % heads !== 0) bad(`stage ${i}: width ${dim} is not divisible by ${heads} heads`);
    // _calc_window_shift: a window at least as large as the grid becomes the whole grid, unshifted.
    const window = Math.min(resolution, windowSize);
    const shift = resolution <= window ? 0 : Math.floor(windowSize / 2);
    // timm ≥ 1.0 pads grids that windows do not tile (0.9 cannot run them); we do not.
    if (resolution % window !== 0) bad(`stage ${i}: window ${window} does not tile the ${resolution}×${resolution} grid`);
    stages.push({ dim, heads, height: resolution, width: resolution, window, shift });
  }
  return stages;
}

/**
 * timm's get_relative_position_index → bias per head: out[h, i, j] = table[index(i, j), h] with
 * index = (Δy + w − 1)·(2w − 1) + (Δx + w − 1), Δ = position of token i − position of token j.
 */
function relativePositionBias(table: Tensor, window: number, heads: number): Float32Array {
  const n = window * window;
  const span = 2 * window - 1;
  const t = table.data;
  const out = new Float32Array(heads * n * n);
  for (let i = 0; i < n; i++) {
    const yi = Math.floor(i / window), xi = i % window;
    for (let j = 0; j < n; j++) {
      const yj = Math.floor(j / window), xj = j % window;
      const row = ((yi - yj + window - 1) * span + (xi - xj + window - 1)) * heads;
      for (let h = 0; h < heads; h++) out[(h * n + i) * n + j] = t[row + h];
    }
  }
  return out;
}

/**
 * timm's shifted-window attention mask [nW, N, N]: label the rolled grid with the 3×3 regions cut by
 * the slices [0, H−w), [H−w, H−s), [H−s, H) on each axis, then forbid (−100) attention between tokens
 * of one window that carry different labels — they were not neighbours before the cyclic shift.
 */
function shiftedWindowMask(g: WindowGrid): Float32Array {
  const { height, width, window, shift } = g;
  const region = (pos: number, size: number): number => (pos < size - window ? 0 : pos < size - shift ? 1 : 2);
  const n = window * window;
  const windowsY = height / window, windowsX = width / window;
  const out = new Float32Array(windowsY * windowsX * n * n);
  const labels = new Int32Array(n);
  for (let wy = 0; wy < windowsY; wy++) {
    for (let wx = 0; wx < windowsX; wx++) {
      for (let i = 0; i < n; i++) {
        const y = wy * window + Math.floor(i / window), x = wx * window + (i % window);
        labels[i] = region(y, height) * 3 + region(x, width);
      }
      const base = (wy * windowsX + wx) * n * n;
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) if (labels[i] !== labels[j]) out[base + i * n + j] = CROSS_REGION_MASK;
      }
    }
  }
  return out;
}

/**
 * What a block adds to its scores. Plain windows: the relative position bias [heads, N, N]. Shifted:
 * bias + mask per window [nW, heads, N, N] (timm adds them one after the other; the sums differ only in
 * float rounding of entries that are −100 and vanish in the softmax anyway).
 */
export function attentionBias(table: Tensor, g: WindowGrid, heads: number): Tensor {
  const n = g.window * g.window;
  const bias = relativePositionBias(table, g.window, heads);
  if (g.shift === 0) return new Tensor(bias, [heads, n, n]);
  const mask = shiftedWindowMask(g);
  const numWindows = mask.length / (n * n);
  const out = new Float32Array(numWindows * heads * n * n);
  for (let w = 0; w < numWindows; w++) {
    for (let h = 0; h < heads; h++) {
      const o = (w * heads + h) * n * n, b = h * n * n, m = w * n * n;
      for (let e = 0; e < n * n; e++) out[o + e] = bias[b + e] + mask[m + e];
    }
  }
  return new Tensor(out, [numWindows * heads, n, n]);
}

// ---------------------------------------------------------------------------------------------

/**
 * timm < 0.9 kept patch merging at the end of each stage (so stage 0 has a downsample) and the
 * classifier as `head`; only the first is specific to Swin (every ViT has a `head.weight`).
 */
export function oldLayoutHint(weights: TensorSource): string {
  const old = weights.names().some((n) => n.startsWith('layers.0.downsample.'));
  return old
    ? ' — this looks like a timm < 0.9 Swin checkpoint; load it with timm ≥ 0.9 (which remaps the names) and save its state_dict again'
    : '';
}
