/**
 * Search workers (src/quant/searchpool.ts): a point searched in a worker gets the in-process search's scales,
 * its records come back intact (lent, not copied), a weight inside a larger buffer is neither moved nor
 * cloned whole, and an error inside a worker reaches the caller with its class and message.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { seededRandom } from '../src/grad/loss.js';
import { methodConfig } from '../src/quant/methods.js';
import { searchLinear, searchMatmul } from '../src/quant/search.js';
import { linearTask, matmulTask, SearchPool } from '../src/quant/searchpool.js';
import { Tensor } from '../src/tensor/tensor.js';

const random = seededRandom(11);
const rand = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (random() * 2 - 1) * scale);
const pool = new SearchPool(2, 1);
after(() => pool.close());

test('linear and attention points searched in workers = in this thread; lent records return unchanged', async () => {
  const [M, K, N] = [96, 32, 24];
  // The weight is a view into a larger buffer (as a checkpoint's tensors are): it must stay usable here.
  const checkpoint = rand(N * K + 100, 0.3);
  const weight = new Tensor(checkpoint.subarray(50, 50 + N * K), [N, K]);
  const x = new Tensor(rand(M * K, 2), [M, K]);
  const out = new Tensor(rand(M * N, 3), [M, N]);
  const grad = new Tensor(rand(M * N, 0.01), [M, N]);
  const rec = { point: 'fc', kind: 'linear' as const, x, weight, bias: null, out, grad, weightGroups: 3, postGelu: false };
  const cfg = { ...methodConfig('ptq4vit', { weightBits: 6, activationBits: 6, n: 20, rounds: 2 }), onProgress: () => {} };
  const here = await searchLinear(rec, cfg);
  const copies = [x.data.slice(), out.data.slice(), grad.data.slice()];
  const stats = { scored: 0, full: 0 };
  const task = linearTask(rec, cfg);
  const pending = pool.search(task, stats);
  assert.equal(x.data.length, 0, 'the input record moved to the worker (not copied)');
  assert.equal(weight.data.length, N * K, 'the weight stayed here');
  const { result, records } = await pending;
  assert.deepEqual(result, here);
  assert.ok(stats.full > 0 && stats.scored > 0 && stats.scored <= stats.full, `stats ${JSON.stringify(stats)}`);
  assert.deepEqual([records.x!.data, records.out!.data, records.grad!.data], copies);
  assert.deepEqual(records.x!.shape, [M, K]);

  const [O, H, T, D] = [8, 2, 12, 8];
  const mm = { point: 'mm', heads: H, a: new Tensor(rand(O * H * T * D), [O * H, T, D]), b: new Tensor(rand(O * H * D * T), [O * H, D, T]), out: new Tensor(rand(O * H * T * T), [O * H, T, T]), grad: new Tensor(rand(O * H * T * T, 0.1), [O * H, T, T]), postSoftmax: false };
  const mmHere = await searchMatmul(mm, cfg);
  // Two at once: both workers busy.
  const [first, second] = await Promise.all([pool.search(matmulTask(mm, cfg)), pool.search(linearTask({ ...rec, x: new Tensor(copies[0].slice(), [M, K]), out: new Tensor(copies[1].slice(), [M, N]), grad: new Tensor(copies[2].slice(), [M, N]) }, cfg))]);
  assert.deepEqual(first.result, mmHere);
  assert.deepEqual(second.result, here);
});

test('an error inside a worker reaches the caller with its message, and the pool goes on', async () => {
  const cfg = methodConfig('ptq4vit', { weightBits: 8, activationBits: 8, n: 4, rounds: 1 });
  const [M, K, N] = [16, 8, 4];
  const record = (grad: boolean) => ({ point: 'fc', kind: 'linear' as const, x: new Tensor(rand(M * K), [M, K]), weight: new Tensor(rand(N * K), [N, K]), bias: null, out: new Tensor(rand(M * N), [M, N]), grad: grad ? new Tensor(rand(M * N, 0.01), [M, N]) : null, weightGroups: 1, postGelu: false });
  // No ∂L/∂O under the Hessian metric: a bug in the caller, which fails the same way here and in a worker.
  const broken = record(false);
  const here = await searchLinear(broken, cfg).then(() => null, (e: Error) => e);
  assert.ok(here, 'the search fails without a gradient');
  await assert.rejects(pool.search(linearTask(broken, cfg)), (e: Error) => e.message === here.message && !(e instanceof Ptq4vitError));
  const ok = record(true);
  const expected = await searchLinear(ok, cfg);
  assert.deepEqual((await pool.search(linearTask(ok, cfg))).result, expected);
});
