/**
 * A Hugging Face transformers `preprocessor_config.json` → our Preprocess, as transformers' image processors
 * (ViTImageProcessor, DeiTImageProcessor, BitImageProcessor, CLIPImageProcessor) run it on a PIL image:
 *
 *   do_resize:       size {height, width} → resize to exactly that (aspect not kept: a warp), or
 *                    size {shortest_edge} → shorter edge to it, long edge int(shortest_edge · long / short)
 *                    with PIL filter `resample` (2 bilinear, 3 bicubic)
 *   do_center_crop:  crop_size at top = (H − h) // 2, left = (W − w) // 2 (floor; zero padding if smaller)
 *   do_rescale:      x = uint8 · rescale_factor in float64, stored as float32
 *   do_normalize:    (x − image_mean) / image_std in float32
 *
 * Unknown keys are ignored as transformers ignores them (4.40 even writes its internal `_valid_processor_keys`).
 * Kept apart from transformers.ts so the card reader (config.ts) can rebuild a stored spec's preprocessing
 * without importing the weight mapping.
 */
import { Ptq4vitError } from '../errors.js';
import type { HfImageProcessor, Preprocess } from './types.js';

export const HF_PREPROCESSOR_CONFIG = 'preprocessor_config.json';

/** Processors whose steps are exactly the four above (ConvNext's crop_pct resize is not among them). */
const SUPPORTED_PROCESSORS = ['ViTImageProcessor', 'DeiTImageProcessor', 'BitImageProcessor', 'CLIPImageProcessor'];
/** Processors whose int `size` means the shorter edge (get_size_dict(default_to_square=False)). */
const SHORTEST_EDGE_BY_DEFAULT = new Set(['BitImageProcessor', 'CLIPImageProcessor']);
/** PIL's filter numbers: the two our PIL-exact resize implements. */
const PIL_FILTERS: Record<number, Preprocess['interpolation']> = { 2: 'bilinear', 3: 'bicubic' };

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

const positiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= 8192;

function sizeDict(v: unknown, field: string, where: string, shortestEdge: boolean): { height: number; width: number } | { shortestEdge: number } {
  if (positiveInt(v)) return shortestEdge ? { shortestEdge: v } : { height: v, width: v };
  if (isObject(v)) {
    if (positiveInt(v.height) && positiveInt(v.width) && !('shortest_edge' in v)) return { height: v.height, width: v.width };
    if (positiveInt(v.shortest_edge) && !('height' in v) && !('width' in v) && (v.longest_edge === undefined || v.longest_edge === null)) return { shortestEdge: v.shortest_edge };
  }
  throw new Ptq4vitError(`${where}: ${field} must be {"height": H, "width": W} or {"shortest_edge": S} with positive integers (no longest_edge), got ${JSON.stringify(v)}`);
}

function flag(c: Json, key: string, fallback: boolean, where: string): boolean {
  const v = c[key] ?? fallback;
  if (typeof v !== 'boolean') throw new Ptq4vitError(`${where}: ${key} must be true or false, got ${JSON.stringify(c[key])}`);
  return v;
}

function triple(v: unknown, field: string, where: string): [number, number, number] {
  if (typeof v === 'number' && Number.isFinite(v)) return [v, v, v];
  if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
    throw new Ptq4vitError(`${where}: ${field} must be a list of 3 numbers, got ${JSON.stringify(v)}`);
  }
  return v as [number, number, number];
}

/** The square input the steps produce, or an error naming the field that makes it non-square or unknown. */
function outputSide(p: HfImageProcessor, where: string): number {
  if (p.centerCrop) {
    if (p.centerCrop.height !== p.centerCrop.width) throw new Ptq4vitError(`${where}: crop_size ${p.centerCrop.height}×${p.centerCrop.width} is not square (the models take square inputs)`);
    return p.centerCrop.height;
  }
  if (p.resize && 'height' in p.resize) {
    if (p.resize.height !== p.resize.width) throw new Ptq4vitError(`${where}: size ${p.resize.height}×${p.resize.width} is not square (the models take square inputs)`);
    return p.resize.height;
  }
  throw new Ptq4vitError(`${where}: without do_center_crop the input size depends on each image's aspect (size ${JSON.stringify(p.resize)}): a crop_size or a {height, width} size is needed`);
}

/** preprocessor_config.json (parsed) → Preprocess with its transformers steps. */
export function preprocessFromHfProcessor(config: unknown, where: string): Preprocess {
  if (!isObject(config)) throw new Ptq4vitError(`${where}: must be a JSON object`);
  // Older folders name it feature_extractor_type (ViTFeatureExtractor …): the same processor.
  const rawType = config.image_processor_type ?? config.feature_extractor_type;
  const type = typeof rawType === 'string' ? rawType.replace(/FeatureExtractor$/, 'ImageProcessor') : rawType;
  if (typeof type !== 'string' || !SUPPORTED_PROCESSORS.includes(type)) {
    throw new Ptq4vitError(`${where}: image_processor_type ${JSON.stringify(rawType)} is not supported (supported: ${SUPPORTED_PROCESSORS.join(', ')})`);
  }
  const doResize = flag(config, 'do_resize', true, where);
  const doCrop = flag(config, 'do_center_crop', false, where);
  const doRescale = flag(config, 'do_rescale', true, where);
  const doNormalize = flag(config, 'do_normalize', true, where);
  const resample = config.resample ?? 2;
  const interpolation = typeof resample === 'number' ? PIL_FILTERS[resample] : undefined;
  if (doResize && !interpolation) throw new Ptq4vitError(`${where}: resample ${JSON.stringify(config.resample)} is not supported (PIL filters 2 = bilinear, 3 = bicubic)`);
  const rescale = config.rescale_factor ?? 1 / 255;
  if (doRescale && (typeof rescale !== 'number' || !(rescale > 0) || !Number.isFinite(rescale))) throw new Ptq4vitError(`${where}: rescale_factor must be a positive number, got ${JSON.stringify(config.rescale_factor)}`);
  const steps: HfImageProcessor = {
    resize: doResize ? sizeDict(config.size, 'size', where, SHORTEST_EDGE_BY_DEFAULT.has(type)) : null,
    centerCrop: doCrop ? (sizeDict(config.crop_size, 'crop_size', where, false) as { height: number; width: number }) : null,
    rescaleFactor: doRescale ? (rescale as number) : null,
    normalize: doNormalize,
  };
  if (steps.centerCrop && !('height' in steps.centerCrop)) throw new Ptq4vitError(`${where}: crop_size must be {"height": H, "width": W}, got ${JSON.stringify(config.crop_size)}`);
  const side = outputSide(steps, where);
  const mean = doNormalize ? triple(config.image_mean, 'image_mean', where) : ([0, 0, 0] as [number, number, number]);
  const std = doNormalize ? triple(config.image_std, 'image_std', where) : ([1, 1, 1] as [number, number, number]);
  if (std.some((s) => !(s > 0))) throw new Ptq4vitError(`${where}: image_std values must be positive, got ${JSON.stringify(config.image_std)}`);
  // cropPct only describes the geometry for reports (crop / resize), within the range cards accept.
  const resized = steps.resize ? ('height' in steps.resize ? steps.resize.height : steps.resize.shortestEdge) : side;
  const cropPct = Math.min(1, Math.max(0.25, side / resized));
  return { inputSize: side, cropPct, interpolation: interpolation ?? 'bicubic', mean, std, hfProcessor: steps };
}
