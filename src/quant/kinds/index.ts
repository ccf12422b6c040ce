/**
 * The registry of activation-quantizer kinds: `kindOf(q)` is the object that knows how to store, check,
 * apply and export a quantizer of q's kind (kind.ts). A new kind is a file beside these, one entry in KINDS and
 * in activationSchema here, and its plain-data shape in params.ts (ActivationQuant).
 */
import { z } from 'zod';
import type { GraphBuilder } from '../../onnx/builder.js';
import { checkBits, type IntegerOperand } from '../integer.js';
import type { ActivationQuant } from '../params.js';
import type { ActivationKind, OperandSlot, QuantOf } from './kind.js';
import { twinGelu } from './twinGelu.js';
import { twinSoftmax } from './twinSoftmax.js';
import { uniform } from './uniform.js';

export type { ActivationKind, CodesU8, OperandSlot, ScoringScales, SearchOperand, SearchSpace, SimulationFeed, SimulationGraph } from './kind.js';
export { MAX_BITS, MIN_BITS, bitsSchema, deltaSchema, deltasSchema } from './kind.js';

type KindName = ActivationQuant['kind'];

const KINDS: { readonly [K in KindName]: ActivationKind<QuantOf<K>> } = { uniform, 'twin-gelu': twinGelu, 'twin-softmax': twinSoftmax };

/** The kind object of `q` (looked up by q.kind, so its methods take q's own type). */
export function kindOf<Q extends ActivationQuant>(q: Q): ActivationKind<Q> {
  return KINDS[q.kind] as unknown as ActivationKind<Q>;
}

/** A kind by name, for graphs built before any quantizer exists (candidate scoring). */
export function kindNamed(name: KindName): ActivationKind<ActivationQuant> {
  return KINDS[name] as unknown as ActivationKind<ActivationQuant>;
}

/**
 * The kind the search gives an operand: the first specialized kind (registry order) that fits it and that the
 * configuration enables, else uniform, which fits every operand.
 */
export function searchKind(slot: Omit<OperandSlot, 'heads'>, enabled: (kind: KindName) => boolean): ActivationKind<ActivationQuant> {
  const name = (Object.keys(KINDS) as KindName[]).find((k) => k !== 'uniform' && enabled(k) && KINDS[k].fits(slot)) ?? 'uniform';
  return kindNamed(name);
}

/** An activation quantizer on disk: one of the kinds' disk forms, told apart by `kind`. */
export const activationSchema = z.discriminatedUnion('kind', [uniform.disk, twinGelu.disk, twinSoftmax.disk]);
export type DiskActivation = z.output<typeof activationSchema>;

export function activationToDisk(q: ActivationQuant): DiskActivation {
  return kindOf(q).toDisk(q) as DiskActivation;
}

export function activationFromDisk(d: DiskActivation): ActivationQuant {
  return kindNamed(d.kind).fromDisk(d);
}

/** The Δ of each code part of a quantizer: one part (uniform, per tensor or per head) or two (twin R1, R2). */
export function partScales(q: ActivationQuant): number[][] {
  return kindOf(q).partScales(q);
}

/** x̂ = Q(x) for every element; per-head Δs apply to consecutive groups of `groupSize` elements. */
export function fakeQuantActivation(x: Float32Array, q: ActivationQuant, groupSize = x.length): Float32Array {
  return kindOf(q).fakeQuant(x, q, groupSize);
}

/** The left operand of an integer product as uint8 codes (x: float tensor name; per-head Δs along axis 1). */
export function activationCodes(g: GraphBuilder, x: string, q: ActivationQuant, hint: string): IntegerOperand {
  checkBits(q.bits, hint);
  return kindOf(q).integerCodes(g, x, q, hint);
}
