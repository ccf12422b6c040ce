/**
 * Bit allocation under a budget as a multiple-choice knapsack, solved exactly: every item (a quantization
 * point's weights, or its input) takes exactly one of its options (a bit width with its sensitivity —
 * the Hessian-weighted output error at that width); minimize Σ sensitivity subject to Σ size·bits ≤ budget.
 *
 * Dynamic programming over the items keeps the Pareto frontier of (cost, error) of every prefix — a state
 * survives only if no other state is both cheaper and no worse — so the result is the exact optimum
 * (not a greedy one), however large the sizes are.
 */
import { Ptq4vitError } from '../errors.js';

export interface AllocationOption {
  bits: number;
  /** The loss proxy at this width (lower is better). */
  sensitivity: number;
  /** What this option costs against the budget (default size·bits; e.g. deployed bytes, mixed.ts). */
  cost?: number;
}

export interface AllocationItem {
  name: string;
  /** What one bit of width costs: parameters of a weight, elements of an activation, bytes per bit… */
  size: number;
  options: AllocationOption[];
}

export interface Allocation {
  /** Chosen bits per item, in item order. */
  bits: number[];
  /** Σ cost (size·bits by default) of the choice. */
  cost: number;
  sensitivity: number;
}

interface State {
  cost: number;
  error: number;
  /** Back pointer: the state of the previous prefix and the option chosen for this item. */
  prev: State | null;
  option: number;
}

/** Keep the Pareto frontier: sorted by cost, strictly decreasing error. */
function frontier(states: State[]): State[] {
  states.sort((a, b) => a.cost - b.cost || a.error - b.error);
  const kept: State[] = [];
  for (const s of states) if (kept.length === 0 || s.error < kept[kept.length - 1].error) kept.push(s);
  return kept;
}

/** The exact minimum-sensitivity choice with Σ size·bits ≤ budget (ties: the cheaper choice). */
export function allocateBits(items: readonly AllocationItem[], budget: number): Allocation {
  for (const item of items) {
    if (item.options.length === 0) throw new Ptq4vitError(`bit allocation: '${item.name}' has no width to choose from`);
    if (!(item.size > 0)) throw new Ptq4vitError(`bit allocation: '${item.name}' has size ${item.size}`);
  }
  const costOf = (it: AllocationItem, o: AllocationOption) => o.cost ?? it.size * o.bits;
  const cheapest = items.reduce((c, it) => c + Math.min(...it.options.map((o) => costOf(it, o))), 0);
  if (cheapest > budget) {
    throw new Ptq4vitError(`bit allocation: the budget (${budget}) is below the cheapest choice (${cheapest}: every item at its lowest width)`);
  }
  let states: State[] = [{ cost: 0, error: 0, prev: null, option: -1 }];
  for (const item of items) {
    const next: State[] = [];
    for (const s of states) {
      item.options.forEach((o, k) => {
        const cost = s.cost + costOf(item, o);
        if (cost <= budget) next.push({ cost, error: s.error + o.sensitivity, prev: s, option: k });
      });
    }
    states = frontier(next);
  }
  // The frontier's last state has the lowest error within the budget.
  let best: State | null = states[states.length - 1];
  const cost = best.cost, sensitivity = best.error;
  const bits: number[] = new Array(items.length);
  for (let i = items.length - 1; i >= 0; i--, best = best!.prev) bits[i] = items[i].options[best!.option].bits;
  return { bits, cost, sensitivity };
}
