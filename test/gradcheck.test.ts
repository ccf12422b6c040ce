/**
 * Finite-difference checks of the backward pass (acceptance (a) of "Backward pass: ∂L/∂O at every
 * quantization point"): every backward rule, and ∂L/∂O of whole tiny models of each family, against
 * numerical derivatives of the float32 forward pass we actually run.
 *
 * How the numbers are made meaningful in float32:
 *  - Nonlinear kernels (LayerNorm, GELU, softmax): central differences at every input coordinate, with
 *    Richardson extrapolation D = (4·D(h) − D(2h))/3, which cancels the O(h²) truncation term, so what
 *    is left is float32 rounding of the forward (≈ 6e-8·|y|/h). The step actually taken is read back
 *    from the rounded float32 inputs. Losses are ⟨y, g⟩ summed in float64.
 *  - Linear maps (layouts): the adjoint identity ⟨f(x), y⟩ = Σᵢ ⟨xᵢ, f*(y)ᵢ⟩ with random x, y — exact
 *    up to summation order — both for the named kernels and for every layout call a model's forward
 *    really makes (every named layout op of src/tensor/layout.ts), by intercepting Kernels.layout.
 *  - Models: ∂L/∂O from computeGradients against central differences of the mean cross-entropy with
 *    respect to that point's output, perturbed through a wrapping Runner; along the gradient direction,
 *    a random ±1 direction and single coordinates.
 * The tolerances (TOL_* below) sit about 10× above the errors observed with correct rules. Each of
 * these deliberate breaks makes at least one kernel- or layout-level test and one model-level test
 * fail: x̂·mean(g·x̂) or mean(g) dropped from layerNormBackward; x·φ(x) dropped from geluBackward, or φ
 * off by 1% at |x| = 1; the scale dropped from softmaxBackward, or Σg·p off by 1%; a wrong ∂b in either
 * matmul rule; add not passing ∂L/∂y to its second input; the tape overwriting instead of summing
 * gradients of a tensor used twice; the shift ignored in Swin's windowReverseAdd adjoint; q's scale
 * missing from its adjoint; head_dist's gradient sent to the cls token; spreadOverTokens without 1/L.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { computeGradients } from '../src/grad/gradients.js';
import { crossEntropyGrad, seededRandom } from '../src/grad/loss.js';
import { Tape } from '../src/grad/tape.js';
import { encodeSafetensors, SafeTensors, type TensorToWrite } from '../src/io/safetensors.js';
import { specFromCard } from '../src/models/config.js';
import { buildModel } from '../src/models/load.js';
import type { Runner, VisionModel } from '../src/models/types.js';
import { linear as linearFp, matmul as matmulFp } from '../src/tensor/gemm.js';
import { activationValue } from '../src/tensor/activation.js';
import { fastKernels, type Kernels } from '../src/tensor/kernels.js';
import { poolTokensOp, prependTokensOp } from '../src/tensor/layout.js';
import { add, fromHeads, scale, scaleInPlace, scatterToken, selectToken, toHeads } from '../src/tensor/ops.js';
import { Tensor, numel } from '../src/tensor/tensor.js';
import {
  meanOverTokens,
  mergePatches2x2,
  splitPatches2x2,
  spreadOverTokens,
  windowPartition,
  windowReverse,
  windowReverseAdd,
  type WindowGrid,
} from '../src/tensor/window.js';

/** Kernel level: max |FD − analytic| over all coordinates ≤ TOL_KERNEL · max |analytic|. Observed ≤ 6e-5. */
const TOL_KERNEL = 5e-4;
/** Adjoint identity: |⟨f(x), y⟩ − Σ⟨xᵢ, f*(y)ᵢ⟩| ≤ TOL_ADJOINT · Σ|f(x)ⱼ·yⱼ| (permutations are exact; scales round once). */
const TOL_ADJOINT = 1e-6;
/**
 * Model level: |FD − analytic| ≤ tol · Σ|gᵢ·dᵢ| per direction d. Along the gradient and a random ±1
 * direction the observed error is ≤ 6e-5; along one coordinate (a small ∂L/∂Oᵢ, so float32 noise of the
 * loss weighs more) ≤ 7e-4.
 */
const TOL_MODEL_DIRECTION = 1e-3;
const TOL_MODEL_COORDINATE = 5e-3;

// ---------------------------------------------------------------------------------------------
// Seeded random tensors

function gaussian(seed: number): () => number {
  const u = seededRandom(seed);
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

function randn(shape: readonly number[], rand: () => number, std = 1, mean = 0): Tensor {
  const t = Tensor.zeros(shape);
  for (let i = 0; i < t.size; i++) t.data[i] = mean + std * rand();
  return t;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function absDot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] * b[i]);
  return s;
}

function eye(n: number): Tensor {
  const t = Tensor.zeros([n, n]);
  for (let i = 0; i < n; i++) t.data[i * n + i] = 1;
  return t;
}

// ---------------------------------------------------------------------------------------------
// Kernel level: the tape's rules against central differences of the forward kernels

/**
 * ∂⟨build(xs), g⟩/∂xᵢ from the tape. Each input enters through an identity linear layer (exact in
 * float32) named `probe<i>`, which makes it a recorded tensor whose ∂L/∂O the sink reports.
 */
async function tapeGradients(xs: Tensor[], g: Tensor, build: (tape: Tape, xs: Tensor[]) => Promise<Tensor>): Promise<Tensor[]> {
  const tape = new Tape();
  const probes: Tensor[] = [];
  for (let i = 0; i < xs.length; i++) probes.push(await tape.linear(`probe${i}`, xs[i], eye(xs[i].lastDim), null));
  probes.forEach((p, i) => assert.deepEqual(p.data, xs[i].data, 'the identity probe is exact'));
  const y = await build(tape, probes);
  const got = new Map<string, Tensor>();
  await tape.backward(y, g, (point, grad) => {
    got.set(point, grad);
  });
  return xs.map((x, i) => {
    const gi = got.get(`probe${i}`);
    assert.ok(gi, `no gradient reached input ${i}`);
    assert.deepEqual(gi.shape, x.shape);
    return gi;
  });
}

/** Richardson-extrapolated central difference of `loss` along coordinate `i` of input `which`. */
async function centralDifference(loss: (xs: Tensor[]) => Promise<number>, xs: Tensor[], which: number, i: number, h: number): Promise<number> {
  const at = async (step: number): Promise<number> => {
    const plus = xs.map((x) => x.clone()), minus = xs.map((x) => x.clone());
    plus[which].data[i] += step;
    minus[which].data[i] -= step;
    const taken = plus[which].data[i] - minus[which].data[i]; // the float32 step actually taken
    return ((await loss(plus)) - (await loss(minus))) / taken;
  };
  return (4 * (await at(h)) - (await at(2 * h))) / 3;
}

/** Every coordinate of every input: FD of ⟨forward(xs), g⟩ against the tape's gradients. */
async function checkKernel(
  ctx: TestContext,
  what: string,
  xs: Tensor[],
  g: Tensor,
  forward: (xs: Tensor[]) => Promise<Tensor>,
  build: (tape: Tape, xs: Tensor[]) => Promise<Tensor>,
  h = 1e-2,
): Promise<number> {
  const analytic = await tapeGradients(xs, g, build);
  const loss = async (inputs: Tensor[]) => dot((await forward(inputs)).data, g.data);
  let worst = 0;
  for (let k = 0; k < xs.length; k++) {
    let scaleK = 0;
    for (const v of analytic[k].data) scaleK = Math.max(scaleK, Math.abs(v));
    assert.ok(scaleK > 0, `${what}: gradient of input ${k} is identically zero`);
    for (let i = 0; i < xs[k].size; i++) {
      const fd = await centralDifference(loss, xs, k, i, h);
      const err = Math.abs(fd - analytic[k].data[i]) / scaleK;
      assert.ok(err <= TOL_KERNEL, `${what}: input ${k}[${i}]: analytic ${analytic[k].data[i]} vs FD ${fd} (error ${err.toExponential(2)} of max |grad| ${scaleK.toExponential(2)})`);
      worst = Math.max(worst, err);
    }
  }
  ctx.diagnostic(`${what}: max |FD − analytic| / max |analytic| = ${worst.toExponential(2)}`);
  return worst;
}

test('layerNormBackward matches finite differences (eps 1e-6 and 1e-5, non-trivial weight and bias)', async (ctx) => {
  const rand = gaussian(11);
  for (const eps of [1e-6, 1e-5]) {
    const x = randn([2, 3, 16], rand, 1.5, 0.3);
    const w = randn([16], rand, 0.3, 1);
    const b = randn([16], rand, 0.2);
    const g = randn(x.shape, rand);
    await checkKernel(ctx, `layerNorm eps ${eps}`, [x], g, ([t]) => fastKernels.layerNorm(t, w, b, eps), (tape, [t]) => tape.kernels.layerNorm(t, w, b, eps));
  }
});

test('geluBackward matches finite differences over [−5, 5]', async (ctx) => {
  const rand = gaussian(12);
  const x = Tensor.zeros([4, 25]);
  for (let i = 0; i < x.size; i++) x.data[i] = -5 + (10 * i) / (x.size - 1) + 0.01 * rand(); // dense grid incl. the kink region
  const g = randn(x.shape, rand);
  await checkKernel(ctx, 'gelu', [x], g, ([t]) => fastKernels.gelu(t), (tape, [t]) => tape.kernels.gelu(t));
});

test('the other MLP activations (gelu_tanh, QuickGELU): backward matches finite differences over [−5, 5], forward matches the formula', async (ctx) => {
  const rand = gaussian(17);
  const x = Tensor.zeros([4, 25]);
  for (let i = 0; i < x.size; i++) x.data[i] = -5 + (10 * i) / (x.size - 1) + 0.01 * rand();
  const g = randn(x.shape, rand);
  for (const kind of ['gelu_tanh', 'quick_gelu'] as const) {
    await checkKernel(ctx, kind, [x], g, ([t]) => fastKernels.gelu(t, kind), (tape, [t]) => tape.kernels.gelu(t, kind));
    const y = await fastKernels.gelu(x, kind);
    for (let i = 0; i < x.size; i++) {
      const ref = activationValue(kind, x.data[i]);
      assert.ok(Math.abs(y.data[i] - ref) <= 1e-6 * (1 + Math.abs(ref)), `${kind}(${x.data[i]}) = ${y.data[i]}, formula ${ref}`);
    }
  }
});

test('softmaxBackward matches finite differences: with a scale, and with an additive repeated bias (incl. −100 mask entries)', async (ctx) => {
  const rand = gaussian(13);
  const x = randn([6, 5, 7], rand, 1.5);
  const g = randn(x.shape, rand);
  await checkKernel(ctx, 'softmax scale 0.35', [x], g, ([t]) => fastKernels.softmax(t, 0.35), (tape, [t]) => tape.kernels.softmax(t, 0.35));
  // bias [3, 5, 7] repeats twice over the 6 groups, as a relative position bias over B·heads
  const bias = randn([3, 5, 7], rand, 0.7);
  for (let i = 0; i < bias.size; i += 4) bias.data[i] -= 100; // shifted-window mask entries
  for (const s of [1, 0.5]) {
    await checkKernel(ctx, `softmax scale ${s} + bias`, [x], g, ([t]) => fastKernels.softmax(t, s, bias), (tape, [t]) => tape.kernels.softmax(t, s, bias));
  }
});

test('the tape\'s linear backward matches finite differences (3-D input, with and without bias)', async (ctx) => {
  const rand = gaussian(14);
  const x = randn([2, 3, 8], rand);
  const w = randn([5, 8], rand, 0.5);
  const b = randn([5], rand);
  const g = randn([2, 3, 5], rand);
  for (const bias of [b, null]) {
    await checkKernel(ctx, `linear${bias ? '+b' : ''}`, [x], g, ([t]) => linearFp(t, w, bias), (tape, [t]) => tape.linear('fc', t, w, bias));
  }
});

test('the tape\'s matmul backward matches finite differences for both operands (transB false and true)', async (ctx) => {
  const rand = gaussian(15);
  const a = randn([4, 3, 6], rand);
  const g = randn([4, 3, 5], rand);
  const b = randn([4, 6, 5], rand);
  await checkKernel(ctx, 'matmul a·b', [a, b], g, ([p, q]) => matmulFp(p, q, false), (tape, [p, q]) => tape.matmul('mm', p, q, false));
  const bt = randn([4, 5, 6], rand);
  await checkKernel(ctx, 'matmul a·bᵀ', [a, bt], g, ([p, q]) => matmulFp(p, q, true), (tape, [p, q]) => tape.matmul('mm', p, q, true));
  // q·kᵀ with both operands from the same tensor (ViT self-attention shares no storage, but the tape must
  // accumulate ∂a and ∂b when they are one recorded tensor): x·xᵀ.
  const x = randn([2, 4, 3], rand);
  const gx = randn([2, 4, 4], rand);
  await checkKernel(ctx, 'matmul x·xᵀ (shared operand)', [x], gx, ([t]) => matmulFp(t, t, true), (tape, [t]) => tape.matmul('mm', t, t, true));
});

test('the tape accumulates gradients of a tensor used twice (add, residual)', async (ctx) => {
  const rand = gaussian(16);
  const x = randn([3, 8], rand);
  const w = randn([8], rand, 0.3, 1);
  const b = randn([8], rand, 0.2);
  const g = randn(x.shape, rand);
  // y = x + LN(x): the residual pattern of every block
  await checkKernel(ctx, 
    'x + layerNorm(x)',
    [x],
    g,
    async ([t]) => add(t, await fastKernels.layerNorm(t, w, b, 1e-6)),
    async (tape, [t]) => tape.kernels.add(t, await tape.kernels.layerNorm(t, w, b, 1e-6)),
  );
});

// ---------------------------------------------------------------------------------------------
// Layout maps: the adjoint identity

interface AdjointCheck {
  /** |lhs − rhs| / Σ|f(x)ⱼ·yⱼ|. */
  error: number;
  /** Inputs with a gradient (a null adjoint entry means "no gradient needed", e.g. images). */
  differentiated: number;
}

/**
 * ⟨f(x) − f(0), y⟩ = Σᵢ ⟨xᵢ, f*(y)ᵢ⟩ for random x, y (f may be affine, as the position add is; inputs
 * whose adjoint is null are held at zero). Three random pairs.
 */
function checkAdjoint(
  what: string,
  forward: (...xs: Tensor[]) => Tensor,
  adjoint: (g: Tensor) => (Tensor | null)[],
  shapes: readonly (readonly number[])[],
  rand: () => number,
): AdjointCheck {
  let error = 0, differentiated = 0;
  for (let trial = 0; trial < 3; trial++) {
    const xs = shapes.map((s) => randn(s, rand));
    const zero = forward(...shapes.map((s) => Tensor.zeros(s)));
    const y = randn(zero.shape, rand);
    const adj = adjoint(y);
    assert.equal(adj.length, shapes.length, `${what}: adjoint returns ${adj.length} gradients for ${shapes.length} inputs`);
    const held = xs.map((x, i) => (adj[i] ? x : Tensor.zeros(shapes[i])));
    differentiated = adj.filter((a) => a).length;
    if (differentiated === 0) return { error: 0, differentiated };
    const fx = forward(...held);
    assert.deepEqual(fx.shape, zero.shape);
    const lin = fx.data.map((v, j) => v - zero.data[j]);
    const lhs = dot(lin, y.data);
    let rhs = 0;
    adj.forEach((a, i) => {
      if (!a) return;
      assert.deepEqual(a.shape, shapes[i], `${what}: adjoint of input ${i} has shape [${a.shape}] for input [${shapes[i]}]`);
      rhs += dot(held[i].data, a.data);
    });
    const e = Math.abs(lhs - rhs) / absDot(lin, y.data);
    assert.ok(e <= TOL_ADJOINT, `${what}: ⟨f(x), y⟩ = ${lhs} but Σ⟨x, f*(y)⟩ = ${rhs} (relative ${e.toExponential(2)})`);
    error = Math.max(error, e);
  }
  adjointWorst = Math.max(adjointWorst, error);
  adjointMaps++;
  return { error, differentiated };
}

/** Maps checked and the largest adjoint-identity error since the last report (tests run one after another). */
let adjointWorst = 0, adjointMaps = 0;
function reportAdjoint(ctx: TestContext): void {
  ctx.diagnostic(`${adjointMaps} linear maps × 3 random pairs, max relative error ${adjointWorst.toExponential(2)}`);
  adjointWorst = 0;
  adjointMaps = 0;
}

test('layout adjoints: toHeads/fromHeads (q, k, v blocks and head merging), selectToken/scatterToken', (ctx) => {
  const rand = gaussian(21);
  const [B, N, heads, d] = [2, 5, 3, 4];
  const C = heads * d;
  for (const part of [0, 1, 2]) {
    checkAdjoint(`toHeads part ${part}/3`, (x) => toHeads(x, heads, part, 3), (g) => [fromHeads(g, heads, part, 3)], [[B, N, 3 * C]], rand);
  }
  checkAdjoint('toHeads', (x) => toHeads(x, heads), (g) => [fromHeads(g, heads)], [[B, N, C]], rand);
  checkAdjoint('fromHeads (merge)', (x) => fromHeads(x, heads), (g) => [toHeads(g, heads)], [[B * heads, N, d]], rand);
  // Swin's pre-scaled q (swin.ts windowAttention)
  const s = d ** -0.5;
  checkAdjoint('scaled q', (x) => scaleInPlace(toHeads(x, heads, 0, 3), s), (g) => [fromHeads(scale(g, s), heads, 0, 3)], [[B, N, 3 * C]], rand);
  for (const token of [0, 1, N - 1]) {
    checkAdjoint(`selectToken ${token}`, (x) => selectToken(x, token), (g) => [scatterToken(g, token, N)], [[B, N, C]], rand);
  }
  // the distilled head average (vit.ts classify)
  checkAdjoint('mean of two heads', (a, b) => scale(add(a, b), 0.5), (g) => [scale(g, 0.5), scale(g, 0.5)], [[B, 7], [B, 7]], rand);
  reportAdjoint(ctx);
});

test('layout adjoints: windowPartition/windowReverse/windowReverseAdd with and without shift, on square and oblong grids', (ctx) => {
  const rand = gaussian(22);
  const C = 3;
  const grids: WindowGrid[] = [
    { height: 4, width: 4, window: 2, shift: 0 },
    { height: 4, width: 4, window: 2, shift: 1 },
    { height: 6, width: 6, window: 3, shift: 1 },
    { height: 4, width: 6, window: 2, shift: 1 },
    { height: 3, width: 3, window: 3, shift: 0 }, // one window covering the grid (clamped window)
  ];
  for (const g of grids) {
    const tag = `${g.height}×${g.width} window ${g.window} shift ${g.shift}`;
    const tokens = [2, g.height * g.width, C];
    const windows = [2 * (g.height / g.window) * (g.width / g.window), g.window * g.window, C];
    checkAdjoint(`windowPartition ${tag}`, (x) => windowPartition(x, g), (y) => [windowReverse(y, g)], [tokens], rand);
    checkAdjoint(`windowReverse ${tag}`, (w) => windowReverse(w, g), (y) => [windowPartition(y, g)], [windows], rand);
    checkAdjoint(`windowReverseAdd ${tag}`, (r, w) => windowReverseAdd(r, w, g), (y) => [y, windowPartition(y, g)], [tokens, windows], rand);
  }
  reportAdjoint(ctx);
});

test('layout adjoints: mergePatches2x2/splitPatches2x2, meanOverTokens/spreadOverTokens', (ctx) => {
  const rand = gaussian(23);
  for (const [h, w] of [[4, 4], [4, 6], [2, 2]]) {
    checkAdjoint(`mergePatches2x2 ${h}×${w}`, (x) => mergePatches2x2(x, h, w), (g) => [splitPatches2x2(g, h, w)], [[2, h * w, 3]], rand);
    checkAdjoint(`splitPatches2x2 ${h}×${w}`, (x) => splitPatches2x2(x, h, w), (g) => [mergePatches2x2(g, h, w)], [[2, (h / 2) * (w / 2), 12]], rand);
  }
  checkAdjoint('meanOverTokens', (x) => meanOverTokens(x), (g) => [spreadOverTokens(g, 7)], [[3, 7, 5]], rand);
  reportAdjoint(ctx);
});

// ---------------------------------------------------------------------------------------------
// Tiny random-weight models, built in memory

const MEAN: [number, number, number] = [0.5, 0.5, 0.5];

interface TinyModel {
  name: string;
  model: VisionModel;
}

/** Seeded random weights for the given names and shapes, through encodeSafetensors + SafeTensors.parse. */
function randomCheckpoint(shapes: Record<string, number[]>, seed: number): SafeTensors {
  const rand = gaussian(seed);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    let t: Tensor;
    if (/norm\d?\.weight$/.test(name)) t = randn(shape, rand, 0.2, 1);
    else if (name.endsWith('.bias')) t = randn(shape, rand, 0.2);
    else if (name.endsWith('.weight')) t = randn(shape, rand, 1 / Math.sqrt(numel(shape.slice(1)))); // unit gain
    else t = randn(shape, rand, 0.5); // tokens, positions, relative position tables
    tensors[name] = { dtype: 'F32', shape, data: t.data };
  }
  return SafeTensors.parse(encodeSafetensors(tensors), `random-${seed}`);
}

function linearShapes(out: Record<string, number[]>, name: string, o: number, i: number, bias = true): void {
  out[`${name}.weight`] = [o, i];
  if (bias) out[`${name}.bias`] = [o];
}

function normShapes(out: Record<string, number[]>, name: string, c: number): void {
  out[`${name}.weight`] = [c];
  out[`${name}.bias`] = [c];
}

function tinyVit(distilled: boolean): TinyModel {
  const [img, patch, D, depth, heads, classes] = [16, 4, 12, 2, 2, 5];
  const name = distilled ? 'tiny-deit-distilled' : 'tiny-vit';
  const card = {
    name,
    timm_class: distilled ? 'VisionTransformerDistilled' : 'VisionTransformer',
    timm_kwargs: { img_size: img, patch_size: patch, embed_dim: D, depth, num_heads: heads, num_classes: classes },
    mean: MEAN,
    std: MEAN,
  };
  const prefix = distilled ? 2 : 1;
  const s: Record<string, number[]> = {
    'patch_embed.proj.weight': [D, 3, patch, patch],
    'patch_embed.proj.bias': [D],
    cls_token: [1, 1, D],
    ...(distilled ? { dist_token: [1, 1, D] } : {}),
    pos_embed: [1, (img / patch) ** 2 + prefix, D],
  };
  for (let i = 0; i < depth; i++) {
    const p = `blocks.${i}`;
    normShapes(s, `${p}.norm1`, D);
    linearShapes(s, `${p}.attn.qkv`, 3 * D, D);
    linearShapes(s, `${p}.attn.proj`, D, D);
    normShapes(s, `${p}.norm2`, D);
    linearShapes(s, `${p}.mlp.fc1`, 4 * D, D);
    linearShapes(s, `${p}.mlp.fc2`, D, 4 * D);
  }
  normShapes(s, 'norm', D);
  linearShapes(s, 'head', classes, D);
  if (distilled) linearShapes(s, 'head_dist', classes, D);
  return { name, model: buildModel(specFromCard(card, name), randomCheckpoint(s, distilled ? 102 : 101)) };
}

function tinySwin(): TinyModel {
  const [img, patch, window, D, depths, heads, classes] = [16, 2, 2, 8, [2, 2], [1, 2], 5];
  const name = 'tiny-swin';
  const card = {
    name,
    timm_class: 'SwinTransformer',
    timm_kwargs: { img_size: img, patch_size: patch, window_size: window, embed_dim: D, depths, num_heads: heads, num_classes: classes },
    mean: MEAN,
    std: MEAN,
  };
  const s: Record<string, number[]> = { 'patch_embed.proj.weight': [D, 3, patch, patch], 'patch_embed.proj.bias': [D] };
  normShapes(s, 'patch_embed.norm', D);
  for (let i = 0; i < depths.length; i++) {
    const dim = D * 2 ** i;
    if (i > 0) {
      normShapes(s, `layers.${i}.downsample.norm`, 2 * dim);
      linearShapes(s, `layers.${i}.downsample.reduction`, dim, 2 * dim, false);
    }
    for (let j = 0; j < depths[i]; j++) {
      const p = `layers.${i}.blocks.${j}`;
      normShapes(s, `${p}.norm1`, dim);
      linearShapes(s, `${p}.attn.qkv`, 3 * dim, dim);
      s[`${p}.attn.relative_position_bias_table`] = [(2 * window - 1) ** 2, heads[i]];
      linearShapes(s, `${p}.attn.proj`, dim, dim);
      normShapes(s, `${p}.norm2`, dim);
      linearShapes(s, `${p}.mlp.fc1`, 4 * dim, dim);
      linearShapes(s, `${p}.mlp.fc2`, dim, 4 * dim);
    }
  }
  const last = D * 2 ** (depths.length - 1);
  normShapes(s, 'norm', last);
  linearShapes(s, 'head.fc', classes, last);
  return { name, model: buildModel(specFromCard(card, name), randomCheckpoint(s, 103)) };
}

const TINY: (() => TinyModel)[] = [() => tinyVit(false), () => tinyVit(true), tinySwin];
const BATCH = 3;
const LABELS = Int32Array.of(1, 4, 2);

function tinyImages(model: VisionModel): Tensor {
  const { imgSize, inChans } = model.spec.arch;
  return randn([BATCH, inChans, imgSize, imgSize], gaussian(7));
}

/** fp32 products and fastKernels, with Kernels.layout replaced (every other kernel delegated). */
function runnerWithLayout(layout: Kernels['layout']): Runner {
  return {
    linear: (_p, x, w, b) => linearFp(x, w, b),
    matmul: (_p, a, b, t) => matmulFp(a, b, t),
    kernels: { ...fastKernels, layout },
  };
}

test('layout adjoints: every layout map the tiny models\' forward passes use (incl. ViT\'s prefix + position add)', async (ctx) => {
  for (const make of TINY) {
    const { name, model } = make();
    const rand = gaussian(31);
    let checked = 0, noGradient = 0;
    const images = tinyImages(model);
    await model.forward(
      images,
      runnerWithLayout((op, inputs) => {
        const forward = (...xs: Tensor[]) => op.forward(xs);
        const r = checkAdjoint(`${name} ${op.name}`, forward, (g) => op.adjoint(g, inputs), inputs.map((t) => t.shape), rand);
        if (r.differentiated === 0) {
          assert.equal(inputs[0], images, `${name}: only the image unfold may have no gradient`);
          noGradient++;
        } else checked++;
        return op.forward(inputs);
      }),
    );
    assert.equal(noGradient, 1, `${name}: the patch unfold is the one layout map without a gradient`);
    // ViT: unfold, prefix+pos, 3 q/k/v + merge per block, 1 token per head (+ head mean). Swin: more.
    assert.ok(checked >= 8, `${name}: only ${checked} layout maps checked`);
    ctx.diagnostic(`${name}: ${checked} layout calls checked, ${noGradient} without gradient (image unfold)`);
  }
  reportAdjoint(ctx);
});

test('layout adjoints: ViT\'s prefix/position add, checked directly (1 and 2 prefix tokens)', (ctx) => {
  const rand = gaussian(24);
  for (const numPrefix of [1, 2]) {
    // Affine, not linear: checkAdjoint compares f(e) − f(0) with the adjoint (drop the prefix).
    const op = prependTokensOp(randn([numPrefix, 12], rand), randn([numPrefix + 16, 12], rand));
    const r = checkAdjoint(`prependTokens (${numPrefix} prefix)`, (...xs) => op.forward(xs), (g) => op.adjoint(g, []), [[2, 16, 12]], rand);
    assert.equal(r.differentiated, 1);
  }
  reportAdjoint(ctx);
});

test('layout adjoints: ViT\'s token pools (avg over the non-prefix tokens; max / avgmax for a fixed argmax)', (ctx) => {
  const rand = gaussian(25);
  for (const skip of [0, 1, 5]) {
    const op = poolTokensOp('avg', skip);
    const r = checkAdjoint(`poolTokens(avg, from ${skip})`, (...xs) => op.forward(xs), (g) => op.adjoint(g, [Tensor.zeros([2, 9, 6])]), [[2, 9, 6]], rand);
    assert.equal(r.differentiated, 1);
  }
  // Max is linear once the argmax is fixed: the adjoint at x is the transpose of the map "pick x's argmax".
  for (const pool of ['max', 'avgmax'] as const) {
    const op = poolTokensOp(pool, 1);
    const x = randn([2, 9, 6], rand);
    const y = op.forward([x]), g = randn(y.shape, rand);
    const [gx] = op.adjoint(g, [x]);
    // ⟨f(x), g⟩ = ⟨x, f*(g)⟩ for a piecewise-linear, positively homogeneous f
    const lhs = dot(y.data, g.data), rhs = dot(x.data, gx!.data);
    assert.ok(Math.abs(lhs - rhs) <= 1e-5 * absDot(y.data, g.data), `poolTokens(${pool}): ⟨f(x), g⟩ ${lhs} vs ⟨x, f*(g)⟩ ${rhs}`);
  }
  reportAdjoint(ctx);
});

// ---------------------------------------------------------------------------------------------
// Model level: ∂L/∂O at quantization points against finite differences of the loss

/** fp32 forward where the output of `point` is replaced (it is computed once per forward pass). */
function perturbingRunner(point: string, replace: (output: Tensor) => Tensor): Runner {
  return {
    linear: async (p, x, w, b) => {
      const y = await linearFp(x, w, b);
      return p === point ? replace(y) : y;
    },
    matmul: async (p, a, b, t) => {
      const y = await matmulFp(a, b, t);
      return p === point ? replace(y) : y;
    },
    kernels: fastKernels,
  };
}

/** ∂L/∂O of every point for the whole batch (chunks reassembled), and O itself. */
async function modelGradients(model: VisionModel, images: Tensor, chunkSize: number): Promise<{ loss: number; grads: Map<string, Float32Array>; outputs: Map<string, Float32Array> }> {
  const grads = new Map<string, Float32Array>(), outputs = new Map<string, Float32Array>();
  const loss = await computeGradients(model, images, LABELS, { loss: 'label', chunkSize }, (chunk, point, g, out) => {
    const per = g.size / chunk.count;
    assert.equal(out.size, g.size, `${point}: ∂L/∂O and O differ in size`);
    for (const [map, t] of [[grads, g], [outputs, out]] as const) {
      const all = map.get(point) ?? new Float32Array(per * BATCH);
      all.set(t.data, chunk.start * per);
      map.set(point, all);
    }
  });
  return { loss, grads, outputs };
}

async function lossWith(model: VisionModel, images: Tensor, runner: Runner): Promise<number> {
  return crossEntropyGrad(await model.forward(images, runner), LABELS, BATCH).loss;
}

/**
 * Directional derivative of L at point `point` along d, Richardson-extrapolated central differences,
 * against Σ gᵢ·(actual float32 step)ᵢ. Returns the error relative to Σ|gᵢ·dᵢ|.
 */
async function directional(model: VisionModel, images: Tensor, point: string, g: Float32Array, d: Float32Array, h: number): Promise<{ fd: number; analytic: number; error: number }> {
  const at = async (step: number): Promise<{ fd: number; analytic: number }> => {
    const taken: Float64Array[] = []; // (O ± s·d) − O per element, as rounded to float32
    const perturbed = (sign: number) => (o: Tensor): Tensor => {
      assert.equal(o.size, d.length, `${point}: output size changed`);
      const y = new Float32Array(o.size);
      for (let i = 0; i < y.length; i++) y[i] = o.data[i] + sign * step * d[i];
      taken.push(Float64Array.from(y, (v, i) => v - o.data[i]));
      return new Tensor(y, o.shape);
    };
    const lp = await lossWith(model, images, perturbingRunner(point, perturbed(1)));
    const lm = await lossWith(model, images, perturbingRunner(point, perturbed(-1)));
    assert.equal(taken.length, 2, `${point} was computed ${taken.length / 2} times per forward pass`);
    const [plus, minus] = taken;
    return { fd: (lp - lm) / (2 * step), analytic: dot(g, plus.map((v, i) => v - minus[i])) / (2 * step) };
  };
  const a = await at(h), b = await at(2 * h);
  const fd = (4 * a.fd - b.fd) / 3, analytic = (4 * a.analytic - b.analytic) / 3;
  return { fd, analytic, error: Math.abs(fd - analytic) / absDot(g, d) };
}

for (const make of TINY) {
  const tiny = make();
  test(`${tiny.name}: ∂L/∂O at every quantization point matches finite differences of the loss`, async (ctx) => {
    const { model } = tiny;
    const images = tinyImages(model);
    const { loss, grads, outputs } = await modelGradients(model, images, 2); // chunks of 2 over 3 images
    assert.ok(Math.abs(loss - (await lossWith(model, images, perturbingRunner('', (o) => o)))) < 1e-5, 'chunked loss = full-batch loss');
    const names = model.quantPoints.map((p) => p.name);
    assert.deepEqual([...grads.keys()].sort(), [...names].sort(), 'a gradient for every quantization point, and no other');
    const kinds = new Set<string>();
    const rand = seededRandom(41);
    const worst = new Map<string, number>();
    for (const point of names) {
      const g = grads.get(point)!;
      kinds.add(point.split('.').pop()!);
      let maxG = 0, top = 0;
      for (let i = 0; i < g.length; i++) if (Math.abs(g[i]) > maxG) { maxG = Math.abs(g[i]); top = i; }
      assert.ok(maxG > 0, `${point}: ∂L/∂O is identically zero`);
      // Directions: the gradient itself (scaled to max 1), a random ±1 vector, and the largest coordinate.
      const dirs: [string, Float32Array][] = [
        ['gradient direction', Float32Array.from(g, (v) => v / maxG)],
        ['random ±1', Float32Array.from(g, () => (rand() < 0.5 ? -1 : 1))],
        [`coordinate ${top}`, Float32Array.from(g, (_, i) => (i === top ? 1 : 0))],
      ];
      // Steps relative to the output's scale: O(1) activations take 1e-2; logits and scores likewise.
      const out = outputs.get(point)!;
      let rms = 0;
      for (const v of out) rms += v * v;
      const h = 1e-2 * Math.max(1, Math.sqrt(rms / out.length));
      for (const [label, d] of dirs) {
        const r = await directional(model, images, point, g, d, h);
        const tol = label.startsWith('coordinate') ? TOL_MODEL_COORDINATE : TOL_MODEL_DIRECTION;
        assert.ok(r.error <= tol, `${tiny.name} ${point} along ${label}: analytic ${r.analytic} vs FD ${r.fd} (error ${r.error.toExponential(2)})`);
        const kind = label.replace(/ \d+$/, '');
        worst.set(kind, Math.max(worst.get(kind) ?? 0, r.error));
      }
    }
    ctx.diagnostic(`${names.length} points; max relative error ${[...worst].map(([k, e]) => `${k} ${e.toExponential(2)}`).join(', ')}`);
    // the families' point kinds: patch_embed.proj, qkv, proj, matmul1, matmul2, fc1, fc2, head(_dist), reduction
    const expected = model.spec.arch.family === 'swin' ? ['reduction', 'fc'] : model.spec.arch.family === 'deit-distilled' ? ['head', 'head_dist'] : ['head'];
    for (const k of ['proj', 'qkv', 'matmul1', 'matmul2', 'fc1', 'fc2', ...expected]) assert.ok(kinds.has(k), `${tiny.name}: no ${k} point checked (${[...kinds]})`);
  });
}
