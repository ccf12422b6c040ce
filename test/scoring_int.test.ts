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
