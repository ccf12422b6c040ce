/**
 * Batched scoring of scale candidates on onnxruntime. One graph fake-quantizes an operand under C
 * candidate scales at once, runs the layer's product for all of them, and reduces each result to a
 * distance from the FP32 output — the only thing that leaves ORT is a small [C, groups] array.
 *
 *   hessian (PTQ4ViT):  Σ (∂L/∂O ⊙ (Ô − O))²    — lower is better
 *   cosine  (Base PTQ): mean over output rows of cos(O_row, Ô_row) — returned negated, lower is better
 */
import { OnnxType, type GraphSpec, type Initializer, type NodeSpec } from '../onnx/proto.js';
import { kindNamed } from './kinds/index.js';
import { int64s as ints, scalar, type QuantizerKind } from './onnxquant.js';
import { runGraph, type GraphInput } from '../tensor/ort.js';
import { Tensor } from '../tensor/tensor.js';

export type Metric = 'hessian' | 'cosine';

/** How the searched operand is fake-quantized inside the graph. */
export type SearchedQuantizer = QuantizerKind;

const f32 = OnnxType.FLOAT;

/** The searched operand `x` quantized into `xq` under the candidate scales s (and whatever else its kind needs). */
function searchedQuantNodes(kind: SearchedQuantizer, bits: number, deltaR2: number): { nodes: NodeSpec[]; inits: Initializer[]; scaleInputs: string[] } {
  return kindNamed(kind).fakeQuantNodes(bits, 'x', 'xq', '', deltaR2);
}

/**
 * The scale inputs a kind's nodes take besides `s` (twin GELU: s2, the negative side's Δ; twin softmax: split,
 * the R1/R2 boundary), one value per candidate: declared from the kind's nodes when a graph is built, fed from
 * the candidates' ScoringScales on every call (the graph is built once per cache key, the feeds every time).
 */
const extraScaleInputs = (scaleInputs: readonly string[], shape: (string | number)[]) => scaleInputs.filter((n) => n !== 's').map((name) => ({ name, elemType: f32, shape }));
function extraScaleFeeds(given: { scales2?: Float32Array; splits?: Float32Array }, shape: number[]): Record<string, Feed> {
  return { ...(given.scales2 ? { s2: { data: given.scales2, shape } } : {}), ...(given.splits ? { split: { data: given.splits, shape } } : {}) };
}

/**
 * Nodes reducing the candidates' outputs `y` against `o` (and `g`) to the score output 'score'.
 * `sumAxes`: axes summed for the hessian metric; cosine works over `cosineAxis` (the last: per output
 * row, optionally split into `groups` equal blocks first; −2: per output column) and leaves the cosines
 * for the caller to average.
 */
function metricNodes(metric: Metric, sumAxes: number[], groups: number, cosineAxis = -1): { nodes: NodeSpec[]; inits: Initializer[] } {
  if (metric === 'hessian') {
    return {
      nodes: [
        { op: 'Sub', inputs: ['y', 'o'], outputs: ['diff'] },
        { op: 'Mul', inputs: ['diff', 'g'], outputs: ['wdiff'] },
        { op: 'ReduceSumSquare', inputs: ['wdiff'], outputs: ['score'], attributes: { axes: sumAxes, keepdims: 0 } },
      ],
      inits: [],
    };
  }
  // cos = Σ o·y / max(|o|·|y|, 1e-8) over each row (or each of `groups` blocks of a row), as torch.
  const nodes: NodeSpec[] = [];
  let y = 'y', o = 'o';
  const inits: Initializer[] = [ints('last', [cosineAxis]), scalar('eps', 1e-8)];
  if (groups > 1) {
    // y is [C, M, N], o is [M, N]: split N into groups on both.
    nodes.push({ op: 'Reshape', inputs: ['y', 'yshape'], outputs: ['yg'] }, { op: 'Reshape', inputs: ['o', 'oshape'], outputs: ['og'] });
    inits.push(ints('yshape', [0, 0, groups, -1]), ints('oshape', [0, groups, -1]));
    y = 'yg';
    o = 'og';
  }
  nodes.push(
    { op: 'Mul', inputs: [y, o], outputs: ['oy'] },
    { op: 'ReduceSum', inputs: ['oy', 'last'], outputs: ['dot'], attributes: { keepdims: 0 } },
    { op: 'Mul', inputs: [y, y], outputs: ['yy'] },
    { op: 'ReduceSum', inputs: ['yy', 'last'], outputs: ['ny2'], attributes: { keepdims: 0 } },
    { op: 'Mul', inputs: [o, o], outputs: ['oo'] },
    { op: 'ReduceSum', inputs: ['oo', 'last'], outputs: ['no2'], attributes: { keepdims: 0 } },
    { op: 'Mul', inputs: ['ny2', 'no2'], outputs: ['n2'] },
    { op: 'Sqrt', inputs: ['n2'], outputs: ['n'] },
    { op: 'Max', inputs: ['n', 'eps'], outputs: ['nc'] },
    { op: 'Div', inputs: ['dot', 'nc'], outputs: ['score'] },
  );
  return { nodes, inits };
}

type Feed = { data: Float32Array; shape: readonly number[] };
const feed = (t: Tensor | Feed, shape?: readonly number[]): Feed => ({ data: t.data, shape: shape ?? t.shape });

export interface LinearScoreInputs {
  /** The operand that is searched (x for an input search, w for a weight search). */
  searched: 'input' | 'weight';
  x: Tensor; // [M, K] (already quantized when the weight is searched)
  w: Tensor; // [N, K] (already quantized when the input is searched)
  bias: Tensor | null;
  out: Tensor; // FP32 output [M, N]
  grad: Tensor | null; // ∂L/∂O [M, N] for the hessian metric
  /**
   * Candidate scales: input search [C] (per tensor); weight search [C·N] (one per candidate and output row,
   * so per-group/per-channel weights are searched for every group at once — rows are independent).
   */
  scales: Float32Array;
  /** twin-gelu input search: the negative-side Δ per candidate [C]. */
  scales2?: Float32Array;
  candidates: number;
  bits: number;
  quantizer: SearchedQuantizer;
  metric: Metric;
  /** Cosine over blocks of output rows (the q/k/v groups of a qkv weight). */
  cosineGroups: number;
  /** Cosine per output channel (over all rows) instead of per row: for per-channel conv weights. */
  cosinePerColumn?: boolean;
  /**
   * Weight search with group-wise scales: `scales` holds one Δ per candidate, output row and group of this many
   * input channels [C·N·(K/G)]; w is quantized as [N, K/G, G] under scales [C, N, K/G, 1] and reshaped back.
   */
  weightGroupSize?: number;
}

/**
 * Scores of C candidates for a linear layer y = x·wᵀ + b.
 * Hessian: input search → [C]; weight search → [C, N] (per output row; sum rows of a group).
 * Cosine: [C, M, groups] row cosines (average over M; higher is better), or [C, N] with cosinePerColumn.
 */
export async function scoreLinear(p: LinearScoreInputs): Promise<Float32Array> {
  const outFeatures = p.w.shape[0];
  const C = p.candidates;
  const searchW = p.searched === 'weight';
  // The Hessian metric only needs Ô − O = x̂·ŵᵀ − (O − b): the bias is folded into the target once.
  const addBias = p.bias !== null && p.metric === 'cosine';
  const group = searchW ? p.weightGroupSize : undefined;
  const key = `lin:${p.searched}:${p.quantizer}:${p.bits}:${p.metric}:${p.cosineGroups}:${p.cosinePerColumn ? 'col' : 'row'}:${addBias ? 'b' : ''}${group ? ':grp' : ''}`;
  const graph = (): GraphSpec => {
    const q = searchedQuantNodes(p.quantizer, p.bits, 0);
    const m = metricNodes(p.metric, searchW ? [1] : [1, 2], p.cosineGroups, p.cosinePerColumn ? -2 : -1);
    const renameX = searchW ? 'w' : 'x';
    const quantNodes = q.nodes.map((n) => ({ ...n, inputs: n.inputs.map((i) => (i === 'x' ? renameX : i)) }));
    // Group-wise: [C, N, K/G, G] → [C, N, K].
    const grouped: NodeSpec[] = group ? [{ op: 'Reshape', inputs: ['xqg', 'cnk'], outputs: ['xq'] }] : [];
    if (group) quantNodes.forEach((n) => (n.outputs = n.outputs.map((o) => (o === 'xq' ? 'xqg' : o))));
    const nodes: NodeSpec[] = [
      ...quantNodes,
      ...grouped,
      ...(searchW
        ? [
            { op: 'Transpose', inputs: ['xq'], outputs: ['wt'], attributes: { perm: [0, 2, 1] } },
            { op: 'MatMul', inputs: ['x', 'wt'], outputs: [addBias ? 'y0' : 'y'] },
          ]
        : [
            { op: 'Transpose', inputs: ['w'], outputs: ['wt'] },
            { op: 'MatMul', inputs: ['xq', 'wt'], outputs: [addBias ? 'y0' : 'y'] },
          ]),
      ...(addBias ? [{ op: 'Add', inputs: ['y0', 'b'], outputs: ['y'] }] : []),
      ...m.nodes,
    ];
    const inputs: GraphSpec['inputs'] = [
      { name: 'x', elemType: f32, shape: ['M', 'K'] },
      { name: 'w', elemType: f32, shape: group ? ['N', 'KG', 'G'] : ['N', 'K'] },
      { name: 's', elemType: f32, shape: group ? ['C', 'N', 'KG', 1] : searchW ? ['C', 'N', 1] : ['C', 1, 1] },
      { name: 'o', elemType: f32, shape: ['M', 'N'] },
    ];
    inputs.push(...extraScaleInputs(q.scaleInputs, ['C', 1, 1]));
    if (addBias) inputs.push({ name: 'b', elemType: f32, shape: ['N'] });
    if (p.metric === 'hessian') inputs.push({ name: 'g', elemType: f32, shape: ['M', 'N'] });
    const groupInits = group ? [ints('cnk', [0, 0, -1])] : [];
    return { name: 'score_linear', inputs, outputs: [{ name: 'score', elemType: f32, shape: [] }], nodes, initializers: [...q.inits, ...m.inits, ...groupInits], opset: 17 };
  };
  const inFeatures = p.w.shape[1];
  const feeds: Record<string, Feed> = {
    x: feed(p.x),
    w: group ? feed(p.w, [outFeatures, inFeatures / group, group]) : feed(p.w),
    s: { data: p.scales, shape: group ? [C, outFeatures, inFeatures / group, 1] : searchW ? [C, outFeatures, 1] : [C, 1, 1] },
    o: p.bias && !addBias ? feed(minusBias(p.out, p.bias)) : feed(p.out),
  };
  Object.assign(feeds, extraScaleFeeds(p, [C, 1, 1]));
  if (addBias) feeds.b = feed(p.bias!);
  if (p.metric === 'hessian') feeds.g = feed(p.grad!);
  return (await runGraph(key, graph, feeds, 'score', { arena: false })).data;
}

/** O − b, row by row (cached per output tensor: the same layer is scored hundreds of times). */
const targets = new WeakMap<Tensor, Tensor>();
export function minusBias(out: Tensor, bias: Tensor): Tensor {
  let t = targets.get(out);
  if (!t) {
    const n = bias.size;
    const data = new Float32Array(out.size);
    for (let i = 0; i < data.length; i++) data[i] = out.data[i] - bias.data[i % n];
    t = new Tensor(data, out.shape);
    targets.set(out, t);
  }
  return t;
}

export interface MatmulScoreInputs {
  searched: 'A' | 'B';
  /** [O, H, M, K] and [O, H, K, N]; the one not searched is already quantized. */
  a: Feed;
  b: Feed;
  out: Feed; // [O, H, M, N]
  grad: Feed | null;
  /** Δ per candidate and head [C·H] (uniform), or per candidate [C] (twin-softmax: Δ_R1). */
  scales: Float32Array;
  /** twin-softmax: the R1/R2 split 2^(k−1)·Δ_R1 per candidate [C]. */
  splits?: Float32Array;
  deltaR2?: number;
  candidates: number;
  heads: number;
  bits: number;
  quantizer: SearchedQuantizer;
  metric: Metric;
}

/**
 * Scores of C candidates for an attention product y = a·b, per head.
 * Hessian → [C, H] (sum over images and rows); cosine → [C, O, H, M] row cosines.
 */
export async function scoreMatmul(p: MatmulScoreInputs): Promise<Float32Array> {
  const C = p.candidates, H = p.heads;
  // One Δ per candidate and head, or one per candidate for all heads (the softmax twin's Δ_R1).
  const perHead = p.scales.length !== C;
  const key = `mm:${p.searched}:${p.quantizer}:${p.bits}:${p.metric}:${perHead ? 'h' : ''}:${p.deltaR2 ?? ''}`;
  const graph = (): GraphSpec => {
    const q = searchedQuantNodes(p.quantizer, p.bits, p.deltaR2 ?? 0);
    const m = metricNodes(p.metric, [1, 3, 4], 1);
    const operand = p.searched === 'A' ? 'a' : 'b';
    const quantNodes = q.nodes.map((n) => ({ ...n, inputs: n.inputs.map((i) => (i === 'x' ? operand : i)) }));
    const product: NodeSpec = p.searched === 'A' ? { op: 'MatMul', inputs: ['xq', 'b'], outputs: ['y'] } : { op: 'MatMul', inputs: ['a', 'xq'], outputs: ['y'] };
    const inputs: GraphSpec['inputs'] = [
      { name: 'a', elemType: f32, shape: ['O', 'H', 'M', 'K'] },
      { name: 'b', elemType: f32, shape: ['O', 'H', 'K', 'N'] },
      { name: 's', elemType: f32, shape: perHead ? ['C', 1, 'H', 1, 1] : ['C', 1, 1, 1, 1] },
      { name: 'o', elemType: f32, shape: ['O', 'H', 'M', 'N'] },
      ...extraScaleInputs(q.scaleInputs, ['C', 1, 1, 1, 1]),
    ];
    if (p.metric === 'hessian') inputs.push({ name: 'g', elemType: f32, shape: ['O', 'H', 'M', 'N'] });
    return { name: 'score_matmul', inputs, outputs: [{ name: 'score', elemType: f32, shape: [] }], nodes: [...quantNodes, product, ...m.nodes], initializers: [...q.inits, ...m.inits], opset: 17 };
  };
  const feeds: Record<string, Feed> = {
    a: p.a,
    b: p.b,
    s: { data: p.scales, shape: perHead ? [C, 1, H, 1, 1] : [C, 1, 1, 1, 1] },
    o: p.out,
    ...extraScaleFeeds(p, [C, 1, 1, 1, 1]),
  };
  if (p.metric === 'hessian') feeds.g = p.grad!;
  return (await runGraph(key, graph, feeds, 'score', { arena: false })).data;
}

/**
 * Integer scoring (bits ≤ 8, uniform quantizers on both operands). A candidate's quantized product is
 * exactly Δ_x·Δ_w·(x codes · w codes): the codes meet in one u8×s8 integer product, scaled to float in
 * the same kernel (com.microsoft MatMulIntegerToFloat). The activation codes are the unsigned operand, with
 * zero point 128 (s8×s8 runs ~4× slower in ORT than u8×s8 on x86; u8×s8 ran 1.7–3.2× faster than the
 * float product). The rounding of codes is the float path's (same Div/Round/Clip), so only the float
 * rounding of the product differs from scoreLinear's.
 */
export interface LinearIntegerScoreInputs {
  searched: 'input' | 'weight';
  /**
   * Input search: the float input [M, K]. Weight search: its codes + 128 [M, K] and their Δ — one part, or
   * two for a post-GELU twin input (R1 and R2 codes, each 128 outside its range).
   */
  x: Tensor | { codes: Uint8Array; shape: readonly number[]; delta: number }[];
  /** Weight search: the float weight [N, K]. Input search: its codes transposed [K, N] and Δ per output row [N]. */
  w: Tensor | { codesT: Int8Array; shape: readonly number[]; deltas: Float32Array };
  bias: Tensor | null;
  out: Tensor; // [M, N]
  grad: Tensor | null;
  /** Input search [C] (per tensor); weight search [C·N] (per candidate and output row). */
  scales: Float32Array;
  /** Input search of a post-GELU twin: Δ_R1 (negative side) per candidate [C]; `scales` hold Δ_R2. */
  scales2?: Float32Array;
  candidates: number;
  bits: number;
  metric: Metric;
  cosineGroups: number;
}

/**
 * Same results as scoreLinear (up to float rounding of the product) for ≤ 8-bit operands: uniform, or a
 * post-GELU twin input (its R1 and R2 codes in two products, added in float).
 */
export async function scoreLinearInteger(p: LinearIntegerScoreInputs): Promise<Float32Array> {
  const C = p.candidates;
  const searchW = p.searched === 'weight';
  const twinGelu = searchW ? (p.x as unknown[]).length === 2 : p.scales2 !== undefined;
  const addBias = p.bias !== null && p.metric === 'cosine';
  const q = 2 ** (p.bits - 1);
  const key = `lin-int:${p.searched}:${twinGelu ? 'twin-gelu' : 'uniform'}:${p.bits}:${p.metric}:${p.cosineGroups}:${addBias ? 'b' : ''}`;
  const i8 = OnnxType.INT8, u8 = OnnxType.UINT8;
  const graph = (): GraphSpec => {
    const m = metricNodes(p.metric, searchW ? [1] : [1, 2], p.cosineGroups);
    // Codes of x under every candidate scale s, clamp(round(x/s), lo, hi) (+ zero point), in two passes: one Div
    // (per-candidate scales broadcast) and one QuantizeLinear with scale 1 into the code type (x/1 is exact, and
    // it rounds half to even and saturates like Round + Clip), then a 1-byte Clip for narrower code ranges —
    // instead of Div, Round, Clip, Add and Cast in float. Bounds lo, hi are stored values (u8: code + 128);
    // the Clip and its bound initializers (`codeInits`) come only with a range narrower than the type's.
    const codeInits: Initializer[] = [];
    const codes = (x: string, sc: string, out: string, elemType: number, lo: number, hi: number): NodeSpec[] => {
      const full = elemType === u8 ? lo === 0 && hi === 255 : lo === -128 && hi === 127;
      const stored = (v: number) => Uint8Array.of(v & 0xff); // the stored byte (two's complement for int8)
      if (!full) codeInits.push({ name: `${out}_lo`, elemType, dims: [], data: stored(lo) }, { name: `${out}_hi`, elemType, dims: [], data: stored(hi) });
      return [
        { op: 'Div', inputs: [x, sc], outputs: [`${out}_div`] },
        { op: 'QuantizeLinear', inputs: [`${out}_div`, 'one', elemType === u8 ? 'zp' : 'zp8'], outputs: full ? [out] : [`${out}_sat`] },
        ...(full ? [] : [{ op: 'Clip', inputs: [`${out}_sat`, `${out}_lo`, `${out}_hi`], outputs: [out] }]),
      ];
    };
    const y = addBias ? 'y0' : 'y';
    const nodes: NodeSpec[] = searchW
      ? [
          // w [N, K] under scales s [C, N, 1] → s8 codes [C, K, N]; x codes [M, K] u8; scale Δ_x·s [C, 1, N]
          ...codes('w', 's', 'wc8', i8, -q, q - 1),
          { op: 'Transpose', inputs: ['wc8'], outputs: ['wt'], attributes: { perm: [0, 2, 1] } },
          ...(twinGelu
            ? [
                { op: 'MatMulIntegerToFloat', domain: 'com.microsoft', inputs: ['xc', 'wt', 'dx', 'st', 'zp'], outputs: ['y1'] },
                { op: 'MatMulIntegerToFloat', domain: 'com.microsoft', inputs: ['xc2', 'wt', 'dx2', 'st', 'zp'], outputs: ['y2'] },
                { op: 'Add', inputs: ['y1', 'y2'], outputs: [y] },
              ]
            : [{ op: 'MatMulIntegerToFloat', domain: 'com.microsoft', inputs: ['xc', 'wt', 'dx', 'st', 'zp'], outputs: [y] }]),
        ]
      : twinGelu
        ? [
            // R2 (positive side, Δ_R2 = s) and R1 (negative side, Δ_R1 = s2) codes + 128, one product each.
            ...codes('x', 's', 'c2', u8, 128, 128 + q - 1),
            { op: 'MatMulIntegerToFloat', domain: 'com.microsoft', inputs: ['c2', 'wt', 'one', 'sw', 'zp'], outputs: ['y2'] },
            ...codes('x', 's2', 'c1', u8, 128 - q, 128),
            { op: 'MatMulIntegerToFloat', domain: 'com.microsoft', inputs: ['c1', 'wt', 'one', 'sw2', 'zp'], outputs: ['y1'] },
            { op: 'Add', inputs: ['y1', 'y2'], outputs: [y] },
          ]
        : [
            // x [M, K] under scales s [C, 1, 1] → u8 codes + 128 [C, M, K]; w codes [K, N]; scale s·Δ_w [C, 1, N]
            ...codes('x', 's', 'xc', u8, 128 - q, 128 + q - 1),
            { op: 'MatMulIntegerToFloat', domain: 'com.microsoft', inputs: ['xc', 'wt', 'one', 'sw', 'zp'], outputs: [y] },
          ];
    if (addBias) nodes.push({ op: 'Add', inputs: ['y0', 'b'], outputs: ['y'] });
    nodes.push(...m.nodes);
    const zp: Initializer = { name: 'zp', elemType: u8, dims: [], data: Uint8Array.of(128) };
    const inputs: GraphSpec['inputs'] = searchW
      ? [
          { name: 'xc', elemType: u8, shape: ['M', 'K'] },
          { name: 'dx', elemType: f32, shape: [] },
          { name: 'w', elemType: f32, shape: ['N', 'K'] },
          { name: 's', elemType: f32, shape: ['C', 'N', 1] },
          { name: 'st', elemType: f32, shape: ['C', 1, 'N'] },
        ]
      : [
          { name: 'x', elemType: f32, shape: ['M', 'K'] },
          { name: 'wt', elemType: i8, shape: ['K', 'N'] },
          { name: 's', elemType: f32, shape: ['C', 1, 1] },
          { name: 'sw', elemType: f32, shape: ['C', 1, 'N'] },
        ];
    inputs.push({ name: 'o', elemType: f32, shape: ['M', 'N'] });
    if (addBias) inputs.push({ name: 'b', elemType: f32, shape: ['N'] });
    if (p.metric === 'hessian') inputs.push({ name: 'g', elemType: f32, shape: ['M', 'N'] });
    if (twinGelu && searchW) inputs.push({ name: 'xc2', elemType: u8, shape: ['M', 'K'] }, { name: 'dx2', elemType: f32, shape: [] });
    if (twinGelu && !searchW) inputs.push({ name: 's2', elemType: f32, shape: ['C', 1, 1] }, { name: 'sw2', elemType: f32, shape: ['C', 1, 'N'] });
    const zp8: Initializer = { name: 'zp8', elemType: i8, dims: [], data: Uint8Array.of(0) };
    const inits = [...m.inits, ...codeInits, scalar('one', 1), zp, zp8];
    return { name: 'score_linear_int', inputs, outputs: [{ name: 'score', elemType: f32, shape: [] }], nodes, initializers: inits, opset: 17 };
  };
  const N = p.out.shape[1];
  const feeds: Record<string, GraphInput> = {};
  if (searchW) {
    const [x, x2] = p.x as { codes: Uint8Array; shape: readonly number[]; delta: number }[];
    const w = p.w as Tensor;
    feeds.xc = { data: x.codes, shape: x.shape };
    feeds.dx = { data: Float32Array.of(x.delta), shape: [] };
    if (x2) {
      feeds.xc2 = { data: x2.codes, shape: x2.shape };
      feeds.dx2 = { data: Float32Array.of(x2.delta), shape: [] };
    }
    feeds.w = feed(w);
    feeds.s = { data: p.scales, shape: [C, N, 1] };
    feeds.st = { data: p.scales, shape: [C, 1, N] };
  } else {
    const w = p.w as { codesT: Int8Array; shape: readonly number[]; deltas: Float32Array };
    feeds.x = feed(p.x as Tensor);
    feeds.wt = { data: w.codesT, shape: w.shape };
    feeds.s = { data: p.scales, shape: [C, 1, 1] };
    // Δ_x·Δ_w per candidate and output column (the kernel's a_scale is 1).
    const columnScales = (scales: Float32Array): GraphInput => {
      const sw = new Float32Array(C * N);
      for (let c = 0; c < C; c++) for (let n = 0; n < N; n++) sw[c * N + n] = scales[c] * w.deltas[n];
      return { data: sw, shape: [C, 1, N] };
    };
    feeds.sw = columnScales(p.scales);
    if (twinGelu) {
      feeds.s2 = { data: p.scales2!, shape: [C, 1, 1] };
      feeds.sw2 = columnScales(p.scales2!);
    }
  }
  feeds.o = p.bias && !addBias ? feed(minusBias(p.out, p.bias)) : feed(p.out);
  if (addBias) feeds.b = feed(p.bias!);
  if (p.metric === 'hessian') feeds.g = feed(p.grad!);
  return (await runGraph(key, graph, feeds, 'score', { arena: false })).data;
}
