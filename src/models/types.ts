/** What every model family shares: its architecture description, quantization points and forward pass. */
import type { Activation } from '../tensor/activation.js';
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
  /**
   * timm VisionTransformer's optional parts (vit.ts), each absent when it has timm's default value — so a plain
   * ViT's spec, card and file metadata stay as they were. `vitVariant(arch)` resolves the defaults.
   */
  classToken?: boolean;
  /** Register tokens after the class token (DINOv2 "reg4"). */
  regTokens?: number;
  /** pos_embed covers the patches only; the prefix tokens get none (DeiT III, DINOv2 reg). */
  noEmbedClass?: boolean;
  globalPool?: VitGlobalPool;
  /** LayerNorm after the pool instead of before it (resolved: timm's fc_norm=None rule already applied). */
  fcNorm?: boolean;
  finalNorm?: boolean;
  /** norm_pre after the position embedding; the patch embedding has no bias (CLIP). */
  preNorm?: boolean;
  /** LayerScale (ls1/ls2.gamma) in every block; the value is timm's init_values (only its presence matters here). */
  initValues?: number;
  activation?: Activation;
  /** eps of every LayerNorm (timm's default 1e-6; CLIP's nn.LayerNorm 1e-5). */
  normEps?: number;
  /** LayerNorm over head_dim on q and k (attn.q_norm / attn.k_norm). */
  qkNorm?: boolean;
  /** Bias on attn.proj and on mlp.fc1 / fc2. */
  projBias?: boolean;
  /** LayerNorm before attn.proj (attn.norm) / before mlp.fc2 (mlp.norm). */
  scaleAttnNorm?: boolean;
  scaleMlpNorm?: boolean;
  /**
   * What the head reads instead of timm's global_pool: cat(cls, mean of the patch tokens) — transformers'
   * Dinov2ForImageClassification, whose head is Linear(2·D, classes). Absent: timm's global_pool.
   */
  headPool?: 'token+patch-mean';
}

/** timm's global_pool of a VisionTransformer we implement ('' and 'prr' are refused, config.ts); 'map' = AttentionPoolLatent. */
export type VitGlobalPool = 'token' | 'avg' | 'max' | 'avgmax' | 'map';

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

/**
 * timm's SwinTransformerV2: Swin's geometry, plus the window each stage was pre-trained with (0: the current
 * window), which scales the continuous position bias's coordinate table.
 */
export interface SwinV2Arch extends Omit<SwinArch, 'family'> {
  family: 'swinv2';
  pretrainedWindowSizes: number[];
}

/** timm's MlpMixer: patch stem, blocks of token-mixing and channel-mixing MLPs, mean over tokens, head. */
export interface MixerArch {
  family: 'mixer';
  imgSize: number;
  patchSize: number;
  inChans: number;
  embedDim: number;
  /** timm's `num_blocks`. */
  depth: number;
  /** timm's `mlp_ratio` as (tokens, channels): hidden widths int(r·embed_dim) of the two MLPs of a block. */
  mlpRatio: [number, number];
  numClasses: number;
}

/** timm's Beit (BEiT, BEiT v2): ViT blocks with relative position bias, q/v biases and LayerScale, avg pool + fc_norm. */
export interface BeitArch {
  family: 'beit';
  imgSize: number;
  patchSize: number;
  inChans: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  /** q_bias and v_bias (the qkv projection itself has no bias). */
  qkvBias: boolean;
  /** timm's `init_values`: gamma_1/gamma_2 exist when it is non-zero (its value only initializes them). */
  initValues: number | null;
  /** An absolute `pos_embed` [1, 1 + patches, D] added after the class token is prepended. */
  useAbsPosEmb: boolean;
  /** A relative position bias table per block (attn.relative_position_bias_table). */
  useRelPosBias: boolean;
  numClasses: number;
}

export type Arch = VitArch | SwinArch | SwinV2Arch | MixerArch | BeitArch;

/** A timm VisionTransformer(Distilled) architecture: narrows an Arch without listing the other families. */
export function isVitArch(a: Arch): a is VitArch {
  return a.family === 'vit' || a.family === 'deit-distilled';
}

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
  /**
   * A transformers image processor's steps (from preprocessor_config.json, src/models/hfprocessor.ts): when set,
   * evalTransform runs these instead of timm's transform (inputSize, interpolation, mean and std still apply).
   */
  hfProcessor?: HfImageProcessor;
}

/** transformers' BaseImageProcessor steps, in its order: resize → center crop → rescale → normalize. */
export interface HfImageProcessor {
  /** Resize to exactly height×width (aspect not kept), or the shorter edge to `shortestEdge` (long edge truncated); null: none. */
  resize: { height: number; width: number } | { shortestEdge: number } | null;
  /** Center crop at top = floor((H − h) / 2), left = floor((W − w) / 2) (zero padding when smaller); null: none. */
  centerCrop: { height: number; width: number } | null;
  /** x = uint8 · rescaleFactor (in float64, stored as float32); null: the raw 0…255 values. */
  rescaleFactor: number | null;
  /** (x − mean) / std in float32. */
  normalize: boolean;
}

/** Where a spec came from when it was read from a Hugging Face transformers folder: export reproduces it. */
export interface TransformersOrigin {
  modelType: string;
  /** config.json as read (id2label, architectures, …). */
  config: Record<string, unknown>;
  /** preprocessor_config.json as read. */
  preprocessorConfig: Record<string, unknown>;
}

export interface ModelSpec {
  name: string;
  /** timm class name this spec describes, e.g. "VisionTransformer". */
  timmClass: string;
  arch: Arch;
  preprocess: Preprocess;
  /** Class names by class index (from a hub folder's label_names), for reports and export. */
  labelNames?: string[];
  /** Set when the model was read from a transformers folder (model_type, config.json, preprocessor_config.json). */
  transformers?: TransformersOrigin;
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
  /** post-gelu: which activation (absent = exact GELU); the twin quantizer's negative range follows its minimum. */
  activation?: Activation;
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
