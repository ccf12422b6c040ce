/** A search worker (searchpool.ts): searches the points it is sent, one at a time, and replies with their scales. */
import { parentPort, workerData } from 'node:worker_threads';
import { setOrtThreadPolicy, setOrtThreads } from '../tensor/ort.js';
import { Tensor } from '../tensor/tensor.js';
import { searchLinear, searchMatmul, type SearchConfig } from './search.js';
import { lentBuffers, type SearchReply, type SearchTask, type SearchWorkerData, type WireTensor } from './searchpool.js';

const port = parentPort;
if (!port) throw new Error('searchworker.js runs as a worker thread (SearchPool)');
const { threads, share, running } = workerData as SearchWorkerData;
setOrtThreads(threads);
// A point searched alone (a group of one point, the last of a group) gets every thread; two at once share them.
setOrtThreadPolicy(() => (Atomics.load(running, 0) > 1 ? share : threads));

const tensor = (t: WireTensor): Tensor => new Tensor(t.data, t.shape);
const tensorOrNull = (t: WireTensor | null): Tensor | null => (t ? tensor(t) : null);

port.on('message', async ({ id, task }: { id: number; task: SearchTask }) => {
  const stats = { scored: 0, full: 0 };
  const cfg: SearchConfig = { ...task.cfg, stats };
  let reply: SearchReply;
  try {
    const result =
      task.kind === 'linear'
        ? await searchLinear({ ...task.record, x: tensor(task.record.x), weight: tensor(task.record.weight), bias: tensorOrNull(task.record.bias), out: tensor(task.record.out), grad: tensorOrNull(task.record.grad) }, cfg)
        : await searchMatmul({ ...task.record, a: tensor(task.record.a), b: tensor(task.record.b), out: tensor(task.record.out), grad: tensorOrNull(task.record.grad) }, cfg);
    reply = { id, records: task.lent, result, stats };
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    reply = { id, records: task.lent, error: { name: err.name, message: err.message, stack: err.stack } };
  }
  // The borrowed records go back (moved, not copied), whatever the outcome.
  port.postMessage(reply, lentBuffers(task.lent));
});
