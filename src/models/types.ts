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
  /** 0: a backbone without classifier (timm's num_classes=0), whose output is the pooled embedding. */
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

/** `numClasses === 0` marks an embedding model: no classifier, forward gives the pooled (normed) features. */
export function isEmbeddingModel(arch: Arch): boolean {
  return arch.numClasses === 0;
}

/** Width of the pooled features: the classifier's input, and an embedding model's output (a staged model doubles it per stage). */
export function featureDim(arch: Arch): number {
  return 'depths' in arch ? arch.embedDim * 2 ** (arch.depths.length - 1) : arch.embedDim;
}

/** Width of the model's output: numClasses logits, or the embedding of a model without classifier. */
export function outputDim(arch: Arch): number {
  return isEmbeddingModel(arch) ? featureDim(arch) : arch.numClasses;
}

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
  /** images: normalized [B, C, H, W] → logits [B, numClasses], or the embedding [B, featureDim] when numClasses is 0. */
  forward(images: Tensor, runner?: Runner): Promise<Tensor>;
}
