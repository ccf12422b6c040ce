/**
 * Model specs from a JSON card (`timm_class` + `timm_kwargs` + mean/std + input size, as in
 * shared/models/*.json) or from the name of a standard timm model with its real preprocessing.
 */
import fs from 'node:fs';
import { Ptq4vitError } from '../errors.js';
import { describeFsError } from '../io/safetensors.js';
import { ACTIVATIONS } from '../tensor/activation.js';
import { preprocessFromHfProcessor } from './hfprocessor.js';
import { isVitArch, type Arch, type BeitArch, type MixerArch, type ModelSpec, type Preprocess, type TransformersOrigin, type VitArch } from './types.js';

const IMAGENET_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [number, number, number] = [0.229, 0.224, 0.225];
const HALF: [number, number, number] = [0.5, 0.5, 0.5];

type Kwargs = Record<string, unknown>;

/** timm kwargs that only matter for training, or that equal what we implement. */
const INFERENCE_NEUTRAL = new Set(['drop_rate', 'drop_path_rate', 'attn_drop_rate', 'proj_drop_rate', 'pos_drop_rate', 'patch_drop_rate']);

const VIT_KWARGS = new Set(['img_size', 'patch_size', 'in_chans', 'num_classes', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio', 'qkv_bias', 'global_pool', 'class_token']);
/** The optional parts of timm's VisionTransformer we implement (vitVariantFromTimm), and kwargs accepted at their default. */
const VIT_VARIANT_KWARGS = [
  'init_values', 'reg_tokens', 'no_embed_class', 'fc_norm', 'final_norm', 'pre_norm', 'act_layer', 'qk_norm', 'proj_bias', 'scale_attn_norm', 'scale_mlp_norm',
  'pos_embed', 'pool_include_prefix', 'dynamic_img_size', 'dynamic_img_pad', 'weight_init', 'fix_init',
];
const SWIN_KWARGS = new Set(['img_size', 'patch_size', 'in_chans', 'num_classes', 'embed_dim', 'depths', 'num_heads', 'window_size', 'mlp_ratio', 'qkv_bias', 'global_pool']);
const SWINV2_KWARGS = new Set([...SWIN_KWARGS, 'pretrained_window_sizes', 'always_partition', 'strict_img_size']);
const MIXER_KWARGS = new Set(['img_size', 'patch_size', 'in_chans', 'num_classes', 'embed_dim', 'num_blocks', 'mlp_ratio', 'stem_norm', 'global_pool', 'nlhb']);
const BEIT_KWARGS = new Set([
  'img_size', 'patch_size', 'in_chans', 'num_classes', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio', 'qkv_bias', 'global_pool',
  'init_values', 'use_abs_pos_emb', 'use_rel_pos_bias', 'use_shared_rel_pos_bias', 'swiglu_mlp', 'scale_mlp', 'head_init_scale',
]);

/**
 * Largest integer kwarg we accept (depth, widths, classes…): far above any timm model, and small enough
 * that no count a card gives (1e308 is an integer too) can reach an array length limit before the
 * checkpoint's tensors are compared with it.
 */
export const MAX_KWARG_INT = 1_000_000;

function kwargsReader(kwargs: Kwargs, where: string, allowed: Set<string>) {
  for (const key of Object.keys(kwargs)) {
    if (!allowed.has(key) && !INFERENCE_NEUTRAL.has(key)) {
      throw new Ptq4vitError(`${where}: timm_kwargs.${key} is not supported (supported: ${[...allowed].join(', ')})`);
    }
  }
  const positiveInt = (key: string, fallback?: number): number => {
    const v = kwargs[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new Ptq4vitError(`${where}: timm_kwargs.${key} must be a positive integer, got ${JSON.stringify(kwargs[key])}`);
    }
    if (v > MAX_KWARG_INT) throw new Ptq4vitError(`${where}: timm_kwargs.${key} ${v} is larger than the ${MAX_KWARG_INT} supported`);
    return v;
  };
  /** A class count: 0 means no classifier (timm's `num_classes=0`: head = Identity, the pooled embedding out). */
  const classCount = (key: string, fallback: number): number => {
    const v = kwargs[key] ?? fallback;
    if (v === 0) return 0;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      throw new Ptq4vitError(`${where}: timm_kwargs.${key} must be a positive integer, or 0 for a backbone without classifier, got ${JSON.stringify(kwargs[key])}`);
    }
    return positiveInt(key, fallback);
  };
  const intList = (key: string, fallback?: number[]): number[] => {
    const v = kwargs[key] ?? fallback;
    if (!Array.isArray(v) || v.length === 0 || v.some((d) => !Number.isInteger(d) || d <= 0)) {
      throw new Ptq4vitError(`${where}: timm_kwargs.${key} must be a list of positive integers, got ${JSON.stringify(kwargs[key])}`);
    }
    if (v.length > 64 || v.some((d) => d > MAX_KWARG_INT)) throw new Ptq4vitError(`${where}: timm_kwargs.${key} ${JSON.stringify(v).slice(0, 80)} is larger than supported (at most 64 entries of at most ${MAX_KWARG_INT})`);
    return v as number[];
  };
  const number = (key: string, fallback: number): number => {
    const v = kwargs[key] ?? fallback;
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw new Ptq4vitError(`${where}: timm_kwargs.${key} must be a positive number, got ${JSON.stringify(kwargs[key])}`);
    return v;
  };
  const boolean = (key: string, fallback: boolean): boolean => {
    const v = kwargs[key] ?? fallback;
    if (typeof v !== 'boolean') throw new Ptq4vitError(`${where}: timm_kwargs.${key} must be true or false, got ${JSON.stringify(kwargs[key])}`);
    return v;
  };
  const exact = (key: string, expected: unknown): void => {
    if (key in kwargs && kwargs[key] !== expected) {
      throw new Ptq4vitError(`${where}: timm_kwargs.${key} = ${JSON.stringify(kwargs[key])} is not supported (only ${JSON.stringify(expected)})`);
    }
  };
  /** One of `choices` (null = the fallback, as timm's None). */
  const oneOf = <T extends string>(key: string, choices: readonly T[], fallback: T, unsupported: Record<string, string> = {}): T => {
    const v = kwargs[key] ?? fallback;
    if (typeof v === 'string' && v in unsupported) throw new Ptq4vitError(`${where}: timm_kwargs.${key} = ${JSON.stringify(v)} is not supported (${unsupported[v]}; supported: ${choices.map((c) => JSON.stringify(c)).join(', ')})`);
    if (!choices.includes(v as T)) throw new Ptq4vitError(`${where}: timm_kwargs.${key} must be one of ${choices.map((c) => JSON.stringify(c)).join(', ')}, got ${JSON.stringify(kwargs[key])}`);
    return v as T;
  };
  const nonNegativeInt = (key: string, fallback: number): number => {
    const v = kwargs[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_KWARG_INT) {
      throw new Ptq4vitError(`${where}: timm_kwargs.${key} must be a non-negative integer, got ${JSON.stringify(kwargs[key])}`);
    }
    return v;
  };
  /** A finite number, or null/absent (timm's None). */
  const optionalNumber = (key: string): number | null => {
    const v = kwargs[key] ?? null;
    if (v !== null && (typeof v !== 'number' || !Number.isFinite(v))) throw new Ptq4vitError(`${where}: timm_kwargs.${key} must be a number or null, got ${JSON.stringify(kwargs[key])}`);
    return v;
  };
  /** true/false, or null/absent (timm's None). */
  const optionalBoolean = (key: string): boolean | null => {
    const v = kwargs[key] ?? null;
    if (v !== null && typeof v !== 'boolean') throw new Ptq4vitError(`${where}: timm_kwargs.${key} must be true, false or null, got ${JSON.stringify(kwargs[key])}`);
    return v;
  };
  return { positiveInt, classCount, intList, number, boolean, exact, oneOf, nonNegativeInt, optionalNumber, optionalBoolean };
}

/**
 * Largest input side we accept. timm's ViT/Swin checkpoints go up to 518 pixels; the bound keeps a bad
 * card or file metadata from asking for a multi-gigabyte image batch (the preprocessing allocates
 * 3·S² floats per image before any weight is read).
 */
export const MAX_IMG_SIZE = 2048;
/** ViT attention is tokens² per head and image: 4096 tokens (a 64×64 patch grid) is far beyond timm's models. */
export const MAX_VIT_TOKENS = 4096;

/** timm's eval crops use 0.875–1.0; below a quarter the resize before the crop grows out of proportion. */
export const MIN_CROP_PCT = 0.25;

/** Geometry every ViT needs: heads split the width evenly, patches tile the image, a bounded input. */
function checkVitArch<A extends Arch>(arch: A & { numHeads: number }, where: string): A {
  checkInput(arch, where);
  if (arch.embedDim % arch.numHeads !== 0) {
    throw new Ptq4vitError(`${where}: timm_kwargs.num_heads ${arch.numHeads} must divide timm_kwargs.embed_dim ${arch.embedDim} (each head gets embed_dim / num_heads channels)`);
  }
  const tokens = (arch.imgSize / arch.patchSize) ** 2;
  if (tokens > MAX_VIT_TOKENS) throw new Ptq4vitError(`${where}: timm_kwargs.img_size ${arch.imgSize} / patch_size ${arch.patchSize} gives ${tokens} patches, more than the ${MAX_VIT_TOKENS} supported`);
  return arch;
}

/** Swin: every stage's width (embed_dim·2^i) splits evenly into its heads, and every merge halves an even grid. */
function checkSwinArch(arch: Arch & { family: 'swin' | 'swinv2' }, where: string): Arch {
  checkInput(arch, where);
  let grid = arch.imgSize / arch.patchSize;
  for (let i = 0; i < arch.depths.length; i++) {
    if (i > 0) {
      if (grid % 2 !== 0) throw new Ptq4vitError(`${where}: timm_kwargs.img_size ${arch.imgSize}: stage ${i} would merge an odd ${grid}×${grid} patch grid (img_size / patch_size must be divisible by ${2 ** (arch.depths.length - 1)})`);
      grid /= 2;
    }
    const width = arch.embedDim * 2 ** i;
    if (width % arch.numHeads[i] !== 0) {
      throw new Ptq4vitError(`${where}: timm_kwargs.num_heads[${i}] = ${arch.numHeads[i]} must divide stage ${i}'s width ${width} (embed_dim ${arch.embedDim} × 2^${i})`);
    }
  }
  return arch;
}

/** MlpMixer's `mlp_ratio`: one number for both MLPs (timm's to_2tuple) or [tokens, channels]. */
function mixerRatios(v: unknown, where: string): [number, number] {
  const ratios = v === undefined ? [0.5, 4] : typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(ratios) || ratios.length !== 2 || ratios.some((r) => typeof r !== 'number' || !Number.isFinite(r) || !(r > 0) || r > MAX_KWARG_INT)) {
    throw new Ptq4vitError(`${where}: timm_kwargs.mlp_ratio must be a positive number or a list [tokens, channels] of two, got ${JSON.stringify(v)}`);
  }
  return [ratios[0], ratios[1]];
}

/** A bounded token count: the token-mixing MLP's weights and the attention maps grow with it. */
function checkPatchCount(arch: Arch, where: string): void {
  const tokens = (arch.imgSize / arch.patchSize) ** 2;
  if (tokens > MAX_VIT_TOKENS) throw new Ptq4vitError(`${where}: timm_kwargs.img_size ${arch.imgSize} / patch_size ${arch.patchSize} gives ${tokens} patches, more than the ${MAX_VIT_TOKENS} supported`);
}

function checkInput(arch: Arch, where: string): void {
  if (arch.imgSize > MAX_IMG_SIZE) throw new Ptq4vitError(`${where}: timm_kwargs.img_size ${arch.imgSize} is larger than the ${MAX_IMG_SIZE} supported`);
  if (arch.imgSize % arch.patchSize !== 0) {
    throw new Ptq4vitError(`${where}: timm_kwargs.img_size ${arch.imgSize} is not a multiple of timm_kwargs.patch_size ${arch.patchSize}`);
  }
}

/** timm's LayerNorm eps in VisionTransformer (norm_layer = partial(nn.LayerNorm, eps=1e-6)). */
export const VIT_NORM_EPS = 1e-6;

/** What a card or preset says besides the timm kwargs: the LayerNorm eps (norm_layer is a class, not JSON). */
export interface ArchExtras {
  /** A card's top-level `layer_norm_eps`, or a preset's family eps (CLIP: 1e-5). */
  layerNormEps?: unknown;
}

const GLOBAL_POOLS = ['token', 'avg', 'max', 'avgmax', 'map'] as const;
const UNSUPPORTED_POOLS: Record<string, string> = {
  '': 'no pooling gives per-token outputs, not one prediction per image',
  prr: 'AttentionPoolPrr is not implemented',
};
/** timm: fc_norm=None means "after the pool" for these pools. */
export const FC_NORM_POOLS: readonly string[] = ['avg', 'max', 'avgmax'];

/**
 * The optional parts of timm's VisionTransformer from its kwargs, with timm's rules: fc_norm = None means
 * "after the pool" for avg / max / avgmax; global_pool 'token' needs the class token; pre_norm drops the patch
 * embedding's bias. Only values that differ from timm's defaults are kept (types.ts VitArch).
 */
function vitVariantFromTimm(k: ReturnType<typeof kwargsReader>, extras: ArchExtras, where: string): Partial<VitArch> {
  k.exact('pos_embed', 'learn');
  k.exact('pool_include_prefix', false);
  k.exact('dynamic_img_size', false);
  k.exact('dynamic_img_pad', false);
  const classToken = k.boolean('class_token', true);
  const regTokens = k.nonNegativeInt('reg_tokens', 0);
  const globalPool = k.oneOf('global_pool', GLOBAL_POOLS, 'token', UNSUPPORTED_POOLS);
  if (globalPool === 'token' && !classToken) throw new Ptq4vitError(`${where}: timm_kwargs.global_pool "token" needs the class token, but timm_kwargs.class_token is false`);
  const poolRule = FC_NORM_POOLS.includes(globalPool);
  const fcNorm = k.optionalBoolean('fc_norm') ?? poolRule;
  const initValues = k.optionalNumber('init_values');
  const activation = k.oneOf('act_layer', ACTIVATIONS, 'gelu', { swiglu: 'SwiGLU MLPs are not implemented', silu: 'only GELU-family activations', relu: 'only GELU-family activations' });
  const eps = extras.layerNormEps ?? VIT_NORM_EPS;
  if (typeof eps !== 'number' || !(eps > 0) || !(eps < 1)) throw new Ptq4vitError(`${where}: layer_norm_eps must be a number in (0, 1), got ${JSON.stringify(extras.layerNormEps)}`);
  const v: Partial<VitArch> = {};
  if (!classToken) v.classToken = false;
  if (regTokens > 0) v.regTokens = regTokens;
  if (k.boolean('no_embed_class', false)) v.noEmbedClass = true;
  if (globalPool !== 'token') v.globalPool = globalPool;
  if (fcNorm !== poolRule) v.fcNorm = fcNorm;
  if (!k.boolean('final_norm', true)) v.finalNorm = false;
  if (k.boolean('pre_norm', false)) v.preNorm = true;
  if (initValues) v.initValues = initValues; // timm: LayerScale only when init_values is truthy
  if (activation !== 'gelu') v.activation = activation;
  if (eps !== VIT_NORM_EPS) v.normEps = eps;
  if (k.boolean('qk_norm', false)) v.qkNorm = true;
  if (!k.boolean('proj_bias', true)) v.projBias = false;
  if (k.boolean('scale_attn_norm', false)) v.scaleAttnNorm = true;
  if (k.boolean('scale_mlp_norm', false)) v.scaleMlpNorm = true;
  return v;
}

/** What timm's SwinTransformer and SwinTransformerV2 share: the stage geometry, widths and window (global_pool avg only). */
function swinGeometry(k: ReturnType<typeof kwargsReader>, where: string) {
  k.exact('global_pool', 'avg');
  const depths = k.intList('depths', [2, 2, 6, 2]);
  const numHeads = k.intList('num_heads', [3, 6, 12, 24]);
  if (numHeads.length !== depths.length) {
    throw new Ptq4vitError(`${where}: timm_kwargs.num_heads has ${numHeads.length} entries but depths has ${depths.length}`);
  }
  return {
    imgSize: k.positiveInt('img_size', 224),
    patchSize: k.positiveInt('patch_size', 4),
    inChans: k.positiveInt('in_chans', 3),
    embedDim: k.positiveInt('embed_dim', 96),
    depths,
    numHeads,
    windowSize: k.positiveInt('window_size', 7),
    mlpRatio: k.number('mlp_ratio', 4),
    qkvBias: k.boolean('qkv_bias', true),
  };
}

/** The architecture a timm class + constructor kwargs describe (timm's defaults where a kwarg is absent). */
export function archFromTimm(timmClass: string, kwargs: Kwargs, where: string, extras: ArchExtras = {}): Arch {
  switch (timmClass) {
    case 'VisionTransformer':
    case 'VisionTransformerDistilled': {
      const distilled = timmClass === 'VisionTransformerDistilled';
      const k = kwargsReader(kwargs, where, distilled ? VIT_KWARGS : new Set([...VIT_KWARGS, ...VIT_VARIANT_KWARGS]));
      let variant: Partial<VitArch> = {};
      if (distilled) {
        k.exact('global_pool', 'token');
        k.exact('class_token', true);
        // transformers' DeiT (DeiTForImageClassificationWithTeacher) uses LayerNorm eps 1e-12.
        const eps = extras.layerNormEps ?? VIT_NORM_EPS;
        if (typeof eps !== 'number' || !(eps > 0) || !(eps < 1)) throw new Ptq4vitError(`${where}: layer_norm_eps must be a number in (0, 1), got ${JSON.stringify(extras.layerNormEps)}`);
        if (eps !== VIT_NORM_EPS) variant = { normEps: eps };
      } else variant = vitVariantFromTimm(k, extras, where);
      return checkVitArch({
        family: timmClass === 'VisionTransformer' ? 'vit' : 'deit-distilled',
        imgSize: k.positiveInt('img_size', 224),
        patchSize: k.positiveInt('patch_size', 16),
        inChans: k.positiveInt('in_chans', 3),
        embedDim: k.positiveInt('embed_dim', 768),
        depth: k.positiveInt('depth', 12),
        numHeads: k.positiveInt('num_heads', 12),
        mlpRatio: k.number('mlp_ratio', 4),
        qkvBias: k.boolean('qkv_bias', true),
        numClasses: k.classCount('num_classes', 1000),
        ...variant,
      }, where);
    }
    case 'SwinTransformer': {
      // timm's Swin uses nn.LayerNorm (eps 1e-5, swin.ts); a card asking for another eps is refused, not ignored.
      if (extras.layerNormEps !== undefined && extras.layerNormEps !== 1e-5) throw new Ptq4vitError(`${where}: layer_norm_eps ${JSON.stringify(extras.layerNormEps)} is not supported for SwinTransformer (only 1e-5)`);
      const k = kwargsReader(kwargs, where, SWIN_KWARGS);
      return checkSwinArch({ family: 'swin', ...swinGeometry(k, where), numClasses: k.classCount('num_classes', 1000) }, where);
    }
    case 'SwinTransformerV2': {
      const k = kwargsReader(kwargs, where, SWINV2_KWARGS);
      // timm ≥ 1.0 options we do not implement: windows at full size on small grids, dynamic masks.
      k.exact('always_partition', false);
      k.exact('strict_img_size', true);
      const geometry = swinGeometry(k, where);
      // One per stage; 0 = no pre-training window (the coordinate table is scaled by the window itself).
      const stages = geometry.depths.length;
      const pretrained = kwargs.pretrained_window_sizes ?? geometry.depths.map(() => 0);
      if (!Array.isArray(pretrained) || pretrained.length !== stages || pretrained.some((w) => !Number.isInteger(w) || w < 0 || w === 1 || w > MAX_KWARG_INT)) {
        throw new Ptq4vitError(`${where}: timm_kwargs.pretrained_window_sizes must list one window per stage (${stages}), each 0 (none) or an integer ≥ 2, got ${JSON.stringify(kwargs.pretrained_window_sizes)?.slice(0, 80)}`);
      }
      return checkSwinArch({ family: 'swinv2', ...geometry, numClasses: k.positiveInt('num_classes', 1000), pretrainedWindowSizes: pretrained as number[] }, where);
    }
    case 'MlpMixer': {
      const k = kwargsReader(kwargs, where, MIXER_KWARGS);
      k.exact('global_pool', 'avg');
      k.exact('stem_norm', false);
      k.boolean('nlhb', false); // head bias init only
      const arch: Arch = {
        family: 'mixer',
        imgSize: k.positiveInt('img_size', 224),
        patchSize: k.positiveInt('patch_size', 16),
        inChans: k.positiveInt('in_chans', 3),
        embedDim: k.positiveInt('embed_dim', 512),
        depth: k.positiveInt('num_blocks', 8),
        mlpRatio: mixerRatios(kwargs.mlp_ratio, where),
        numClasses: k.positiveInt('num_classes', 1000),
      };
      checkInput(arch, where);
      checkPatchCount(arch, where);
      return arch;
    }
    case 'Beit': {
      const k = kwargsReader(kwargs, where, BEIT_KWARGS);
      k.exact('global_pool', 'avg');
      k.exact('use_shared_rel_pos_bias', false);
      k.exact('swiglu_mlp', false);
      k.exact('scale_mlp', false);
      if ('head_init_scale' in kwargs) k.number('head_init_scale', 1); // init only
      const initValues = kwargs.init_values ?? null;
      if (initValues !== null && (typeof initValues !== 'number' || !Number.isFinite(initValues) || initValues < 0)) {
        throw new Ptq4vitError(`${where}: timm_kwargs.init_values must be a non-negative number or null, got ${JSON.stringify(kwargs.init_values)}`);
      }
      return checkVitArch({
        family: 'beit',
        imgSize: k.positiveInt('img_size', 224),
        patchSize: k.positiveInt('patch_size', 16),
        inChans: k.positiveInt('in_chans', 3),
        embedDim: k.positiveInt('embed_dim', 768),
        depth: k.positiveInt('depth', 12),
        numHeads: k.positiveInt('num_heads', 12),
        mlpRatio: k.number('mlp_ratio', 4),
        qkvBias: k.boolean('qkv_bias', true),
        initValues,
        useAbsPosEmb: k.boolean('use_abs_pos_emb', true),
        useRelPosBias: k.boolean('use_rel_pos_bias', false),
        numClasses: k.positiveInt('num_classes', 1000),
      }, where);
    }
    default:
      throw new Ptq4vitError(`${where}: unknown architecture timm_class ${JSON.stringify(timmClass)} (supported: VisionTransformer, VisionTransformerDistilled, SwinTransformer, SwinTransformerV2, MlpMixer, Beit)`);
  }
}

function triple(value: unknown, field: string, where: string): [number, number, number] {
  if (!Array.isArray(value) || value.length !== 3 || value.some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
    throw new Ptq4vitError(`${where}: ${field} must be a list of 3 numbers, got ${JSON.stringify(value)}`);
  }
  return value as [number, number, number];
}

/**
 * A model card. Preprocessing: `mean`, `std`, `input_size` [C, H, W] (square), optional `crop_pct`
 * (default 1.0: a card describes the images the model was trained on, so we resize to the input size
 * and do not crop, as the CIFAR cards' reference accuracies were measured) and `interpolation`.
 */
export function specFromCard(card: unknown, where: string): ModelSpec {
  if (typeof card !== 'object' || card === null || Array.isArray(card)) throw new Ptq4vitError(`${where}: a model card must be a JSON object`);
  const c = card as Record<string, unknown>;
  if (typeof c.timm_class !== 'string') throw new Ptq4vitError(`${where}: missing "timm_class" (e.g. "VisionTransformer")`);
  const kwargs = (c.timm_kwargs === undefined ? {} : c.timm_kwargs) as Kwargs;
  if (typeof kwargs !== 'object' || kwargs === null || Array.isArray(kwargs)) throw new Ptq4vitError(`${where}: "timm_kwargs" must be an object`);
  const arch = withCardExtras(archFromTimm(c.timm_class, kwargs, where, { layerNormEps: c.layer_norm_eps }), c, where);
  const inputSize = c.input_size === undefined ? [arch.inChans, arch.imgSize, arch.imgSize] : triple(c.input_size, 'input_size', where);
  if (inputSize[0] !== arch.inChans || inputSize[1] !== arch.imgSize || inputSize[2] !== arch.imgSize) {
    throw new Ptq4vitError(`${where}: input_size ${JSON.stringify(inputSize)} does not match the architecture's [${arch.inChans}, ${arch.imgSize}, ${arch.imgSize}]`);
  }
  const cropPct = c.crop_pct ?? 1.0;
  // The image is first resized to input_size / crop_pct: a tiny crop_pct would ask for a gigantic resize.
  if (typeof cropPct !== 'number' || !(cropPct >= MIN_CROP_PCT && cropPct <= 1)) throw new Ptq4vitError(`${where}: crop_pct must be in [${MIN_CROP_PCT}, 1], got ${JSON.stringify(c.crop_pct)}`);
  const interpolation = c.interpolation ?? 'bicubic';
  if (interpolation !== 'bicubic' && interpolation !== 'bilinear') throw new Ptq4vitError(`${where}: interpolation must be "bicubic" or "bilinear"`);
  const preprocess: Preprocess = {
    inputSize: arch.imgSize,
    cropPct,
    interpolation,
    mean: c.mean === undefined ? IMAGENET_MEAN : triple(c.mean, 'mean', where),
    std: c.std === undefined ? IMAGENET_STD : triple(c.std, 'std', where),
  };
  if (preprocess.std.some((s) => s <= 0)) throw new Ptq4vitError(`${where}: std values must be positive, got ${JSON.stringify(preprocess.std)}`);
  const labelNames = c.label_names === undefined ? undefined : classNames(c.label_names, arch.numClasses, where);
  const transformers = c.transformers === undefined ? undefined : transformersOrigin(c.transformers, where);
  if (transformers) {
    // A transformers folder's spec: its image processor is the preprocessing (src/models/hfprocessor.ts).
    Object.assign(preprocess, preprocessFromHfProcessor(transformers.preprocessorConfig, `${where}: transformers.preprocessor_config`));
    if (preprocess.inputSize !== arch.imgSize) throw new Ptq4vitError(`${where}: transformers.preprocessor_config gives ${preprocess.inputSize}×${preprocess.inputSize} inputs, the architecture takes ${arch.imgSize}`);
  }
  return { name: typeof c.name === 'string' ? c.name : c.timm_class, timmClass: c.timm_class, arch, preprocess, ...(labelNames ? { labelNames } : {}), ...(transformers ? { transformers } : {}) };
}

/**
 * A card field beyond timm's kwargs for a head transformers has and timm's constructor does not express:
 * `head_pool` "token+patch-mean" (the head on cat(cls, mean of the patch tokens), transformers'
 * Dinov2ForImageClassification). `layer_norm_eps` is read with the kwargs (archFromTimm's extras).
 */
function withCardExtras(arch: Arch, c: Record<string, unknown>, where: string): Arch {
  if (c.head_pool === undefined) return arch;
  if (c.head_pool !== 'token+patch-mean') throw new Ptq4vitError(`${where}: head_pool must be "token+patch-mean", got ${JSON.stringify(c.head_pool)}`);
  if (arch.family !== 'vit' || arch.globalPool !== undefined) throw new Ptq4vitError(`${where}: head_pool "token+patch-mean" needs timm_class VisionTransformer with global_pool "token"`);
  return { ...arch, headPool: c.head_pool };
}

/** A card's `transformers` block: { model_type, config, preprocessor_config } of the folder the model was read from. */
function transformersOrigin(v: unknown, where: string): TransformersOrigin {
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isObj(v) || typeof v.model_type !== 'string' || !isObj(v.config) || !isObj(v.preprocessor_config)) {
    throw new Ptq4vitError(`${where}: transformers must be {"model_type": string, "config": {...}, "preprocessor_config": {...}}`);
  }
  if (v.config.model_type !== v.model_type) throw new Ptq4vitError(`${where}: transformers.config.model_type ${JSON.stringify(v.config.model_type)} is not transformers.model_type ${JSON.stringify(v.model_type)}`);
  return { modelType: v.model_type, config: v.config, preprocessorConfig: v.preprocessor_config };
}

/** `label_names`: one name per class, by class index (a quantized file keeps a hub folder's names this way). */
function classNames(v: unknown, numClasses: number, where: string): string[] {
  if (!Array.isArray(v) || v.length !== numClasses || v.some((n) => typeof n !== 'string')) {
    throw new Ptq4vitError(`${where}: label_names must be a list of ${numClasses} class names (num_classes), got ${JSON.stringify(v)?.slice(0, 80)}`);
  }
  return v as string[];
}

const TIMM_CLASS: Record<Arch['family'], string> = { vit: 'VisionTransformer', 'deit-distilled': 'VisionTransformerDistilled', swin: 'SwinTransformer', swinv2: 'SwinTransformerV2', mixer: 'MlpMixer', beit: 'Beit' };

/**
 * The card describing a spec: specFromCard(cardFromSpec(s)) equals s. A quantized model file stores
 * its spec this way, so its metadata is read by the same checks as a card (snake_case, field named).
 */
export function cardFromSpec(spec: ModelSpec): Record<string, unknown> {
  const a = spec.arch;
  if (a.family === 'mixer' || a.family === 'beit') return cardWithKwargs(spec, mixerBeitKwargs(a));
  const common = { img_size: a.imgSize, patch_size: a.patchSize, in_chans: a.inChans, embed_dim: a.embedDim };
  const tail = { mlp_ratio: a.mlpRatio, qkv_bias: a.qkvBias, num_classes: a.numClasses };
  const kwargs = a.family === 'swin'
    ? { ...common, depths: [...a.depths], num_heads: [...a.numHeads], window_size: a.windowSize, ...tail }
    : a.family === 'swinv2'
      ? { ...common, depths: [...a.depths], num_heads: [...a.numHeads], window_size: a.windowSize, ...tail, pretrained_window_sizes: [...a.pretrainedWindowSizes] }
      : { ...common, depth: a.depth, num_heads: a.numHeads, ...tail, ...vitVariantKwargs(a) };
  return cardWithKwargs(spec, kwargs);
}

function cardWithKwargs(spec: ModelSpec, kwargs: Record<string, unknown>): Record<string, unknown> {
  const p = spec.preprocess;
  const a = spec.arch;
  return {
    name: spec.name,
    timm_class: TIMM_CLASS[a.family],
    timm_kwargs: kwargs,
    ...(isVitArch(a) && a.normEps !== undefined ? { layer_norm_eps: a.normEps } : {}),
    input_size: [a.inChans, p.inputSize, p.inputSize],
    mean: [...p.mean],
    std: [...p.std],
    crop_pct: p.cropPct,
    interpolation: p.interpolation,
    ...(spec.labelNames ? { label_names: [...spec.labelNames] } : {}),
    ...(isVitArch(a) && a.headPool !== undefined ? { head_pool: a.headPool } : {}),
    ...(spec.transformers ? { transformers: { model_type: spec.transformers.modelType, config: spec.transformers.config, preprocessor_config: spec.transformers.preprocessorConfig } } : {}),
  };
}

/** The kwargs of a ViT's optional parts (only those present: vitVariantFromTimm reads them back to the same arch). */
function vitVariantKwargs(a: VitArch): Record<string, unknown> {
  const kw: Record<string, unknown> = {};
  if (a.classToken !== undefined) kw.class_token = a.classToken;
  if (a.regTokens !== undefined) kw.reg_tokens = a.regTokens;
  if (a.noEmbedClass !== undefined) kw.no_embed_class = a.noEmbedClass;
  if (a.globalPool !== undefined) kw.global_pool = a.globalPool;
  if (a.fcNorm !== undefined) kw.fc_norm = a.fcNorm;
  if (a.finalNorm !== undefined) kw.final_norm = a.finalNorm;
  if (a.preNorm !== undefined) kw.pre_norm = a.preNorm;
  if (a.initValues !== undefined) kw.init_values = a.initValues;
  if (a.activation !== undefined) kw.act_layer = a.activation;
  if (a.qkNorm !== undefined) kw.qk_norm = a.qkNorm;
  if (a.projBias !== undefined) kw.proj_bias = a.projBias;
  if (a.scaleAttnNorm !== undefined) kw.scale_attn_norm = a.scaleAttnNorm;
  if (a.scaleMlpNorm !== undefined) kw.scale_mlp_norm = a.scaleMlpNorm;
  return kw;
}

/** MlpMixer's and Beit's timm_kwargs (num_blocks and the two Mixer ratios; BEiT's switches). */
function mixerBeitKwargs(a: MixerArch | BeitArch): Record<string, unknown> {
  const common = { img_size: a.imgSize, patch_size: a.patchSize, in_chans: a.inChans, embed_dim: a.embedDim };
  if (a.family === 'mixer') return { ...common, num_blocks: a.depth, mlp_ratio: [...a.mlpRatio], num_classes: a.numClasses };
  return {
    ...common, depth: a.depth, num_heads: a.numHeads, mlp_ratio: a.mlpRatio, qkv_bias: a.qkvBias, init_values: a.initValues,
    use_abs_pos_emb: a.useAbsPosEmb, use_rel_pos_bias: a.useRelPosBias, num_classes: a.numClasses,
  };
}

export function readCard(file: string): ModelSpec {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Ptq4vitError(`cannot read model card ${file}: ${describeFsError(e)}`);
  }
  let card: unknown;
  try {
    card = JSON.parse(text);
  } catch (e) {
    throw new Ptq4vitError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return specFromCard(card, file);
}

interface Preset {
  timmClass: string;
  kwargs: Kwargs;
  cropPct: number;
  mean: [number, number, number];
  std: [number, number, number];
  /** The family's LayerNorm eps when it is not timm's ViT default 1e-6 (CLIP: nn.LayerNorm, 1e-5). */
  layerNormEps?: number;
}

const vit = (embed_dim: number, depth: number, num_heads: number, extra: Kwargs = {}): Kwargs => ({ patch_size: 16, embed_dim, depth, num_heads, ...extra });
const swin = (embed_dim: number, depths: number[], num_heads: number[]): Kwargs => ({ patch_size: 4, window_size: 7, embed_dim, depths, num_heads });
/** timm's OPENAI_CLIP_MEAN / OPENAI_CLIP_STD. */
const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];
/** DeiT III (timm deit.py): LayerScale, position embeddings on the patches only. */
const deit3 = (embed_dim: number, depth: number, num_heads: number): Kwargs => vit(embed_dim, depth, num_heads, { no_embed_class: true, init_values: 1e-6 });
/**
 * DINOv2 (timm registers them at 518: the pretrained cfg's fixed input size). Registers: no_embed_class. The
 * pretrained weights have no classifier (num_classes 0); presets keep timm's 1000-class head for fine-tunes.
 */
const dinov2 = (embed_dim: number, num_heads: number, registers: boolean): Kwargs =>
  ({ patch_size: 14, embed_dim, depth: 12, num_heads, init_values: 1e-5, img_size: 518, ...(registers ? { reg_tokens: 4, no_embed_class: true } : {}) });
/** CLIP image towers: norm_pre after the position embedding (patch embedding without bias), nn.LayerNorm eps 1e-5. */
const clip = (extra: Kwargs = {}): Kwargs => vit(768, 12, 12, { pre_norm: true, ...extra });
/** timm's swinv2_* registrations (swin_transformer_v2.py): window, width, depths, heads, and the pre-training windows of the 192→ fine-tunes. */
const swinv2 = (img_size: number, window_size: number, embed_dim: number, depths: number[], num_heads: number[], pretrained_window_sizes?: number[]): Kwargs => ({
  img_size, patch_size: 4, window_size, embed_dim, depths, num_heads, ...(pretrained_window_sizes ? { pretrained_window_sizes } : {}),
});
type DepthsHeads = [number[], number[]];
const SWINV2_T: DepthsHeads = [[2, 2, 6, 2], [3, 6, 12, 24]], SWINV2_S: DepthsHeads = [[2, 2, 18, 2], [3, 6, 12, 24]];
const SWINV2_B: DepthsHeads = [[2, 2, 18, 2], [4, 8, 16, 32]], SWINV2_L: DepthsHeads = [[2, 2, 18, 2], [6, 12, 24, 48]];
const FROM_192 = [12, 12, 12, 6];
/** timm's swinv2 _cfg: 256×256, crop 0.9, bicubic, ImageNet mean/std (384 models crop 1.0; the 192 ones are ImageNet-22k heads). */
const swinv2Preset = (kwargs: Kwargs, cropPct = 0.9): Preset => ({ timmClass: 'SwinTransformerV2', kwargs, cropPct, mean: IMAGENET_MEAN, std: IMAGENET_STD });
const mixer = (embed_dim: number, num_blocks: number, patch_size = 16): Kwargs => ({ patch_size, num_blocks, embed_dim });
/** timm's beit_* / beitv2_* entrypoints: relative position bias per block, no absolute position embedding, LayerScale. */
const beit = (embed_dim: number, depth: number, num_heads: number, init_values: number, extra: Kwargs = {}): Kwargs =>
  ({ patch_size: 16, embed_dim, depth, num_heads, mlp_ratio: 4, use_abs_pos_emb: false, use_rel_pos_bias: true, init_values, ...extra });

/** Standard timm ImageNet models with the preprocessing of their default pretrained weights. */
export const PRESETS: Record<string, Preset> = {
  vit_tiny_patch16_224: { timmClass: 'VisionTransformer', kwargs: vit(192, 12, 3), cropPct: 0.9, mean: HALF, std: HALF },
  vit_small_patch16_224: { timmClass: 'VisionTransformer', kwargs: vit(384, 12, 6), cropPct: 0.9, mean: HALF, std: HALF },
  vit_base_patch16_224: { timmClass: 'VisionTransformer', kwargs: vit(768, 12, 12), cropPct: 0.9, mean: HALF, std: HALF },
  vit_base_patch16_384: { timmClass: 'VisionTransformer', kwargs: vit(768, 12, 12, { img_size: 384 }), cropPct: 1.0, mean: HALF, std: HALF },
  vit_base_patch32_224: { timmClass: 'VisionTransformer', kwargs: vit(768, 12, 12, { patch_size: 32 }), cropPct: 0.9, mean: HALF, std: HALF },
  vit_large_patch16_224: { timmClass: 'VisionTransformer', kwargs: vit(1024, 24, 16), cropPct: 0.9, mean: HALF, std: HALF },
  deit_tiny_patch16_224: { timmClass: 'VisionTransformer', kwargs: vit(192, 12, 3), cropPct: 0.875, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  deit_small_patch16_224: { timmClass: 'VisionTransformer', kwargs: vit(384, 12, 6), cropPct: 0.875, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  deit_base_patch16_224: { timmClass: 'VisionTransformer', kwargs: vit(768, 12, 12), cropPct: 0.875, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  deit_tiny_distilled_patch16_224: { timmClass: 'VisionTransformerDistilled', kwargs: vit(192, 12, 3), cropPct: 0.875, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  deit_small_distilled_patch16_224: { timmClass: 'VisionTransformerDistilled', kwargs: vit(384, 12, 6), cropPct: 0.875, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  deit_base_distilled_patch16_224: { timmClass: 'VisionTransformerDistilled', kwargs: vit(768, 12, 12), cropPct: 0.875, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  swin_tiny_patch4_window7_224: { timmClass: 'SwinTransformer', kwargs: swin(96, [2, 2, 6, 2], [3, 6, 12, 24]), cropPct: 0.9, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  swin_small_patch4_window7_224: { timmClass: 'SwinTransformer', kwargs: swin(96, [2, 2, 18, 2], [3, 6, 12, 24]), cropPct: 0.9, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  swin_base_patch4_window7_224: { timmClass: 'SwinTransformer', kwargs: swin(128, [2, 2, 18, 2], [4, 8, 16, 32]), cropPct: 0.9, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  // DeiT III (.fb_in1k), DINOv2 (.lvd142m), CLIP (vit_base_patch16_clip_224: .laion2b_ft_in12k_in1k; quickgelu: .openai, 512-d head).
  deit3_small_patch16_224: { timmClass: 'VisionTransformer', kwargs: deit3(384, 12, 6), cropPct: 0.9, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  deit3_base_patch16_224: { timmClass: 'VisionTransformer', kwargs: deit3(768, 12, 12), cropPct: 0.9, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  vit_small_patch14_dinov2: { timmClass: 'VisionTransformer', kwargs: dinov2(384, 6, false), cropPct: 1.0, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  vit_base_patch14_dinov2: { timmClass: 'VisionTransformer', kwargs: dinov2(768, 12, false), cropPct: 1.0, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  vit_small_patch14_reg4_dinov2: { timmClass: 'VisionTransformer', kwargs: dinov2(384, 6, true), cropPct: 1.0, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  vit_base_patch14_reg4_dinov2: { timmClass: 'VisionTransformer', kwargs: dinov2(768, 12, true), cropPct: 1.0, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  vit_base_patch16_clip_224: { timmClass: 'VisionTransformer', kwargs: clip(), cropPct: 0.95, mean: CLIP_MEAN, std: CLIP_STD, layerNormEps: 1e-5 },
  vit_base_patch16_clip_quickgelu_224: { timmClass: 'VisionTransformer', kwargs: clip({ act_layer: 'quick_gelu', num_classes: 512 }), cropPct: 0.9, mean: CLIP_MEAN, std: CLIP_STD, layerNormEps: 1e-5 },
  // SigLIP (.webli: an embedding model, num_classes 0 there; the preset keeps timm's 1000-class head).
  vit_base_patch16_siglip_224: { timmClass: 'VisionTransformer', kwargs: vit(768, 12, 12, { class_token: false, global_pool: 'map' }), cropPct: 0.9, mean: HALF, std: HALF },
  swinv2_tiny_window8_256: swinv2Preset(swinv2(256, 8, 96, ...SWINV2_T)),
  swinv2_tiny_window16_256: swinv2Preset(swinv2(256, 16, 96, ...SWINV2_T)),
  swinv2_small_window8_256: swinv2Preset(swinv2(256, 8, 96, ...SWINV2_S)),
  swinv2_small_window16_256: swinv2Preset(swinv2(256, 16, 96, ...SWINV2_S)),
  swinv2_base_window8_256: swinv2Preset(swinv2(256, 8, 128, ...SWINV2_B)),
  swinv2_base_window16_256: swinv2Preset(swinv2(256, 16, 128, ...SWINV2_B)),
  swinv2_base_window12_192: swinv2Preset({ ...swinv2(192, 12, 128, ...SWINV2_B), num_classes: 21841 }),
  swinv2_base_window12to16_192to256: swinv2Preset(swinv2(256, 16, 128, ...SWINV2_B, FROM_192)),
  swinv2_base_window12to24_192to384: swinv2Preset(swinv2(384, 24, 128, ...SWINV2_B, FROM_192), 1.0),
  swinv2_large_window12_192: swinv2Preset({ ...swinv2(192, 12, 192, ...SWINV2_L), num_classes: 21841 }),
  swinv2_large_window12to16_192to256: swinv2Preset(swinv2(256, 16, 192, ...SWINV2_L, FROM_192)),
  swinv2_large_window12to24_192to384: swinv2Preset(swinv2(384, 24, 192, ...SWINV2_L, FROM_192), 1.0),
  // timm/models/mlp_mixer.py: _cfg crop 0.875, bicubic, mean/std 0.5 (goog_in21k_ft_in1k weights).
  mixer_b16_224: { timmClass: 'MlpMixer', kwargs: mixer(768, 12), cropPct: 0.875, mean: HALF, std: HALF },
  mixer_l16_224: { timmClass: 'MlpMixer', kwargs: mixer(1024, 24), cropPct: 0.875, mean: HALF, std: HALF },
  mixer_s16_224: { timmClass: 'MlpMixer', kwargs: mixer(512, 8), cropPct: 0.875, mean: HALF, std: HALF },
  mixer_s32_224: { timmClass: 'MlpMixer', kwargs: mixer(512, 8, 32), cropPct: 0.875, mean: HALF, std: HALF },
  mixer_b32_224: { timmClass: 'MlpMixer', kwargs: mixer(768, 12, 32), cropPct: 0.875, mean: HALF, std: HALF },
  mixer_l32_224: { timmClass: 'MlpMixer', kwargs: mixer(1024, 24, 32), cropPct: 0.875, mean: HALF, std: HALF },
  // timm/models/beit.py: _cfg crop 0.9, bicubic, mean/std 0.5; 384/512 crop 1.0; BEiT v2 ImageNet mean/std (large: crop 0.95).
  beit_base_patch16_224: { timmClass: 'Beit', kwargs: beit(768, 12, 12, 0.1), cropPct: 0.9, mean: HALF, std: HALF },
  beit_base_patch16_384: { timmClass: 'Beit', kwargs: beit(768, 12, 12, 0.1, { img_size: 384 }), cropPct: 1.0, mean: HALF, std: HALF },
  beit_large_patch16_224: { timmClass: 'Beit', kwargs: beit(1024, 24, 16, 1e-5), cropPct: 0.9, mean: HALF, std: HALF },
  beit_large_patch16_384: { timmClass: 'Beit', kwargs: beit(1024, 24, 16, 1e-5, { img_size: 384 }), cropPct: 1.0, mean: HALF, std: HALF },
  beit_large_patch16_512: { timmClass: 'Beit', kwargs: beit(1024, 24, 16, 1e-5, { img_size: 512 }), cropPct: 1.0, mean: HALF, std: HALF },
  beitv2_base_patch16_224: { timmClass: 'Beit', kwargs: beit(768, 12, 12, 1e-5), cropPct: 0.9, mean: IMAGENET_MEAN, std: IMAGENET_STD },
  beitv2_large_patch16_224: { timmClass: 'Beit', kwargs: beit(1024, 24, 16, 1e-5), cropPct: 0.95, mean: IMAGENET_MEAN, std: IMAGENET_STD },
};

export function specFromPreset(name: string): ModelSpec {
  const preset = PRESETS[name];
  if (!preset) {
    throw new Ptq4vitError(`unknown architecture '${name}'; known presets: ${Object.keys(PRESETS).join(', ')} (or pass --config <card.json>)`);
  }
  const arch = archFromTimm(preset.timmClass, preset.kwargs, `preset ${name}`, { layerNormEps: preset.layerNormEps });
  return {
    name,
    timmClass: preset.timmClass,
    arch,
    preprocess: { inputSize: arch.imgSize, cropPct: preset.cropPct, interpolation: 'bicubic', mean: preset.mean, std: preset.std },
  };
}
