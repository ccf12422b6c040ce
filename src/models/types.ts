/** What every model family shares: its architecture description, quantization points and forward pass. */
import type { Runner } from '../tensor/runner.js';
import type { Tensor } from '../tensor/tensor.js';

export interface VitArch {
  family: 'vit' | 'deit-distilled';
  imgSize: number;
  patchSize: number;
  inChans: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  qkvBias: boolean;
  numClasses: number;
}

export interface SwinArch {
  family: 'swin';
  imgSize: number;
  patchSize: number;
  inChans: number;
  embedDim: number;
  depths: number[];
  numHeads: number[];
  windowSize: number;
  mlpRatio: number;
  qkvBias: boolean;
  numClasses: number;
}

export type Arch = VitArch | SwinArch;

/** timm's eval transform: resize the shorter side to inputSize/cropPct (bicubic), center crop, normalize. */
export interface Preprocess {
  inputSize: number;
  cropPct: number;
  interpolation: 'bicubic' | 'bilinear';
  mean: [number, number, number];
  std: [number, number, number];
}

export interface ModelSpec {
  name: string;
  /** timm class name this spec describes, e.g. "VisionTransformer". */
  timmClass: string;
  arch: Arch;
  preprocess: Preprocess;
  /** Class names by class index (from a hub folder's label_names), for reports and export. */
  labelNames?: string[];
}

/**
 * Where the method quantizes: a linear layer (weight + input), the patch-embedding conv (weight per
 * output channel, image input left in float), or one of the two attention products (both operands).
 */
export type QuantPointKind = 'linear' | 'conv' | 'matmul';

export interface QuantPoint {
  name: string;
  kind: QuantPointKind;
  /** For linear/conv: the checkpoint tensor names of the weight and bias. */
  weight?: string;
  bias?: string;
  /** Linear: output rows fall into this many groups with their own weight scale (3 for q, k, v). */
  weightGroups?: number;
  /** Matmul: attention heads (operands are [images·windows·heads, rows, cols], head fastest). */
  heads?: number;
  /** Matmul: b is given transposed (q·kᵀ). */
  transB?: boolean;
  /** What feeds the quantized input: the post-GELU activation (fc2) or the post-softmax matrix (softmax·v). */
  input?: 'post-gelu' | 'post-softmax';
  /**
   * Linear: the LayerNorm (checkpoint prefix) whose output is this layer's input, moved between tokens but never
   * mixed across channels — so dividing the norm's γ, β by s and multiplying the weight's input columns by s
   * leaves the model unchanged (channel smoothing, src/quant/smooth.ts).
   */
  inputNorm?: string;
}

/** The runner interface lives with the kernels (src/tensor/runner.ts); re-exported for model code. */
export type { Runner } from '../tensor/runner.js';

export interface VisionModel {
  readonly spec: ModelSpec;
  readonly quantPoints: readonly QuantPoint[];
  /** images: normalized [B, C, H, W] → logits [B, numClasses]. */
  forward(images: Tensor, runner?: Runner): Promise<Tensor>;
  /**
   * The same forward pass as a chain of segments (the embedding, each block, the head), so calibration can
   * keep the activations and ∂L/∂ at segment boundaries and recompute only the blocks a group needs.
   * Optional: without it, calibration records with whole forward passes.
   */
  readonly segments?: ForwardSegments;
}

/** forward(images) = run(count − 1, … run(1, run(0, images))): segment 0 takes the images, the last returns the logits. */
export interface ForwardSegments {
  readonly count: number;
  run(index: number, x: Tensor, runner: Runner): Promise<Tensor>;
}
