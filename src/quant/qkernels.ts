/**
 * Quantized inference op by op (the simulation `QuantRunner` runs): each product is one small onnxruntime
 * graph that rounds its activation to the k-bit grid and multiplies — in float, on the quantization grid.
 *
 * The product is factored as the quantizers define it, x̂·ŵ = Δx·Δw·(codes_x·codes_w): float products of
 * integer-valued codes are exact while the sums stay below 2^24, and one rescale follows — the same
 * arithmetic plan as the exported integer graph (src/quant/integer.ts: the same parts; for twin ranges the
 * shared accumulator P1 + 2^m·P2 in attention products and one rescale per part in linear layers; the same
 * f32 rescale constants, rescaleConstant). So the simulation predicts the
 * deployed model bit for bit wherever the float sums are exact, while running for any width (2–16 bits).
 */
import { GraphBuilder } from '../onnx/builder.js';
import { OnnxType, type ValueInfo } from '../onnx/proto.js';
import { runGraph } from '../tensor/ort.js';
import { Tensor } from '../tensor/tensor.js';
import { rescaleConstant, sharedAccumulatorShift } from './integer.js';
import { kindOf, partScales, type SimulationGraph } from './kinds/index.js';
import type { ActivationQuant } from './params.js';

const f32 = OnnxType.FLOAT;
type Feed = { data: Float32Array; shape: readonly number[] };

/**
 * Float code parts of activation `x` (the uint8 codes of the integer graph minus their zero point), as the
 * quantizer's kind defines them (kinds/*.ts simulationCodes). Δs are graph inputs `${p}s1`, `${p}s2`, …
 * (so one session serves every layer of a kind and width).
 */
function codeParts(g: GraphBuilder, q: ActivationQuant, x: string, p: string, perHeadShape: (string | number)[]): { parts: string[]; inputs: ValueInfo[] } {
  const scale = (name: string, shape: (string | number)[] = [1]): ValueInfo => ({ name: g.reserve(`${p}${name}`), elemType: f32, shape });
  return kindOf(q).simulationCodes(q, { g, x, prefix: p, perHeadShape, grid: floatGrid(g, x), scale });
}

/** clamp(round(x/s), lo, hi) as float ONNX nodes: the simulation's codes. */
function floatGrid(g: GraphBuilder, x: string): SimulationGraph['grid'] {
  return (s, lo, hi, hint) => g.op('Clip', [g.op('Round', [g.op('Div', [x, s], undefined, `${hint}_div`)], undefined, `${hint}_round`), g.float(`${hint}_lo`, lo), g.float(`${hint}_hi`, hi)], undefined, hint);
}

/** How the parts' products meet: one accumulator (P1 + 2^m·P2, then one rescale) or one rescale each. */
type Plan = { shared: true; shift: number } | { shared: false };

function plan(q: ActivationQuant, depth: number): Plan {
  const [first, second] = partScales(q);
  if (!second) return { shared: true, shift: 0 };
  const m = sharedAccumulatorShift(first, second, depth);
  return m === null ? { shared: false } : { shared: true, shift: m };
}

function kindKey(q: ActivationQuant, pl: Plan): string {
  return `${kindOf(q).cacheKey(q)}:${pl.shared ? `acc${pl.shift}` : 'sep'}`;
}

/**
 * Σ parts' products, combined by the plan and rescaled: rescale inputs `r1` (and `r2` when separate), and the
 * bias where the integer graph adds it — after the one rescale, or inside the last part's kernel:
 * P1·r1 + (P2·r2 + b) (integer.ts integerLinear).
 */
function combine(g: GraphBuilder, products: string[], pl: Plan, rescaleShape: (string | number)[], bias?: string): { y: string; inputs: ValueInfo[] } {
  const r1: ValueInfo = { name: g.reserve('r1'), elemType: f32, shape: rescaleShape };
  const withBias = (y: string): string => (bias ? g.op('Add', [y, bias], undefined, 'biased') : y);
  if (pl.shared) {
    let acc = products[0];
    if (products.length > 1) acc = g.op('Add', [acc, g.op('Mul', [products[1], g.float('shift', 2 ** pl.shift)], undefined, 'p2_shifted')], undefined, 'acc');
    return { y: withBias(g.op('Mul', [acc, r1.name], undefined, 'rescaled')), inputs: [r1] };
  }
  const r2: ValueInfo = { name: g.reserve('r2'), elemType: f32, shape: rescaleShape };
  const y = g.op('Add', [g.op('Mul', [products[0], r1.name], undefined, 'rescaled1'), withBias(g.op('Mul', [products[1], r2.name], undefined, 'rescaled2'))], undefined, 'sum');
  return { y, inputs: [r1, r2] };
}

/** f32 rescale constants of each part: f32(Δ_part·Δ_other) for every output column (or head), as the integer graph's kernels form them. */
function rescaleFeeds(q: ActivationQuant, pl: Plan, other: (i: number) => number, count: number, shape: readonly number[]): Record<string, Feed> {
  const parts = partScales(q);
  const make = (scales: number[]) => ({ data: Float32Array.from({ length: count }, (_, i) => rescaleConstant(scales.length > 1 ? scales[i] : scales[0], other(i))), shape });
  return pl.shared ? { r1: make(parts[0]) } : { r1: make(parts[0]), r2: make(parts[1]) };
}

/** A quantized weight as the simulation holds it: integer codes (as floats) and Δw of every output row. */
export interface WeightGrid {
  codes: Tensor;
  rowDeltas: Float64Array;
}

/** y = Δx·Δw·(codes(x)·codes(W)ᵀ) + b over the last dimension of x. */
export async function quantLinear(x: Tensor, input: ActivationQuant, w: WeightGrid, bias: Tensor | null): Promise<Tensor> {
  const [outFeatures, inFeatures] = w.codes.shape;
  // The integer graph multiplies each part in its own MatMulIntegerToFloat (integer.ts integerLinear) and adds
  // the float results: one rescale per part, never a shared accumulator, for linear layers.
  const pl: Plan = partScales(input).length > 1 ? { shared: false } : { shared: true, shift: 0 };
  const key = `qlinear:${kindKey(input, pl)}:${bias ? 'b' : ''}`;
  const graph = () => {
    const g = new GraphBuilder();
    const xs = g.reserve('x'), ws = g.reserve('w');
    const { parts, inputs } = codeParts(g, input, xs, 'x_', []);
    const products = parts.map((c, i) => g.op('Gemm', [c, ws], { transB: 1 }, `p${i + 1}`));
    const { y, inputs: rescale } = combine(g, products, pl, ['N'], bias ? g.reserve('b') : undefined);
    g.reserve('y');
    g.opInto('y', 'Identity', [y]);
    return g.finish('qlinear', [
      { name: 'x', elemType: f32, shape: ['M', 'K'] },
      { name: 'w', elemType: f32, shape: ['N', 'K'] },
      ...(bias ? [{ name: 'b', elemType: f32, shape: ['N'] }] : []),
      ...inputs,
      ...rescale,
    ], [{ name: 'y', elemType: f32, shape: ['M', 'N'] }], 17);
  };
  const feeds: Record<string, Feed> = {
    x: { data: x.data, shape: [x.size / inFeatures, inFeatures] },
    w: w.codes,
    ...kindOf(input).simulationFeeds(input, 'x_', []),
    ...rescaleFeeds(input, pl, (n) => w.rowDeltas[n], outFeatures, [outFeatures]),
  };
  if (bias) feeds.b = bias;
  const y = await runGraph(key, graph, feeds);
  return y.reshape([...x.shape.slice(0, -1), outFeatures]);
}

/** Q(a)·Q(b) (or Q(a)·Q(b)ᵀ), operands [G, M, K] with G = outer·heads, head fastest; one Δ per head. */
export async function quantMatmul(a: Tensor, b: Tensor, transB: boolean, qa: ActivationQuant, qb: ActivationQuant, heads: number): Promise<Tensor> {
  const [G, M, K] = a.shape;
  const outer = G / heads;
  const pl = plan(qa, K);
  const key = `qmatmul:${kindKey(qa, pl)}:${kindKey(qb, { shared: true, shift: 0 })}:${transB ? 'T' : 'N'}`;
  const perHead: (string | number)[] = [1, 'H', 1, 1];
  const graph = () => {
    const g = new GraphBuilder();
    const as = g.reserve('a'), bs = g.reserve('b');
    const left = codeParts(g, qa, as, 'a_', perHead);
    const right = codeParts(g, qb, bs, 'b_', perHead);
    const rightCodes = transB ? g.transpose(right.parts[0], [0, 1, 3, 2], 'bT') : right.parts[0];
    const products = left.parts.map((c, i) => g.op('MatMul', [c, rightCodes], undefined, `p${i + 1}`));
    const { y, inputs: rescale } = combine(g, products, pl, perHead);
    g.reserve('y');
    g.opInto('y', 'Identity', [y]);
    return g.finish('qmatmul', [
      { name: 'a', elemType: f32, shape: ['O', 'H', 'M', 'K'] },
      { name: 'b', elemType: f32, shape: transB ? ['O', 'H', 'N', 'K'] : ['O', 'H', 'K', 'N'] },
      ...left.inputs,
      ...right.inputs,
      ...rescale,
    ], [{ name: 'y', elemType: f32, shape: ['O', 'H', 'M', 'N'] }], 17);
  };
  const perHeadShape = [1, heads, 1, 1];
  const [bScales] = partScales(qb);
  const feeds: Record<string, Feed> = {
    a: { data: a.data, shape: [outer, heads, M, K] },
    b: { data: b.data, shape: [outer, heads, b.shape[1], b.shape[2]] },
    ...kindOf(qa).simulationFeeds(qa, 'a_', perHeadShape),
    ...kindOf(qb).simulationFeeds(qb, 'b_', perHeadShape),
    ...rescaleFeeds(qa, pl, (h) => (bScales.length > 1 ? bScales[h] : bScales[0]), heads, perHeadShape),
  };
  const y = await runGraph(key, graph, feeds);
  return y.reshape([G, M, y.shape[3]]);
}

