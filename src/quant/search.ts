/**
 * The PTQ4ViT search for one quantization point. Candidates are Δ = (α + i·(β−α)/n)·Δ_maxabs for
 * i = 0 … n, with Δ_maxabs = max|x|/(2^(k−1) − 0.5); weight and input scales are searched alternately for
 * `rounds` rounds, each keeping the candidate with the best score (scoring.ts) given the other's current
 * scale. Every layer sees FP32 inputs (the parallel paradigm).
 */
import { Tensor } from '../tensor/tensor.js';
import type { ActivationQuant, BitPolicy, LinearQuant, MatmulQuant } from './params.js';
import { fakeQuantActivation, kindOf, type CodesU8 } from './kinds/index.js';
import { fakeQuantGrouped, geluNegativeDelta, qmax, uniformCoder } from './quantizers.js';
import { scoreLinear, scoreLinearInteger, scoreMatmul, type Metric } from './scoring.js';
import { maxAbs } from '../numeric.js';
import { linear as linearFp, matmul as matmulFp } from '../tensor/gemm.js';

export interface SearchConfig {
  metric: Metric;
  alpha: number;
  beta: number;
  /** Number of grid steps: n + 1 candidates. */
  n: number;
  rounds: number;
  weightBits: number;
  activationBits: number;
  twinSoftmax: boolean;
  twinGelu: boolean;
  /** Keep Δ_R2 = 2^m·Δ_R1 for the GELU twin (the paper's hardware-friendly form). */
  geluAligned: boolean;
  /** Δ_R2 of the softmax twin: 1/2^(k−1) (paper, a power of two) or 1/(2^(k−1)−1) (authors' code: 1.0 exact). */
  softmaxDeltaR2: 'paper' | 'exact-one';
  /** Called with each point's FP32 record and its result once searched (the report measures them); must not keep the record. */
  trace?: (t: SearchTrace) => Promise<void>;
  /**
   * Hessian metric: score ≤ 8-bit linear candidates with integer products (default true) — uniform operands,
   * and the post-GELU twin input as two products: same candidates, same codes; the scores differ from the
   * float products' only by float rounding.
   */
  integerScoring?: boolean;
  /** Float budget of one candidate batch's largest intermediate (default CANDIDATE_BATCH_FLOATS). */
  batchFloats?: number;
  /** Per-point widths (mixed precision); a point or operand it leaves out takes weightBits / activationBits. */
  policy?: BitPolicy;
  /**
   * A sensitivity search (mixed precision): only this operand is searched, in one half-step, while the
   * other operand stays on its Δ_maxabs grid; `report` gets the best score — the Hessian-weighted output
   * error of the point at this operand's width, after the operand's own scale search.
   */
  sensitivity?: { operand: Operand; images: number; report: (score: SensitivityScore) => void };
}

/**
 * The error of a point at one operand's width, after that operand's search:
 *  - diagonal: the search's own metric Σ (∂L/∂O)²·(Ô − O)² (each output element on its own);
 *  - perImage: Σ over images of (Σ_elements ∂L/∂O·(Ô − O))² — the same Fisher form gᵀ·ΔO per image,
 *    squared whole, so errors correlated across elements add up as they do in the loss.
 */
export interface SensitivityScore {
  diagonal: number;
  perImage: number;
}

/** Σ over images of (gᵀ·(Ô − O))², each image a contiguous block of the records. */
function perImageFisher(outHat: Float32Array, out: Float32Array, grad: Float32Array | undefined, images: number): number {
  if (!grad) return NaN;
  const per = out.length / images;
  let total = 0;
  for (let i = 0; i < images; i++) {
    let dot = 0;
    for (let j = i * per; j < (i + 1) * per; j++) dot += grad[j] * (outHat[j] - out[j]);
    total += dot * dot;
  }
  return total;
}

/** The quantized operands of a point: a linear layer's weight and input, an attention product's a and b. */
export type Operand = 'weight' | 'input' | 'a' | 'b';

export type SearchTrace = { kind: 'linear'; record: LinearRecord; result: LinearQuant } | { kind: 'matmul'; record: MatmulRecord; result: MatmulQuant };

/**
 * Float budget for one candidate batch's largest intermediate (~24 MB). Smaller batches ran faster than
 * 96 MB ones (measured 1.7× per candidate on vit_tiny_c10's qkv, BENCHMARKS.md): without ORT's arena
 * (see runGraph) every intermediate is fresh memory, and large ones are page-faulted in on every run.
 */
const CANDIDATE_BATCH_FLOATS = 6_000_000;

function candidateFactors(c: SearchConfig): number[] {
  return Array.from({ length: c.n + 1 }, (_, i) => c.alpha + (i * (c.beta - c.alpha)) / c.n);
}


function maxValue(data: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < data.length; i++) if (data[i] > m) m = data[i];
  return m;
}

/** Δ_maxabs, guarded against all-zero tensors (any positive Δ then quantizes exactly). */
function maxAbsDelta(max: number, bits: number): number {
  return max > 0 ? max / (qmax(bits) - 0.5) : 1e-8;
}

/**
 * Index of the smallest value in each of `columns` columns of a [rows, columns] array (first on ties;
 * NaN never wins, so a degenerate candidate cannot be chosen).
 */
function argminColumns(scores: Float64Array, rows: number, columns: number): number[] {
  const key = (v: number) => (Number.isNaN(v) ? Infinity : v);
  const best = new Array<number>(columns).fill(0);
  for (let c = 0; c < columns; c++) {
    for (let r = 1; r < rows; r++) if (key(scores[r * columns + c]) < key(scores[best[c] * columns + c])) best[c] = r;
  }
  return best;
}

/** Evaluate candidates in batches sized to the budget; `score(start, count)` returns `width` values each. */
async function scoreInBatches(budget: number, total: number, floatsPerCandidate: number, width: number, score: (start: number, count: number) => Promise<Float32Array | Float64Array>): Promise<Float64Array> {
  const batch = Math.max(1, Math.floor(budget / Math.max(1, floatsPerCandidate)));
  const all = new Float64Array(total * width);
  for (let start = 0; start < total; start += batch) {
    const count = Math.min(batch, total - start);
    all.set(await score(start, count), start * width);
  }
  return all;
}

/**
 * Row blocks [r0, r1) such that one candidate's product over a block stays within the batch budget. The
 * Hessian score is a sum over rows, so it can be summed block by block; this only splits when a single
 * candidate over all rows would exceed the budget (e.g. ViT-B's fc1 on 128 images: 77 M floats), which
 * bounds the search's working set independently of the number of images.
 */
function rowBlocks(rows: number, floatsPerRow: number, metric: Metric, budget: number): [number, number][] {
  if (metric !== 'hessian' || rows * floatsPerRow <= budget) return [[0, rows]];
  const per = Math.max(1, Math.floor(budget / floatsPerRow));
  const blocks: [number, number][] = [];
  for (let r = 0; r < rows; r += per) blocks.push([r, Math.min(rows, r + per)]);
  return blocks;
}

/** Rows [r0, r1) of a row-major [rows, cols] tensor (a view). */
function rowsOf<T extends Float32Array | Uint8Array>(data: T, cols: number, [r0, r1]: [number, number]): T {
  return data.subarray(r0 * cols, r1 * cols) as T;
}

/** The sum over row blocks of `score(block)` (Hessian scores add over rows). */
async function sumOverBlocks(blocks: [number, number][], score: (block: [number, number]) => Promise<Float32Array>): Promise<Float32Array | Float64Array> {
  if (blocks.length === 1) return score(blocks[0]);
  let total: Float64Array | null = null;
  for (const b of blocks) {
    const s = await score(b);
    total ??= new Float64Array(s.length);
    for (let i = 0; i < s.length; i++) total[i] += s[i];
  }
  return total!;
}

/** Cosine scores come back per row: average them per candidate (and group), negated so lower is better. */
function cosineToLoss(cos: Float32Array, candidates: number, rowsPerCandidate: number, groups: number, groupOf: (index: number) => number): Float64Array {
  const loss = new Float64Array(candidates * groups);
  const perCandidate = rowsPerCandidate * groups;
  for (let c = 0; c < candidates; c++) {
    for (let i = 0; i < perCandidate; i++) loss[c * groups + groupOf(i)] -= cos[c * perCandidate + i];
  }
  return loss;
}

export interface LinearRecord {
  point: string;
  kind: 'linear' | 'conv';
  x: Tensor; // [M, K]
  weight: Tensor; // [N, K]
  bias: Tensor | null;
  out: Tensor; // [M, N]
  grad: Tensor | null;
  /** Output-row groups with their own weight Δ: 1, 3 (qkv) or N (conv per channel). */
  weightGroups: number;
  /** The input is post-GELU (fc2): eligible for the GELU twin. */
  postGelu: boolean;
}

export async function searchLinear(rec: LinearRecord, cfg: SearchConfig): Promise<LinearQuant> {
  const [N, K] = rec.weight.shape;
  const M = rec.x.size / K;
  const x = rec.x.reshape([M, K]);
  const out = rec.out.reshape([M, N]);
  const grad = rec.grad ? rec.grad.reshape([M, N]) : null;
  const groups = rec.weightGroups;
  const rowsPerGroup = N / groups;
  const factors = candidateFactors(cfg);
  const C = factors.length;
  const widths = cfg.policy?.[rec.point];
  const wBits = widths?.weight ?? cfg.weightBits, aBits = widths?.input ?? cfg.activationBits;
  const only = cfg.sensitivity?.operand;
  const budget = cfg.batchFloats ?? CANDIDATE_BATCH_FLOATS;

  const w0 = Array.from({ length: groups }, (_, g) => maxAbsDelta(maxAbs(rec.weight.data, g * rowsPerGroup * K, (g + 1) * rowsPerGroup * K), wBits));
  let weightDeltas = [...w0];
  const quantizeInput = rec.kind !== 'conv';
  const twinGelu = quantizeInput && rec.postGelu && cfg.twinGelu;
  // GELU twin: Δ_maxabs of the positive side comes from the positive maximum.
  const a0 = maxAbsDelta(twinGelu ? maxValue(x.data) : maxAbs(x.data), aBits);
  const inputQuant = (deltaPos: number): ActivationQuant =>
    twinGelu ? { kind: 'twin-gelu', bits: aBits, deltaPos, deltaNeg: geluNegativeDelta(deltaPos, aBits, cfg.geluAligned) } : { kind: 'uniform', bits: aBits, deltas: [deltaPos] };
  let input: ActivationQuant | null = quantizeInput ? inputQuant(a0) : null;

  const cosineGroups = groups === 3 ? 3 : 1;
  // Integer scoring needs both operands as ≤ 8-bit codes. The cosine metric stays in float: its row
  // cosines sit within a few float32 ulps of 1, so the product's rounding alone can reorder candidates.
  const integer = (cfg.integerScoring ?? true) && cfg.metric === 'hessian' && wBits <= 8 && aBits <= 8;
  // Per-channel weights (the conv) are scored per output channel; otherwise per output row (and q/k/v block).
  const perColumn = perColumnCosine(cfg, groups, N);
  // Each half-step depends only on the other operand's current scales: once a half-step sees the same
  // scales as in the previous round, every later round repeats itself exactly, so we stop there.
  // Very large layers are scored over blocks of rows (Hessian only; see rowBlocks).
  const blocks = rowBlocks(M, N + K, cfg.metric, budget);
  const blockRows = blocks[0][1] - blocks[0][0];
  let lastInputKey = '', lastWeightKey = '';
  for (let round = 0; round < cfg.rounds; round++) {
    const inputKey = JSON.stringify(input);
    if (round > 0 && inputKey === lastInputKey) break;
    lastInputKey = inputKey;
    if (only !== 'input') {
      // Weight search: rows are independent, so every group is searched at once.
      // Uniform ≤ 8-bit input: the product is scored on integer codes (scoreLinearInteger), else in float.
      const xCodes = integer && input ? activationCodesU8(x.data, input, [M, K]) : null;
      const xq = input && !xCodes ? new Tensor(fakeQuantActivation(x.data, input), [M, K]) : x;
      const weightWidth = cfg.metric === 'hessian' || perColumn ? N : M * cosineGroups;
      const wScores = await scoreInBatches(budget, C, Math.min(M, blockRows) * N + N * K, weightWidth, (start, count) => {
        const scales = new Float32Array(count * N);
        for (let c = 0; c < count; c++) for (let n = 0; n < N; n++) scales[c * N + n] = factors[start + c] * w0[Math.floor(n / rowsPerGroup)];
        return sumOverBlocks(blocks, (b) => {
          const [o, g] = [new Tensor(rowsOf(out.data, N, b), [b[1] - b[0], N]), grad && new Tensor(rowsOf(grad.data, N, b), [b[1] - b[0], N])];
          if (xCodes) return scoreLinearInteger({ searched: 'weight', x: xCodes.map((part) => ({ ...part, codes: rowsOf(part.codes, K, b), shape: [b[1] - b[0], K] })), w: rec.weight, bias: rec.bias, out: o, grad: g, scales, candidates: count, bits: wBits, metric: cfg.metric, cosineGroups });
          return scoreLinear({ searched: 'weight', x: new Tensor(rowsOf(xq.data, K, b), [b[1] - b[0], K]), w: rec.weight, bias: rec.bias, out: o, grad: g, scales, candidates: count, bits: wBits, quantizer: 'uniform', metric: cfg.metric, cosineGroups, cosinePerColumn: perColumn });
        });
      });
      const perGroup =
        cfg.metric === 'hessian' ? sumRowGroups(wScores, C, N, groups) : perColumn ? wScores.map((v) => -v) : cosineToLoss(Float32Array.from(wScores), C, M, cosineGroups, (i) => i % cosineGroups);
      const bestW = argminColumns(perGroup, C, groups);
      weightDeltas = bestW.map((b, g) => factors[b] * w0[g]);
      if (only === 'weight') {
        // Groups are independent rows: the point's error is the sum of each group's best.
        const diagonal = bestW.reduce((sum, b, g) => sum + perGroup[b * groups + g], 0);
        cfg.sensitivity!.report({ diagonal, perImage: await linearPerImage(rec, input, weightDeltas, wBits, cfg.sensitivity!.images) });
        break;
      }
    }
    if (!quantizeInput) continue;
    const weightKey = JSON.stringify(weightDeltas);
    if (round > 0 && weightKey === lastWeightKey) break;
    lastWeightKey = weightKey;

    // Input search with the weight quantized at its current scales (integer: weight codes × input codes under
    // every candidate, both twin-GELU ranges included).
    const wCodes = integer ? weightCodesT(rec.weight.data, weightDeltas, N, K, wBits) : null;
    const wq = wCodes ? rec.weight : new Tensor(fakeQuantGrouped(rec.weight.data, weightDeltas, rowsPerGroup * K, wBits), [N, K]);
    const inputWidth = cfg.metric === 'hessian' ? 1 : M;
    const aScores = await scoreInBatches(budget, C, Math.min(M, blockRows) * (N + K), inputWidth, (start, count) => {
      const deltas = factors.slice(start, start + count).map((f) => f * a0);
      const scales = Float32Array.from(deltas);
      const scales2 = twinGelu ? Float32Array.from(deltas.map((d) => geluNegativeDelta(d, aBits, cfg.geluAligned))) : undefined;
      return sumOverBlocks(blocks, (b) => {
        const rows = b[1] - b[0];
        const [xb, o, g] = [new Tensor(rowsOf(x.data, K, b), [rows, K]), new Tensor(rowsOf(out.data, N, b), [rows, N]), grad && new Tensor(rowsOf(grad.data, N, b), [rows, N])];
        if (wCodes) return scoreLinearInteger({ searched: 'input', x: xb, w: wCodes, bias: rec.bias, out: o, grad: g, scales, scales2, candidates: count, bits: aBits, metric: cfg.metric, cosineGroups: 1 });
        return scoreLinear({ searched: 'input', x: xb, w: wq, bias: rec.bias, out: o, grad: g, scales, scales2, candidates: count, bits: aBits, quantizer: twinGelu ? 'twin-gelu' : 'uniform', metric: cfg.metric, cosineGroups: 1 });
      });
    });
    const aLoss = cfg.metric === 'hessian' ? aScores : cosineToLoss(Float32Array.from(aScores), C, M, 1, () => 0);
    const bestA = argminColumns(aLoss, C, 1)[0];
    input = inputQuant(factors[bestA] * a0);
    if (only === 'input') {
      cfg.sensitivity!.report({ diagonal: aLoss[bestA], perImage: await linearPerImage(rec, input, weightDeltas, wBits, cfg.sensitivity!.images) });
      break;
    }
  }
  const result: LinearQuant = { kind: rec.kind, point: rec.point, weightBits: wBits, weightDeltas, input };
  await cfg.trace?.({ kind: 'linear', record: rec, result });
  return result;
}

/** The per-image Fisher error of a linear point at the given quantization (see SensitivityScore). */
async function linearPerImage(rec: LinearRecord, input: ActivationQuant | null, weightDeltas: number[], wBits: number, images: number): Promise<number> {
  const [N, K] = rec.weight.shape;
  const M = rec.x.size / K;
  const xq = input ? new Tensor(fakeQuantActivation(rec.x.data, input), [M, K]) : rec.x.reshape([M, K]);
  const wq = new Tensor(fakeQuantGrouped(rec.weight.data, weightDeltas, (N / weightDeltas.length) * K, wBits), [N, K]);
  const outHat = await linearFp(xq, wq, rec.bias);
  return perImageFisher(outHat.data, rec.out.data, rec.grad?.data, images);
}

function perColumnCosine(cfg: SearchConfig, groups: number, rows: number): boolean {
  return cfg.metric === 'cosine' && groups === rows && rows > 1;
}

/**
 * An input's codes + 128 as u8 (the unsigned operand of the integer product, zero point 128), one part per
 * range (the kind's codesU8: uniform → one; post-GELU twin → R1 and R2, each zero outside its range).
 * Wider codes, or a kind that never feeds a linear layer (the softmax twin) → null: scored in float.
 */
function activationCodesU8(x: Float32Array, q: ActivationQuant, shape: number[]): CodesU8[] | null {
  if (q.bits > 8) return null;
  return kindOf(q).codesU8?.(x, q, shape) ?? null;
}

/** Weight codes transposed to [K, N] (s8) with their Δ per output row (`deltas` per group of rows). */
function weightCodesT(w: Float32Array, deltas: number[], N: number, K: number, bits: number): { codesT: Int8Array; shape: number[]; deltas: Float32Array } {
  const perGroup = N / deltas.length;
  const codesT = new Int8Array(N * K);
  const rowDeltas = new Float32Array(N);
  const code = uniformCoder(bits);
  for (let n = 0; n < N; n++) {
    const delta = deltas[Math.floor(n / perGroup)];
    rowDeltas[n] = delta;
    for (let k = 0; k < K; k++) codesT[k * N + n] = code(w[n * K + k], delta);
  }
  return { codesT, shape: [K, N], deltas: rowDeltas };
}

/** [C, N] per-row scores → [C, groups] sums over each group's rows. */
function sumRowGroups(scores: Float64Array, candidates: number, rows: number, groups: number): Float64Array {
  const per = rows / groups;
  const out = new Float64Array(candidates * groups);
  for (let c = 0; c < candidates; c++) for (let n = 0; n < rows; n++) out[c * groups + Math.floor(n / per)] += scores[c * rows + n];
  return out;
}

export interface MatmulRecord {
  point: string;
  heads: number;
  /** a [G, M, K]; b [G, K, N] (already transposed for q·kᵀ); G = images·windows·heads, head fastest. */
  a: Tensor;
  b: Tensor;
  out: Tensor; // [G, M, N]
  grad: Tensor | null;
  /** a is a post-softmax matrix (softmax·v): eligible for the softmax twin. */
  postSoftmax: boolean;
}

function perHeadMaxAbsDeltas(t: Tensor, heads: number, bits: number): number[] {
  const per = t.size / t.shape[0];
  const max = new Array<number>(heads).fill(0);
  for (let g = 0; g < t.shape[0]; g++) max[g % heads] = Math.max(max[g % heads], maxAbs(t.data, g * per, (g + 1) * per));
  return max.map((m) => maxAbsDelta(m, bits));
}

/** The per-image Fisher error of an attention product at the given quantization (see SensitivityScore). */
async function matmulPerImage(rec: MatmulRecord, a: ActivationQuant, b: ActivationQuant, images: number): Promise<number> {
  const [, M, K] = rec.a.shape;
  const N = rec.b.shape[2];
  const aq = new Tensor(fakeQuantActivation(rec.a.data, a, M * K), rec.a.shape);
  const bq = new Tensor(fakeQuantActivation(rec.b.data, b, K * N), rec.b.shape);
  const outHat = await matmulFp(aq, bq);
  return perImageFisher(outHat.data, rec.out.data, rec.grad?.data, images);
}

export async function searchMatmul(rec: MatmulRecord, cfg: SearchConfig): Promise<MatmulQuant> {
  const H = rec.heads;
  const [G, M, K] = rec.a.shape;
  const N = rec.b.shape[2];
  const O = G / H;
  const widths = cfg.policy?.[rec.point];
  const aBits = widths?.a ?? cfg.activationBits, bBits = widths?.b ?? cfg.activationBits;
  const only = cfg.sensitivity?.operand;
  const budget = cfg.batchFloats ?? CANDIDATE_BATCH_FLOATS;
  const factors = candidateFactors(cfg);
  const C = factors.length;
  const view = (t: Float32Array, rows: number, cols: number) => ({ data: t, shape: [O, H, rows, cols] });
  // Very large products are scored over blocks of images (Hessian only; see rowBlocks).
  const perImage = 2 * H * Math.max(M, K) * Math.max(N, K);
  const blocks = rowBlocks(O, perImage, cfg.metric, budget);
  const blockImages = blocks[0][1] - blocks[0][0];
  type Feed = { data: Float32Array; shape: number[] };
  const sub = (t: Feed | null, [o0, o1]: [number, number]): Feed | null =>
    t && (blocks.length === 1 ? t : { data: t.data.subarray((o0 * t.data.length) / O, (o1 * t.data.length) / O), shape: [o1 - o0, ...t.shape.slice(1)] });
  /** Scores of `inputs` summed over the image blocks. */
  const blockwise = (inputs: { a: Feed; b: Feed; out: Feed; grad: Feed | null }, score: (f: { a: Feed; b: Feed; out: Feed; grad: Feed | null }) => Promise<Float32Array>) =>
    sumOverBlocks(blocks, (blk) => score({ a: sub(inputs.a, blk)!, b: sub(inputs.b, blk)!, out: sub(inputs.out, blk)!, grad: sub(inputs.grad, blk) }));
  const out = view(rec.out.data, M, N);
  const grad = rec.grad ? view(rec.grad.data, M, N) : null;
  const twin = rec.postSoftmax && cfg.twinSoftmax;
  const deltaR2 = cfg.softmaxDeltaR2 === 'paper' ? 1 / qmax(aBits) : 1 / (qmax(aBits) - 1);

  const a0 = perHeadMaxAbsDeltas(rec.a, H, aBits);
  const b0 = perHeadMaxAbsDeltas(rec.b, H, bBits);
  // Softmax twin: Δ_R1 = 2^−j with the split 2^(k−1)·Δ_R1 going from 1 down through 20 powers of two.
  const twinR1 = Array.from({ length: 20 }, (_, j) => 2 ** -(aBits - 1 + j));
  let aQuant: ActivationQuant = twin ? { kind: 'twin-softmax', bits: aBits, deltaR1: twinR1[8], deltaR2 } : { kind: 'uniform', bits: aBits, deltas: a0 };
  let bQuant: ActivationQuant = { kind: 'uniform', bits: bBits, deltas: b0 };
  /** Σ over heads of each head's best score (heads have their own scales, so they are independent). */
  const bestTotal = (loss: Float64Array, best: number[]) => best.reduce((sum, b, h) => sum + loss[b * H + h], 0);
  const lossOf = (scores: Float64Array, count: number): Float64Array =>
    cfg.metric === 'hessian' ? scores : cosineToLoss(Float32Array.from(scores), count, O * M, H, (i) => Math.floor(i / M) % H);
  const width = cfg.metric === 'hessian' ? H : O * H * M;

  let lastBKey = '', lastAKey = '';
  for (let round = 0; round < cfg.rounds; round++) {
    const bKey = JSON.stringify(bQuant);
    if (round > 0 && bKey === lastBKey) break; // a fixed point: later rounds would repeat (see searchLinear)
    lastBKey = bKey;
    if (only !== 'b') {
      const bq = view(fakeQuantActivation(rec.b.data, bQuant, K * N), K, N);
      if (twin) {
        const scores = await scoreInBatches(budget, twinR1.length, 2 * blockImages * H * M * Math.max(N, K), width, (start, count) => {
          const r1 = twinR1.slice(start, start + count);
          return blockwise({ a: view(rec.a.data, M, K), b: bq, out, grad }, (f) => scoreMatmul({ searched: 'A', ...f, scales: Float32Array.from(r1), splits: Float32Array.from(r1.map((d) => d * qmax(aBits))), deltaR2, candidates: count, heads: H, bits: aBits, quantizer: 'twin-softmax', metric: cfg.metric }));
        });
        const perHead = lossOf(scores, twinR1.length);
        const total = new Float64Array(twinR1.length);
        for (let c = 0; c < twinR1.length; c++) for (let h = 0; h < H; h++) total[c] += perHead[c * H + h];
        const best = argminColumns(total, twinR1.length, 1)[0];
        aQuant = { kind: 'twin-softmax', bits: aBits, deltaR1: twinR1[best], deltaR2 };
        if (only === 'a') {
          cfg.sensitivity!.report({ diagonal: total[best], perImage: await matmulPerImage(rec, aQuant, bQuant, cfg.sensitivity!.images) });
          break;
        }
      } else {
        const scores = await scoreInBatches(budget, C, 2 * blockImages * H * M * Math.max(N, K), width, (start, count) => {
          const scales = new Float32Array(count * H);
          for (let c = 0; c < count; c++) for (let h = 0; h < H; h++) scales[c * H + h] = factors[start + c] * a0[h];
          return blockwise({ a: view(rec.a.data, M, K), b: bq, out, grad }, (f) => scoreMatmul({ searched: 'A', ...f, scales, candidates: count, heads: H, bits: aBits, quantizer: 'uniform', metric: cfg.metric }));
        });
        const loss = lossOf(scores, C), best = argminColumns(loss, C, H);
        aQuant = { kind: 'uniform', bits: aBits, deltas: best.map((b, h) => factors[b] * a0[h]) };
        if (only === 'a') {
          cfg.sensitivity!.report({ diagonal: bestTotal(loss, best), perImage: await matmulPerImage(rec, aQuant, bQuant, cfg.sensitivity!.images) });
          break;
        }
      }
    }
    const aKey = JSON.stringify(aQuant);
    if (round > 0 && aKey === lastAKey) break;
    lastAKey = aKey;
    const aq = view(fakeQuantActivation(rec.a.data, aQuant, M * K), M, K);
    const scores = await scoreInBatches(budget, C, 2 * blockImages * H * Math.max(M, K) * N, width, (start, count) => {
      const scales = new Float32Array(count * H);
      for (let c = 0; c < count; c++) for (let h = 0; h < H; h++) scales[c * H + h] = factors[start + c] * b0[h];
      return blockwise({ a: aq, b: view(rec.b.data, K, N), out, grad }, (f) => scoreMatmul({ searched: 'B', ...f, scales, candidates: count, heads: H, bits: bBits, quantizer: 'uniform', metric: cfg.metric }));
    });
    const loss = lossOf(scores, C), best = argminColumns(loss, C, H);
    bQuant = { kind: 'uniform', bits: bBits, deltas: best.map((b, h) => factors[b] * b0[h]) };
    if (only === 'b') {
      cfg.sensitivity!.report({ diagonal: bestTotal(loss, best), perImage: await matmulPerImage(rec, aQuant, bQuant, cfg.sensitivity!.images) });
      break;
    }
  }
  const result: MatmulQuant = { kind: 'matmul', point: rec.point, heads: H, a: aQuant, b: bQuant };
  await cfg.trace?.({ kind: 'matmul', record: rec, result });
  return result;
}
