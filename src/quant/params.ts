/** What calibration decides for each quantization point: bit widths and scales, in a serializable form. */

export type ActivationQuant =
  /** Symmetric uniform; one Δ per tensor, or one per attention head. */
  | { kind: 'uniform'; bits: number; deltas: number[] }
  /** Post-GELU twin: R1 = negative side (Δ_R1 = deltaNeg), R2 = positive side (Δ_R2 = deltaPos). */
  | { kind: 'twin-gelu'; bits: number; deltaNeg: number; deltaPos: number }
  /** Post-softmax twin: R1 = [0, 2^(k−1)·Δ_R1) with Δ_R1 = deltaR1, R2 = the rest with Δ_R2 = deltaR2. */
  | { kind: 'twin-softmax'; bits: number; deltaR1: number; deltaR2: number };

/** Group-wise weight scales are for ≤ 4-bit codes (MatMulNBits' 4- and 2-bit containers). */
export const MAX_GROUPWISE_BITS = 4;

export interface LinearQuant {
  kind: 'linear' | 'conv';
  point: string;
  weightBits: number;
  /**
   * One Δ per group of consecutive output rows: 1 (per tensor), 3 (q, k, v), or one per output channel; with
   * `weightGroupSize` G, one per output row and group of G input channels: N·(K/G) Δs, row-major [N, K/G].
   */
  weightDeltas: number[];
  /** Group-wise weight scales (≤ 4-bit linear layers): input channels per Δ group (absent: Δs per group of rows). */
  weightGroupSize?: number;
  /** null: the input stays float (the patch-embedding conv's image input, as the authors do). */
  input: ActivationQuant | null;
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
 * The index into `q.weightDeltas` of every element of a weight with `rows` output rows of `cols` values
 * (row-major): element i of row n = ⌊i/cols⌋ takes Δ number ⌊i/G⌋ = n·(cols/G) + (i mod cols)/G when
 * group-wise, else its row group's. The caller has checked that the Δs split the weight evenly.
 */
export function weightDeltaIndex(q: Pick<LinearQuant, 'weightDeltas' | 'weightGroupSize'>, rows: number, cols: number): (i: number) => number {
  const per = q.weightGroupSize ?? cols * (rows / q.weightDeltas.length);
  return (i) => Math.floor(i / per);
}
