/**
 * What one activation-quantizer kind (uniform, twin GELU, twin softmax) owns: its disk form, which operands it
 * may quantize, the scale candidates the PTQ4ViT search tries, its float formula, its integer codes, its ONNX
 * nodes (candidate scoring, simulation, integer graph) and the key under which sessions of those nodes are
 * cached. A new kind is a file beside the others,
 * its plain-data shape in params.ts (ActivationQuant), an entry in the registry (index.ts) and an example in
 * test/kinds.test.ts. The quantizer itself stays plain data; the kind object is looked up from `q.kind`
 * (index.ts kindOf), never stored in it.
 *
 * One formula is written several ways on purpose, each as its consumer rounds and runs it: in JS (the search's
 * held operand and its u8 scoring codes, quantizers.ts), as float ONNX nodes (candidate scoring: x̂; the
 * simulation: codes) and as uint8 ONNX codes (the integer graph). Keeping them beside each other, one file
 * per kind, is the point of this layout; test/kinds.test.ts holds them to each other.
 */
import { z } from 'zod';
import type { GraphBuilder } from '../../onnx/builder.js';
import type { Initializer, NodeSpec, ValueInfo } from '../../onnx/proto.js';
import type { QuantPoint } from '../../models/types.js';
import type { IntegerOperand } from '../integer.js';
import type { ActivationQuant } from '../params.js';

/** Bit widths the quantizers support (the CLI's --bits range). */
export const MIN_BITS = 2;
export const MAX_BITS = 16;

/** Disk-form building blocks shared by the kinds' schemas (and the points' schema, fileschema.ts). */
export const bitsSchema = z.number().int().min(MIN_BITS).max(MAX_BITS);
/** A quantization step: finite (zod numbers exclude ±Infinity) and > 0, or x/Δ is NaN or ±∞. */
export const deltaSchema = z.number().positive();
export const deltasSchema = z.array(deltaSchema).min(1);

/** The operand a quantizer is asked to quantize: which field of which point, and with how many heads. */
export interface OperandSlot {
  field: 'a' | 'b' | 'input';
  /** What feeds the point's quantized input (post-GELU fc2 input, post-softmax attention matrix). */
  feeds: QuantPoint['input'];
  heads: number;
}

/** A u8 code tensor of an input, as integer candidate scoring multiplies it (zero point 128), with its Δ. */
export interface CodesU8 {
  codes: Uint8Array;
  shape: number[];
  delta: number;
}

/**
 * The simulation's graph context (qkernels.ts): `grid(s, lo, hi, hint)` is clamp(round(x/s), lo, hi) as float
 * codes; `scale(name, shape)` declares a Δ graph input `${prefix}${name}` (fed by simulationFeeds).
 */
export interface SimulationGraph {
  g: GraphBuilder;
  x: string;
  prefix: string;
  /** Shape of a per-head Δ input (uniform per-head operands). */
  perHeadShape: (string | number)[];
  grid(s: string, lo: number, hi: number, hint: string): string;
  scale(name: string, shape?: (string | number)[]): ValueInfo;
}

export type SimulationFeed = { data: Float32Array; shape: readonly number[] };

/**
 * The scale inputs of fakeQuantNodes for one fixed quantizer (a single candidate): `scales` → s, `scales2` → s2
 * (twin GELU), `splits` → split and `deltaR2` (twin softmax).
 */
export interface ScoringScales {
  scales: Float32Array;
  scales2?: Float32Array;
  splits?: Float32Array;
  deltaR2?: number;
}

/** What the search knows of an operand before choosing its scales (SearchSpace). */
export interface SearchOperand {
  /** The recorded values; per-head operands hold consecutive groups of `groupSize` values, heads cycling. */
  data: Float32Array;
  heads: number;
  groupSize: number;
  bits: number;
  /** The search grid: candidate Δ = factor·Δ_maxabs (α + i·(β−α)/n, search.ts). */
  factors: readonly number[];
  /** GELU twin: keep Δ_R1 = Δ_R2/2^m (SearchConfig.geluAligned). */
  geluAligned: boolean;
  /** GELU twin: |min| of the activation feeding the operand (default GELU_MIN, exact GELU's). */
  negativeReach?: number;
  /** Softmax twin: Δ_R2 = 1/2^(k−1) (paper) or 1/(2^(k−1)−1) (SearchConfig.softmaxDeltaR2). */
  softmaxDeltaR2: 'paper' | 'exact-one';
}

/**
 * The candidates of one operand's search: `count` candidates, chosen independently in each of `groups` groups
 * (one per head for per-head scales, else 1, the heads' scores then summed). `scales(cands)` are the scoring
 * graph's scale inputs for a batch of candidates, `groups` values per candidate; `chosen(best)` is the quantizer
 * made of each group's winner.
 */
export interface SearchSpace<Q extends ActivationQuant> {
  count: number;
  groups: number;
  /** The quantizer before any search (what the other operand's first half-step sees). */
  initial: Q;
  scales(cands: readonly number[]): ScoringScales;
  chosen(best: readonly number[]): Q;
}

/** The report's picture of a quantizer on its operand's histogram: its ranges and its clipping points. */
export interface QuantPicture {
  ranges: { name: string; from: number; to: number }[];
  marks: { name: string; value: number }[];
}

/** The quantizer data of one kind, e.g. QuantOf<'twin-gelu'>. */
export type QuantOf<K extends ActivationQuant['kind']> = Extract<ActivationQuant, { kind: K }>;

export interface ActivationKind<Q extends ActivationQuant, S extends z.ZodType = z.ZodType> {
  /** Disk form (snake_case, format ptq4vit-quantized-model/2) and its conversions. */
  readonly disk: S;
  toDisk(q: Q): z.output<S>;
  fromDisk(d: z.output<S>): Q;

  /** Why `q` cannot quantize this operand (the file's validation), or null. */
  misfit(q: Q, slot: OperandSlot): string | null;
  /** Whether the kind may quantize this operand at all (the search picks a specialized kind where one fits). */
  fits(slot: Omit<OperandSlot, 'heads'>): boolean;

  /** The scale candidates the PTQ4ViT search tries for an operand of this kind. */
  searchSpace(operand: SearchOperand): SearchSpace<Q>;

  /** The Δ of each code part: one part (uniform: per tensor or per head) or two (twin R1, R2). */
  partScales(q: Q): number[][];

  /** x̂ for every element (`groupSize` consecutive elements share a per-head Δ). */
  fakeQuant(x: Float32Array, q: Q, groupSize: number): Float32Array;

  /**
   * Candidate scoring's fake quantization as ONNX nodes: `x` quantized into `out`, scale inputs named with
   * `prefix` (the caller declares and feeds them: see ScoringScales); `deltaR2` is the twin softmax's constant.
   */
  fakeQuantNodes(bits: number, x: string, out: string, prefix: string, deltaR2: number): { nodes: NodeSpec[]; inits: Initializer[]; scaleInputs: string[] };
  /** `q` as one candidate of fakeQuantNodes (reports measure a searched quantizer this way). */
  scoringScales(q: Q): ScoringScales;

  /**
   * The u8 codes of a linear layer's input for integer candidate scoring, one tensor per part; absent when the
   * kind never feeds a linear layer (then the search scores in float).
   */
  codesU8?(x: Float32Array, q: Q, shape: number[]): CodesU8[];

  /** The left operand of an integer product as uint8 codes (integer graph: integer.ts); bits already checked ≤ 8. */
  integerCodes(g: GraphBuilder, x: string, q: Q, hint: string): IntegerOperand;

  /** The simulation's float code parts (the integer graph's codes minus their zero point) and their Δ inputs. */
  simulationCodes(q: Q, sim: SimulationGraph): { parts: string[]; inputs: ValueInfo[] };
  /** Values of the Δ inputs simulationCodes declared. */
  simulationFeeds(q: Q, prefix: string, perHeadShape: readonly number[]): Record<string, SimulationFeed>;
  /** What the simulation graph of `q` depends on besides its inputs' values: one cached session per key. */
  cacheKey(q: Q): string;

  /** The report: `q`'s ranges and clipping points (`feeds`: what the operand holds; post-softmax values start at 0). */
  picture(q: Q, feeds: QuantPoint['input']): QuantPicture;
  /** The report: one line describing `q`, numbers written by `num` (and lists of Δs by `list`). */
  describe(q: Q, num: (x: number) => string, list: (xs: number[]) => string): string;
}
