/**
 * Group-wise weights in the exported graph: one Δ per output row and group of G input channels, so no single Δw
 * factors out of an output column's integer product (MatMulIntegerToFloat's per-column scale). They run as
 * onnxruntime's com.microsoft MatMulNBits (block_size = G, 4-bit codes — 3-bit ones in the 4-bit container — or
 * 2-bit), with ptq4vit's own codes and Δs, and the calibrated activation in front of it quantized and
 * dequantized:
 *
 *   y = x̂·Ŵᵀ + b,   x̂ = Σ_parts Δx·clamp(round(x/Δx), lo, hi)   (uniform: one part; post-GELU twin: R1 + R2)
 *                   Ŵ[n, k] = Δ_{n, ⌊k/G⌋}·code[n, k]           (MatMulNBits dequantizes each block)
 *
 * at accuracy_level 0, where MatMulNBits multiplies in float. At level 4 it would quantize x̂ again to int8 per
 * block with a dynamic scale of its own, which is not ptq4vit's calibrated grid and not what the simulation
 * computes (src/quant/qkernels.ts dequantizedLinear: the same activation nodes, then a float product — the same
 * numbers up to the order of the float sums).
 */
import { Ptq4vitError } from '../errors.js';
import type { GraphBuilder } from '../onnx/builder.js';
import { OnnxType, type ValueInfo } from '../onnx/proto.js';
import { kindOf } from '../quant/kinds/index.js';
import { packCodes } from '../quant/packing.js';
import type { LinearQuant } from '../quant/params.js';
import { dequantizedActivation } from '../quant/qkernels.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Traced } from './trace.js';

/** MatMulNBits accuracy level of group-wise layers: float compute (see above). */
export const GROUPWISE_ACCURACY_LEVEL = 0;

export interface NBitsOptions {
  /** Input channels per block (a power of two ≥ 16; K must be a multiple of it). */
  blockSize: number;
  /** MatMulNBits accuracy_level: 0 (float compute) or 4 (int8 activations per block, computed on the fly). */
  accuracyLevel: 0 | 4;
}

/**
 * x·Wᵀ + b as MatMulNBits with signed `bits`-bit codes [N, K] and one Δ per (row, block) (`blockDeltas`,
 * row-major [N, K/blockSize]). B is [N, blocks, blockSize·bits/8] uint8, codes offset by 2^(bits−1), low bits
 * first: the packed layout of src/quant/packing.ts when K is a multiple of the block size.
 */
export function matMulNBits(g: GraphBuilder, point: string, x: string, codes: Int8Array, blockDeltas: Float32Array, bias: Tensor | null, shape: { N: number; K: number; bits: number }, o: NBitsOptions): string {
  const { N, K, bits } = shape;
  if (K % o.blockSize !== 0) throw new Ptq4vitError(`${point}: ${K} input channels are not a multiple of the MatMulNBits block size ${o.blockSize}`);
  if (bits !== 2 && bits !== 4 && bits !== 8) throw new Ptq4vitError(`${point}: MatMulNBits runs 2-, 4- and 8-bit weights, not ${bits}-bit`);
  const blocks = K / o.blockSize;
  const packed = bits === 8 ? Uint8Array.from(codes, (c) => c + 128) : packCodes(codes, N, bits);
  const b = g.uint8Tensor(`${point}.weight_nbits`, packed, [N, blocks, (o.blockSize * bits) / 8]);
  const scales = g.floats(`${point}.weight_block_scales`, blockDeltas, [N * blocks]);
  const y = g.op('MatMulNBits', [x, b, scales], { K, N, bits, block_size: o.blockSize, accuracy_level: o.accuracyLevel }, `${point}.nbits`, 'com.microsoft');
  return bias ? g.op('Add', [y, g.floats(`${point}.bias`, bias.data, [bias.size], bias.data)], undefined, point) : y;
}

/** A group-wise linear layer (≤ 4-bit codes [N, K] from the quantized file, quantized input) as described above. */
export function groupwiseLinear(g: GraphBuilder, point: string, x: Traced, weight: Tensor, bias: Tensor | null, q: LinearQuant, codes: Int8Array): string {
  const G = q.weightGroupSize!;
  if (!q.input) throw new Ptq4vitError(`${point}: group-wise weight scales need a quantized input (the patch conv stays per channel)`);
  if (q.weightBits > 4) throw new Ptq4vitError(`${point}: group-wise weights run as 2- or 4-bit MatMulNBits, got ${q.weightBits}-bit weights`);
  const [N, K] = weight.shape;
  const feeds = kindOf(q.input).simulationFeeds(q.input, `${point}.x_`, []);
  // The Δs the simulation feeds as graph inputs are constants here: the same nodes, the same f32 values.
  const constant = (name: string): ValueInfo => {
    const f = feeds[`${point}.x_${name}`];
    return { name: g.floats(`${point}.x_${name}`, f.data, f.shape), elemType: OnnxType.FLOAT, shape: [...f.shape] };
  };
  const xHat = dequantizedActivation(g, q.input, x.name, `${point}.x_`, constant);
  const bits = q.weightBits <= 2 ? 2 : 4;
  return matMulNBits(g, point, xHat, codes, Float32Array.from(q.weightDeltas), bias, { N, K, bits }, { blockSize: G, accuracyLevel: GROUPWISE_ACCURACY_LEVEL });
}
