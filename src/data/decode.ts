/**
 * Image files → 8-bit RGB pixels, matching PIL's `Image.open(f).convert('RGB')` (what timm's
 * evaluation sees) rather than what a viewer would show: no colour management, no EXIF rotation,
 * alpha dropped (not composited), grayscale replicated to three channels.
 */
import fs from 'node:fs/promises';
import sharp from 'sharp';
import { Ptq4vitError } from '../errors.js';
import { decodeBmp, isBmp } from './bmp.js';

/** Pixels in row-major HWC order, 3 bytes (R, G, B) per pixel. */
export interface RgbImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

/** An image file that cannot be turned into pixels; `reason` says why without repeating the path. */
export class ImageDecodeError extends Ptq4vitError {
  readonly file: string;
  readonly reason: string;

  constructor(file: string, reason: string) {
    super(`cannot decode image ${file}: ${reason}`);
    this.name = 'ImageDecodeError';
    this.file = file;
    this.reason = reason;
  }
}

/** Formats PIL reads too; sharp also renders SVG/AVIF/HEIF, which the reference pipeline could not load. */
const SUPPORTED_FORMATS = new Set(['jpeg', 'png', 'webp', 'gif']);

/**
 * ICC profiles are ignored because PIL ignores them; 'truncated' because PIL also refuses truncated
 * files but tolerates libjpeg warnings such as extraneous bytes before a marker.
 */
/**
 * Largest image we decode, in pixels: PIL's MAX_IMAGE_PIXELS (1024³/4/3, where PIL starts warning of a
 * decompression bomb). A 15000×15000 PNG would otherwise take 872 MB and seconds for one picture that
 * the eval transform shrinks to 224×224 anyway. Checked from the header, before any pixel is decoded.
 */
export const MAX_IMAGE_PIXELS = 89_478_485;

const SHARP_OPTIONS = { ignoreIcc: true, autoOrient: false, failOn: 'truncated', limitInputPixels: MAX_IMAGE_PIXELS } as const;

/** Throws (a Ptq4vitError, reason only) if width×height is above MAX_IMAGE_PIXELS. */
export function checkPixelLimit(width: number, height: number): void {
  const pixels = width * height;
  if (pixels > MAX_IMAGE_PIXELS) {
    throw new Ptq4vitError(`image is ${width}×${height} (${(pixels / 1e6).toFixed(1)} megapixels), above the limit of ${(MAX_IMAGE_PIXELS / 1e6).toFixed(1)} megapixels for one image (PIL's MAX_IMAGE_PIXELS); skipped without decoding`);
  }
}

export async function decodeImage(file: string): Promise<RgbImage> {
  const bytes = await readBytes(file);
  try {
    return isBmp(bytes) ? decodeBmp(bytes) : await decodeWithSharp(bytes);
  } catch (e) {
    if (e instanceof Ptq4vitError) throw new ImageDecodeError(file, e.message);
    throw new ImageDecodeError(file, await describeDecodeFailure(bytes, e));
  }
}

/** What a file's first bytes say it is, for messages. */
function sniffFormat(bytes: Uint8Array): string {
  const ascii = (from: number, to: number) => String.fromCharCode(...bytes.subarray(from, to));
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return 'JPEG';
  if (bytes[0] === 0x89 && ascii(1, 4) === 'PNG') return 'PNG';
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'WebP';
  if (ascii(0, 3) === 'GIF') return 'GIF';
  return 'image';
}

/** One decode at a time: used to re-ask libvips for an error whose text a concurrent failure took. */
let serialQueue: Promise<unknown> = Promise.resolve();
function serialized<T>(task: () => Promise<T>): Promise<T> {
  const run = serialQueue.then(task, task);
  serialQueue = run.catch(() => undefined);
  return run;
}

/**
 * sharp's message for a decoder failure, made to say what is wrong. libvips keeps its error text in one
 * buffer shared by all threads, so with several images decoding at once one failure can take another's
 * text and leave it "Input buffer has corrupt header: " with nothing after. Such a failure is decoded
 * again on its own to get its own text; the format sniffed from the bytes is named either way.
 */
async function describeDecodeFailure(bytes: Uint8Array, e: unknown): Promise<string> {
  let detail = firstLine(e);
  if (/:\s*$/.test(detail) || detail === UNKNOWN) {
    try {
      await serialized(() => decodeWithSharp(bytes));
    } catch (again) {
      if (!(again instanceof Ptq4vitError)) detail = firstLine(again);
    }
  }
  const format = sniffFormat(bytes);
  const m = /^Input (?:buffer|file) has corrupt header:\s*(?:Vips\w+:\s*)?(.*)$/.exec(detail);
  if (m) return `corrupt ${format} data: ${m[1] || `the decoder gave no detail (${bytes.length} bytes)`}`;
  if (/^Input image exceeds pixel limit/.test(detail)) return `${format} is larger than the ${(MAX_IMAGE_PIXELS / 1e6).toFixed(1)}-megapixel limit for one image; skipped without decoding`;
  return detail.replace(/^(Vips\w+):\s*/, `corrupt ${format} data: `);
}

async function readBytes(file: string): Promise<Uint8Array> {
  try {
    return await fs.readFile(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ImageDecodeError(file, err.code === 'ENOENT' ? 'no such file' : (err.code ?? err.message));
  }
}

async function decodeWithSharp(bytes: Uint8Array): Promise<RgbImage> {
  // The header alone (no limit, so it reports the size); the decode below keeps sharp's limit as a backstop.
  const meta = await sharp(bytes, { ...SHARP_OPTIONS, limitInputPixels: false }).metadata();
  if (!SUPPORTED_FORMATS.has(meta.format)) {
    throw new Ptq4vitError(`${meta.format} images are not supported (expected JPEG, PNG, WebP, GIF or BMP)`);
  }
  checkPixelLimit(meta.width ?? 0, meta.height ?? 0);
  if (meta.format === 'png' && isGrey16Png(bytes)) return decodeGrey16(bytes);
  if (meta.space === 'cmyk') return decodeCmyk(bytes);
  // sharp narrows 16-bit RGB(A) and gray+alpha by keeping the high byte, exactly as PIL's ";16B" unpackers do.
  const { data, info } = await sharp(bytes, SHARP_OPTIONS)
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  return toRgb(info.width, info.height, info.channels, data);
}

/**
 * Read from the IHDR because sharp reports a tRNS chunk as an alpha channel, which would make a
 * plain 16-bit gray PNG (PIL mode I) indistinguishable from gray+alpha (PIL reads that one as 8-bit).
 */
function isGrey16Png(bytes: Uint8Array): boolean {
  const BIT_DEPTH = 24, COLOR_TYPE = 25; // 8-byte signature, chunk length, "IHDR", width, height
  return bytes.length > COLOR_TYPE && bytes[BIT_DEPTH] === 16 && bytes[COLOR_TYPE] === 0;
}

/**
 * PIL opens a 16-bit grayscale PNG as a 32-bit integer image, and its I→RGB conversion clamps each
 * value to 0..255 (it does not scale), so anything above 255 becomes white. Reproduced on purpose:
 * that is the image the reference pipeline evaluates.
 */
async function decodeGrey16(bytes: Uint8Array): Promise<RgbImage> {
  const { data, info } = await sharp(bytes, SHARP_OPTIONS)
    .removeAlpha()
    .toColourspace('grey16')
    .raw({ depth: 'ushort' })
    .toBuffer({ resolveWithObject: true });
  const values = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
  const out = new Uint8Array(values.length * 3);
  for (let i = 0; i < values.length; i++) {
    const v = Math.min(values[i], 255);
    out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = v;
  }
  return { width: info.width, height: info.height, data: out };
}

/**
 * PIL converts CMYK with a naive formula (no profile): channel = (255−K) − X·(255−K)/255, rounded in
 * 8-bit integer arithmetic. sharp would go through an ICC profile, so take the raw CMYK planes instead.
 */
async function decodeCmyk(bytes: Uint8Array): Promise<RgbImage> {
  const { data, info } = await sharp(bytes, SHARP_OPTIONS)
    .pipelineColourspace('cmyk')
    .toColourspace('cmyk')
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 4) throw new Ptq4vitError(`CMYK image decoded to ${info.channels} channels`);
  const n = info.width * info.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const notK = 255 - data[4 * i + 3];
    for (let c = 0; c < 3; c++) out[3 * i + c] = notK - mulDiv255(data[4 * i + c], notK);
  }
  return { width: info.width, height: info.height, data: out };
}

/** a·b/255 rounded, with PIL's integer trick (exact for 8-bit operands). */
function mulDiv255(a: number, b: number): number {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

function toRgb(width: number, height: number, channels: number, data: Uint8Array): RgbImage {
  if (channels === 3) return { width, height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  if (channels !== 1) throw new Ptq4vitError(`decoded to ${channels} channels, expected 1 or 3`);
  return { width, height, data: grayToRgb(data) };
}

export function grayToRgb(gray: Uint8Array): Uint8Array {
  const out = new Uint8Array(gray.length * 3);
  for (let i = 0; i < gray.length; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = gray[i];
  return out;
}

/** sharp's messages can span lines (libvips appends its error log); the first line says what failed. */
const UNKNOWN = 'unknown decoder error';
function firstLine(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.split('\n')[0].trim() || UNKNOWN;
}
