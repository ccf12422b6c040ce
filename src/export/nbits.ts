/**
 * Linear layers as onnxruntime's com.microsoft MatMulNBits (k-bit weights in blocks along the input dimension,
 * float activations in and out) — the alternative to ptq4vit's packed-then-int8 graph (packed.ts) that the
 * deployment benchmark measures, and the transformers.js-style `q4` recipe the comparison builds:
 *
 *   - `nbitsProducts(points, codes, …)`: ptq4vit's own 4-bit (or 2-bit) codes and Δs (per tensor or per channel,
 *     repeated in every block of a row) in MatMulNBits; the activations reach it in float, so at accuracy_level 4
 *     onnxruntime quantizes them to int8 per block on the fly (not with ptq4vit's calibrated Δs), and at level 0
 *     it multiplies in float. Attention products and the patch conv stay as in the integer graph.
 *   - `q4RecipeProducts(…)`: the recipe transformers.js's conversion script asks of onnxruntime for `q4` —
 *     round-to-nearest, symmetric, blocks of 32 input channels, the block's largest-magnitude weight on code −8
 *     (MLAS's blockwise quantizer) — on every linear layer of the FP32 model; everything else float.
 *
 * MatMulNBits' B is [N, blocks, blockSize·bits/8] uint8, codes offset by 2^(bits−1), low bits first: the same
 * bytes as the packed layout of src/quant/packing.ts when K is a multiple of the block size.
 */
import { Ptq4vitError } from '../errors.js';
import type { PointQuant } from '../quant/params.js';
import { GraphBuilder } from '../onnx/builder.js';
import { packCodes } from '../quant/packing.js';
import type { Tensor } from '../tensor/tensor.js';
import { fp32Products, integerProducts, type WeightCodes } from './products.js';

import type { ProductEmitter } from './trace.js';

export interface NBitsOptions {
  /** Input channels per block (a power of two ≥ 16; K must be a multiple of it). */
  blockSize: number;
  /** MatMulNBits accuracy_level: 0 (float compute) or 4 (int8 activations per block, computed on the fly). */
  accuracyLevel: 0 | 4;
}

/**
 * x·Wᵀ + b as MatMulNBits with signed `bits`-bit codes [N, K] and one Δ per (row, block) (`blockDeltas`,
 * row-major [N, K/blockSize]). B is [N, blocks, blockSize·bits/8] uint8, codes offset by 2^(bits−1), low bits
 * first: the packed layout of packing.ts when K is a multiple of the block size.
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


/** ptq4vit's quantized model with its linear layers (quantized input, ≤ 4-bit weights) in MatMulNBits. */
export function nbitsProducts(points: readonly PointQuant[], codes: WeightCodes, o: NBitsOptions): ProductEmitter {
  const integer = integerProducts(points, codes);
  const params = new Map(points.map((p) => [p.point, p]));
  return {
    linear(g, point, x, weight, bias) {
      const q = params.get(point);
      if (!q || q.kind !== 'linear' || !q.input) return integer.linear(g, point, x, weight, bias);
      const [N, K] = weight.shape;
      const bits = q.weightBits <= 2 ? 2 : q.weightBits <= 4 ? 4 : 8;
      if (q.weightGroups) {
        // Group-wise Δs are per block already: only their own block size fits.
        if (q.weightGroups.size !== o.blockSize) throw new Ptq4vitError(`${point}: group-wise weights of ${q.weightGroups.size} input channels cannot run in MatMulNBits blocks of ${o.blockSize}`);
        // One Δ per (row, block): the row's Δ times the block's multiplier.
        const per = K / o.blockSize;
        return matMulNBits(g, point, x.name, codes(q, weight), Float32Array.from(q.weightGroups.multipliers, (v, i) => q.weightDeltas[Math.floor(i / per)] * v), bias, { N, K, bits }, o);
      }
      const rowsPerGroup = N / q.weightDeltas.length;
      const blocks = K / o.blockSize;
      const deltas = Float32Array.from({ length: N * blocks }, (_, i) => q.weightDeltas[Math.floor(Math.floor(i / blocks) / rowsPerGroup)]);
      return matMulNBits(g, point, x.name, codes(q, weight), deltas, bias, { N, K, bits }, o);
    },
    matmul: integer.matmul,
  };
}

/** The `q4` recipe: RTN symmetric 4-bit blocks of `blockSize` on every linear layer of the float model. */
export function q4RecipeProducts(o: NBitsOptions): ProductEmitter {
  return {
    linear(g, point, x, weight, bias) {
      const [N, K] = weight.shape;
      if (weight.shape.length !== 2 || K % o.blockSize !== 0) return fp32Products.linear(g, point, x, weight, bias);
      const blocks = K / o.blockSize;
      const codes = new Int8Array(N * K);
      const deltas = new Float32Array(N * blocks);
      for (let n = 0; n < N; n++) {
        for (let blk = 0; blk < blocks; blk++) {
          const start = n * K + blk * o.blockSize;
          let extreme = 0;
          for (let i = start; i < start + o.blockSize; i++) if (Math.abs(weight.data[i]) > Math.abs(extreme)) extreme = weight.data[i];
          // The largest-magnitude weight lands on −8 (a negative Δ when it is positive), as MLAS quantizes.
          const delta = Math.fround(extreme === 0 ? 1 : extreme / -8);
          deltas[n * blocks + blk] = delta;
          for (let i = start; i < start + o.blockSize; i++) codes[i] = Math.max(-8, Math.min(7, Math.round(weight.data[i] / delta)));
        }
      }
      return matMulNBits(g, point, x.name, codes, deltas, bias, { N, K, bits: 4 }, o);
    },
    matmul: fp32Products.matmul,
  };
}

/**
 * The `q8` recipe transformers.js's conversion script asks of onnxruntime (quantize_dynamic, per channel, reduced
 * range, uint8 weights): every linear layer's input quantized to uint8 per call (DynamicQuantizeLinear: the
 * batch's own min/max), weights uint8 per output channel over 7 bits (asymmetric, zero point per channel),
 * MatMulInteger, one rescale by Δx·Δw per column and the bias in float. Attention products stay float.
 */
export function q8DynamicProducts(): ProductEmitter {
  return {
    linear(g, point, x, weight, bias) {
      if (weight.shape.length !== 2) return fp32Products.linear(g, point, x, weight, bias);
      const [N, K] = weight.shape;
      const codesT = new Uint8Array(K * N);
      const scales = new Float32Array(N), zeros = new Uint8Array(N);
      for (let n = 0; n < N; n++) {
        let lo = 0, hi = 0; // the range always includes 0, as onnxruntime's quantizer makes it
        for (let k = 0; k < K; k++) {
          lo = Math.min(lo, weight.data[n * K + k]);
          hi = Math.max(hi, weight.data[n * K + k]);
        }
        const scale = Math.fround(hi > lo ? (hi - lo) / 127 : 1);
        const zero = Math.max(0, Math.min(127, Math.round(-lo / scale)));
        scales[n] = scale;
        zeros[n] = zero;
        for (let k = 0; k < K; k++) codesT[k * N + n] = Math.max(0, Math.min(127, Math.round(weight.data[n * K + k] / scale) + zero));
      }
      const [xq, xScale, xZero] = ['q', 'scale', 'zero'].map((s) => g.fresh(`${point}.x_${s}`));
      g.nodes.push({ op: 'DynamicQuantizeLinear', inputs: [x.name], outputs: [xq, xScale, xZero] }); // three outputs
      const w = g.uint8Tensor(`${point}.weight_u8T`, codesT, [K, N]);
      const p = g.op('MatMulInteger', [xq, w, xZero, g.uint8Tensor(`${point}.weight_zero`, zeros, [N])], undefined, `${point}.p`);
      const rescale = g.op('Mul', [xScale, g.floats(`${point}.weight_scale`, scales, [N])], undefined, `${point}.rescale`);
      const y = g.op('Mul', [g.op('Cast', [p], { to: 1 }, `${point}.pf`), rescale], undefined, `${point}.y`);
      return bias ? g.op('Add', [y, g.floats(`${point}.bias`, bias.data, [bias.size], bias.data)], undefined, point) : y;
    },
    matmul: fp32Products.matmul,
  };
}
