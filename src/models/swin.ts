/**
 * Swin Transformer inference with timm ≥ 0.9 semantics (timm/models/swin_transformer.py, NHWC layout):
 *
 *   patch_embed: conv(kernel = stride = patch) → LayerNorm                       tokens [B, H·W, C]
 *   layers.N:    (N ≥ 1) downsample = 2×2 patch merging → LayerNorm → reduction   [B, H/2·W/2, 2C]
 *                blocks alternating plain and shifted windows (shift = window / 2):
 *                  x = x + windowReverse(attn(windowPartition(norm1(x))))
 *                  x = x + fc2(gelu(fc1(norm2(x))))
 *   norm → mean over tokens → head.fc
 *
 * Every product goes through the Runner under the names of the quantization points, so calibration
 * sees (and may replace) exactly what PTQ4ViT quantizes; everything else goes through the runner's
 * Kernels (each layout map with its adjoint), so the gradient tape differentiates this same code.
 * Everything that depends only on the geometry — relative position bias per head, shifted-window
 * masks — is computed once at construction.
 */
import { Ptq4vitError } from '../errors.js';
import { fastKernels, type Kernels } from '../tensor/kernels.js';
import { fromHeads, scale, scaleInPlace, toHeads } from '../tensor/ops.js';
import { unfoldPatches } from '../tensor/patches.js';
import { fp32Runner } from '../tensor/runner.js';
import { Tensor, shapeString } from '../tensor/tensor.js';
import {
  meanOverTokens,
  mergePatches2x2,
  splitPatches2x2,
  spreadOverTokens,
  windowPartition,
  windowReverse,
  windowReverseAdd,
  type WindowGrid,
} from '../tensor/window.js';
import type { ModelSpec, QuantPoint, Runner, SwinArch, VisionModel } from './types.js';
import { WeightReader, type Linear, type TensorSource } from './weights.js';

/** nn.LayerNorm's default, which timm's Swin uses (ViT uses 1e-6). */
const LN_EPS = 1e-5;

/** timm's shifted-window mask value for query/key pairs from different regions of the rolled grid. */
const CROSS_REGION_MASK = -100;

interface Norm {
  weight: Tensor;
  bias: Tensor;
}

interface PatchEmbed {
  patch: number;
  /** The kernel = stride = patch conv as a linear layer over patches unfolded in (c, ky, kx) order. */
  proj: Linear;
  norm: Norm;
}

interface PatchMerging {
  /** Token grid before merging. */
  height: number;
  width: number;
  norm: Norm;
  reduction: Linear;
}

interface SwinBlock {
  /** Module path, e.g. "layers.2.blocks.1". */
  name: string;
  grid: WindowGrid;
  heads: number;
  /** head_dim^-0.5, applied to q before q·kᵀ (as timm's non-fused path). */
  qScale: number;
  norm1: Norm;
  qkv: Linear;
  /**
   * Added to the scores q·kᵀ of every window: the relative position bias [heads, N, N], or for a shifted
   * block bias + mask per window [nW, heads, N, N]. Scores are [B·nW·heads, N, N], so either repeats
   * exactly over them.
   */
  attnBias: Tensor;
  proj: Linear;
  norm2: Norm;
  fc1: Linear;
  fc2: Linear;
}

interface SwinStage {
  downsample: PatchMerging | null;
  blocks: SwinBlock[];
}

/** Where one stage runs: its token grid, width, heads, and the window timm actually uses there. */
interface StageGeometry {
  dim: number;
  heads: number;
  height: number;
  width: number;
  /** Window clamped to the resolution (timm's _calc_window_shift). */
  window: number;
  /** Shift of the odd blocks: window // 2 of the configured window, 0 where the resolution ≤ window. */
  shift: number;
}

export class SwinTransformer implements VisionModel {
  readonly spec: ModelSpec;
  readonly quantPoints: readonly QuantPoint[];
  private readonly arch: SwinArch;
  private readonly patchEmbed: PatchEmbed;
  private readonly stages: SwinStage[];
  private readonly norm: Norm;
  private readonly head: Linear;

  constructor(spec: ModelSpec, weights: TensorSource) {
    if (spec.arch.family !== 'swin') {
      throw new Ptq4vitError(`${spec.name}: SwinTransformer needs a swin architecture, got family '${spec.arch.family}'`);
    }
    this.spec = spec;
    this.arch = spec.arch;
    const geometry = stageGeometry(spec.name, this.arch);
    const reader = new WeightReader(weights);
    try {
      this.patchEmbed = loadPatchEmbed(reader, this.arch);
      this.stages = geometry.map((_, i) => loadStage(reader, this.arch, geometry, i));
      const features = geometry[geometry.length - 1].dim;
      this.norm = loadNorm(reader, 'norm', features);
      this.head = reader.linear('head.fc', this.arch.numClasses, features);
      reader.checkAllUsed(`${spec.name} (Swin, depths [${this.arch.depths.join(', ')}], embed_dim ${this.arch.embedDim})`);
    } catch (e) {
      throw e instanceof Ptq4vitError ? new Ptq4vitError(e.message + oldLayoutHint(weights)) : e;
    }
    this.quantPoints = listQuantPoints(this.patchEmbed, this.stages, this.head);
  }

  /** images: normalized [B, C, H, W] → logits [B, numClasses]. */
  async forward(images: Tensor, runner: Runner = fp32Runner): Promise<Tensor> {
    const { inChans, imgSize } = this.arch;
    const s = images.shape;
    if (images.rank !== 4 || s[1] !== inChans || s[2] !== imgSize || s[3] !== imgSize) {
      throw new Ptq4vitError(`${this.spec.name}: expected images [B, ${inChans}, ${imgSize}, ${imgSize}], got ${shapeString(s)}`);
    }
    const k = runner.kernels ?? fastKernels;
    let x = await patchEmbedForward(this.patchEmbed, images, runner, k);
    for (const stage of this.stages) {
      if (stage.downsample) x = await patchMergingForward(stage.downsample, x, runner, k);
      for (const block of stage.blocks) x = await blockForward(block, x, runner, k);
    }
    return headForward(this.norm, this.head, x, runner, k);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward pass, top-down. `k` runs the non-GEMM ops; layout maps carry their adjoints for backward.

/** Conv patch embedding as unfold + linear, then LayerNorm: [B, C, H, W] → tokens [B, H/p·W/p, D]. */
async function patchEmbedForward(pe: PatchEmbed, images: Tensor, runner: Runner, k: Kernels): Promise<Tensor> {
  const patches = k.layout([images], (img) => unfoldPatches(img, pe.patch), () => [null]); // no image gradient
  const embedded = await runner.linear(pe.proj.point.name, patches, pe.proj.weight, pe.proj.bias);
  return layerNorm(k, embedded, pe.norm);
}

/** timm's PatchMerging: concatenate each 2×2 neighbourhood, LayerNorm, bias-free reduction to 2C. */
async function patchMergingForward(pm: PatchMerging, x: Tensor, runner: Runner, k: Kernels): Promise<Tensor> {
  const { height, width } = pm;
  const merged = k.layout([x], (t) => mergePatches2x2(t, height, width), (g) => [splitPatches2x2(g, height, width)]);
  return runner.linear(pm.reduction.point.name, await layerNorm(k, merged, pm.norm), pm.reduction.weight, null);
}

/** One Swin block: windowed attention and MLP, each with its residual. */
async function blockForward(block: SwinBlock, x: Tensor, runner: Runner, k: Kernels): Promise<Tensor> {
  const { grid } = block;
  const normed = await layerNorm(k, x, block.norm1);
  const windows = k.layout([normed], (t) => windowPartition(t, grid), (g) => [windowReverse(g, grid)]);
  const attended = await windowAttention(block, windows, runner, k);
  // x + windowReverse(attended) in one pass; a linear map of (x, attended).
  const y = k.layout([x, attended], (res, win) => windowReverseAdd(res, win, grid), (g) => [g, windowPartition(g, grid)]);
  return k.add(y, await mlpForward(block, await layerNorm(k, y, block.norm2), runner, k));
}

/** Multi-head self-attention inside each window: windows [B·nW, N, C] → [B·nW, N, C]. */
async function windowAttention(block: SwinBlock, windows: Tensor, runner: Runner, k: Kernels): Promise<Tensor> {
  const { qkv, proj, heads, name, qScale } = block;
  const packed = await runner.linear(qkv.point.name, windows, qkv.weight, qkv.bias); // [B·nW, N, 3C]
  // q, k, v: column blocks 0, 1, 2 of the packed projection, each as [B·nW·heads, N, d]; q pre-scaled as timm.
  const q = k.layout([packed], (t) => scaleInPlace(toHeads(t, heads, 0, 3), qScale), (g) => [fromHeads(scale(g, qScale), heads, 0, 3)]);
  const key = k.layout([packed], (t) => toHeads(t, heads, 1, 3), (g) => [fromHeads(g, heads, 1, 3)]);
  const value = k.layout([packed], (t) => toHeads(t, heads, 2, 3), (g) => [fromHeads(g, heads, 2, 3)]);
  const scores = await runner.matmul(`${name}.attn.matmul1`, q, key, true); // [B·nW·heads, N, N]
  const probs = await k.softmax(scores, 1, block.attnBias); // softmax(scores + bias [+ mask]), a new tensor
  const context = await runner.matmul(`${name}.attn.matmul2`, probs, value, false); // [B·nW·heads, N, d]
  const merged = k.layout([context], (c) => fromHeads(c, heads), (g) => [toHeads(g, heads)]); // [B·nW, N, C]
  return runner.linear(proj.point.name, merged, proj.weight, proj.bias);
}

async function mlpForward(block: SwinBlock, x: Tensor, runner: Runner, k: Kernels): Promise<Tensor> {
  const { fc1, fc2 } = block;
  const hidden = await k.gelu(await runner.linear(fc1.point.name, x, fc1.weight, fc1.bias));
  return runner.linear(fc2.point.name, hidden, fc2.weight, fc2.bias);
}

/** Final LayerNorm, global average pool over tokens, classifier. */
async function headForward(norm: Norm, head: Linear, x: Tensor, runner: Runner, k: Kernels): Promise<Tensor> {
  const tokens = x.shape[1];
  const pooled = k.layout([await layerNorm(k, x, norm)], meanOverTokens, (g) => [spreadOverTokens(g, tokens)]);
  return runner.linear(head.point.name, pooled, head.weight, head.bias);
}

function layerNorm(k: Kernels, x: Tensor, norm: Norm): Promise<Tensor> {
  return k.layerNorm(x, norm.weight, norm.bias, LN_EPS);
}

// ---------------------------------------------------------------------------------------------
// Geometry: resolutions, clamped windows and shifts per stage.

function stageGeometry(model: string, arch: SwinArch): StageGeometry[] {
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
function attentionBias(table: Tensor, g: WindowGrid, heads: number): Tensor {
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
// Loading: every tensor is read with its exact expected shape; leftovers are rejected (checkAllUsed).

function loadNorm(reader: WeightReader, name: string, features: number): Norm {
  return { weight: reader.tensor(`${name}.weight`, [features]), bias: reader.tensor(`${name}.bias`, [features]) };
}

/**
 * timm < 0.9 kept patch merging at the end of each stage (so stage 0 has a downsample) and the
 * classifier as `head`; only the first is specific to Swin (every ViT has a `head.weight`).
 */
function oldLayoutHint(weights: TensorSource): string {
  const old = weights.names().some((n) => n.startsWith('layers.0.downsample.'));
  return old
    ? ' — this looks like a timm < 0.9 Swin checkpoint; load it with timm ≥ 0.9 (which remaps the names) and save its state_dict again'
    : '';
}

function loadPatchEmbed(reader: WeightReader, arch: SwinArch): PatchEmbed {
  const { inChans, patchSize, embedDim } = arch;
  return {
    patch: patchSize,
    proj: reader.patchConv('patch_embed.proj', embedDim, inChans, patchSize),
    norm: loadNorm(reader, 'patch_embed.norm', embedDim),
  };
}

function loadStage(reader: WeightReader, arch: SwinArch, geometry: StageGeometry[], index: number): SwinStage {
  const g = geometry[index];
  let downsample: PatchMerging | null = null;
  if (index > 0) {
    const before = geometry[index - 1];
    const name = `layers.${index}.downsample`;
    downsample = {
      height: before.height,
      width: before.width,
      norm: loadNorm(reader, `${name}.norm`, 4 * before.dim),
      reduction: reader.linear(`${name}.reduction`, g.dim, 4 * before.dim, false),
    };
  }
  const blocks: SwinBlock[] = [];
  for (let j = 0; j < arch.depths[index]; j++) {
    const grid: WindowGrid = { height: g.height, width: g.width, window: g.window, shift: j % 2 === 0 ? 0 : g.shift };
    blocks.push(loadBlock(reader, arch, g, grid, `layers.${index}.blocks.${j}`));
  }
  return { downsample, blocks };
}

function loadBlock(reader: WeightReader, arch: SwinArch, g: StageGeometry, grid: WindowGrid, name: string): SwinBlock {
  const { dim, heads } = g;
  const hidden = Math.floor(dim * arch.mlpRatio); // timm: int(dim * mlp_ratio)
  const span = 2 * grid.window - 1;
  const table = reader.tensor(`${name}.attn.relative_position_bias_table`, [span * span, heads]);
  return {
    name,
    grid,
    heads,
    qScale: (dim / heads) ** -0.5,
    norm1: loadNorm(reader, `${name}.norm1`, dim),
    qkv: reader.linear(`${name}.attn.qkv`, 3 * dim, dim, arch.qkvBias),
    attnBias: attentionBias(table, grid, heads),
    proj: reader.linear(`${name}.attn.proj`, dim, dim),
    norm2: loadNorm(reader, `${name}.norm2`, dim),
    fc1: reader.linear(`${name}.mlp.fc1`, hidden, dim),
    fc2: reader.linear(`${name}.mlp.fc2`, dim, hidden),
  };
}

// ---------------------------------------------------------------------------------------------

/** The quantization points in forward order (the order of the parity fixtures' quant_points). */
function listQuantPoints(patchEmbed: PatchEmbed, stages: SwinStage[], head: Linear): QuantPoint[] {
  const points: QuantPoint[] = [patchEmbed.proj.point];
  for (const stage of stages) {
    if (stage.downsample) points.push(stage.downsample.reduction.point);
    for (const b of stage.blocks) {
      points.push(
        { ...b.qkv.point, weightGroups: 3 },
        b.proj.point,
        { name: `${b.name}.attn.matmul1`, kind: 'matmul', heads: b.heads, transB: true },
        { name: `${b.name}.attn.matmul2`, kind: 'matmul', heads: b.heads, input: 'post-softmax' },
        b.fc1.point,
        { ...b.fc2.point, input: 'post-gelu' },
      );
    }
  }
  points.push(head.point);
  return points;
}
