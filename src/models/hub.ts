/**
 * timm's Hugging Face hub folders, as `timm.models.save_for_hf` / `push_to_hf_hub` write them:
 *
 *   DIR/config.json        { "architecture": "vit_base_patch16_224", "num_classes": 1000,
 *                            "model_args": { …constructor overrides… }, "label_names": [...],
 *                            "pretrained_cfg": { "input_size": [3, 224, 224], "interpolation": "bicubic",
 *                                                "crop_pct": 0.9, "crop_mode": "center", "mean": [...], "std": [...] } }
 *   DIR/model.safetensors  the state dict
 *
 * The architecture is the named preset with `model_args` applied on top (as timm's create_model does),
 * the preprocessing is `pretrained_cfg`, the class names `label_names`. timm's older single-dict form
 * (pretrained_cfg fields at the top level, `labels` for the names) is read too, as timm reads it.
 *
 * Also here: a checkpoint's own card, `NAME.json` beside `NAME.safetensors`, used when neither
 * --config nor --arch is given.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { describeFsError } from '../io/safetensors.js';
import { archFromTimm, MIN_CROP_PCT, PRESETS } from './config.js';
import type { ModelSpec, Preprocess } from './types.js';

export const HUB_CONFIG = 'config.json';
export const HUB_WEIGHTS = 'model.safetensors';

/** The families we implement, for the message about an architecture we do not know. */
const FAMILIES = 'vit_* (VisionTransformer), deit_* (VisionTransformer, VisionTransformerDistilled), deit3_* (VisionTransformer), swin_* (SwinTransformer), swinv2_* (SwinTransformerV2), mixer_* (MlpMixer), beit_* / beitv2_* (Beit)';

export interface ModelFiles {
  /** The safetensors file to read. */
  weights: string;
  /** A hub folder's config.json. */
  hubConfig?: string;
  /** NAME.json beside NAME.safetensors (used only when neither --config nor --arch is given). */
  siblingCard?: string;
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Which files a `--model` argument names: a hub folder's two files, or a checkpoint and its card. */
export function locateModel(model: string): ModelFiles {
  if (isDirectory(model)) {
    const weights = path.join(model, HUB_WEIGHTS);
    const hubConfig = path.join(model, HUB_CONFIG);
    if (!fs.existsSync(hubConfig)) throw new Ptq4vitError(`${model}: not a timm hub folder: ${HUB_CONFIG} is missing (timm's save_for_hf and transformers' save_pretrained write ${HUB_CONFIG} + ${HUB_WEIGHTS})`);
    if (!fs.existsSync(weights)) {
      const bin = fs.existsSync(path.join(model, 'pytorch_model.bin')) ? ' (pytorch_model.bin is a pickle and is not read: save with safe_serialization=True)' : '';
      throw new Ptq4vitError(`${model}: ${HUB_WEIGHTS} is missing${bin}`);
    }
    return { weights, hubConfig };
  }
  const card = model.replace(/\.safetensors$/, '') + '.json';
  return card !== model && model.endsWith('.safetensors') && fs.existsSync(card) ? { weights: model, siblingCard: card } : { weights: model };
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function triple(v: unknown, field: string, where: string): [number, number, number] {
  if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
    throw new Ptq4vitError(`${where}: ${field} must be a list of 3 numbers, got ${JSON.stringify(v)}`);
  }
  return v as [number, number, number];
}

/** `label_names`: a list, or an object {class index: name} (timm allows gaps); one name per class. */
function labelNames(v: unknown, numClasses: number, where: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (Array.isArray(v)) {
    if (v.length !== numClasses || v.some((n) => typeof n !== 'string')) {
      throw new Ptq4vitError(`${where}: label_names must be a list of ${numClasses} strings (num_classes), got ${v.length} entries`);
    }
    return v as string[];
  }
  if (isObject(v)) {
    const names = Array.from({ length: numClasses }, (_, i) => String(i));
    for (const [key, name] of Object.entries(v)) {
      const i = Number(key);
      if (!/^\d+$/.test(key) || i >= numClasses || typeof name !== 'string') {
        throw new Ptq4vitError(`${where}: label_names must map class indices 0…${numClasses - 1} to names, got ${JSON.stringify(key)}: ${JSON.stringify(name)}`);
      }
      names[i] = name;
    }
    return names;
  }
  throw new Ptq4vitError(`${where}: label_names must be a list or an object of class names, got ${JSON.stringify(v)}`);
}

/** A parsed config.json: the spec it describes, with `labelNames` when the folder names its classes. */
export function specFromHubConfig(config: unknown, where: string): ModelSpec {
  if (!isObject(config)) throw new Ptq4vitError(`${where}: must be a JSON object`);
  // timm's legacy single-dict form: every pretrained_cfg field at the top level.
  const legacy = !('pretrained_cfg' in config);
  const cfg = legacy ? { architecture: config.architecture, num_classes: config.num_classes, label_names: config.labels ?? config.label_names, model_args: config.model_args, pretrained_cfg: config } : config;
  const architecture = cfg.architecture;
  if (typeof architecture !== 'string' || architecture === '') throw new Ptq4vitError(`${where}: missing "architecture" (a timm model name, e.g. "vit_base_patch16_224")`);
  // timm names weights "arch.tag" in some places; the architecture is the part before the tag.
  const preset = PRESETS[architecture.split('.')[0]];
  if (!preset) {
    throw new Ptq4vitError(`${where}: architecture ${JSON.stringify(architecture)} is not supported; supported families: ${FAMILIES}; known names: ${Object.keys(PRESETS).join(', ')}`);
  }
  const pretrained = cfg.pretrained_cfg;
  if (!isObject(pretrained)) throw new Ptq4vitError(`${where}: "pretrained_cfg" must be an object, got ${JSON.stringify(pretrained)}`);
  const modelArgs = cfg.model_args ?? {};
  if (!isObject(modelArgs)) throw new Ptq4vitError(`${where}: "model_args" must be an object, got ${JSON.stringify(modelArgs)}`);
  const numClasses = cfg.num_classes ?? pretrained.num_classes;
  if (numClasses !== undefined && (typeof numClasses !== 'number' || !Number.isInteger(numClasses) || numClasses < 0)) {
    throw new Ptq4vitError(`${where}: num_classes must be a positive integer, or 0 for a backbone without classifier, got ${JSON.stringify(numClasses)}`);
  }

  // create_model(architecture, num_classes=…, **model_args): the preset, then the overrides.
  const kwargs: Json = { ...preset.kwargs, ...(numClasses === undefined ? {} : { num_classes: numClasses }), ...modelArgs };
  let arch;
  try {
    arch = archFromTimm(preset.timmClass, kwargs, where, { layerNormEps: preset.layerNormEps });
  } catch (e) {
    // The card reader names card fields (timm_kwargs.X); here the same values come from model_args.
    if (e instanceof Ptq4vitError) throw new Ptq4vitError(e.message.replace(/timm_kwargs\./g, 'model_args.'));
    throw e;
  }

  const inputSize = pretrained.input_size === undefined ? [arch.inChans, arch.imgSize, arch.imgSize] : triple(pretrained.input_size, 'pretrained_cfg.input_size', where);
  // timm: with a fixed input size, model_args.img_size replaces the stored input_size.
  if (typeof modelArgs.img_size === 'number' && pretrained.fixed_input_size === true) inputSize.splice(1, 2, modelArgs.img_size, modelArgs.img_size);
  if (inputSize[0] !== arch.inChans || inputSize[1] !== arch.imgSize || inputSize[2] !== arch.imgSize) {
    throw new Ptq4vitError(`${where}: pretrained_cfg.input_size ${JSON.stringify(inputSize)} does not match the architecture's [${arch.inChans}, ${arch.imgSize}, ${arch.imgSize}] (set model_args.img_size)`);
  }
  const cropPct = pretrained.crop_pct ?? 1.0;
  // As for cards: a tiny crop_pct would ask for a gigantic resize before the crop (1e-320 resized to Infinity).
  if (typeof cropPct !== 'number' || !(cropPct >= MIN_CROP_PCT && cropPct <= 1)) throw new Ptq4vitError(`${where}: pretrained_cfg.crop_pct must be in [${MIN_CROP_PCT}, 1], got ${JSON.stringify(pretrained.crop_pct)}`);
  const cropMode = pretrained.crop_mode ?? 'center';
  if (cropMode !== 'center') throw new Ptq4vitError(`${where}: pretrained_cfg.crop_mode ${JSON.stringify(cropMode)} is not supported (only "center")`);
  const interpolation = pretrained.interpolation ?? 'bicubic';
  if (interpolation !== 'bicubic' && interpolation !== 'bilinear') {
    throw new Ptq4vitError(`${where}: pretrained_cfg.interpolation must be "bicubic" or "bilinear", got ${JSON.stringify(pretrained.interpolation)}`);
  }
  const preprocess: Preprocess = {
    inputSize: arch.imgSize,
    cropPct,
    interpolation,
    mean: pretrained.mean === undefined ? preset.mean : triple(pretrained.mean, 'pretrained_cfg.mean', where),
    std: pretrained.std === undefined ? preset.std : triple(pretrained.std, 'pretrained_cfg.std', where),
  };
  if (preprocess.std.some((s) => !(s > 0))) throw new Ptq4vitError(`${where}: pretrained_cfg.std values must be positive, got ${JSON.stringify(preprocess.std)}`);
  const names = labelNames(cfg.label_names, arch.numClasses, where);
  const tag = typeof pretrained.tag === 'string' && pretrained.tag ? `.${pretrained.tag}` : '';
  return { name: `${architecture}${architecture.includes('.') ? '' : tag}`, timmClass: preset.timmClass, arch, preprocess, ...(names ? { labelNames: names } : {}) };
}

export function readHubConfig(file: string): ModelSpec {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Ptq4vitError(`cannot read ${file}: ${describeFsError(e)}`);
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (e) {
    throw new Ptq4vitError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return specFromHubConfig(config, file);
}
