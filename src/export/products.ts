/**
 * The quantization points as ONNX nodes: float32 products (the FP32 export) and integer products
 * (the quantized export: int8 weight codes from the quantized file, activations quantized with their
 * calibrated Δs, integer products with int32 accumulation and one rescale — see src/quant/integer.ts).
 */
import { Ptq4vitError } from '../errors.js';
import type { GraphBuilder } from '../onnx/builder.js';
import { OnnxType } from '../onnx/proto.js';
import { integerLinear, integerProduct, rescaleConstant, signedCodes, type CodePart } from '../quant/integer.js';
import { activationCodes } from '../quant/kinds/index.js';
import type { LinearQuant, MatmulQuant, PointQuant } from '../quant/params.js';
import type { Tensor } from '../tensor/tensor.js';
import type { ProductEmitter, Traced } from './trace.js';
import { isPacked } from '../quant/packing.js';
import { packedWeightCodesT } from './packed.js';

/** W [out, in] → Wᵀ [in, out] (row-major), so MatMul(x, Wᵀ) needs no runtime transpose. */
function transposed<T extends Float32Array | Int8Array>(data: T, rows: number, cols: number, make: (n: number) => T): T {
  const out = make(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

function addBias(g: GraphBuilder, y: string, bias: Tensor | null, point: string): string {
  return bias ? g.op('Add', [y, g.floats(`${point}.bias`, bias.data, [bias.size], bias.data)], undefined, point) : y;
}

/** a·b or a·bᵀ in float. */
function floatMatmul(g: GraphBuilder, point: string, a: string, b: string, transB: boolean): string {
  const right = transB ? g.transpose(b, [0, 2, 1], `${point}.bT`) : b;
  return g.op('MatMul', [a, right], undefined, point);
}

export const fp32Products: ProductEmitter = {
  linear(g, point, x, weight, bias) {
    const [out, inp] = weight.shape;
    const wt = g.floats(`${point}.weightT`, transposed(weight.data, out, inp, (n) => new Float32Array(n)), [inp, out]);
    return addBias(g, g.op('MatMul', [x.name, wt], undefined, `${point}.matmul`), bias, point);
  },
  matmul: (g, point, a, b, transB) => floatMatmul(g, point, a.name, b.name, transB),
};

/** Int8 codes of a quantized weight [out, in], as stored in the quantized file. */
export type WeightCodes = (q: LinearQuant, weight: Tensor) => Int8Array;

/**
 * Integer products for a quantized model. `codes` gives each weight's int8 codes (the file's own codes;
 * never re-quantized from the dequantized floats when a file is exported).
 */
export function integerProducts(points: readonly PointQuant[], codes: WeightCodes): ProductEmitter {
  const params = new Map(points.map((p) => [p.point, p]));
  const param = (point: string): PointQuant => {
    const p = params.get(point);
    if (!p) throw new Ptq4vitError(`no quantization parameters for '${point}'`);
    return p;
  };
  return {
    linear(g, point, x, weight, bias) {
      const q = param(point);
      if (q.kind === 'matmul') throw new Ptq4vitError(`'${point}' is an attention product, used as a linear layer`);
      if (q.weightBits > 8) throw new Ptq4vitError(`${point}: ${q.weightBits}-bit weights do not fit the int8 container of the integer graph (2–8 bits)`);
      const [out, inp] = weight.shape;
      // ≤ 4-bit codes are stored packed and unpacked to int8 when the session loads (packed.ts); group-wise ones
      // times their group's multiplier there, so the product below is the per-channel one either way.
      const wt = isPacked(q.weightBits)
        ? packedWeightCodesT(g, `${point}.weight`, codes(q, weight), out, q.weightBits, q.weightGroups)
        : g.int8s(`${point}.weight_codesT`, transposed(codes(q, weight), out, inp, (n) => new Int8Array(n)), [inp, out]);
      const rowsPerGroup = out / q.weightDeltas.length;
      // Δ_w of output column n (q, k, v blocks of qkv; one per channel for the patch conv).
      const weightScale = (n: number): number => q.weightDeltas[Math.floor(n / rowsPerGroup)];
      if (!q.input) {
        // Float input (the patch embedding's image): weights = codes·Δ, float product. Written as Cast + Mul
        // (folded to a float constant when the session loads) rather than DequantizeLinear: onnxruntime
        // rewrites DequantizeLinear → MatMul into a dynamically quantized product, which would also round
        // the image (measured: 2e-2 error on a unit-scale product).
        const scales = g.floats(`${point}.weight_scale`, Float32Array.from({ length: out }, (_, n) => weightScale(n)), [out]);
        const w = g.op('Mul', [g.op('Cast', [wt], { to: OnnxType.FLOAT }, `${point}.weight_codes_f`), scales], undefined, `${point}.weightT`);
        return addBias(g, g.op('MatMul', [x.name, w], undefined, `${point}.matmul`), bias, point);
      }
      const left = activationCodes(g, x.name, q.input, `${point}.x`);
      const weightDeltas = Float32Array.from({ length: out }, (_, n) => weightScale(n));
      const b = bias ? g.floats(`${point}.bias`, bias.data, [bias.size], bias.data) : null;
      const y = integerLinear(g, left, wt, weightDeltas, b, point);
      if (!isPacked(q.weightBits)) {
        // Output columns [start, end) alone (qkv's q, k, v): the product with those weight rows, so no float
        // Split follows it. Every output column is its own int32 sum, rescale and bias: the same numbers.
        const rows = codes(q, weight);
        g.markSliceable(y, x.shape.length, (start, end) => {
          const n = end - start;
          const wtBlock = g.int8s(`${point}.weight_codesT`, transposed(rows.subarray(start * inp, end * inp), n, inp, (len) => new Int8Array(len)), [inp, n]);
          const bBlock = bias ? g.floats(`${point}.bias`, bias.data.slice(start, end), [n]) : null;
          return integerLinear(g, left, wtBlock, weightDeltas.slice(start, end), bBlock, `${point}_${start}`);
        });
      }
      return y;
    },
    matmul(g, point, a, b, transB) {
      const q = param(point) as MatmulQuant;
      if (q.kind !== 'matmul') throw new Ptq4vitError(`'${point}' is a linear layer, used as an attention product`);
      const heads = q.heads;
      // [G, M, K] with G = outer·heads → [outer, heads, M, K], so per-head Δs apply along axis 1.
      const [, m, k] = a.shape;
      const a4 = g.reshape(a.name, [-1, heads, m, k], `${point}.a4`);
      const b4 = g.reshape(b.name, [-1, heads, b.shape[1], b.shape[2]], `${point}.b4`);
      const left = activationCodes(g, a4, q.a, `${point}.a`);
      const right = signedCodes(g, b4, q.b, `${point}.b`);
      const rightCodes = transB ? g.transpose(right.codes, [0, 1, 3, 2], `${point}.bT`) : right.codes;
      const headScale = (part: CodePart): Float32Array =>
        Float32Array.from({ length: heads }, (_, h) => rescaleConstant(part.scales.length > 1 ? part.scales[h] : part.scales[0], right.scales.length > 1 ? right.scales[h] : right.scales[0]));
      const n = transB ? b.shape[1] : b.shape[2];
      const product = (factor: number): string => g.reshape(integerProduct(g, left, rightCodes, k, headScale, point, factor), [-1, m, n], point);
      const y = product(1);
      // The attention scale (a power of two for head widths 4^j) rides in the rescale: GraphBuilder.foldScale.
      g.markScalable(y, product);
      return y;
    },
  };
}
