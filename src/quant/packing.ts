/**
 * Sub-8-bit weight codes packed into bytes: what the quantized file (format /3) and the ONNX export store.
 *
 * Containers: a k-bit code lives in the narrowest container that exists — 2 bits (k = 2, four codes a byte),
 * 4 bits (k = 3, 4: two codes a byte), int8 (k = 5 … 8), int16 (k = 9 … 16). Widths without a container of
 * their own (3, 5, 6, 7) take the next one up, so a 3-bit weight costs as much as a 4-bit one on disk.
 *
 * Packed layout (containers of 2 and 4 bits): every output row (a weight's first axis; the rest flattened) is
 * packed on its own into ⌈cols·c/8⌉ bytes, code j of the row in byte ⌊j·c/8⌋ at bit (j·c mod 8) — low bits
 * first, as ONNX's INT4/UINT4 and onnxruntime's MatMulNBits order them — stored offset by 2^(c−1):
 * u = code + 2^(c−1) ∈ [0, 2^c) (unsigned with zero point 2^(c−1), MatMulNBits' default). Unused bits at the
 * end of a row are 0. A 3-bit code in a 4-bit container keeps u ∈ [4, 11]; anything else is refused on load.
 */
import { Ptq4vitError } from '../errors.js';
import { qmax } from './quantizers.js';

/** Container width of k-bit codes: 2, 4, 8 or 16 bits. */
export function containerBits(bits: number): 2 | 4 | 8 | 16 {
  return bits <= 2 ? 2 : bits <= 4 ? 4 : bits <= 8 ? 8 : 16;
}

/** Whether k-bit codes are stored packed (several codes per byte). */
export function isPacked(bits: number): boolean {
  return containerBits(bits) < 8;
}

/** Bytes of one packed row of `cols` codes in a container of `c` bits. */
export function packedRowBytes(cols: number, c: number): number {
  return Math.ceil((cols * c) / 8);
}

/** Deployed bytes of a k-bit weight of `rows` × `cols` codes (its container, rows padded to whole bytes). */
export function weightCodeBytes(rows: number, cols: number, bits: number): number {
  const c = containerBits(bits);
  return c < 8 ? rows * packedRowBytes(cols, c) : (rows * cols * c) / 8;
}

/** Signed k-bit codes [rows, cols] (row-major) → packed bytes [rows, ⌈cols·c/8⌉]; k must be ≤ 4. */
export function packCodes(codes: Int8Array, rows: number, bits: number): Uint8Array {
  const c = containerBits(bits);
  if (c >= 8) throw new Error(`packCodes: ${bits}-bit codes are not packed`);
  const cols = codes.length / rows;
  const rowBytes = packedRowBytes(cols, c);
  const out = new Uint8Array(rows * rowBytes);
  const offset = 2 ** (c - 1), lo = -qmax(bits), hi = qmax(bits) - 1;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const code = codes[r * cols + j];
      if (code < lo || code > hi) throw new Error(`packCodes: code ${code} outside the ${bits}-bit range [${lo}, ${hi}]`);
      const bit = j * c;
      out[r * rowBytes + (bit >> 3)] |= (code + offset) << (bit & 7);
    }
  }
  return out;
}

/**
 * Packed bytes → signed k-bit codes [rows, cols], every code checked to be in the k-bit range and the padding
 * bits to be 0 (`where` names the tensor in the one-line error).
 */
export function unpackCodes(packed: Uint8Array, rows: number, cols: number, bits: number, where: string): Int8Array {
  const c = containerBits(bits);
  if (c >= 8) throw new Error(`unpackCodes: ${bits}-bit codes are not packed`);
  const rowBytes = packedRowBytes(cols, c);
  if (packed.length !== rows * rowBytes) throw new Ptq4vitError(`${where}: ${packed.length} bytes of packed ${bits}-bit codes, expected ${rows * rowBytes} (${rows} rows of ${cols} codes, ${8 / c} a byte)`);
  const out = new Int8Array(rows * cols);
  const offset = 2 ** (c - 1), mask = 2 ** c - 1, lo = -qmax(bits), hi = qmax(bits) - 1;
  for (let r = 0; r < rows; r++) {
    const base = r * rowBytes;
    for (let j = 0; j < cols; j++) {
      const bit = j * c;
      const code = ((packed[base + (bit >> 3)] >> (bit & 7)) & mask) - offset;
      if (code < lo || code > hi) throw new Ptq4vitError(`${where}: row ${r} holds code ${code} outside the ${bits}-bit range [${lo}, ${hi}]`);
      out[r * cols + j] = code;
    }
    const used = cols * c;
    if (used % 8 !== 0 && packed[base + rowBytes - 1] >> (used % 8) !== 0) throw new Ptq4vitError(`${where}: row ${r} has non-zero padding bits after its last code`);
  }
  return out;
}
