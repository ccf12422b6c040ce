/** What calibration decides for each quantization point: bit widths and scales, in a serializable form. */

export type ActivationQuant =
  /** Symmetric uniform; one Δ per tensor, or one per attention head. */
  | { kind: 'uniform'; bits: number; deltas: number[] }
  /** Post-GELU twin: R1 = negative side (Δ_R1 = deltaNeg), R2 = positive side (Δ_R2 = deltaPos). */
  | { kind: 'twin-gelu'; bits: number; deltaNeg: number; deltaPos: number }
  /** Post-softmax twin: R1 = [0, 2^(k−1)·Δ_R1) with Δ_R1 = deltaR1, R2 = the rest with Δ_R2 = deltaR2. */
  | { kind: 'twin-softmax'; bits: number; deltaR1: number; deltaR2: number };

/**
 * Group-wise weight scales are for ≤ 4-bit codes: their code times the group's integer multiplier must fit the
 * int8 container of the integer product (see WeightGroups.multipliers).
 */
export const MAX_GROUPWISE_BITS = 4;

/** The largest group multiplier of k-bit codes, 2^(8−k): m·c then stays within int8 (−128 … 127). */
export function maxGroupMultiplier(bits: number): number {
  return 2 ** (8 - bits);
}

export interface LinearQuant {
  kind: 'linear' | 'conv';
  point: string;
  weightBits: number;
  /**
   * One Δ per group of consecutive output rows: 1 (per tensor), 3 (q, k, v), or one per output channel (always,
   * with `weightGroups`).
   */
  weightDeltas: number[];
  /** Group-wise weight scales (≤ 4-bit linear layers; absent: Δs per group of rows). */
  weightGroups?: WeightGroups;
  /** null: the input stays float (the patch-embedding conv's image input, as the authors do). */
  input: ActivationQuant | null;
}

/** Group-wise weight scales of a linear layer (LinearQuant.weightGroups). */
export interface WeightGroups {
  /** Input channels per group, G. */
  size: number;
  /**
   * An integer m ∈ [1, 2^(8−k)] per output row n and group g of G input channels,
   * row-major [N, K/G]. The group's step is Δ_n·m and its k-bit codes c are taken on it:
   *
   *   c = clamp(round(w / (Δ_n·m)), −2^(k−1), 2^(k−1) − 1),   ŵ = Δ_n·(m·c)
   *
   * m·c lies in [−128, 127], so a group-wise layer is an int8 weight with one Δ per output column (the same
   * u8 × s8 integer product as per-channel weights, exact in every runtime) stored as k-bit codes plus a
   * multiplier per group — the two-level scales of llama.cpp's k-quants, with the inner level an integer.
   */
  multipliers: number[];
}

export interface MatmulQuant {
  kind: 'matmul';
  point: string;
  heads: number;
  a: ActivationQuant;
  b: ActivationQuant;
}

export type PointQuant = LinearQuant | MatmulQuant;

/**
 * Bit widths of one quantization point: a linear layer's weight and input (a conv has no quantized
 * input), or an attention product's two operands. A field left out takes the configuration's uniform width.
 */
export interface PointWidths {
  weight?: number;
  input?: number;
  a?: number;
  b?: number;
}

/** Per-point bit widths by point name (a mixed-precision policy). */
export type BitPolicy = Readonly<Record<string, PointWidths>>;

/**
 * The scales of every element of a weight with `rows` output rows of `cols` values (row-major): `rowDelta(i)`, the
 * Δ of element i's output row (its row group's), and `multiplier(i)`, its group's integer multiplier (1 unless
 * group-wise). Element i's code is taken on the step rowDelta(i)·multiplier(i) and stands for
 * rowDelta(i)·(multiplier(i)·code). The caller has checked that the Δs and multipliers fit the weight's shape.
 */
export function elementScales(q: Pick<LinearQuant, 'weightDeltas' | 'weightGroups'>, rows: number, cols: number): { rowDelta: (i: number) => number; multiplier: (i: number) => number } {
  const perDelta = cols * (rows / q.weightDeltas.length);
  const groups = q.weightGroups;
  return {
    rowDelta: (i) => q.weightDeltas[Math.floor(i / perDelta)],
    multiplier: groups === undefined ? () => 1 : (i) => groups.multipliers[Math.floor(i / groups.size)],
  };
}
