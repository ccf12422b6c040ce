/**
 * Uncompressed Windows bitmaps. sharp's prebuilt libvips has no BMP loader, yet torchvision's
 * ImageFolder accepts .bmp, so the common uncompressed variants are decoded here (as PIL reads them).
 */
import { Ptq4vitError } from '../errors.js';
import { checkPixelLimit, type RgbImage } from './decode.js';

const BI_RGB = 0;

interface BmpHeader {
  width: number;
  height: number;
  topDown: boolean;
  bits: number;
  pixelOffset: number;
  /** Palette as RGB triples (empty for 24/32-bit images). */
  palette: Uint8Array;
}

export function isBmp(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x42 && bytes[1] === 0x4d; // "BM"
}

/** Throws a Ptq4vitError saying what is wrong; the caller adds the file name. */
export function decodeBmp(bytes: Uint8Array): RgbImage {
  const bad = (why: string): never => {
    throw new Ptq4vitError(why);
  };
  const header = parseHeader(bytes, bad);
  const stride = Math.ceil((header.width * header.bits) / 32) * 4;
  if (header.pixelOffset + stride * header.height > bytes.length) bad('BMP pixel data is truncated');
  const out = new Uint8Array(header.width * header.height * 3);
  for (let y = 0; y < header.height; y++) {
    const fileRow = header.topDown ? y : header.height - 1 - y;
    const row = bytes.subarray(header.pixelOffset + fileRow * stride, header.pixelOffset + (fileRow + 1) * stride);
    decodeRow(row, header, out.subarray(y * header.width * 3, (y + 1) * header.width * 3));
  }
  return { width: header.width, height: header.height, data: out };
}

function parseHeader(bytes: Uint8Array, bad: (why: string) => never): BmpHeader {
  if (bytes.length < 26) bad('BMP header is truncated');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pixelOffset = view.getUint32(10, true);
  const infoSize = view.getUint32(14, true);
  const os2 = infoSize === 12; // OS/2 1.x: 16-bit sizes, 3-byte palette entries
  if (!os2 && (infoSize < 40 || bytes.length < 14 + infoSize)) bad(`unsupported BMP info header of ${infoSize} bytes`);
  const width = os2 ? view.getUint16(18, true) : view.getInt32(18, true);
  const rawHeight = os2 ? view.getInt16(20, true) : view.getInt32(22, true);
  const bits = view.getUint16(os2 ? 24 : 28, true);
  const compression = os2 ? BI_RGB : view.getUint32(30, true);
  if (compression !== BI_RGB || ![1, 4, 8, 24, 32].includes(bits)) {
    bad(`unsupported BMP variant (compression ${compression}, ${bits} bits per pixel); only uncompressed 1/4/8/24/32-bit bitmaps are read`);
  }
  if (width <= 0 || rawHeight === 0) bad(`BMP has invalid size ${width}x${rawHeight}`);
  checkPixelLimit(width, Math.abs(rawHeight));
  const colorsUsed = os2 ? 0 : view.getUint32(46, true);
  const palette = bits <= 8 ? readPalette(bytes, 14 + infoSize, colorsUsed || 1 << bits, os2 ? 3 : 4, bad) : new Uint8Array(0);
  return { width, height: Math.abs(rawHeight), topDown: rawHeight < 0, bits, pixelOffset, palette };
}

function readPalette(bytes: Uint8Array, at: number, count: number, entrySize: number, bad: (why: string) => never): Uint8Array {
  if (at + count * entrySize > bytes.length) bad('BMP palette is truncated');
  const rgb = new Uint8Array(256 * 3); // indices past the palette read as black
  for (let i = 0; i < Math.min(count, 256); i++) {
    const p = at + i * entrySize; // entries are stored B, G, R(, reserved)
    rgb[3 * i] = bytes[p + 2];
    rgb[3 * i + 1] = bytes[p + 1];
    rgb[3 * i + 2] = bytes[p];
  }
  return rgb;
}

function decodeRow(row: Uint8Array, h: BmpHeader, out: Uint8Array): void {
  if (h.bits >= 24) {
    const step = h.bits / 8; // the 4th byte of 32-bit BI_RGB pixels is unused (PIL reads them as BGRX)
    for (let x = 0; x < h.width; x++) {
      out[3 * x] = row[x * step + 2];
      out[3 * x + 1] = row[x * step + 1];
      out[3 * x + 2] = row[x * step];
    }
    return;
  }
  const perByte = 8 / h.bits;
  const mask = (1 << h.bits) - 1;
  for (let x = 0; x < h.width; x++) {
    const shift = 8 - h.bits * ((x % perByte) + 1); // most significant bits hold the leftmost pixel
    const index = (row[Math.floor(x / perByte)] >> shift) & mask;
    out.set(h.palette.subarray(3 * index, 3 * index + 3), 3 * x);
  }
}
