/**
 * Model specs from a JSON card (`timm_class` + `timm_kwargs` + mean/std + input size, as in
 * shared/models/*.json) or from the name of a standard timm model with its real preprocessing.
 */
import fs from 'node:fs';
import { Ptq4vitError } from '../errors.js';
import { describeFsError } from '../io/safetensors.js';
import type { Arch, ModelSpec, Preprocess } from './types.js';

const IMAGENET_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [number, number, number] = [0.229, 0.224, 0.225];
const HALF: [number, number, number] = [0.5, 0.5, 0.5];

type Kwargs = Record<string, unknown>;

/** timm kwargs that only matter for training, or that equal what we implement. */
const INFERENCE_NEUTRAL = new Set(['drop_rate', 'drop_path_rate', 'attn_drop_rate', 'proj_drop_rate', 'pos_drop_rate', 'patch_drop_rate']);

const VIT_KWARGS = new Set(['img_size', 'patch_size', 'in_chans', 'num_classes', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio', 'qkv_bias', 'global_pool', 'class_token']);
const SWIN_KWARGS = new Set(['img_size', 'patch_size', 'in_chans', 'num_classes', 'embed_dim', 'depths', 'num_heads', 'window_size', 'mlp_ratio', 'qkv_bias', 'global_pool']);

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
  return { positiveInt, classCount, intList, number, boolean, exact };
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
function checkSwinArch(arch: Arch & { family: 'swin' }, where: string): Arch {
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

function checkInput(arch: Arch, where: string): void {
  if (arch.imgSize > MAX_IMG_SIZE) throw new Ptq4vitError(`${where}: timm_kwargs.img_size ${arch.imgSize} is larger than the ${MAX_IMG_SIZE} supported`);
  if (arch.imgSize % arch.patchSize !== 0) {
    throw new Ptq4vitError(`${where}: timm_kwargs.img_size ${arch.imgSize} is not a multiple of timm_kwargs.patch_size ${arch.patchSize}`);
  }
}

/** The architecture a timm class + constructor kwargs describe (timm's defaults where a kwarg is absent). */
export function archFromTimm(timmClass: string, kwargs: Kwargs, where: string): Arch {
  switch (timmClass) {
    case 'VisionTransformer':
    case 'VisionTransformerDistilled': {
      const k = kwargsReader(kwargs, where, VIT_KWARGS);
      k.exact('global_pool', 'token');
      k.exact('class_token', true);
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
      }, where);
    }
    case 'SwinTransformer': {
      const k = kwargsReader(kwargs, where, SWIN_KWARGS);
      k.exact('global_pool', 'avg');
      const depths = k.intList('depths', [2, 2, 6, 2]);
      const numHeads = k.intList('num_heads', [3, 6, 12, 24]);
      if (numHeads.length !== depths.length) {
        throw new Ptq4vitError(`${where}: timm_kwargs.num_heads has ${numHeads.length} entries but depths has ${depths.length}`);
      }
      return checkSwinArch({
        family: 'swin',
        imgSize: k.positiveInt('img_size', 224),
        patchSize: k.positiveInt('patch_size', 4),
        inChans: k.positiveInt('in_chans', 3),
        embedDim: k.positiveInt('embed_dim', 96),
        depths,
        numHeads,
        windowSize: k.positiveInt('window_size', 7),
        mlpRatio: k.number('mlp_ratio', 4),
        qkvBias: k.boolean('qkv_bias', true),
        numClasses: k.classCount('num_classes', 1000),
      }, where);
    }
    default:
      throw new Ptq4vitError(`${where}: unknown architecture timm_class ${JSON.stringify(timmClass)} (supported: VisionTransformer, VisionTransformerDistilled, SwinTransformer)`);
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
  const arch = archFromTimm(c.timm_class, kwargs, where);
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
  return { name: typeof c.name === 'string' ? c.name : c.timm_class, timmClass: c.timm_class, arch, preprocess, ...(labelNames ? { labelNames } : {}) };
}

/** `label_names`: one name per class, by class index (a quantized file keeps a hub folder's names this way). */
function classNames(v: unknown, numClasses: number, where: string): string[] {
  if (!Array.isArray(v) || v.length !== numClasses || v.some((n) => typeof n !== 'string')) {
    throw new Ptq4vitError(`${where}: label_names must be a list of ${numClasses} class names (num_classes), got ${JSON.stringify(v)?.slice(0, 80)}`);
  }
  return v as string[];
}

const TIMM_CLASS: Record<Arch['family'], string> = { vit: 'VisionTransformer', 'deit-distilled': 'VisionTransformerDistilled', swin: 'SwinTransformer' };

/**
 * The card describing a spec: specFromCard(cardFromSpec(s)) equals s. A quantized model file stores
 * its spec this way, so its metadata is read by the same checks as a card (snake_case, field named).
 */
export function cardFromSpec(spec: ModelSpec): Record<string, unknown> {
  const a = spec.arch;
  const common = { img_size: a.imgSize, patch_size: a.patchSize, in_chans: a.inChans, embed_dim: a.embedDim };
  const tail = { mlp_ratio: a.mlpRatio, qkv_bias: a.qkvBias, num_classes: a.numClasses };
  const kwargs = a.family === 'swin'
    ? { ...common, depths: [...a.depths], num_heads: [...a.numHeads], window_size: a.windowSize, ...tail }
    : { ...common, depth: a.depth, num_heads: a.numHeads, ...tail };
  const p = spec.preprocess;
  return {
    name: spec.name,
    timm_class: TIMM_CLASS[a.family],
    timm_kwargs: kwargs,
    input_size: [a.inChans, p.inputSize, p.inputSize],
    mean: [...p.mean],
    std: [...p.std],
    crop_pct: p.cropPct,
    interpolation: p.interpolation,
    ...(spec.labelNames ? { label_names: [...spec.labelNames] } : {}),
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
}

const vit = (embed_dim: number, depth: number, num_heads: number, extra: Kwargs = {}): Kwargs => ({ patch_size: 16, embed_dim, depth, num_heads, ...extra });
const swin = (embed_dim: number, depths: number[], num_heads: number[]): Kwargs => ({ patch_size: 4, window_size: 7, embed_dim, depths, num_heads });

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
};

export function specFromPreset(name: string): ModelSpec {
  const preset = PRESETS[name];
  if (!preset) {
    throw new Ptq4vitError(`unknown architecture '${name}'; known presets: ${Object.keys(PRESETS).join(', ')} (or pass --config <card.json>)`);
  }
  const arch = archFromTimm(preset.timmClass, preset.kwargs, `preset ${name}`);
  return {
    name,
    timmClass: preset.timmClass,
    arch,
    preprocess: { inputSize: arch.imgSize, cropPct: preset.cropPct, interpolation: 'bicubic', mean: preset.mean, std: preset.std },
  };
}
