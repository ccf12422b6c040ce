/**
 * Integer candidate scoring (u8×s8 codes; uniform and post-GELU twin inputs) gives the float scoring's
 * scores up to float rounding; scoring very large layers block by block chooses the same scales.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { seededRandom } from '../src/grad/loss.js';
import { fakeQuantGrouped, fakeQuantTwinGelu, geluNegativeDelta, twinGeluCode, twinGeluCodesU8, uniformCode } from '../src/quant/quantizers.js';
import { methodConfig } from '../src/quant/methods.js';
import { scoreLinear, scoreLinearInteger } from '../src/quant/scoring.js';
import { searchLinear, searchMatmul } from '../src/quant/search.js';
import { Tensor } from '../src/tensor/tensor.js';

const random = seededRandom(7);
const rand = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (random() * 2 - 1) * scale);
const [M, K, N, C] = [40, 24, 12, 5];
const x = new Tensor(rand(M * K, 2), [M, K]);
const w = new Tensor(rand(N * K, 0.3), [N, K]);
const bias = new Tensor(rand(N), [N]);
const out = new Tensor(rand(M * N, 3), [M, N]);
const grad = new Tensor(rand(M * N, 0.01), [M, N]);

function assertRelClose(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= 1e-5 * Math.abs(b[i]) + 1e-12, `${what}[${i}]: ${a[i]} vs ${b[i]}`);
}

for (const bits of [8, 6, 4]) {
  test(`W${bits}: weight search and input search, Hessian metric with a bias: integer = float scores (rel 1e-5)`, async () => {
    const q = 2 ** (bits - 1);
    const dx = 2 / (q - 0.5), dws = [0.3 / (q - 0.5), 0.25 / (q - 0.5), 0.2 / (q - 0.5)];
    const factors = Array.from({ length: C }, (_, i) => 0.3 + 0.2 * i);
    // Weight search with the input quantized at Δ_x; three row groups with their own Δ.
    const xq = new Tensor(fakeQuantGrouped(x.data, [dx], x.size, bits), [M, K]);
    const codes = Uint8Array.from(x.data, (v) => uniformCode(v, dx, bits) + 128);
    const scales = new Float32Array(C * N);
    for (let c = 0; c < C; c++) for (let n = 0; n < N; n++) scales[c * N + n] = factors[c] * dws[Math.floor(n / (N / 3))];
    const common = { bias, out, grad, candidates: C, bits, metric: 'hessian' as const, cosineGroups: 1 };
    const fw = await scoreLinear({ ...common, searched: 'weight', x: xq, w, scales, quantizer: 'uniform' });
    const iw = await scoreLinearInteger({ ...common, searched: 'weight', x: [{ codes, shape: [M, K], delta: dx }], w, scales });
    assertRelClose(iw, fw, 'weight search');
    // Input search with the weight quantized per group.
    const wq = new Tensor(fakeQuantGrouped(w.data, dws, (N / 3) * K, bits), [N, K]);
    const codesT = new Int8Array(K * N), deltas = new Float32Array(N);
    for (let n = 0; n < N; n++) {
      deltas[n] = dws[Math.floor(n / (N / 3))];
      for (let k = 0; k < K; k++) codesT[k * N + n] = uniformCode(w.data[n * K + k], deltas[n], bits);
    }
    const xs = Float32Array.from(factors, (f) => f * dx);
    const fx = await scoreLinear({ ...common, searched: 'input', x, w: wq, scales: xs, quantizer: 'uniform' });
    const ix = await scoreLinearInteger({ ...common, searched: 'input', x, w: { codesT, shape: [K, N], deltas }, scales: xs });
    assertRelClose(ix, fx, 'input search');
    // Post-GELU twin input (fc2): R1 (negative side) and R2 codes in two integer products.
    const gelu = new Tensor(Float32Array.from(x.data, (v) => Math.max(v, -0.17)), [M, K]);
    const s2 = Float32Array.from(xs, (d) => geluNegativeDelta(d, bits, true));
    const ft = await scoreLinear({ ...common, searched: 'input', x: gelu, w: wq, scales: xs, scales2: s2, quantizer: 'twin-gelu' });
    const it = await scoreLinearInteger({ ...common, searched: 'input', x: gelu, w: { codesT, shape: [K, N], deltas }, scales: xs, scales2: s2 });
    assertRelClose(it, ft, 'twin-GELU input search');
    // …and the weight search behind it: the twin codes as two u8 parts.
    const twin = { kind: 'twin-gelu' as const, bits, deltaPos: xs[2], deltaNeg: s2[2] };
    const r1 = new Uint8Array(M * K).fill(128), r2 = new Uint8Array(M * K).fill(128);
    gelu.data.forEach((v, i) => {
      const [flag, code] = twinGeluCode(v, twin, bits);
      if (flag === 0) r1[i] = 127 - code;
      else r2[i] = 128 + code;
    });
    assert.deepEqual(twinGeluCodesU8(gelu.data, twin, bits), [r1, r2], 'twinGeluCodesU8 = twinGeluCode element by element');
    const fwt = await scoreLinear({ ...common, searched: 'weight', x: new Tensor(fakeQuantTwinGelu(gelu.data, twin, bits), [M, K]), w, scales, quantizer: 'uniform' });
    const iwt = await scoreLinearInteger({ ...common, searched: 'weight', x: [{ codes: r1, shape: [M, K], delta: twin.deltaNeg }, { codes: r2, shape: [M, K], delta: twin.deltaPos }], w, scales });
    assertRelClose(iwt, fwt, 'weight search behind a twin-GELU input');
  });
}

test('scoring over blocks of rows / images (a small batch budget) chooses what one block does', async () => {
  const cfg = { ...methodConfig('ptq4vit', { weightBits: 6, activationBits: 6, n: 20, rounds: 2 }) };
  const twinInput = new Tensor(Float32Array.from(x.data, (v) => Math.max(v, -0.17)), [M, K]);
  for (const postGelu of [false, true]) {
    const rec = { point: 'fc', kind: 'linear' as const, x: postGelu ? twinInput : x, weight: w, bias: null, out, grad, weightGroups: 3, postGelu };
    const whole = await searchLinear(rec, cfg);
    const blocked = await searchLinear(rec, { ...cfg, batchFloats: 7 * (N + K) });
    assert.deepEqual(blocked, whole, `linear, post-GELU ${postGelu}`);
  }
  const [O, H, T, D] = [6, 2, 9, 5];
  const a = new Tensor(rand(O * H * T * T).map(Math.abs), [O * H, T, T]);
  const b = new Tensor(rand(O * H * T * D), [O * H, T, D]);
  const mout = new Tensor(rand(O * H * T * D), [O * H, T, D]);
  const mgrad = new Tensor(rand(O * H * T * D, 0.1), [O * H, T, D]);
  for (const postSoftmax of [false, true]) {
    const rec = { point: 'sv', heads: H, a, b, out: mout, grad: mgrad, postSoftmax };
    const whole = await searchMatmul(rec, cfg);
    const blocked = await searchMatmul(rec, { ...cfg, batchFloats: 2 * 2 * H * T * T });
    assert.deepEqual(blocked, whole, `matmul, post-softmax ${postSoftmax}`);
  }
});

test('pruning candidates by their partial Hessian scores (branch and bound over row blocks) chooses exactly what scoring all does, and scores less', async () => {
  // A realistic layer: the output is the FP32 product, so candidates' errors differ by orders of magnitude.
  const [R, Kp, Np] = [1024, 24, 12];
  const xp = new Tensor(rand(R * Kp, 2), [R, Kp]);
  const wp = new Tensor(rand(Np * Kp, 0.3), [Np, Kp]);
  const bp = new Tensor(rand(Np, 0.1), [Np]);
  const op = new Tensor(new Float32Array(R * Np), [R, Np]);
  for (let r = 0; r < R; r++) for (let n = 0; n < Np; n++) {
    let acc = bp.data[n];
    for (let k = 0; k < Kp; k++) acc += xp.data[r * Kp + k] * wp.data[n * Kp + k];
    op.data[r * Np + n] = acc;
  }
  const gp = new Tensor(rand(R * Np, 0.01), [R, Np]);
  const gelu = new Tensor(Float32Array.from(xp.data, (v) => Math.max(v, -0.17)), [R, Kp]);
  const linearTotal = { scored: 0, full: 0 };
  for (const bits of [8, 4]) {
    const cfg = methodConfig('ptq4vit', { weightBits: bits, activationBits: bits, n: 40, rounds: 2 });
    for (const [postGelu, groups] of [[false, 3], [true, 1], [false, Np]] as const) {
      const rec = { point: 'fc', kind: 'linear' as const, x: postGelu ? gelu : xp, weight: wp, bias: bp, out: op, grad: gp, weightGroups: groups, postGelu };
      const pruned = { scored: 0, full: 0 }, all = { scored: 0, full: 0 };
      const withPruning = await searchLinear(rec, { ...cfg, stats: pruned });
      const without = await searchLinear(rec, { ...cfg, prune: false, stats: all });
      assert.deepEqual(withPruning, without, `W${bits} linear, post-GELU ${postGelu}, ${groups} weight groups`);
      assert.equal(all.scored, all.full);
      assert.equal(pruned.full, all.full);
      // Per-channel groups (12 independent argmins) prune less; one or three groups prune most blocks.
      // Every case prunes something (here 29–83% of the candidate-blocks are scored); per-channel groups
      // (12 argmins) and the twin (a flat error curve on this data) prune least.
      assert.ok(pruned.scored < all.full, `W${bits}, ${groups} groups: scored ${pruned.scored} of ${all.full} candidate-blocks`);
      linearTotal.scored += pruned.scored;
      linearTotal.full += all.full;
    }
  }
  assert.ok(linearTotal.scored < 0.6 * linearTotal.full, `linear: scored ${linearTotal.scored} of ${linearTotal.full} candidate-blocks`);
  // Attention products: per-head uniform a and b, and the softmax twin (one Δ_R1 over all heads).
  const [O, H, T, D] = [64, 2, 16, 8];
  const q = new Tensor(rand(O * H * T * D), [O * H, T, D]);
  const kT = new Tensor(rand(O * H * D * T), [O * H, D, T]);
  const attn = new Tensor(new Float32Array(O * H * T * T), [O * H, T, T]);
  for (let g = 0; g < O * H; g++) for (let i = 0; i < T; i++) {
    const row = attn.data.subarray((g * T + i) * T, (g * T + i + 1) * T);
    for (let j = 0; j < T; j++) for (let d = 0; d < D; d++) row[j] += q.data[(g * T + i) * D + d] * kT.data[(g * D + d) * T + j];
    const max = Math.max(...row);
    let z = 0;
    for (let j = 0; j < T; j++) z += (row[j] = Math.exp(2 * (row[j] - max)));
    for (let j = 0; j < T; j++) row[j] /= z;
  }
  const v = new Tensor(rand(O * H * T * D), [O * H, T, D]);
  const product = (a: Tensor, b: Tensor, rows: number, inner: number, cols: number) => {
    const o = new Float32Array(O * H * rows * cols);
    for (let g = 0; g < O * H; g++) for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
      let acc = 0;
      for (let k = 0; k < inner; k++) acc += a.data[(g * rows + i) * inner + k] * b.data[(g * inner + k) * cols + j];
      o[(g * rows + i) * cols + j] = acc;
    }
    return new Tensor(o, [O * H, rows, cols]);
  };
  const cfg = methodConfig('ptq4vit', { weightBits: 6, activationBits: 6, n: 40, rounds: 2 });
  for (const [a, b, postSoftmax] of [[q, kT, false], [attn, v, true]] as const) {
    const [rows, inner, cols] = [a.shape[1], a.shape[2], b.shape[2]];
    const rec = { point: 'mm', heads: H, a, b, out: product(a, b, rows, inner, cols), grad: new Tensor(rand(O * H * rows * cols, 0.1), [O * H, rows, cols]), postSoftmax };
    const pruned = { scored: 0, full: 0 }, allHeads = { scored: 0, full: 0 };
    const withPruning = await searchMatmul(rec, { ...cfg, stats: pruned });
    assert.deepEqual(withPruning, await searchMatmul(rec, { ...cfg, prune: false }), `matmul, post-softmax ${postSoftmax}`);
    // Per-head scales searched head by head (default) = all heads at once, pruned or not.
    assert.deepEqual(withPruning, await searchMatmul(rec, { ...cfg, perHeadSearch: false, stats: allHeads }), `matmul, post-softmax ${postSoftmax}, all heads at once`);
    assert.deepEqual(withPruning, await searchMatmul(rec, { ...cfg, perHeadSearch: false, prune: false }), `matmul, post-softmax ${postSoftmax}, all heads, no pruning`);
    assert.ok(pruned.scored < 0.6 * pruned.full, `matmul, post-softmax ${postSoftmax}: scored ${pruned.scored} of ${pruned.full}`);
    console.log(`matmul, post-softmax ${postSoftmax}: head by head scored ${pruned.scored}/${pruned.full} head-blocks; all heads at once ${allHeads.scored}/${allHeads.full} blocks of ${H} heads`);
  }
});

test("a candidate's score does not depend on the batch it is scored in (what makes pruning's sums equal the full search's)", async () => {
  const [Mb, Kb, Nb, Cb] = [260, 192, 576, 7];
  const xb = new Tensor(rand(Mb * Kb, 2), [Mb, Kb]);
  const wb = new Tensor(rand(Nb * Kb, 0.1), [Nb, Kb]);
  const ob = new Tensor(rand(Mb * Nb, 3), [Mb, Nb]);
  const gb = new Tensor(rand(Mb * Nb, 0.01), [Mb, Nb]);
  const common = { bias: null, out: ob, grad: gb, bits: 8, metric: 'hessian' as const, cosineGroups: 1 };
  const codes = [{ codes: Uint8Array.from(xb.data, (v) => uniformCode(v, 0.02, 8) + 128), shape: [Mb, Kb], delta: 0.02 }];
  const scales = new Float32Array(Cb * Nb);
  for (let c = 0; c < Cb; c++) for (let n = 0; n < Nb; n++) scales[c * Nb + n] = (0.3 + 0.1 * c) * 0.003;
  const weightBatch = await scoreLinearInteger({ ...common, searched: 'weight', x: codes, w: wb, scales, candidates: Cb });
  const codesT = new Int8Array(Kb * Nb), deltas = new Float32Array(Nb).fill(0.003);
  for (let n = 0; n < Nb; n++) for (let k = 0; k < Kb; k++) codesT[k * Nb + n] = uniformCode(wb.data[n * Kb + k], 0.003, 8);
  const xs = Float32Array.from({ length: Cb }, (_, c) => (0.3 + 0.1 * c) * 0.02);
  const inputBatch = await scoreLinearInteger({ ...common, searched: 'input', x: xb, w: { codesT, shape: [Kb, Nb], deltas }, scales: xs, candidates: Cb });
  for (let c = 0; c < Cb; c++) {
    const weightOne = await scoreLinearInteger({ ...common, searched: 'weight', x: codes, w: wb, scales: scales.slice(c * Nb, (c + 1) * Nb), candidates: 1 });
    assert.deepEqual(weightOne, weightBatch.slice(c * Nb, (c + 1) * Nb), `weight search, candidate ${c}`);
    const inputOne = await scoreLinearInteger({ ...common, searched: 'input', x: xb, w: { codesT, shape: [Kb, Nb], deltas }, scales: xs.slice(c, c + 1), candidates: 1 });
    assert.equal(inputOne[0], inputBatch[c], `input search, candidate ${c}`);
  }
});
