/**
 * PTQ4ViT calibration: one FP32 pass over the calibration images records every quantization point's
 * inputs, output and (for the Hessian metric) ∂L/∂O; then each point's scales are searched on its own
 * FP32 data (parallel paradigm), in model order.
 */
import { computeGradients } from '../grad/gradients.js';
import type { LossKind } from '../grad/loss.js';
import type { QuantPoint, Runner, VisionModel } from '../models/types.js';
import { linear as linearFp, matmul as matmulFp } from '../tensor/gemm.js';
import { Tensor, concatFloat32 } from '../tensor/tensor.js';
import type { PointQuant } from './params.js';
import { searchLinear, searchMatmul, type SearchConfig } from './search.js';

export interface CalibrationOptions extends SearchConfig {
  /** Loss whose gradient weights the Hessian metric (ignored by the cosine metric). */
  loss: LossKind;
  seed: number;
  /** Images per forward/backward pass while recording. */
  chunkSize?: number;
  onRecorded?: () => void;
  onPoint?: (done: number, total: number, point: string) => void;
}

interface PointData {
  inputs: Float32Array[][];
  inputShapes: number[][];
  output: Float32Array[];
  outputShape: number[];
  grad: Float32Array[];
}

/** A runner that only records (the cosine metric needs no gradients). */
class Recorder implements Runner {
  constructor(private readonly sink: (point: string, output: Tensor, inputs: Tensor[]) => void) {}
  async linear(point: string, x: Tensor, w: Tensor, b: Tensor | null): Promise<Tensor> {
    const y = await linearFp(x, w, b);
    this.sink(point, y, [x]);
    return y;
  }
  async matmul(point: string, a: Tensor, b: Tensor, transB: boolean): Promise<Tensor> {
    const y = await matmulFp(a, b, transB);
    this.sink(point, y, [a, b]);
    return y;
  }
}

/** Leading dimension scaled from one chunk to the whole set (it counts images, or images·heads…). */
function fullShape(shape: readonly number[], chunkImages: number, totalImages: number): number[] {
  return [(shape[0] / chunkImages) * totalImages, ...shape.slice(1)];
}

async function record(model: VisionModel, images: Tensor, labels: Int32Array | null, opts: CalibrationOptions): Promise<Map<string, PointData>> {
  const data = new Map<string, PointData>();
  const total = images.shape[0];
  const store = (count: number, point: string, output: Tensor, inputs: Tensor[], grad: Tensor | null) => {
    let d = data.get(point);
    if (!d) {
      d = { inputs: inputs.map(() => []), inputShapes: inputs.map((t) => fullShape(t.shape, count, total)), output: [], outputShape: fullShape(output.shape, count, total), grad: [] };
      data.set(point, d);
    }
    inputs.forEach((t, i) => d.inputs[i].push(t.data));
    d.output.push(output.data);
    if (grad) d.grad.push(grad.data);
  };
  const chunkSize = opts.chunkSize ?? 8;
  if (opts.metric === 'hessian') {
    await computeGradients(model, images, labels, { loss: opts.loss, chunkSize, seed: opts.seed }, (chunk, point, g, out, inputs) => store(chunk.count, point, out, inputs, g));
  } else {
    const per = images.size / total;
    for (let start = 0; start < total; start += chunkSize) {
      const count = Math.min(chunkSize, total - start);
      const chunk = new Tensor(images.data.subarray(start * per, (start + count) * per), [count, ...images.shape.slice(1)]);
      await model.forward(chunk, new Recorder((point, out, inputs) => store(count, point, out, inputs, null)));
    }
  }
  return data;
}

/** [G, N, K] → [G, K, N]: the B operand of q·kᵀ in the orientation the search multiplies with. */
function transposeLast(t: Tensor): Tensor {
  const [g, n, k] = t.shape;
  const out = new Float32Array(t.size);
  for (let i = 0; i < g; i++) {
    const base = i * n * k;
    for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) out[base + c * n + r] = t.data[base + r * k + c];
  }
  return new Tensor(out, [g, k, n]);
}

async function searchPoint(point: QuantPoint, d: PointData, weights: Map<string, { weight: Tensor; bias: Tensor | null }>, opts: CalibrationOptions): Promise<PointQuant> {
  const output = new Tensor(concatFloat32(d.output), d.outputShape);
  const grad = d.grad.length ? new Tensor(concatFloat32(d.grad), d.outputShape) : null;
  const inputs = d.inputs.map((parts, i) => new Tensor(concatFloat32(parts), d.inputShapes[i]));
  if (point.kind === 'matmul') {
    const b = point.transB ? transposeLast(inputs[1]) : inputs[1];
    return searchMatmul({ point: point.name, heads: point.heads ?? 1, a: inputs[0], b, out: output, grad, postSoftmax: point.input === 'post-softmax' }, opts);
  }
  const w = weights.get(point.name);
  if (!w) throw new Error(`weights of '${point.name}' were not seen during recording`);
  return searchLinear({ point: point.name, kind: point.kind, x: inputs[0], weight: w.weight, bias: w.bias, out: output, grad, weightGroups: point.weightGroups ?? 1, postGelu: point.input === 'post-gelu' }, opts);
}

/** Capture each linear point's weight and bias tensors by running one image through a spy runner. */
async function linearWeights(model: VisionModel, images: Tensor): Promise<Map<string, { weight: Tensor; bias: Tensor | null }>> {
  const found = new Map<string, { weight: Tensor; bias: Tensor | null }>();
  const per = images.size / images.shape[0];
  const one = new Tensor(images.data.subarray(0, per), [1, ...images.shape.slice(1)]);
  await model.forward(one, {
    linear: async (point, x, weight, bias) => {
      found.set(point, { weight, bias });
      return linearFp(x, weight, bias);
    },
    matmul: (_point, a, b, transB) => matmulFp(a, b, transB),
  });
  return found;
}

/** Every quantization point's FP32 inputs, output and ∂L/∂O over the calibration set. */
export interface CalibrationRecords {
  data: Map<string, PointData>;
  weights: Map<string, { weight: Tensor; bias: Tensor | null }>;
  withGradients: boolean;
}

export async function recordCalibration(model: VisionModel, images: Tensor, labels: Int32Array | null, opts: CalibrationOptions): Promise<CalibrationRecords> {
  const weights = await linearWeights(model, images);
  const data = await record(model, images, labels, opts);
  return { data, weights, withGradients: opts.metric === 'hessian' };
}

/** Search every point on recorded data. With `release`, each point's records are freed once searched. */
export async function searchAll(model: VisionModel, records: CalibrationRecords, opts: CalibrationOptions, release: boolean): Promise<PointQuant[]> {
  if (opts.metric === 'hessian' && !records.withGradients) throw new Error('the Hessian metric needs records made with gradients');
  const result: PointQuant[] = [];
  const points = model.quantPoints;
  for (let i = 0; i < points.length; i++) {
    const point = points[i];
    const d = records.data.get(point.name);
    if (!d) throw new Error(`quantization point '${point.name}' was never called in the forward pass`);
    if (release) records.data.delete(point.name);
    result.push(await searchPoint(point, d, records.weights, opts));
    opts.onPoint?.(i + 1, points.length, point.name);
  }
  return result;
}

export async function calibrate(model: VisionModel, images: Tensor, labels: Int32Array | null, opts: CalibrationOptions): Promise<PointQuant[]> {
  const records = await recordCalibration(model, images, labels, opts);
  opts.onRecorded?.();
  return searchAll(model, records, opts, true);
}
