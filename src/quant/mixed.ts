/**
 * Hessian-guided mixed precision: spend bits where the loss is sensitive.
 *
 *  1. Sensitivity. For every quantization point, every quantized operand (a linear layer's weight and
 *     input, an attention product's a and b) and every candidate width k, the Hessian-weighted output error
 *     after that operand's own scale search at k bits (the PTQ4ViT metric Σ (∂L/∂O)²·(Ô − O)², search.ts),
 *     the point's other operand held at the highest width (8 bits, Δ_maxabs) — separable, so a point costs
 *     2·|widths| one-operand searches, not |widths|². They run in the same recording pass as calibration, on
 *     the records it holds. The allocation uses the error at the searched scale in its per-image form
 *       s(op, k) = Σ_images ( Σ_elements ∂L/∂O ⊙ (Ô − O) )²
 *     — the same Fisher approximation of the Hessian, without dropping the cross terms between the elements
 *     of one image: the scale search may treat elements one by one (its argmin barely moves), but across
 *     layers the correlated errors of a coarse grid (clipping, a biased GELU or softmax grid) add up in the
 *     loss. On vit_tiny_c10 (test1k) the diagonal form's 4-bit policy lost 0.5 points to uniform W4A4, the
 *     per-image form's did not.
 *  2. Allocation. Per side (weights, activations) a multiple-choice knapsack solved exactly (allocate.ts):
 *       min Σ s(op, k_op)   s.t.   Σ size_op·k_op ≤ budget,
 *     size = parameters of a weight, elements per image of an activation; a size budget in MB is the same
 *     knapsack over weights with bytes·8 as its capacity. The patch embedding and the classifier can be
 *     pinned at 8 bits (an item with a single option); they still count in the averages.
 *  3. The final PTQ4ViT search (full grid, alternating rounds) at the chosen widths.
 */
import { Ptq4vitError } from '../errors.js';
import type { QuantPoint, VisionModel } from '../models/types.js';
import { linear as linearFp, matmul as matmulFp } from '../tensor/gemm.js';
import type { Tensor } from '../tensor/tensor.js';
import { allocateBits, type AllocationItem } from './allocate.js';
import { containerBits, weightCodeBytes } from './packing.js';
import { CalibrationSession, sessionOptions, splitWallSeconds, type CalibrationOptions, type CalibrationProgress } from './calibrate.js';
import type { BitPolicy, PointQuant, PointWidths } from './params.js';
import type { Operand, SensitivityScore } from './search.js';

/** Candidate widths of every operand. */
export const CANDIDATE_WIDTHS: readonly number[] = [3, 4, 5, 6, 8];
/** Width of pinned points, and of the operand held fixed while the other one's sensitivity is measured. */
export const PINNED_BITS = 8;
/**
 * Grid of the sensitivity searches: n = 20 (21 candidates over the same [α, β]·Δ_maxabs) and one
 * half-step, against the final search's n = 100 and up to 3 alternating rounds. The allocation needs the
 * error at each width to a few percent, not the best scale: the score is flat near its minimum, and a
 * step of (β−α)/20 ≈ 0.06·Δ_maxabs keeps 10 sensitivity searches per point within ~1/3 of one full search.
 */
export const SENSITIVITY_N = 20;

/** Which error the allocation minimizes (search.ts, SensitivityScore). */
export const SENSITIVITY_SCORE: keyof SensitivityScore = 'perImage';

export type Side = 'weight' | 'activation';

/** One quantized operand: what a width costs, and whether it is pinned. */
export interface OperandItem {
  point: string;
  operand: Operand;
  side: Side;
  /** Parameters (weights) or elements per image (activations). */
  size: number;
  /** The patch embedding or the classifier. */
  pinnable: boolean;
  /** Weights: output rows (channels), which the deployed size depends on (packed rows, one Δ each); default 1. */
  rows?: number;
}

/** A budget: any of the three, at least one. */
export interface Budget {
  /** Average weight bits, weighted by parameters. */
  wAvgBits?: number;
  /** Average activation bits, weighted by elements per image. */
  aAvgBits?: number;
  /** Bytes of the quantized weights (bits/8 per parameter, packed), in MB of 10^6 bytes. */
  sizeMb?: number;
}

export interface MixedRequest {
  budget: Budget;
  /** Pin the patch embedding and the classifier at 8 bits. */
  pin: boolean;
  /** Uniform widths of a side the budget leaves free. */
  weightBits: number;
  activationBits: number;
}

/** What a policy achieves. */
export interface PolicySummary {
  wAvgBits: number;
  aAvgBits: number;
  /** Deployed weight bytes in MB (10^6 bytes): codes in their containers, packed, and a f32 Δ per output channel. */
  weightMb: number;
  /** Σ of the chosen operands' sensitivities (weights and activations). */
  sensitivity: number;
}

/** s(op, k) of every operand, by point and operand. */
export type Sensitivities = Map<string, Map<number, number>>;

const itemKey = (point: string, operand: Operand) => `${point}:${operand}`;

/** The patch embedding (the conv) and the classifier head(s) (timm names head, head.fc, head_dist). */
export function isPinnable(p: Pick<QuantPoint, 'kind' | 'name'>): boolean {
  return p.kind === 'conv' || /^head(\.|_|$)/.test(p.name);
}

/**
 * A mixed-precision file's provenance record (fileschema.ts mixedPrecisionSchema): the budget asked for, the
 * pinned points, the sensitivity search, and the averages and policy the allocation reached.
 */
export function mixedProvenance(
  model: VisionModel,
  request: Pick<MixedRequest, 'budget' | 'pin'>,
  reached: { summary: Pick<PolicySummary, 'wAvgBits' | 'aAvgBits' | 'weightMb'>; policy: BitPolicy },
  search: { candidates: readonly number[]; sensitivityN: number },
): Record<string, unknown> {
  const b = request.budget;
  return {
    budget: { ...(b.wAvgBits !== undefined ? { w_avg_bits: b.wAvgBits } : {}), ...(b.aAvgBits !== undefined ? { a_avg_bits: b.aAvgBits } : {}), ...(b.sizeMb !== undefined ? { size_mb: b.sizeMb } : {}) },
    pinned: request.pin ? model.quantPoints.filter(isPinnable).map((p) => p.name) : [],
    candidate_bits: [...search.candidates],
    sensitivity_search: { n: search.sensitivityN, rounds: 1, held_operand_bits: PINNED_BITS },
    w_avg_bits: reached.summary.wAvgBits,
    a_avg_bits: reached.summary.aAvgBits,
    weight_mb: reached.summary.weightMb,
    policy: reached.policy,
  };
}

/** Every quantized operand with its size, from one forward pass on one image. */
export async function operandItems(model: VisionModel, image: Tensor): Promise<OperandItem[]> {
  const one = image.rows(0, 1);
  const byName = new Map(model.quantPoints.map((p) => [p.name, p]));
  const seen = new Map<string, OperandItem[]>();
  await model.forward(one, {
    linear: async (point, x, weight, bias) => {
      const p = byName.get(point)!;
      const items: OperandItem[] = [{ point, operand: 'weight', side: 'weight', size: weight.size, pinnable: isPinnable(p), rows: weight.shape[0] }];
      if (p.kind !== 'conv') items.push({ point, operand: 'input', side: 'activation', size: x.size, pinnable: isPinnable(p) });
      seen.set(point, items);
      return linearFp(x, weight, bias);
    },
    matmul: async (point, a, b, transB) => {
      seen.set(point, [
        { point, operand: 'a', side: 'activation', size: a.size, pinnable: false },
        { point, operand: 'b', side: 'activation', size: b.size, pinnable: false },
      ]);
      return matmulFp(a, b, transB);
    },
  });
  return model.quantPoints.flatMap((p) => seen.get(p.name) ?? []);
}

/**
 * Deployed bytes of a weight at `bits`: its codes in their container (packing.ts: 2- and 4-bit containers packed
 * row by row, int8, int16) plus one f32 Δ per output channel, as the integer graph and the file store them.
 * Weights are symmetric: no zero points.
 */
export function deployedWeightBytes(item: Pick<OperandItem, 'size' | 'rows'>, bits: number): number {
  const rows = item.rows ?? 1;
  return weightCodeBytes(rows, item.size / rows, bits) + 4 * rows;
}

/** What a width costs in a side's knapsack: deployed bytes under a size budget, else size·bits. */
function widthCost(item: OperandItem, bits: number, budget: Budget): number {
  return item.side === 'weight' && budget.sizeMb !== undefined ? deployedWeightBytes(item, bits) : item.size * bits;
}

/** Capacity of each side's knapsack (Σ widthCost), or null for a side the budget leaves free. */
function capacities(items: readonly OperandItem[], budget: Budget): Record<Side, number | null> {
  const total = (side: Side) => items.filter((i) => i.side === side).reduce((s, i) => s + i.size, 0);
  const weight = budget.sizeMb !== undefined ? budget.sizeMb * 1e6 : budget.wAvgBits !== undefined ? budget.wAvgBits * total('weight') : null;
  const activation = budget.aAvgBits !== undefined ? budget.aAvgBits * total('activation') : null;
  return { weight, activation };
}

/**
 * Options of one operand under a request: pinned → 8 bits only; otherwise every candidate width — except that
 * under a size budget a weight takes only the widest candidate of each container (a 3-bit weight costs what a
 * 4-bit one does: the choices follow the containers that exist).
 */
function itemWidths(item: OperandItem, pin: boolean, candidates: readonly number[], budget?: Budget): readonly number[] {
  if (pin && item.pinnable) return [PINNED_BITS];
  if (item.side !== 'weight' || budget?.sizeMb === undefined) return candidates;
  return candidates.filter((b) => !candidates.some((w) => w > b && containerBits(w) === containerBits(b)));
}

/** Human-readable form of a budget, e.g. "average 4 bits (weights and activations)". */
export function describeBudget(b: Budget): string {
  const parts: string[] = [];
  if (b.wAvgBits !== undefined && b.wAvgBits === b.aAvgBits) parts.push(`average ${b.wAvgBits} bits`);
  else {
    if (b.wAvgBits !== undefined) parts.push(`weights average ${b.wAvgBits} bits`);
    if (b.aAvgBits !== undefined) parts.push(`activations average ${b.aAvgBits} bits`);
  }
  if (b.sizeMb !== undefined) parts.push(`weights ${b.sizeMb} MB`);
  return parts.join(', ');
}

/**
 * Throws unless every budgeted side can be met with the lowest candidate width (pinned operands at 8 bits):
 * checked before calibrating, so an impossible budget fails in a second.
 */
export function checkBudget(items: readonly OperandItem[], request: MixedRequest, candidates: readonly number[] = CANDIDATE_WIDTHS): void {
  const caps = capacities(items, request.budget);
  for (const side of ['weight', 'activation'] as const) {
    const cap = caps[side];
    if (cap === null) continue;
    const its = items.filter((i) => i.side === side);
    const cheapest = its.reduce((s, i) => s + widthCost(i, Math.min(...itemWidths(i, request.pin, candidates, request.budget)), request.budget), 0);
    if (cheapest <= cap) continue;
    const total = its.reduce((s, i) => s + i.size, 0);
    const pinned = request.pin ? ' with the patch embedding and the classifier pinned at 8 bits' : '';
    const what = side === 'weight' && request.budget.sizeMb !== undefined
      ? `weights of ${request.budget.sizeMb} MB are impossible: the smallest is ${(cheapest / 1e6).toFixed(3)} MB`
      : `${side} average of ${side === 'weight' ? request.budget.wAvgBits : request.budget.aAvgBits} bits is impossible: the lowest is ${(cheapest / total).toFixed(3)} bits`;
    const lowest = Math.min(...itemWidths({ point: '', operand: 'weight', side, size: 1, pinnable: false }, false, candidates, request.budget));
    throw new Ptq4vitError(`${what} (every ${side} at ${lowest} bits${pinned})`);
  }
}

/** The exact allocation of a request: widths per point, and what they achieve. */
export function allocatePolicy(items: readonly OperandItem[], sens: Sensitivities, request: MixedRequest, candidates: readonly number[] = CANDIDATE_WIDTHS): { policy: BitPolicy; summary: PolicySummary } {
  checkBudget(items, request, candidates);
  const caps = capacities(items, request.budget);
  const chosen = new Map<string, number>();
  let sensitivity = 0;
  for (const side of ['weight', 'activation'] as const) {
    const its = items.filter((i) => i.side === side);
    const cap = caps[side];
    if (cap === null) {
      for (const i of its) chosen.set(itemKey(i.point, i.operand), side === 'weight' ? request.weightBits : request.activationBits);
      continue;
    }
    const knapsack: AllocationItem[] = its.map((i) => {
      const s = sens.get(itemKey(i.point, i.operand));
      return {
        name: itemKey(i.point, i.operand),
        size: i.size,
        options: itemWidths(i, request.pin, candidates, request.budget).map((bits) => {
          const v = request.pin && i.pinnable ? 0 : s?.get(bits);
          if (v === undefined) throw new Error(`no sensitivity for ${i.point} ${i.operand} at ${bits} bits`);
          return { bits, sensitivity: v, cost: widthCost(i, bits, request.budget) };
        }),
      };
    });
    const a = allocateBits(knapsack, cap);
    its.forEach((i, k) => chosen.set(itemKey(i.point, i.operand), a.bits[k]));
    sensitivity += a.sensitivity;
  }
  const policy: Record<string, PointWidths> = {};
  for (const i of items) (policy[i.point] ??= {})[i.operand] = chosen.get(itemKey(i.point, i.operand))!;
  return { policy, summary: { ...summarize(items, policy), sensitivity } };
}

/** Average widths and weight bytes of a policy. */
export function summarize(items: readonly OperandItem[], policy: BitPolicy): Omit<PolicySummary, 'sensitivity'> {
  const sum = (side: Side, f: (i: OperandItem) => number) => items.filter((i) => i.side === side).reduce((s, i) => s + f(i), 0);
  const bits = (i: OperandItem) => policy[i.point][i.operand]!;
  const weightBits = sum('weight', (i) => i.size * bits(i));
  return { wAvgBits: weightBits / sum('weight', (i) => i.size), aAvgBits: sum('activation', (i) => i.size * bits(i)) / sum('activation', (i) => i.size), weightMb: sum('weight', (i) => deployedWeightBytes(i, bits(i))) / 1e6 };
}

/** The widths of a point's operands for one sensitivity search: `operand` at `bits`, the other at 8. */
function sensitivityWidths(point: QuantPoint, operand: Operand, bits: number): PointWidths {
  if (point.kind === 'matmul') return operand === 'a' ? { a: bits, b: PINNED_BITS } : { a: PINNED_BITS, b: bits };
  return operand === 'weight' ? { weight: bits, input: PINNED_BITS } : { weight: PINNED_BITS, input: bits };
}

export type MixedProgress = CalibrationProgress | { phase: 'sensitivity'; done: number; total: number; point: string };

export interface MixedTiming {
  recordSeconds: number;
  /** Recording passes (the groups of the first traversal, plus any re-recorded in the second). */
  passes: number;
  sensitivitySeconds: number;
  allocationSeconds: number;
  /** Final search time of each request. */
  searchSecondsPerRequest: number[];
}

export interface MixedResult {
  points: PointQuant[];
  policy: BitPolicy;
  summary: PolicySummary;
}

/**
 * Mixed-precision calibration for one or more budgets: sensitivities once (first traversal of the
 * records), an exact allocation per request, then the final search of every request in the second
 * traversal (which reuses the records still in memory: no recording at all when the points fit one group).
 */
export async function calibrateMixed(
  model: VisionModel,
  images: Tensor,
  labels: Int32Array | null,
  base: CalibrationOptions,
  requests: readonly MixedRequest[],
  options: { candidates?: readonly number[]; sensitivityN?: number; score?: keyof SensitivityScore; onProgress?: (e: MixedProgress) => void } = {},
): Promise<{ results: MixedResult[]; items: OperandItem[]; sensitivities: Sensitivities; scores: Map<string, Map<number, SensitivityScore>>; timing: MixedTiming }> {
  if (base.metric !== 'hessian') throw new Ptq4vitError('mixed precision needs the Hessian-guided metric (its sensitivities are Hessian-weighted errors): not with --method base or --no-hessian');
  const candidates = options.candidates ?? CANDIDATE_WIDTHS;
  const items = await operandItems(model, images);
  for (const r of requests) checkBudget(items, r, candidates);
  const onProgress = options.onProgress;
  const session = new CalibrationSession(model, images, labels, { ...sessionOptions(model, [base]), onProgress });
  // The session holds the boundary records of block recompute and any record files (unlinked temporary files):
  // closed on every path, an error in a search included.
  try {
    // Operands that some request lets vary (pinned ones everywhere need no sensitivity).
    const varying = items.filter((i) => requests.some((r) => capacities(items, r.budget)[i.side] !== null && !(r.pin && i.pinnable)));
    const byPoint = new Map<string, OperandItem[]>();
    for (const i of varying) byPoint.set(i.point, [...(byPoint.get(i.point) ?? []), i]);
    const sens: Sensitivities = new Map();
    const allScores = new Map<string, Map<number, SensitivityScore>>();
    const form = options.score ?? SENSITIVITY_SCORE;
    const imageCount = images.shape[0];
    const totalSens = varying.length * candidates.length;
    let done = 0;
    const t0 = performance.now();
    await session.forEachPoint(
      async ({ point, search }) => {
        for (const item of byPoint.get(point.name) ?? []) {
          const scores = new Map<number, SensitivityScore>();
          for (const bits of candidates) {
            const cfg: CalibrationOptions = {
              ...base,
              n: options.sensitivityN ?? SENSITIVITY_N,
              rounds: 1,
              trace: undefined,
              policy: { [point.name]: sensitivityWidths(point, item.operand, bits) },
              sensitivity: { operand: item.operand, images: imageCount, report: (s) => scores.set(bits, s) },
            };
            await search(cfg);
            if (!scores.has(bits)) throw new Error(`the sensitivity search of ${point.name} ${item.operand} reported no score`);
            onProgress?.({ phase: 'sensitivity', done: ++done, total: totalSens, point: point.name });
          }
          allScores.set(itemKey(item.point, item.operand), scores);
          sens.set(itemKey(item.point, item.operand), new Map([...scores].map(([bits, s]) => [bits, s[form]])));
        }
      },
      { keepLastGroup: true },
    );
    const recordAfterSens = session.recordSeconds;
    const sensitivitySeconds = (performance.now() - t0) / 1000 - recordAfterSens;

    const t1 = performance.now();
    const allocations = requests.map((r) => allocatePolicy(items, sens, r, candidates));
    const allocationSeconds = (performance.now() - t1) / 1000;

    const chosen = requests.map(() => new Map<string, PointQuant>());
    const perRequestMs = requests.map(() => 0);
    let searched = 0;
    const totalSearches = model.quantPoints.length * requests.length;
    const t2 = performance.now(), recordedBefore = session.recordSeconds;
    await session.forEachPoint(async ({ point, search }) => {
      for (let r = 0; r < requests.length; r++) {
        const ts = performance.now();
        chosen[r].set(point.name, await search({ ...base, policy: allocations[r].policy }));
        perRequestMs[r] += performance.now() - ts;
        onProgress?.({ phase: 'search', done: ++searched, total: totalSearches, point: point.name });
      }
    }, { concurrent: true });
    const searchSeconds = (performance.now() - t2) / 1000 - (session.recordSeconds - recordedBefore);
    const results = allocations.map((a, r) => ({ points: model.quantPoints.map((p) => chosen[r].get(p.name)!), policy: a.policy, summary: a.summary }));
    return {
      results,
      items,
      sensitivities: sens,
      scores: allScores,
      timing: { recordSeconds: session.recordSeconds, passes: session.passes, sensitivitySeconds, allocationSeconds, searchSecondsPerRequest: splitWallSeconds(perRequestMs, searchSeconds) },
    };
  } finally {
    await session.close();
  }
}
