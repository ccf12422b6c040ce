/**
 * The quantized model file's metadata on disk (format ptq4vit-quantized-model/2): snake_case JSON,
 * checked field by field on load and converted to the in-memory types of params.ts. The spec is stored
 * as a model card (models/config.ts) and read by the same checks as any card.
 *
 *   ptq4vit.quant: [{ point, kind: "linear"|"conv", weight_bits, weight_deltas: [Δ…], weight_group_size?, weight_group_multipliers?,
 *                     input: activation|null }
 *                   | { point, kind: "matmul", heads, a: activation, b: activation }, …]
 *   activation:    { kind: "uniform", bits, deltas: [Δ…] } | { kind: "twin-gelu", bits, delta_neg, delta_pos }
 *                  | { kind: "twin-softmax", bits, delta_r1, delta_r2 }     (each kind's own, kinds/*.ts)
 */
import { z } from 'zod';
import { MAX_BITS, MIN_BITS, activationFromDisk, activationSchema, activationToDisk, bitsSchema as bits, deltasSchema as deltas } from './kinds/index.js';
import type { PointQuant } from './params.js';

/** Bit widths the quantizers support (the CLI's --bits range; defined with the kinds' disk forms). */
export { MAX_BITS, MIN_BITS };

/**
 * Group-wise weight scales: input channels per group, a power of two ≥ 16, and weight_group_multipliers, the
 * integer multiplier of each row's Δ per group (N·(K/G) of them, row-major [N, K/G]; params.ts LinearQuant); the
 * point's weight_deltas are then one per output row. Files without them (every file before group-wise scales) are
 * unchanged; a reader before them refuses the unknown fields rather than misreading the Δs.
 */
const groupSize = z.number().int().min(16).refine((g) => (g & (g - 1)) === 0, { message: 'expected a power of two ≥ 16' });
const groupMultipliers = z.array(z.number().int().min(1)).min(1);

/** A group-wise file of an earlier development version: weight_group_size with a float Δ per group, no multipliers. */
export const LEGACY_GROUPWISE = '(group-wise files of an earlier development version stored a float Δ per group: quantize the model again)';

const pointSchema = z.discriminatedUnion('kind', [
  z
    .strictObject({ point: z.string().min(1), kind: z.enum(['linear', 'conv']), weight_bits: bits, weight_deltas: deltas, weight_group_size: groupSize.optional(), weight_group_multipliers: groupMultipliers.optional(), input: activationSchema.nullable() })
    // The two group-wise fields come together.
    .superRefine((p, ctx) => {
      if (p.weight_group_size !== undefined && p.weight_group_multipliers === undefined) ctx.addIssue({ code: 'custom', path: ['weight_group_size'], message: `set without weight_group_multipliers ${LEGACY_GROUPWISE}` });
      if (p.weight_group_size === undefined && p.weight_group_multipliers !== undefined) ctx.addIssue({ code: 'custom', path: ['weight_group_multipliers'], message: 'set without weight_group_size' });
    }),
  z.strictObject({ point: z.string().min(1), kind: z.literal('matmul'), heads: z.number().int().min(1), a: activationSchema, b: activationSchema }),
]);

export const pointsSchema = z.array(pointSchema).min(1);

const widths = z.strictObject({ weight: bits.optional(), input: bits.optional(), a: bits.optional(), b: bits.optional() });
const avgBits = z.number().min(MIN_BITS).max(MAX_BITS);

/** A mixed-precision file's policy and budget (mixed.ts): what was asked, what was chosen, what it achieves. */
export const mixedPrecisionSchema = z.strictObject({
  budget: z.strictObject({ w_avg_bits: avgBits.optional(), a_avg_bits: avgBits.optional(), size_mb: z.number().positive().optional() }),
  pinned: z.array(z.string().min(1)),
  candidate_bits: z.array(bits).min(1),
  sensitivity_search: z.strictObject({ n: z.number().int().min(1), rounds: z.number().int().min(1), held_operand_bits: bits }),
  w_avg_bits: avgBits,
  a_avg_bits: avgBits,
  weight_mb: z.number().positive(),
  policy: z.record(z.string().min(1), widths),
});

/** --smooth: the migration strength and the norms whose channels were rescaled (quant/smooth.ts). */
const smoothingSchema = z.strictObject({ alpha: z.number().min(0).max(1), norms: z.array(z.string()) });

/**
 * How the file was made: free-form, but the fields reports print must be there and typed. A uniform file
 * has w_bits and a_bits; a mixed-precision file has mixed_precision instead (files before it all have both).
 */
export const provenanceSchema = z
  .looseObject({ method: z.enum(['ptq4vit', 'base']), w_bits: bits.optional(), a_bits: bits.optional(), mixed_precision: mixedPrecisionSchema.optional(), smoothing: smoothingSchema.optional() })
  .refine((p) => p.mixed_precision !== undefined || (p.w_bits !== undefined && p.a_bits !== undefined), { message: 'w_bits and a_bits are required (or mixed_precision for a mixed-precision file)' });

/** "W4A4", or "mixed W3.99A4.00" (the averages) for a mixed-precision file. */
export function bitsLabel(provenance: Record<string, unknown>): string {
  const mixed = provenance.mixed_precision as { w_avg_bits: number; a_avg_bits: number } | undefined;
  return mixed ? `mixed precision W${mixed.w_avg_bits.toFixed(2)}A${mixed.a_avg_bits.toFixed(2)}` : `W${provenance.w_bits}A${provenance.a_bits}`;
}

type DiskPoint = z.output<typeof pointSchema>;

export function pointsToDisk(points: readonly PointQuant[]): DiskPoint[] {
  return points.map((p) => p.kind === 'matmul'
    ? { point: p.point, kind: p.kind, heads: p.heads, a: activationToDisk(p.a), b: activationToDisk(p.b) }
    : { point: p.point, kind: p.kind, weight_bits: p.weightBits, weight_deltas: [...p.weightDeltas], ...(p.weightGroups ? { weight_group_size: p.weightGroups.size, weight_group_multipliers: [...p.weightGroups.multipliers] } : {}), input: p.input ? activationToDisk(p.input) : null });
}

export function pointsFromDisk(points: readonly DiskPoint[]): PointQuant[] {
  return points.map((d) => d.kind === 'matmul'
    ? { kind: d.kind, point: d.point, heads: d.heads, a: activationFromDisk(d.a), b: activationFromDisk(d.b) }
    : { kind: d.kind, point: d.point, weightBits: d.weight_bits, weightDeltas: d.weight_deltas, ...(d.weight_group_size !== undefined && d.weight_group_multipliers !== undefined ? { weightGroups: { size: d.weight_group_size, multipliers: d.weight_group_multipliers } } : {}), input: d.input ? activationFromDisk(d.input) : null });
}

/** Format /1 stored the in-memory objects as they were (camelCase keys): the same data under other names. */
export function snakeCaseKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(snakeCaseKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snakeCaseKeys(v)]));
}
