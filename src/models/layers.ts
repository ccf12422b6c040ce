/**
 * The building blocks ViT, DeiT and Swin share, in the spirit of timm's `layers`: LayerNorm, the
 * patch embedding, the MLP and multi-head attention. Each block loads its own parameters (shape-checked),
 * runs its forward pass through a Runner (products, by quantization point) and Kernels (everything else),
 * and lists its own quantization points — a model's points are its blocks' points in forward order, so
 * the list can never drift from the forward pass.
 */
import type { Activation } from '../tensor/activation.js';
import { fastKernels, type Kernels } from '../tensor/kernels.js';
import { channelScaleOp, mergeHeadsOp, splitHeadsOp, unfoldPatchesOp, type LayoutOp } from '../tensor/layout.js';
import type { Runner } from '../tensor/runner.js';
import { Ptq4vitError } from '../errors.js';
import { shapeString, Tensor } from '../tensor/tensor.js';
import type { ForwardSegments, ModelSpec, QuantPoint } from './types.js';
import type { Linear, WeightReader } from './weights.js';

export function kernelsOf(runner: Runner): Kernels {
  return runner.kernels ?? fastKernels;
}

/** One step of a forward pass cut into segments: the previous segment's output in, this one's out. */
export type SegmentStep = (runner: Runner, x: Tensor) => Promise<Tensor>;

/** A forward pass as its chain of segments (the embedding, each block, the head), for calibration's block recompute. */
export function segmentChain(steps: readonly SegmentStep[]): ForwardSegments {
  return { count: steps.length, run: (index, x, runner) => steps[index](runner, x) };
}

/** Refuses a batch other than the model's input [B, in_chans, img_size, img_size], naming the model. */
export function checkImageBatch(spec: ModelSpec, images: Tensor): void {
  const { inChans, imgSize } = spec.arch;
  const s = images.shape;
  if (images.rank !== 4 || s[1] !== inChans || s[2] !== imgSize || s[3] !== imgSize) {
    throw new Ptq4vitError(`${spec.name}: expected images [B, ${inChans}, ${imgSize}, ${imgSize}], got ${shapeString(s)}`);
  }
}

/** forward(images) = the segments run in order. */
export async function runSegments(segments: ForwardSegments, images: Tensor, runner: Runner): Promise<Tensor> {
  let x = images;
  for (let s = 0; s < segments.count; s++) x = await segments.run(s, x, runner);
  return x;
}

/** y = x·Wᵀ + b through the runner, under the layer's quantization point. */
export function applyLinear(runner: Runner, layer: Linear, x: Tensor): Promise<Tensor> {
  return runner.linear(layer.point.name, x, layer.weight, layer.bias);
}

/** timm's Mlp width: int(in_features · mlp_ratio) — truncation, in ViT and Swin alike. */
export function mlpHiddenWidth(features: number, mlpRatio: number): number {
  return Math.floor(features * mlpRatio);
}

/** Records on `layer`'s point that its input is `norm`'s output, channel for channel (QuantPoint.inputNorm). */
export function feedsFrom(layer: Linear, norm: LayerNorm): void {
  layer.point.inputNorm = norm.name;
}

export class LayerNorm {
  readonly weight: Tensor;
  readonly bias: Tensor;

  constructor(reader: WeightReader, readonly name: string, features: number, readonly eps: number) {
    this.weight = reader.tensor(`${name}.weight`, [features]);
    this.bias = reader.tensor(`${name}.bias`, [features]);
  }

  forward(k: Kernels, x: Tensor): Promise<Tensor> {
    return k.layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/**
 * LayerScale: a residual branch's output times a learned per-channel γ before it is added back
 * (timm's `ls1.gamma`/`ls2.gamma` in DeiT III and DINOv2, `gamma_1`/`gamma_2` in BEiT). `tensor` is the
 * checkpoint name of γ.
 */
export class LayerScale {
  readonly gamma: Tensor;
  private readonly op: LayoutOp;

  constructor(reader: WeightReader, readonly tensor: string, features: number) {
    this.gamma = reader.tensor(tensor, [features]);
    this.op = channelScaleOp(this.gamma);
  }

  forward(k: Kernels, x: Tensor): Tensor {
    return k.layout(this.op, [x]);
  }
}

/**
 * A kernel = stride = p conv, run as unfold + linear (weight [D, C·p·p], quantized per output channel;
 * its image input stays float, as the authors do), optionally followed by a LayerNorm (Swin).
 */
export class PatchEmbed {
  readonly proj: Linear;
  readonly norm: LayerNorm | null;
  private readonly unfold: LayoutOp;

  /** `normEps`: followed by a LayerNorm `${name}.norm` with this eps (Swin). `bias: false`: the conv has none (CLIP's pre_norm). */
  constructor(reader: WeightReader, name: string, options: { inChans: number; embedDim: number; patch: number; normEps?: number; bias?: boolean }) {
    this.proj = reader.patchConv(`${name}.proj`, options.embedDim, options.inChans, options.patch, options.bias ?? true);
    this.norm = options.normEps === undefined ? null : new LayerNorm(reader, `${name}.norm`, options.embedDim, options.normEps);
    this.unfold = unfoldPatchesOp(options.patch);
  }

  get points(): QuantPoint[] {
    return [this.proj.point];
  }

  /** [B, C, H, W] → tokens [B, (H/p)·(W/p), D]. */
  async forward(runner: Runner, images: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    const embedded = await applyLinear(runner, this.proj, k.layout(this.unfold, [images]));
    return this.norm ? this.norm.forward(k, embedded) : embedded;
  }
}

/** timm Mlp's optional parts (ViT kwargs act_layer, proj_bias, scale_mlp_norm). */
export interface MlpOptions {
  /** Default exact GELU. */
  activation?: Activation;
  /** Biases on fc1 and fc2 (default true). */
  bias?: boolean;
  /** A LayerNorm `${name}.norm` with this eps between the activation and fc2 (scale_mlp_norm). */
  normEps?: number;
  /** The hidden width when it is not int(features · mlpRatio) (MLP-Mixer's token MLP: int(r · embed_dim)). */
  hidden?: number;
}

/**
 * fc1 → GELU → fc2; fc2's input is the post-GELU activation PTQ4ViT quantizes with a twin quantizer (its
 * negative range follows the activation's minimum). With scale_mlp_norm a LayerNorm sits between them, and
 * fc2's input is a norm's output instead.
 */
export class Mlp {
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly activation: Activation;
  readonly norm: LayerNorm | null;

  constructor(reader: WeightReader, name: string, features: number, mlpRatio: number, options: MlpOptions = {}) {
    const hidden = options.hidden ?? mlpHiddenWidth(features, mlpRatio);
    const bias = options.bias ?? true;
    this.activation = options.activation ?? 'gelu';
    this.fc1 = reader.linear(`${name}.fc1`, hidden, features, bias);
    this.norm = options.normEps === undefined ? null : new LayerNorm(reader, `${name}.norm`, hidden, options.normEps);
    this.fc2 = reader.linear(`${name}.fc2`, features, hidden, bias);
    if (this.norm) feedsFrom(this.fc2, this.norm);
    else {
      this.fc2.point.input = 'post-gelu';
      if (this.activation !== 'gelu') this.fc2.point.activation = this.activation;
    }
  }

  get points(): QuantPoint[] {
    return [this.fc1.point, this.fc2.point];
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    let hidden = await k.gelu(await applyLinear(runner, this.fc1, x), this.activation);
    if (this.norm) hidden = await this.norm.forward(k, hidden);
    return applyLinear(runner, this.fc2, hidden);
  }
}

export interface AttentionOptions {
  features: number;
  heads: number;
  qkvBias: boolean;
  /**
   * Where head_dim^-½ is applied: to the scores inside the softmax (timm's ViT; the PTQ4ViT reference
   * quantizes q·kᵀ before scaling) or to q before the product (timm's Swin, non-fused path).
   */
  scale: 'scores' | 'queries';
  /** Bias on the output projection (default true; ViT's proj_bias). */
  projBias?: boolean;
  /** LayerNorms over head_dim on q and k (`${name}.q_norm` / `k_norm`, timm's qk_norm), with this eps. */
  qkNormEps?: number;
  /** A LayerNorm `${name}.norm` before the output projection (timm's scale_attn_norm), with this eps. */
  outNormEps?: number;
  /**
   * BEiT / Swin V2: separate `q_bias` and `v_bias` tensors and a bias-free qkv projection; the projection's
   * effective bias is cat(q_bias, 0, v_bias), added as the qkv point's bias (so its recorded output includes it).
   * `qkvBias` is then ignored.
   */
  qvBias?: boolean;
}

/**
 * Multi-head self-attention over [G, N, C] (G = images, or images·windows): fused qkv projection (one
 * weight Δ each for q, k, v), the two attention products as quantization points
 *   `${name}.matmul1` = q·kᵀ            (both operands per head)
 *   `${name}.matmul2` = softmax(·)·v    (post-softmax operand: twin quantizer)
 * and the output projection.
 */
export class Attention {
  readonly qkv: Linear;
  readonly proj: Linear;
  readonly heads: number;
  private readonly scale: number;
  private readonly scaleScores: boolean;
  private readonly split: [LayoutOp, LayoutOp, LayoutOp];
  private readonly merge: LayoutOp;
  readonly qNorm: LayerNorm | null;
  readonly kNorm: LayerNorm | null;
  readonly outNorm: LayerNorm | null;

  constructor(reader: WeightReader, readonly name: string, options: AttentionOptions) {
    const { features, heads } = options;
    this.heads = heads;
    this.qkv = options.qvBias ? qkvWithQvBias(reader, name, features) : reader.linear(`${name}.qkv`, 3 * features, features, options.qkvBias);
    this.qkv.point.weightGroups = 3;
    const headDim = features / heads;
    const qk = options.qkNormEps;
    // timm normalizes q before any scaling: only the 'scores' placement keeps that order.
    if (qk !== undefined && options.scale !== 'scores') throw new Error(`${name}: q/k norms need the scale applied to the scores`);
    this.qNorm = qk === undefined ? null : new LayerNorm(reader, `${name}.q_norm`, headDim, qk);
    this.kNorm = qk === undefined ? null : new LayerNorm(reader, `${name}.k_norm`, headDim, qk);
    this.outNorm = options.outNormEps === undefined ? null : new LayerNorm(reader, `${name}.norm`, features, options.outNormEps);
    this.proj = reader.linear(`${name}.proj`, features, features, options.projBias ?? true);
    if (this.outNorm) feedsFrom(this.proj, this.outNorm);
    this.scale = (features / heads) ** -0.5;
    this.scaleScores = options.scale === 'scores';
    const factor = this.scaleScores ? 1 : this.scale;
    this.split = [
      splitHeadsOp({ heads, part: 0, parts: 3, factor }),
      splitHeadsOp({ heads, part: 1, parts: 3 }),
      splitHeadsOp({ heads, part: 2, parts: 3 }),
    ];
    this.merge = mergeHeadsOp(heads);
  }

  get points(): QuantPoint[] {
    return [
      this.qkv.point,
      this.proj.point,
      { name: `${this.name}.matmul1`, kind: 'matmul', heads: this.heads, transB: true },
      { name: `${this.name}.matmul2`, kind: 'matmul', heads: this.heads, input: 'post-softmax' },
    ];
  }

  /** x [G, N, C] → [G, N, C]; `scoreBias` (Swin's relative position bias + mask) repeats over the scores. */
  async forward(runner: Runner, x: Tensor, scoreBias?: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    const packed = await applyLinear(runner, this.qkv, x);
    let [q, key, value] = this.split.map((op) => k.layout(op, [packed]));
    // q_norm / k_norm act on [G·heads, N, head_dim]: the norm's last axis is head_dim.
    if (this.qNorm) q = await this.qNorm.forward(k, q);
    if (this.kNorm) key = await this.kNorm.forward(k, key);
    const scores = await runner.matmul(`${this.name}.matmul1`, q, key, true); // [G·heads, N, N]
    const probs = await k.softmax(scores, this.scaleScores ? this.scale : 1, scoreBias);
    const context = await runner.matmul(`${this.name}.matmul2`, probs, value, false); // [G·heads, N, d]
    let merged = k.layout(this.merge, [context]);
    if (this.outNorm) merged = await this.outNorm.forward(k, merged);
    return applyLinear(runner, this.proj, merged);
  }
}

/** A bias-free qkv projection carrying cat(q_bias, 0, v_bias) as its bias (timm's BEiT / Swin V2 Attention). */
export function qkvWithQvBias(reader: WeightReader, name: string, features: number): Linear {
  const qkv = reader.linear(`${name}.qkv`, 3 * features, features, false);
  const bias = new Float32Array(3 * features);
  bias.set(reader.tensor(`${name}.q_bias`, [features]).data, 0);
  bias.set(reader.tensor(`${name}.v_bias`, [features]).data, 2 * features);
  return { ...qkv, bias: new Tensor(bias, [3 * features]) };
}

export interface PreNormBlockOptions {
  features: number;
  /** eps of norm1 and norm2. */
  eps: number;
  attention: Omit<AttentionOptions, 'features'>;
  mlpRatio: number;
  mlp?: MlpOptions;
  /** Checkpoint names of the two residual branches' LayerScale γ (timm `ls1.gamma`/`ls2.gamma`, BEiT `gamma_1`/`gamma_2`), if any. */
  layerScale?: readonly [string, string];
  /** Added to every attention score matrix (BEiT's relative position bias per head). */
  scoreBias?: Tensor;
}

/**
 * timm's pre-norm transformer block, with its optional parts (ViT, DeiT III, DINOv2, CLIP, SigLIP, BEiT):
 *   x = x + γ₁ ⊙ attn(norm1(x))  ;  x = x + γ₂ ⊙ mlp(norm2(x))
 * (γ: LayerScale, where present; the attention's score bias: BEiT's relative position bias).
 */
export class PreNormBlock {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  readonly ls1: LayerScale | null;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  readonly ls2: LayerScale | null;
  private readonly scoreBias: Tensor | undefined;

  constructor(reader: WeightReader, name: string, o: PreNormBlockOptions) {
    const D = o.features;
    this.norm1 = new LayerNorm(reader, `${name}.norm1`, D, o.eps);
    this.attn = new Attention(reader, `${name}.attn`, { features: D, ...o.attention });
    this.ls1 = o.layerScale ? new LayerScale(reader, `${name}.${o.layerScale[0]}`, D) : null;
    this.norm2 = new LayerNorm(reader, `${name}.norm2`, D, o.eps);
    this.mlp = new Mlp(reader, `${name}.mlp`, D, o.mlpRatio, o.mlp);
    this.ls2 = o.layerScale ? new LayerScale(reader, `${name}.${o.layerScale[1]}`, D) : null;
    this.scoreBias = o.scoreBias;
    feedsFrom(this.attn.qkv, this.norm1);
    feedsFrom(this.mlp.fc1, this.norm2);
  }

  get points(): QuantPoint[] {
    return [...this.attn.points, ...this.mlp.points];
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    let branch = await this.attn.forward(runner, await this.norm1.forward(k, x), this.scoreBias);
    if (this.ls1) branch = this.ls1.forward(k, branch);
    x = k.add(x, branch);
    branch = await this.mlp.forward(runner, await this.norm2.forward(k, x));
    if (this.ls2) branch = this.ls2.forward(k, branch);
    return k.add(x, branch);
  }
}
