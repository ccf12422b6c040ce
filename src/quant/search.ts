/**
 * The PTQ4ViT search for one quantization point. Candidates are Δ = (α + i·(β−α)/n)·Δ_maxabs for
 * i = 0 … n, with Δ_maxabs = max|x|/(2^(k−1) − 0.5); weight and input scales are searched alternately for
 * `rounds` rounds, each keeping the candidate with the best score (scoring.ts) given the other's current
 * scale. Every layer sees FP32 inputs (the parallel paradigm).
 *
 * The Hessian score is a sum over output rows, scored block by block: a candidate whose partial sum already
 * exceeds the best total cannot win and is dropped (bestByBlocks) — the same choice as scoring all of them,
 * at about half the work.
 */
import { ACTIVATION_NEGATIVE_REACH, type Activation } from '../tensor/activation.js';
import { Tensor } from '../tensor/tensor.js';
import { MAX_GROUPWISE_BITS, maxGroupMultiplier, type ActivationQuant, type BitPolicy, type LinearQuant, type MatmulQuant } from './params.js';
import { fakeQuantActivation, kindOf, searchKind, type CodesU8, type OperandSlot, type SearchOperand, type SearchSpace } from './kinds/index.js';
import { fakeQuantGrouped, maxAbsDelta, uniformCoder } from './quantizers.js';
import { minusBias, scoreLinear, scoreLinearInteger, scoreMatmul, type Metric } from './scoring.js';
import { maxAbs } from '../numeric.js';
import { Ptq4vitError } from '../errors.js';
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
  /**
   * Hessian metric: drop candidates whose partial score over the row blocks seen so far already exceeds the
   * best total (default true; exact — the same choice as scoring every candidate, see bestByBlocks).
   */
  prune?: boolean;
  /**
   * Hessian metric: search per-head scales of attention products one head at a time (default true; the same
   * choice as all heads at once, with fewer candidates scored — see searchMatmul's halfStepPerHead).
   */
  perHeadSearch?: boolean;
  /** Counts candidate × row-block scorings: done, and what scoring every candidate on every block takes. */
  stats?: { scored: number; full: number };
  /** Float budget of one candidate batch's largest intermediate (default CANDIDATE_BATCH_FLOATS). */
  batchFloats?: number;
  /** Per-point widths (mixed precision); a point or operand it leaves out takes weightBits / activationBits. */
  policy?: BitPolicy;
  /**
   * Weight scales of linear layers: 'tensor' (default: one Δ per tensor, q/k/v apart — the model's weight
   * groups), 'channel' (one Δ per output channel, each searched on its own rows' Hessian score) or 'group16',
   * 'group32', 'group64', 'group128' (≤ 4-bit weights: one Δ per output row and group of G input channels, one searched
   * factor per row). The patch conv is per channel either way.
   */
  weightScales?: WeightScales;
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
 * Float budget for one candidate batch's largest intermediate (~4 MB). Smaller batches ran faster: 24 MB
 * ones beat 96 MB ones (1.7× per candidate on vit_tiny_c10's qkv), and 4 MB ones beat 24 MB ones once
 * scoring went block by block (CPU time of vit_tiny_c10's W8A8 search 36.6 s vs 46.6 s, swin_micro_c10's
 * W6A6 17.9 s vs 21.9 s; BENCHMARKS.md): without ORT's arena (see runGraph) every intermediate is fresh
 * memory, and the metric's elementwise passes run from cache only when a run's [C, rows, N] output fits it.
 */
const CANDIDATE_BATCH_FLOATS = 1_000_000;

/**
 * Hessian scores are summed over at least this many row blocks (when the rows allow blocks of MIN_BLOCK_ROWS):
 * the first block screens every candidate, the rest are scored only for candidates that can still win
 * (bestByBlocks). Smaller blocks screen more cheaply but run smaller products: on vit_tiny_c10 W8A8 (2080 rows
 * a layer) 4, 8 and 16 blocks scored 52%, 43% and 39% of all candidate-blocks in 28.7, 25.2 and 28.2 s.
 */
const SCORE_BLOCKS = 8;
const MIN_BLOCK_ROWS = 128;

function candidateFactors(c: SearchConfig): number[] {
  return Array.from({ length: c.n + 1 }, (_, i) => c.alpha + (i * (c.beta - c.alpha)) / c.n);
}

/**
 * The search space of an activation operand: the kind the configuration gives it (a twin where one fits and is
 * enabled, else uniform) and that kind's candidates (kinds/*.ts, searchSpace).
 */
function activationSpace(cfg: SearchConfig, slot: Omit<OperandSlot, 'heads'>, operand: Omit<SearchOperand, 'factors' | 'geluAligned' | 'softmaxDeltaR2'>): SearchSpace<ActivationQuant> {
  const kind = searchKind(slot, (k) => (k === 'twin-gelu' ? cfg.twinGelu : k === 'twin-softmax' ? cfg.twinSoftmax : true));
  return kind.searchSpace({ ...operand, factors: candidateFactors(cfg), geluAligned: cfg.geluAligned, softmaxDeltaR2: cfg.softmaxDeltaR2 });
}

/**
 * Blocks of rows [r0, r1) over which a Hessian score is summed. Σ (∂L/∂O ⊙ (Ô − O))² adds over rows, so
 * the search can score candidates block by block (and prune them, see bestByBlocks): at least
 * `SCORE_BLOCKS` blocks of at least `minRows` rows each, and more when one candidate's product over a block
 * would exceed the batch budget (e.g. ViT-B's fc1 on 128 images: 77 M floats) — which bounds the search's
 * working set independently of the number of images. Cosine scores are not sums: one block.
 */
function rowBlocks(rows: number, floatsPerRow: number, metric: Metric, budget: number, minRows: number): [number, number][] {
  if (metric !== 'hessian') return [[0, rows]];
  const count = Math.max(Math.ceil((rows * floatsPerRow) / budget), Math.min(SCORE_BLOCKS, Math.floor(rows / minRows)), 1);
  const per = Math.ceil(rows / count);
  const blocks: [number, number][] = [];
  for (let r = 0; r < rows; r += per) blocks.push([r, Math.min(rows, r + per)]);
  return blocks;
}

/** Rows [r0, r1) of a tensor's first axis (a view): a linear record's rows, an attention record's images. */
function blockOf<T extends Float32Array | Uint8Array>(t: { data: T; shape: readonly number[] }, [r0, r1]: [number, number]): { data: T; shape: number[] } {
  const per = t.data.length / t.shape[0];
  return { data: t.data.subarray(r0 * per, r1 * per) as T, shape: [r1 - r0, ...t.shape.slice(1)] };
}

/** Scores of the candidates `cands` (indices into the grid) on row block `block`: [cands.length, groups]. */
type BlockScorer = (cands: number[], block: number) => Promise<Float64Array>;

/**
 * The best candidate per group (first on ties; NaN never wins) and its score, for a Hessian score summed over
 * row blocks — by branch and bound. Every term of the score is ≥ 0, so a candidate's sum over the blocks seen
 * so far is a lower bound of its total (adding a non-negative float never lowers a sum). All candidates are
 * scored on the first block; then, in order of that partial score, each is scored block by block and dropped
 * as soon as its partial sum exceeds, in every group, the best total found so far: it cannot win anywhere.
 * The candidates kept are summed over the same blocks in the same order as without pruning, and a candidate's
 * block score does not depend on the batch it is scored in (test/scoring_int.test.ts), so the choice is exactly
 * the full search's (`prune: false` scores everything, for tests and A/B runs).
 * `batch(rows)`: how many candidates fit one scoring run over a block of that many rows.
 */
async function bestByBlocks(candidates: number, groups: number, blocks: [number, number][], batch: (rows: number) => number, score: BlockScorer, prune: boolean, stats?: SearchConfig['stats']): Promise<{ best: number[]; scores: number[] }> {
  const B = blocks.length;
  const sums = new Float64Array(candidates * groups);
  const add = (cands: number[], s: Float64Array) => {
    for (let i = 0; i < cands.length; i++) for (let g = 0; g < groups; g++) sums[cands[i] * groups + g] += s[i * groups + g];
  };
  const all = Array.from({ length: candidates }, (_, c) => c);
  const inBatches = async (cands: number[], block: number) => {
    const size = Math.max(1, batch(blocks[block][1] - blocks[block][0]));
    for (let i = 0; i < cands.length; i += size) {
      const part = cands.slice(i, i + size);
      add(part, await score(part, block));
    }
  };
  const complete = new Uint8Array(candidates);
  let evaluated = 0;
  if (!prune || B === 1) {
    for (let b = 0; b < B; b++) await inBatches(all, b);
    complete.fill(1);
    evaluated = candidates * B;
  } else {
    await inBatches(all, 0);
    evaluated = candidates;
    const total = (c: number) => {
      let t = 0;
      for (let g = 0; g < groups; g++) t += sums[c * groups + g];
      return Number.isNaN(t) ? Infinity : t;
    };
    const order = [...all].sort((a, b) => total(a) - total(b) || a - b);
    const bound = new Float64Array(groups).fill(Infinity); // the best total so far, per group
    const open = (c: number) => {
      for (let g = 0; g < groups; g++) if (!(sums[c * groups + g] > bound[g])) return true;
      return false;
    };
    for (const c of order) {
      let b = 1;
      for (; b < B && open(c); b++, evaluated++) add([c], await score([c], b));
      if (b < B) continue; // dropped: its total exceeds the best in every group
      complete[c] = 1;
      for (let g = 0; g < groups; g++) if (sums[c * groups + g] < bound[g]) bound[g] = sums[c * groups + g];
    }
  }
  const key = (c: number, g: number) => (Number.isNaN(sums[c * groups + g]) ? Infinity : sums[c * groups + g]);
  const best = new Array<number>(groups).fill(-1);
  for (let g = 0; g < groups; g++) {
    for (let c = 0; c < candidates; c++) if (complete[c] && (best[g] < 0 || key(c, g) < key(best[g], g))) best[g] = c;
  }
  if (stats) {
    stats.scored += evaluated;
    stats.full += candidates * B;
  }
  return { best, scores: best.map((c, g) => sums[c * groups + g]) };
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
  /** Which GELU-family activation feeds it (absent = exact GELU): R1 must reach its minimum. */
  activation?: Activation;
}

/** |min| of the activation before a post-GELU input; exact GELU keeps GELU_MIN (the Δs of existing files). */
function negativeReach(activation: Activation | undefined): number | undefined {
  return activation === undefined || activation === 'gelu' ? undefined : ACTIVATION_NEGATIVE_REACH[activation];
}

/** Granularity of linear layers' weight scales (SearchConfig.weightScales). */
export type WeightScales = 'tensor' | 'channel' | 'group16' | 'group32' | 'group64' | 'group128';
/** group16 too: Swin's first stage is 48 channels wide, a multiple of no larger group. */
export const WEIGHT_SCALES: readonly WeightScales[] = ['tensor', 'channel', 'group16', 'group32', 'group64', 'group128'];

export { MAX_GROUPWISE_BITS };

/** Input channels per weight Δ group of a granularity: G for 'groupG', else undefined. */
export function weightGroupSize(scales: WeightScales | undefined): number | undefined {
  const m = scales?.match(/^group(\d+)$/);
  return m ? Number(m[1]) : undefined;
}

/**
 * Why a linear layer's weight cannot take group-wise scales of G input channels, or null: its codes must be
 * ≤ 4 bits and its input width K a multiple of G. (The patch conv is not a linear layer: it stays per channel.)
 */
export function groupwiseMisfit(point: string, shape: readonly number[], bits: number, group: number): string | null {
  if (bits > MAX_GROUPWISE_BITS) return `${point}: group-wise weight scales (group${group}) are for weights of at most ${MAX_GROUPWISE_BITS} bits, got ${bits}-bit weights (use --weight-scales channel or tensor)`;
  const K = shape[shape.length - 1];
  if (shape.length !== 2 || K % group !== 0) return `${point}: group-wise weight scales need the input width to be a multiple of ${group}, got a ${shape.join('×')} weight`;
  return null;
}

export async function searchLinear(rec: LinearRecord, cfg: SearchConfig): Promise<LinearQuant> {
  const [N, K] = rec.weight.shape;
  const M = rec.x.size / K;
  const x = rec.x.reshape([M, K]);
  const out = rec.out.reshape([M, N]);
  const grad = rec.grad ? rec.grad.reshape([M, N]) : null;
  const widths = cfg.policy?.[rec.point];
  const wBits = widths?.weight ?? cfg.weightBits, aBits = widths?.input ?? cfg.activationBits;
  // Group-wise (linear layers only; the patch conv stays per channel — and so does a layer pinned above 4 bits):
  // Δ_{n,g} = f_n·s_n·m_{n,g}, one factor f_n per output row from the same α…β grid, on the integer lattice
  // s_n·m of groupLattice (m ∈ [1, 2^(8−k)], so that m·code is an int8 code on the row's Δ f_n·s_n).
  const G = rec.kind === 'linear' && (wBits <= MAX_GROUPWISE_BITS || !widths?.weight) ? weightGroupSize(cfg.weightScales) : undefined;
  // Per output channel (and group-wise: one factor per row): every row its own group; rows are scored
  // independently, so each row keeps its best Δ.
  const groups = cfg.weightScales === 'channel' || weightGroupSize(cfg.weightScales) !== undefined ? N : rec.weightGroups;
  const rowsPerGroup = N / groups;
  const factors = candidateFactors(cfg);
  const C = factors.length;
  const only = cfg.sensitivity?.operand;
  const budget = cfg.batchFloats ?? CANDIDATE_BATCH_FLOATS;

  if (G !== undefined) {
    const misfit = groupwiseMisfit(rec.point, rec.weight.shape, wBits, G);
    if (misfit) throw new Ptq4vitError(misfit);
  }
  // Δ_maxabs per row group, or per (row, group of G input channels) row-major [N, K/G] — put on the lattice.
  const deltaSpan = G ?? rowsPerGroup * K;
  const maxabs = Array.from({ length: rec.weight.size / deltaSpan }, (_, g) => maxAbsDelta(maxAbs(rec.weight.data, g * deltaSpan, (g + 1) * deltaSpan), wBits));
  const lattice = G !== undefined ? groupLattice(maxabs, N, wBits) : null;
  // The Δ of every weight Δ group at factor f: f·Δ_maxabs, or group-wise (f·s_n)·m_{n,g}.
  const deltasPerGroup = maxabs.length / groups;
  const deltaAt = (f: number, i: number): number => (lattice ? f * lattice.rowDeltas[Math.floor(i / deltasPerGroup)] * lattice.multipliers[i] : f * maxabs[i]);
  const w0 = maxabs.map((_, i) => deltaAt(1, i));
  let weightDeltas = [...w0];
  let chosenFactors = new Array<number>(groups).fill(1);
  const quantizeInput = rec.kind !== 'conv';
  const inputSpace = quantizeInput ? activationSpace(cfg, { field: 'input', feeds: rec.postGelu ? 'post-gelu' : undefined }, { data: x.data, heads: 1, groupSize: x.size, bits: aBits, negativeReach: negativeReach(rec.activation) }) : null;
  let input: ActivationQuant | null = inputSpace?.initial ?? null;

  const cosineGroups = groups === 3 ? 3 : 1;
  // Integer scoring needs both operands as ≤ 8-bit codes. The cosine metric stays in float: its row
  // cosines sit within a few float32 ulps of 1, so the product's rounding alone can reorder candidates.
  // Group-wise weights have no per-column Δw to factor out of an integer product: scored in float.
  const integer = (cfg.integerScoring ?? true) && cfg.metric === 'hessian' && wBits <= 8 && aBits <= 8 && G === undefined;
  // Per-channel weights (the conv) are scored per output channel; otherwise per output row (and q/k/v block).
  const perColumn = perColumnCosine(cfg, groups, N);
  // Hessian scores are summed over blocks of rows, which lets candidates be pruned exactly (bestByBlocks).
  // The Hessian metric only needs Ô − O = x̂·ŵᵀ − (O − b): the bias is folded into the target once.
  const hessian = cfg.metric === 'hessian';
  const blocks = rowBlocks(M, N + K, cfg.metric, budget, MIN_BLOCK_ROWS);
  const target = hessian && rec.bias ? minusBias(out, rec.bias) : out;
  const bias = hessian ? null : rec.bias;
  const rowsOf = (t: Tensor) =>
    blocks.map((b) => {
      if (blocks.length === 1) return t;
      const rows = blockOf(t, b);
      return new Tensor(rows.data, rows.shape);
    });
  const [xBlocks, outBlocks] = [rowsOf(x), rowsOf(target)];
  const gradBlocks = grad ? rowsOf(grad) : blocks.map(() => null);
  const prune = cfg.prune ?? true;
  // Each half-step depends only on the other operand's current scales: once a half-step sees the same
  // scales as in the previous round, every later round repeats itself exactly, so we stop there.
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
      const codesOf = (part: CodesU8, b: [number, number]) => {
        const rows = blockOf({ data: part.codes, shape: part.shape }, b);
        return { codes: rows.data, shape: rows.shape, delta: part.delta };
      };
      const xqBlocks = xCodes ? blocks.map((b) => xCodes.map((part) => codesOf(part, b))) : rowsOf(xq);
      const { best: bestW, scores } = await bestByBlocks(C, groups, blocks, (rows) => Math.floor(budget / (rows * N + N * K)), async (cands, block) => {
        const count = cands.length;
        // [C, N] (one Δ per row), or group-wise [C, N, K/G]: candidate c's factor times each group's Δ_maxabs.
        const perCand = N * deltasPerGroup;
        const scales = new Float32Array(count * perCand);
        for (let c = 0; c < count; c++) for (let i = 0; i < perCand; i++) scales[c * perCand + i] = deltaAt(factors[cands[c]], G ? i : Math.floor(i / rowsPerGroup));
        const [xb, o, g] = [xqBlocks[block], outBlocks[block], gradBlocks[block]];
        const s = Array.isArray(xb)
          ? await scoreLinearInteger({ searched: 'weight', x: xb, w: rec.weight, bias, out: o, grad: g, scales, candidates: count, bits: wBits, metric: cfg.metric, cosineGroups })
          : await scoreLinear({ searched: 'weight', x: xb, w: rec.weight, bias, out: o, grad: g, scales, candidates: count, bits: wBits, quantizer: 'uniform', metric: cfg.metric, cosineGroups, cosinePerColumn: perColumn, weightGroupSize: G });
        const wide = Float64Array.from(s);
        return hessian ? sumRowGroups(wide, count, N, groups) : perColumn ? wide.map((v) => -v) : cosineToLoss(s, count, M, cosineGroups, (i) => i % cosineGroups);
      }, prune, cfg.stats);
      chosenFactors = bestW.map((b) => factors[b]);
      weightDeltas = w0.map((_, i) => deltaAt(chosenFactors[Math.floor(i / deltasPerGroup)], i));
      if (only === 'weight') {
        // Groups are independent rows: the point's error is the sum of each group's best.
        const diagonal = scores.reduce((sum, v) => sum + v, 0);
        cfg.sensitivity!.report({ diagonal, perImage: await linearPerImage(rec, input, weightDeltas, deltaSpan, wBits, cfg.sensitivity!.images) });
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
    const wq = wCodes ? rec.weight : new Tensor(fakeQuantGrouped(rec.weight.data, weightDeltas, deltaSpan, wBits), [N, K]);
    const space = inputSpace!;
    const { best, scores: [bestScore] } = await bestByBlocks(space.count, space.groups, blocks, (rows) => Math.floor(budget / (rows * (N + K))), async (cands, block) => {
      const { scales, scales2 } = space.scales(cands);
      const [xb, o, g] = [xBlocks[block], outBlocks[block], gradBlocks[block]];
      const s = wCodes
        ? await scoreLinearInteger({ searched: 'input', x: xb, w: wCodes, bias, out: o, grad: g, scales, scales2, candidates: cands.length, bits: aBits, metric: cfg.metric, cosineGroups: 1 })
        : await scoreLinear({ searched: 'input', x: xb, w: wq, bias, out: o, grad: g, scales, scales2, candidates: cands.length, bits: aBits, quantizer: space.initial.kind, metric: cfg.metric, cosineGroups: 1 });
      return hessian ? Float64Array.from(s) : cosineToLoss(s, cands.length, M, 1, () => 0);
    }, prune, cfg.stats);
    input = space.chosen(best);
    if (only === 'input') {
      cfg.sensitivity!.report({ diagonal: bestScore, perImage: await linearPerImage(rec, input, weightDeltas, deltaSpan, wBits, cfg.sensitivity!.images) });
      break;
    }
  }
  // Group-wise: the row's Δ f_n·s_n and the lattice's multipliers (weightDeltas above are their products).
  const result: LinearQuant = lattice
    ? { kind: rec.kind, point: rec.point, weightBits: wBits, weightDeltas: lattice.rowDeltas.map((d, n) => chosenFactors[n] * d), weightGroups: { size: G!, multipliers: lattice.multipliers }, input }
    : { kind: rec.kind, point: rec.point, weightBits: wBits, weightDeltas, input };
  await cfg.trace?.({ kind: 'linear', record: rec, result });
  return result;
}

/**
 * Group-wise Δ_maxabs(n, g) (row-major [N, K/G]) put on an integer lattice per row: s_n = max_g Δ_maxabs(n, g)/M
 * and m_{n,g} = ⌈M·Δ_maxabs(n, g)/max_g Δ_maxabs(n, g)⌉ ∈ [1, M], M = 2^(8−k) — the smallest multiple of s_n at
 * or above each group's Δ_maxabs, so that no group clips more than at its own Δ_maxabs. The row's widest group gets
 * m = M exactly. Measured alternatives (exploratory patches, vit_tiny_c10 W4A8 group32, KL to FP32 on test1k):
 * the nearest multiple lets some groups clip their extremes (1.20e-3 vs 0.92e-3 rounding up, 8-bit patch conv);
 * choosing each multiplier by the Hessian-diagonal error of its own group's weights after the row search fits the
 * calibration images, not the test set (1.36e-3 vs 0.74e-3 rounding up, --pin).
 */
export function groupLattice(maxabs: readonly number[], rows: number, bits: number): { rowDeltas: number[]; multipliers: number[] } {
  const M = maxGroupMultiplier(bits);
  const per = maxabs.length / rows;
  const rowDeltas: number[] = [], multipliers: number[] = [];
  for (let n = 0; n < rows; n++) {
    let top = 0;
    for (let g = 0; g < per; g++) top = Math.max(top, maxabs[n * per + g]);
    rowDeltas.push(top / M);
    // 1e-9: M·Δ/top is an integer up to float rounding for the widest group (and any equal to it).
    for (let g = 0; g < per; g++) multipliers.push(Math.min(M, Math.max(1, Math.ceil((M * maxabs[n * per + g]) / top - 1e-9))));
  }
  return { rowDeltas, multipliers };
}

/** The per-image Fisher error of a linear point at the given quantization (see SensitivityScore). */
async function linearPerImage(rec: LinearRecord, input: ActivationQuant | null, weightDeltas: number[], deltaSpan: number, wBits: number, images: number): Promise<number> {
  const [N, K] = rec.weight.shape;
  const M = rec.x.size / K;
  const xq = input ? new Tensor(fakeQuantActivation(rec.x.data, input), [M, K]) : rec.x.reshape([M, K]);
  // `deltaSpan` consecutive weights share a Δ (a row group's rows, or one group of G input channels).
  const wq = new Tensor(fakeQuantGrouped(rec.weight.data, weightDeltas, deltaSpan, wBits), [N, K]);
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

/** Head `h` of [O, heads, per] values as [O, per] (a copy). */
function headSlice(t: Float32Array, heads: number, h: number, per: number): Float32Array {
  const outer = t.length / (heads * per);
  const out = new Float32Array(outer * per);
  for (let o = 0; o < outer; o++) out.set(t.subarray((o * heads + h) * per, (o * heads + h + 1) * per), o * per);
  return out;
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
  const view = (t: Float32Array, rows: number, cols: number) => ({ data: t, shape: [O, H, rows, cols] });
  // Hessian scores are summed over blocks of images (at least MIN_BLOCK_ROWS output rows each), which bounds
  // the working set of very large products and lets candidates be pruned exactly (bestByBlocks).
  const perImage = 2 * H * Math.max(M, K) * Math.max(N, K);
  const blocks = rowBlocks(O, perImage, cfg.metric, budget, Math.ceil(MIN_BLOCK_ROWS / M));
  const prune = cfg.prune ?? true;
  const imagesOf = (t: { data: Float32Array; shape: number[] }, of = blocks) => of.map((b) => blockOf(t, b));
  // A head-by-head search (halfStepPerHead) scores one head's slices, 1/H of the above per image: its blocks are
  // sized for that, so that a run stays ~the batch budget instead of H times less. At 128 ViT-S/16-224 images,
  // blocks sized for all heads held 2–3 images, and the search's one-candidate runs on them were mostly ORT's
  // per-run overhead (97 k runs at ~0.35 ms, a third of the search: bench_scale PTQ4VIT_PROFILE, BENCHMARKS.md).
  const headBlocks = rowBlocks(O, perImage / H, cfg.metric, budget, Math.ceil(MIN_BLOCK_ROWS / M));
  const [aBlocks, bBlocks, outBlocks] = [imagesOf(view(rec.a.data, M, K)), imagesOf(view(rec.b.data, K, N)), imagesOf(view(rec.out.data, M, N))];
  const gradBlocks = rec.grad ? imagesOf(view(rec.grad.data, M, N)) : blocks.map(() => null);
  const aSpace = activationSpace(cfg, { field: 'a', feeds: rec.postSoftmax ? 'post-softmax' : undefined }, { data: rec.a.data, heads: H, groupSize: M * K, bits: aBits });
  const bSpace = activationSpace(cfg, { field: 'b', feeds: undefined }, { data: rec.b.data, heads: H, groupSize: K * N, bits: bBits });
  let aQuant = aSpace.initial, bQuant = bSpace.initial;
  /** Per-head losses [count, H] of one block's scores (cosine: row cosines averaged per head, negated). */
  const lossOf = (scores: Float32Array, count: number, images: number): Float64Array =>
    cfg.metric === 'hessian' ? Float64Array.from(scores) : cosineToLoss(scores, count, images * M, H, (i) => Math.floor(i / M) % H);
  /** Candidates that fit one scoring run over `images` images. */
  const batchA = (images: number) => Math.floor(budget / (2 * images * H * M * Math.max(N, K)));
  const batchB = (images: number) => Math.floor(budget / (2 * images * H * Math.max(M, K) * N));
  const sum = (v: number[]) => v.reduce((t, x) => t + x, 0);
  /** [count, H] per-head losses → [count, groups]: as they are (a scale per head), or summed over the heads (one scale). */
  const perGroup = (perHead: Float64Array, count: number, groups: number): Float64Array => {
    if (groups === H) return perHead;
    const totals = new Float64Array(count);
    for (let c = 0; c < count; c++) for (let h = 0; h < H; h++) totals[c] += perHead[c * H + h];
    return totals;
  };

  /**
   * One half-step: operand `side` searched over its space, the other held as `operands` gives it. Per-head
   * scales are searched head by head (a kind with one scale for all heads, the softmax twin, sums them); the
   * groups are independent, so the point's error is the sum of each group's best.
   */
  const halfStep = async (side: 'A' | 'B', space: SearchSpace<ActivationQuant>, bits: number, batch: (images: number) => number, operands: (block: number) => { a: { data: Float32Array; shape: number[] }; b: { data: Float32Array; shape: number[] } }) => {
    const { best, scores } = await bestByBlocks(space.count, space.groups, blocks, batch, async (cands, block) => {
      const s = await scoreMatmul({ searched: side, ...operands(block), out: outBlocks[block], grad: gradBlocks[block], ...space.scales(cands), candidates: cands.length, heads: H, bits, quantizer: space.initial.kind, metric: cfg.metric });
      return perGroup(lossOf(s, cands.length, blocks[block][1] - blocks[block][0]), cands.length, space.groups);
    }, prune, cfg.stats);
    return { quant: space.chosen(best), error: sum(scores) };
  };

  /**
   * A half-step whose scales are per head under the Hessian metric, one head at a time: the heads' scores are
   * independent sums, so each head is its own search (bestByBlocks with one group) over a copy of that head's
   * slices — a candidate is then dropped as soon as it cannot win *this* head, instead of being scored on every
   * head while any one of them is still open (on ViT-S/16-224 about half of all candidate-blocks were scored
   * that way). The same candidates, scored on the same elements; the choice is halfStep's (tests compare them).
   */
  const halfStepPerHead = async (side: 'A' | 'B', space: SearchSpace<ActivationQuant>, bits: number, batch: (images: number) => number, a: Float32Array, b: Float32Array) => {
    const best: number[] = [], errors: number[] = [];
    for (let h = 0; h < H; h++) {
      const slices = (t: Float32Array, rows: number, cols: number) => imagesOf({ data: headSlice(t, H, h, rows * cols), shape: [O, 1, rows, cols] }, headBlocks);
      const [aH, bH, outH] = [slices(a, M, K), slices(b, K, N), slices(rec.out.data, M, N)];
      const gradH = rec.grad ? slices(rec.grad.data, M, N) : headBlocks.map(() => null);
      const searched = await bestByBlocks(space.count, 1, headBlocks, (images) => batch(images) * H, async (cands, block) => {
        const all = space.scales(cands);
        const scales = Float32Array.from(cands, (_, i) => all.scales[i * H + h]); // [C·H] → this head's [C]
        const s = await scoreMatmul({ searched: side, a: aH[block], b: bH[block], out: outH[block], grad: gradH[block], ...all, scales, candidates: cands.length, heads: 1, bits, quantizer: space.initial.kind, metric: cfg.metric });
        return Float64Array.from(s);
      }, prune, cfg.stats);
      best.push(searched.best[0]);
      errors.push(searched.scores[0]);
    }
    return { quant: space.chosen(best), error: sum(errors) };
  };
  const headByHead = (space: SearchSpace<ActivationQuant>) => (cfg.perHeadSearch ?? true) && cfg.metric === 'hessian' && H > 1 && space.groups === H;

  let lastBKey = '', lastAKey = '';
  for (let round = 0; round < cfg.rounds; round++) {
    const bKey = JSON.stringify(bQuant);
    if (round > 0 && bKey === lastBKey) break; // a fixed point: later rounds would repeat (see searchLinear)
    lastBKey = bKey;
    if (only !== 'b') {
      const bq = view(fakeQuantActivation(rec.b.data, bQuant, K * N), K, N);
      const bqBlocks = imagesOf(bq);
      const searched = headByHead(aSpace)
        ? await halfStepPerHead('A', aSpace, aBits, batchA, rec.a.data, bq.data)
        : await halfStep('A', aSpace, aBits, batchA, (block) => ({ a: aBlocks[block], b: bqBlocks[block] }));
      aQuant = searched.quant;
      if (only === 'a') {
        cfg.sensitivity!.report({ diagonal: searched.error, perImage: await matmulPerImage(rec, aQuant, bQuant, cfg.sensitivity!.images) });
        break;
      }
    }
    const aKey = JSON.stringify(aQuant);
    if (round > 0 && aKey === lastAKey) break;
    lastAKey = aKey;
    const aq = view(fakeQuantActivation(rec.a.data, aQuant, M * K), M, K);
    const aqBlocks = imagesOf(aq);
    const searched = headByHead(bSpace)
      ? await halfStepPerHead('B', bSpace, bBits, batchB, aq.data, rec.b.data)
      : await halfStep('B', bSpace, bBits, batchB, (block) => ({ a: aqBlocks[block], b: bBlocks[block] }));
    bQuant = searched.quant;
    if (only === 'b') {
      cfg.sensitivity!.report({ diagonal: searched.error, perImage: await matmulPerImage(rec, aQuant, bQuant, cfg.sensitivity!.images) });
      break;
    }
  }
  const result: MatmulQuant = { kind: 'matmul', point: rec.point, heads: H, a: aQuant, b: bQuant };
  await cfg.trace?.({ kind: 'matmul', record: rec, result });
  return result;
}
