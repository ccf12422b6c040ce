/**
 * Group-wise weights (one Δ per output row and group of G input channels): no single Δw factors out of an output
 * column's integer product (MatMulIntegerToFloat's per-column scale), so they run as onnxruntime's com.microsoft
 * MatMulNBits (block_size = G; 4-bit codes — 3-bit ones in the 4-bit container — or 2-bit) with ptq4vit's own
 * codes and Δs, and the calibrated activation in front of it quantized and dequantized:
 *
 *   y = x̂·Ŵᵀ + b,   x̂ = Σ_parts Δx·clamp(round(x/Δx), lo, hi)   (uniform: one part; post-GELU twin: R1 + R2)
 *                   Ŵ[n, k] = Δ_{n, ⌊k/G⌋}·code[n, k]           (MatMulNBits dequantizes each block)
 *
 * at accuracy_level 0, where MatMulNBits multiplies in float. (At level 4 it would quantize x̂ again, to int8 per
 * block with a dynamic scale of its own: not ptq4vit's calibrated grid.)
 *
 * The simulation runs these very nodes (`groupwiseLinearSim`: one session per weight, its codes and Δs constants as
 * in the exported graph), so simulation and deployed graph compute the same floats in the same order: a float
 * product in another summation order would flip a few activation codes downstream (measured: 2 of 500 top-1
 * predictions of a group32 vit_tiny_c10 differed).
 */
import { Ptq4vitError } from '../errors.js';
import { GraphBuilder } from '../onnx/builder.js';
import { OnnxType, type ValueInfo } from '../onnx/proto.js';
import { runGraph } from '../tensor/ort.js';
import { Tensor } from '../tensor/tensor.js';
import { kindOf } from './kinds/index.js';
import { packCodes } from './packing.js';
import type { LinearQuant } from './params.js';
import { dequantizedActivation } from './qkernels.js';

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

/**
 * The nodes of a group-wise linear layer (described above) on input `x`: signed ≤ 4-bit codes [N, K] (row-major)
 * and the point's N·(K/G) Δs. Returns the output's name. `accuracyLevel` other than the default is for speed
 * measurements only (scripts/bench_int4.ts): level 4 is not what the simulation computes.
 */
export function groupwiseNodes(g: GraphBuilder, point: string, x: string, q: LinearQuant, codes: Int8Array, bias: Tensor | null, shape: { N: number; K: number }, accuracyLevel: 0 | 4 = GROUPWISE_ACCURACY_LEVEL): string {
  const G = q.weightGroupSize;
  if (G === undefined) throw new Error(`${point}: not a group-wise point`);
  if (!q.input) throw new Ptq4vitError(`${point}: group-wise weight scales need a quantized input (the patch conv stays per channel)`);
  if (q.weightBits > 4) throw new Ptq4vitError(`${point}: group-wise weights run as 2- or 4-bit MatMulNBits, got ${q.weightBits}-bit weights`);
  const feeds = kindOf(q.input).simulationFeeds(q.input, `${point}.x_`, []);
  // The input's Δs as constants: the kinds' simulation nodes with their Δ inputs made initializers.
  const constant = (name: string): ValueInfo => {
    const f = feeds[`${point}.x_${name}`];
    return { name: g.floats(`${point}.x_${name}`, f.data, f.shape), elemType: OnnxType.FLOAT, shape: [...f.shape] };
  };
  const xHat = dequantizedActivation(g, q.input, x, `${point}.x_`, constant);
  const bits = q.weightBits <= 2 ? 2 : 4;
  return matMulNBits(g, point, xHat, codes, Float32Array.from(q.weightDeltas), bias, { ...shape, bits }, { blockSize: G, accuracyLevel });
}

/** Session ids of the weights the simulation has run (one session per weight: its codes are constants). */
const sessionIds = new WeakMap<Int8Array, number>();
let nextSessionId = 0;

/** The simulation of a group-wise linear layer: the nodes the exported graph holds, run on x [..., K]. */
export async function groupwiseLinearSim(x: Tensor, q: LinearQuant, codes: Int8Array, shape: { N: number; K: number }, bias: Tensor | null): Promise<Tensor> {
  const { N, K } = shape;
  let id = sessionIds.get(codes);
  if (id === undefined) sessionIds.set(codes, (id = nextSessionId++));
  const graph = () => {
    const g = new GraphBuilder();
    const xs = g.reserve('x');
    const y = groupwiseNodes(g, q.point, xs, q, codes, bias, shape);
    g.reserve('y');
    g.opInto('y', 'Identity', [y]);
    return g.finish('groupwise', [{ name: 'x', elemType: OnnxType.FLOAT, shape: ['M', K] }], [{ name: 'y', elemType: OnnxType.FLOAT, shape: ['M', N] }], 17);
  };
  const y = await runGraph(`groupwise:${id}:${q.point}`, graph, { x: { data: x.data, shape: [x.size / K, K] } });
  return y.reshape([...x.shape.slice(0, -1), N]);
}
