/**
 * 2- to 4-bit weight codes stored packed in the ONNX file and unpacked to int8 once, when the session loads.
 *
 * The initializer is the quantized file's packed layout (src/quant/packing.ts): uint8 [rows, ⌈cols·c/8⌉], codes
 * offset by 2^(c−1), low bits first, rows = output channels. A chain of default-domain ops (opset 17: BitShift,
 * Sub, Concat, Reshape, Slice, Cast, Transpose) turns it into the int8 codes Wᵀ [in, out] that the integer
 * product (MatMulIntegerToFloat, u8 × s8) multiplies today. Every input of the chain is a constant, so
 * onnxruntime's constant folding runs it once at load (node and web alike) and the product sees an int8
 * initializer: the same kernel, the same codes, the same numbers as an 8-bit container — in a file that holds
 * c bits per weight. (Measured against MatMulNBits, which runs the same packed weights with dynamic per-block
 * int8 activations instead of the calibrated ones: scripts/bench_int4.ts, BENCHMARKS.md.)
 *
 * Why not ONNX INT4 initializers: INT4 Cast needs opset 21, and the graph's opset-17 ops (ReduceMean's axes
 * attribute) would have to change with it; the uint8 chain is the same bytes at opset 17.
 */
import type { GraphBuilder } from '../onnx/builder.js';
import { OnnxType } from '../onnx/proto.js';
import { containerBits, packCodes, packedRowBytes } from '../quant/packing.js';

/**
 * Int8 codes Wᵀ [cols, rows] of a weight with codes [rows, cols] (row-major) of `bits` ≤ 4 bits, stored packed
 * in the graph as uint8 `${hint}_packed` and unpacked by constant nodes. Group-wise weights (`groups`): each code
 * times its group's integer multiplier (params.ts LinearQuant: m·c fits int8), the multipliers stored packed too
 * (4 bits, m − 1, when they fit; else one byte each) and multiplied in by the same constant nodes. Returns the
 * int8 tensor's name.
 */
export function packedWeightCodesT(g: GraphBuilder, hint: string, codes: Int8Array, rows: number, bits: number, groups?: { size: number; multipliers: readonly number[] }): string {
  let signed = unpackedInt32(g, hint, codes, rows, bits);
  if (groups) {
    const cols = codes.length / rows, per = cols / groups.size;
    // m − 1 − 8 as a signed 4-bit code when m ≤ 16 (4-bit weights), else the multiplier itself as int8 (m ≤ 64).
    // (every, not Math.max(...): a ViT-B fc1 at group16 has 147 456 multipliers, past V8's argument limit.)
    const m = groups.multipliers.every((v) => v <= 16)
      ? g.op('Add', [unpackedInt32(g, `${hint}_group_multipliers`, Int8Array.from(groups.multipliers, (v) => v - 9), rows, 4), g.int32(`${hint}_nine`, 9)], undefined, `${hint}_m32`)
      : g.op('Cast', [g.int8s(`${hint}_group_multipliers`, Int8Array.from(groups.multipliers), [rows, per])], { to: OnnxType.INT32 }, `${hint}_m32`);
    const blocks = g.op('Reshape', [signed, g.int64s(`${hint}_blocks`, [rows, per, groups.size])], undefined, `${hint}_c3`);
    const scaled = g.op('Mul', [blocks, g.op('Reshape', [m, g.int64s(`${hint}_mshape`, [rows, per, 1])], undefined, `${hint}_m3`)], undefined, `${hint}_mc3`);
    signed = g.op('Reshape', [scaled, g.int64s(`${hint}_rowshape`, [rows, cols])], undefined, `${hint}_mc`);
  }
  const int8 = g.op('Cast', [signed], { to: OnnxType.INT8 }, `${hint}_codes`);
  return g.op('Transpose', [int8], { perm: [1, 0] }, `${hint}_codesT`);
}

/** The signed codes [rows, cols] of `bits` ≤ 4 bits as int32, from their packed uint8 initializer. */
function unpackedInt32(g: GraphBuilder, hint: string, codes: Int8Array, rows: number, bits: number): string {
  const c = containerBits(bits);
  const cols = codes.length / rows;
  const rowBytes = packedRowBytes(cols, c);
  const perByte = 8 / c;
  const packed = g.uint8Tensor(`${hint}_packed`, packCodes(codes, rows, bits), [rows * rowBytes, 1]);
  // Code j of a byte p: t = p >> (j·c), code = t − ((t >> c) << c)  (opset 17 has BitShift, not BitwiseAnd).
  const width = g.uint8(`${hint}_c`, c);
  const fields: string[] = [];
  for (let j = 0; j < perByte; j++) {
    const t = j === 0 ? packed : g.op('BitShift', [packed, g.uint8(`${hint}_s${j}`, j * c)], { direction: 'RIGHT' }, `${hint}_t${j}`);
    if (j === perByte - 1) {
      fields.push(t); // the top field has nothing above it
      continue;
    }
    const above = g.op('BitShift', [g.op('BitShift', [t, width], { direction: 'RIGHT' }, `${hint}_a${j}`), width], { direction: 'LEFT' }, `${hint}_b${j}`);
    fields.push(g.op('Sub', [t, above], undefined, `${hint}_f${j}`));
  }
  // [bytes, perByte] → [rows, rowBytes·perByte] (codes in row order) → the row's first `cols` codes.
  const all = g.op('Concat', fields, { axis: 1 }, `${hint}_fields`);
  let grid = g.op('Reshape', [all, g.int64s(`${hint}_grid`, [rows, rowBytes * perByte])], undefined, `${hint}_rows`);
  if (rowBytes * perByte !== cols) grid = g.slice(grid, 1, 0, cols, `${hint}_cols`);
  // u − 2^(c−1) in int32 (no int8 Sub kernel).
  return g.op('Sub', [g.op('Cast', [grid], { to: OnnxType.INT32 }, `${hint}_u32`), g.int32(`${hint}_zero`, 2 ** (c - 1))], undefined, `${hint}_s32`);
}
