/**
 * Every activation-quantizer kind (src/quant/kinds/) against itself: its disk form round-trips through the
 * file schema, its candidate-scoring ONNX nodes and its u8 scoring codes give exactly its float formula, and
 * it fits exactly the operands it is meant for. Power-of-two Δs keep x/Δ exact in float32 and float64 alike,
 * so the forms must agree bit for bit. A new kind needs an example below (the Record type insists).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { OnnxType, type GraphSpec } from '../src/onnx/proto.js';
import { activationFromDisk, activationSchema, activationToDisk, kindOf, kindNamed, searchKind, type OperandSlot, type SearchOperand } from '../src/quant/kinds/index.js';
import type { ActivationQuant } from '../src/quant/params.js';
import { runGraph } from '../src/tensor/ort.js';

type KindName = ActivationQuant['kind'];

/** Every slot a point offers (fc2's input, softmax·v's a and b, any other linear input). */
const ALL_SLOTS: OperandSlot[] = [
  { field: 'input', feeds: undefined, heads: 1 },
  { field: 'input', feeds: 'post-gelu', heads: 1 },
  { field: 'a', feeds: undefined, heads: 3 },
  { field: 'a', feeds: 'post-softmax', heads: 3 },
  { field: 'b', feeds: undefined, heads: 3 },
  { field: 'b', feeds: 'post-softmax', heads: 3 },
];

/** One quantizer of each kind, with values in its natural domain and the slots it must (only) fit. */
const EXAMPLES: Record<KindName, { q: ActivationQuant; sample: (r: () => number) => number; fits: OperandSlot[] }> = {
  uniform: { q: { kind: 'uniform', bits: 5, deltas: [2 ** -4] }, sample: (r) => (r() - 0.5) * 2.5, fits: ALL_SLOTS },
  'twin-gelu': { q: { kind: 'twin-gelu', bits: 6, deltaNeg: 2 ** -7, deltaPos: 2 ** -3 }, sample: (r) => (r() < 0.3 ? -0.17 * r() : 5 * r()), fits: [{ field: 'input', feeds: 'post-gelu', heads: 1 }] },
  'twin-softmax': { q: { kind: 'twin-softmax', bits: 4, deltaR1: 2 ** -9, deltaR2: 2 ** -3 }, sample: (r) => (r() < 0.8 ? 0.02 * r() : r()), fits: [{ field: 'a', feeds: 'post-softmax', heads: 3 }] },
};

/** Deterministic float32 samples (mulberry32). */
function samples(sample: (r: () => number) => number, count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const r = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Float32Array.from({ length: count }, () => sample(r));
}

const f32 = OnnxType.FLOAT;

for (const [name, { q, sample, fits }] of Object.entries(EXAMPLES)) {
  const kind = kindOf(q);
  describe(`kind ${name}`, () => {
    test('disk form: written as the schema reads it, read back to the same quantizer', () => {
      const disk = JSON.parse(JSON.stringify(activationToDisk(q)));
      assert.deepEqual(activationFromDisk(activationSchema.parse(disk)), q);
      assert.ok(Object.keys(disk).every((k) => k === k.toLowerCase()), `snake_case keys: ${Object.keys(disk)}`);
    });

    test('candidate-scoring ONNX nodes, fed the quantizer as one candidate, equal its float formula', async () => {
      const x = samples(sample, 4096, name.length);
      const scales = kind.scoringScales(q);
      const { nodes, inits, scaleInputs } = kind.fakeQuantNodes(q.bits, 'x', 'xq', '', scales.deltaR2 ?? 0);
      const values: Record<string, Float32Array | undefined> = { s: scales.scales, s2: scales.scales2, split: scales.splits };
      const feeds = Object.fromEntries(scaleInputs.map((input) => [input, { data: values[input]!, shape: [1] }]));
      assert.equal(Object.values(feeds).filter((f) => f.data === undefined).length, 0, `every scale input fed: ${scaleInputs}`);
      const graph = (): GraphSpec => ({
        name: 'kind_fake_quant',
        inputs: [{ name: 'x', elemType: f32, shape: ['N'] }, ...scaleInputs.map((input) => ({ name: input, elemType: f32, shape: [1] }))],
        outputs: [{ name: 'xq', elemType: f32, shape: ['N'] }],
        nodes,
        initializers: inits,
        opset: 17,
      });
      const y = await runGraph(`test-kind:${name}:${q.bits}`, graph, { x: { data: x, shape: [x.length] }, ...feeds }, 'xq');
      const expected = kind.fakeQuant(x, q, x.length);
      assert.ok(expected.some((v, i) => v !== x[i]), 'the sample is not already on the grid');
      // Equal as numbers: ONNX Round keeps the sign of a zero (−0.3 → −0), roundHalfEven need not.
      assert.deepEqual(Array.from(y.data, (v) => v + 0), Array.from(expected, (v) => v + 0));
    });

    test('u8 scoring codes: Σ (code − 128)·Δ over the parts is its float formula (a kind without them never feeds a linear layer)', () => {
      if (!kind.codesU8) {
        for (const slot of ALL_SLOTS.filter((s) => s.field === 'input')) assert.notEqual(kind.misfit(q, slot), null, `${name} on a linear input needs codesU8`);
        return;
      }
      const x = samples(sample, 1000, 7);
      const parts = kind.codesU8(x, q, [x.length]);
      assert.deepEqual(parts.map((p) => [p.delta]), kind.partScales(q));
      const sum = new Float32Array(x.length);
      for (const p of parts) for (let i = 0; i < x.length; i++) sum[i] += (p.codes[i] - 128) * p.delta;
      assert.deepEqual(Array.from(sum), Array.from(kind.fakeQuant(x, q, x.length)));
    });

    test('fits exactly the operands it is meant for', () => {
      for (const slot of ALL_SLOTS) {
        const meant = fits.some((f) => f.field === slot.field && f.feeds === slot.feeds);
        const misfit = kind.misfit(q, slot);
        assert.equal(misfit === null, meant, `${JSON.stringify(slot)}: ${misfit}`);
        assert.equal(kind.fits(slot), meant, `fits(${JSON.stringify(slot)})`);
      }
    });

    test('search space: each candidate scored as the quantizer it becomes; the initial and chosen quantizers fit their operand', () => {
      const heads = fits[0].heads;
      const data = samples(sample, 600 * heads, 3);
      const operand: SearchOperand = { data, heads, groupSize: 600, bits: q.bits, factors: [0.5, 0.75, 1, 1.2], geluAligned: true, softmaxDeltaR2: 'paper' };
      const space = kind.searchSpace(operand);
      assert.ok(space.count > 1 && (space.groups === 1 || space.groups === heads), `count ${space.count}, groups ${space.groups}`);
      assert.equal(kind.misfit(space.initial, fits[0]), null);
      for (let c = 0; c < space.count; c++) {
        const chosen = space.chosen(new Array(space.groups).fill(c));
        assert.equal(chosen.kind, q.kind);
        assert.equal(chosen.bits, q.bits);
        assert.equal(kind.misfit(chosen, fits[0]), null);
        // The scoring graph's scale inputs of candidate c are those of the quantizer it becomes, as float32.
        assert.deepEqual(space.scales([c]), kind.scoringScales(chosen), `candidate ${c}`);
      }
      // A batch's scales are its candidates' scales, in order.
      const batch = space.scales([space.count - 1, 0]);
      assert.deepEqual(Array.from(batch.scales), [...space.scales([space.count - 1]).scales, ...space.scales([0]).scales]);
    });
  });
}

test('uniform: one Δ, or one per head, and nothing else', () => {
  const q: ActivationQuant = { kind: 'uniform', bits: 8, deltas: [0.1, 0.2] };
  assert.equal(kindOf(q).misfit(q, { field: 'a', feeds: undefined, heads: 2 }), null);
  assert.equal(kindOf(q).misfit(q, { field: 'a', feeds: undefined, heads: 3 }), 'a.deltas has 2 entries, expected 1 or 3 (one per head)');
  assert.equal(kindOf(q).misfit(q, { field: 'input', feeds: undefined, heads: 1 }), 'input.deltas has 2 entries, expected 1');
});

test('uniform search space: Δ_maxabs = max|x|/(2^(k−1) − 0.5) per head, heads cycling through consecutive groups', () => {
  const data = Float32Array.of(1, -3, 0.5, 2, -8, 1, 0.25, -6); // groups of 2, heads 0 1 0 1 → max|x| 8 and 6
  const space = kindNamed('uniform').searchSpace({ data, heads: 2, groupSize: 2, bits: 4, factors: [0.5, 1], geluAligned: true, softmaxDeltaR2: 'paper' });
  assert.deepEqual(space.initial, { kind: 'uniform', bits: 4, deltas: [8 / 7.5, 6 / 7.5] });
  assert.deepEqual(space.chosen([0, 1]), { kind: 'uniform', bits: 4, deltas: [0.5 * (8 / 7.5), 6 / 7.5] });
  assert.equal(space.groups, 2);
});

test('search kind: the twin that fits an operand when enabled, else uniform', () => {
  const all = () => true, none = (k: string) => k === 'uniform';
  assert.equal(searchKind({ field: 'input', feeds: 'post-gelu' }, all), kindNamed('twin-gelu'));
  assert.equal(searchKind({ field: 'input', feeds: 'post-gelu' }, none), kindNamed('uniform'));
  assert.equal(searchKind({ field: 'a', feeds: 'post-softmax' }, all), kindNamed('twin-softmax'));
  assert.equal(searchKind({ field: 'a', feeds: 'post-softmax' }, none), kindNamed('uniform'));
  assert.equal(searchKind({ field: 'b', feeds: 'post-softmax' }, all), kindNamed('uniform'));
  assert.equal(searchKind({ field: 'input', feeds: undefined }, all), kindNamed('uniform'));
});
