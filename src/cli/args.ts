/** Flag parsing shared by the commands: strict (unknown flags are errors), with readable messages. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Ptq4vitError } from '../errors.js';
import { setOrtThreads } from '../tensor/ort.js';

export const USAGE = `ptq4vit — post-training quantization of vision transformers (PTQ4ViT)

Usage:
  ptq4vit demo                  quantize the bundled ViT (W8A8, W6A6) and compare top-1 with FP32
  ptq4vit quantize --model <weights.safetensors> (--config <card.json> | --arch <preset>)
               --calib <folder | list.txt | manifest.json> [--calib-size N] [--method ptq4vit|base]
               [--bits K | --w-bits K --a-bits K] [--out <file>] [--eval <dataset> [--limit N]]
               [--seed N] [--loss label|pseudo|fisher] [--alpha A --beta B --n N --rounds R]
               [--no-hessian] [--no-twin-softmax] [--no-twin-gelu] [--gelu-unaligned]
               [--softmax-r2 paper|exact-one] [--skip-unreadable]
      --calib: one subfolder per class, a folder of unlabeled images (searched recursively), or a
      text file listing image paths; without labels --loss defaults to pseudo. An unreadable
      calibration image stops with its name, or with --skip-unreadable is replaced by the next
      image of the seeded draw. --calib-size defaults to 32 (or all images, if fewer).
  ptq4vit eval --model <weights.safetensors | quantized.safetensors | model.onnx> [--config <card.json> | --arch <preset>]
               --data <image-folder | manifest.json> [--limit N] [--batch-size N] [--simulate]
  ptq4vit export --model <weights.safetensors | quantized.safetensors> [--config <card.json> | --arch <preset>]
               --out <model.onnx> [--float]
  ptq4vit presets               list the timm architectures known by name

Common options:
  --threads N     threads for matrix kernels (default: all cores)
  --json          print one JSON object as the last line of stdout
  -h, --help      this help
`;

type Options = NonNullable<ParseArgsConfig['options']>;

export const COMMON_OPTIONS: Options = {
  threads: { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
};

export function parse(args: string[], options: Options): Record<string, string | boolean | undefined> {
  try {
    const { values } = parseArgs({ args, options: { ...COMMON_OPTIONS, ...options }, strict: true, allowPositionals: false });
    return values as Record<string, string | boolean | undefined>;
  } catch (e) {
    throw new Ptq4vitError(`${(e as Error).message.replace(/\. To specify.*$/s, '')}\n\n${USAGE}`);
  }
}

/** A positive integer flag, or the default when absent. */
export function intFlag(values: Record<string, unknown>, name: string, fallback: number | undefined, min = 1, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (raw === '' || !Number.isInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    throw new Ptq4vitError(`--${name} must be an integer ${range}, got '${raw}'`);
  }
  return n;
}

/** A number flag within [min, max], or the default when absent. */
export function numberFlag(values: Record<string, unknown>, name: string, fallback: number | undefined, min: number, max: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (raw === '' || !Number.isFinite(n) || n < min || n > max) throw new Ptq4vitError(`--${name} must be a number from ${min} to ${max}, got '${raw}'`);
  return n;
}

export function requireFlag(values: Record<string, unknown>, name: string, command: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v === '') throw new Ptq4vitError(`${command}: --${name} is required\n\n${USAGE}`);
  return v;
}

export function applyCommon(values: Record<string, unknown>): void {
  const threads = intFlag(values, 'threads', undefined, 1, 256);
  if (threads !== undefined) setOrtThreads(threads);
}

