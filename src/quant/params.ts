/** What calibration decides for each quantization point: bit widths and scales, in a serializable form. */

export type ActivationQuant =
  /** Symmetric uniform; one Δ per tensor, or one per attention head. */
  | { kind: 'uniform'; bits: number; deltas: number[] }
  /** Post-GELU twin: R1 = negative side (Δ_R1 = deltaNeg), R2 = positive side (Δ_R2 = deltaPos). */
  | { kind: 'twin-gelu'; bits: number; deltaNeg: number; deltaPos: number }
  /** Post-softmax twin: R1 = [0, 2^(k−1)·Δ_R1) with Δ_R1 = deltaR1, R2 = the rest with Δ_R2 = deltaR2. */
  | { kind: 'twin-softmax'; bits: number; deltaR1: number; deltaR2: number };

export interface LinearQuant {
  kind: 'linear' | 'conv';
  point: string;
  weightBits: number;
  /** One Δ per group of consecutive output rows: 1 (per tensor), 3 (q, k, v), or one per output channel. */
  weightDeltas: number[];
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
