/**
 * A transformers.js-style "q8" ONNX graph of a model, the way its conversion script makes one with
 * onnxruntime's `quantize_dynamic` (not available here: no onnxruntime Python package on this machine):
 *  - every linear layer with a constant weight (MatMul with a constant B: MatMulConstBOnly) becomes
 *      DynamicQuantizeLinear(x) → uint8 codes, one scale and zero point per call over the whole tensor
 *      MatMulInteger(x_q, W_q, x_zp, W_zp[n]) → int32 → Cast → × (x_scale·W_scale[n]) → + bias
 *  - weights uint8, asymmetric, per output channel, reduced range [0, 127] (reduce_range=True): for each
 *    column, rmin = min(0, w), rmax = max(0, w), scale = (rmax − rmin)/127, zp = round(−rmin/scale)
 *    (round half to even, as numpy), q = clip(round(w/scale) + zp, 0, 127);
 *  - the attention products (two activations) and the patch embedding (a Conv in transformers' graph, its
 *    input the image) stay float.
 * It is built from the same traced model code as our FP32 export (src/export/onnx.ts), with these products.
 */
import { ONNX_INPUT, ONNX_OPSET, onnxOutputName } from '../src/export/onnx.js';
import { fp32Products } from '../src/export/products.js';
import { Tracer, type ProductEmitter } from '../src/export/trace.js';
import { outputDim, type VisionModel } from '../src/models/types.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { encodeModel, OnnxType } from '../src/onnx/proto.js';
import { fp32Runner } from '../src/tensor/runner.js';
import { Tensor } from '../src/tensor/tensor.js';

const QMAX_REDUCED = 127;

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** W [out, in] → Wᵀ codes [in, out] uint8, with per-output-channel scales and zero points. */
export function quantizeWeightsQ8(weight: Tensor): { codesT: Uint8Array; scales: Float32Array; zeroPoints: number[] } {
  const [out, inp] = weight.shape;
  const codesT = new Uint8Array(out * inp), scales = new Float32Array(out), zeroPoints: number[] = [];
  for (let n = 0; n < out; n++) {
    let rmin = 0, rmax = 0;
    for (let k = 0; k < inp; k++) {
      const w = weight.data[n * inp + k];
      rmin = Math.min(rmin, w);
      rmax = Math.max(rmax, w);
    }
    let scale = Math.fround((rmax - rmin) / QMAX_REDUCED);
    if (scale === 0) scale = 1;
    const zp = Math.min(QMAX_REDUCED, Math.max(0, roundHalfEven(-rmin / scale)));
    scales[n] = scale;
    zeroPoints.push(zp);
    for (let k = 0; k < inp; k++) codesT[k * out + n] = Math.min(QMAX_REDUCED, Math.max(0, roundHalfEven(weight.data[n * inp + k] / scale) + zp));
  }
  return { codesT, scales, zeroPoints };
}

function dynamicQ8Products(floatPoints: ReadonlySet<string>): ProductEmitter {
  return {
    linear(g, point, x, weight, bias) {
      if (floatPoints.has(point)) return fp32Products.linear(g, point, x, weight, bias);
      const [out, inp] = weight.shape;
      const { codesT, scales, zeroPoints } = quantizeWeightsQ8(weight);
      const [xq, xScale, xZp] = g.opOutputs('DynamicQuantizeLinear', [x.name], 3, undefined, `${point}.x_dq`);
      const wq = g.uint8Tensor(`${point}.weight_q8T`, codesT, [inp, out]);
      const acc = g.op('MatMulInteger', [xq, wq, xZp, g.uint8s(`${point}.weight_zp`, zeroPoints)], undefined, `${point}.matmul_integer`);
      const rescale = g.op('Mul', [xScale, g.floats(`${point}.weight_scale`, scales, [out])], undefined, `${point}.rescale`);
      const y = g.op('Mul', [g.op('Cast', [acc], { to: OnnxType.FLOAT }, `${point}.acc_f`), rescale], undefined, `${point}.y`);
      return bias ? g.op('Add', [y, g.floats(`${point}.bias`, bias.data, [bias.size])], undefined, point) : y;
    },
    matmul: fp32Products.matmul,
  };
}

/** The q8 graph of `model` (input pixel_values, output as our export names it). */
export async function exportDynamicQ8(model: VisionModel): Promise<Uint8Array> {
  const { spec } = model;
  const g = new GraphBuilder();
  const floatPoints = new Set(model.quantPoints.filter((p) => p.kind === 'conv').map((p) => p.name));
  const tracer = new Tracer(g, fp32Runner, dynamicQ8Products(floatPoints));
  const { inChans, imgSize } = spec.arch;
  const images = new Tensor(Float32Array.from({ length: inChans * imgSize * imgSize }, (_, i) => Math.sin(i * 0.37)), [1, inChans, imgSize, imgSize]);
  tracer.bind(images, g.reserve(ONNX_INPUT));
  const output = await model.forward(images, tracer);
  const name = onnxOutputName(spec);
  g.reserve(name);
  g.opInto(name, 'Identity', [tracer.value(output)]);
  const graph = g.finish(
    `${spec.name} (dynamic q8)`,
    [{ name: ONNX_INPUT, elemType: OnnxType.FLOAT, shape: ['batch', inChans, imgSize, imgSize] }],
    [{ name, elemType: OnnxType.FLOAT, shape: ['batch', outputDim(spec.arch)] }],
    ONNX_OPSET,
  );
  return encodeModel(graph);
}
