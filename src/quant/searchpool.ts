/**
 * Point searches in worker threads. Under the parallel paradigm every point's search depends only on its own
 * records, so two points can be searched at once. One search keeps ~1.5 of 2 cores busy (its products run on
 * onnxruntime's threads, its code rounding and bookkeeping on one), so on this 2-core machine two workers with
 * one onnxruntime thread each (a worker searching alone takes both) finish the same searches in less time (BENCHMARKS.md, "Calibration search in
 * worker threads"). A point's records are lent to the worker: their buffers are transferred there and back
 * with the result, never copied (onnxruntime-node does not take SharedArrayBuffer-backed tensors). The scores
 * do not depend on the thread count, so the chosen scales are the in-process search's exactly
 * (test/calib_groups.test.ts, "every point in a search worker").
 */
import { Worker } from 'node:worker_threads';
import { Ptq4vitError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';
import type { PointQuant } from './params.js';
import type { LinearRecord, MatmulRecord, SearchConfig } from './search.js';

/** A tensor as it crosses to a worker (its Float32Array is shared when it lives in a SharedArrayBuffer). */
export interface WireTensor {
  data: Float32Array;
  shape: number[];
}

/** The data part of a SearchConfig (no callbacks): what a worker's search runs under. */
export type WireConfig = Omit<SearchConfig, 'trace' | 'sensitivity' | 'stats'>;

type WireRecord<R> = { [K in keyof R]: R[K] extends Tensor ? WireTensor : R[K] extends Tensor | null ? WireTensor | null : R[K] };

export type SearchTask = { kind: 'linear'; record: WireRecord<LinearRecord>; cfg: WireConfig; lent: LentRecords } | { kind: 'matmul'; record: WireRecord<MatmulRecord>; cfg: WireConfig; lent: LentRecords };

/** The records a task lends, by name (x, out, grad / a, b, out, grad): sent back with every reply. */
export type LentRecords = Record<string, WireTensor | null>;

export type SearchReply = { id: number; records: LentRecords } & ({ result: PointQuant; stats: { scored: number; full: number } } | { error: { name: string; message: string; stack?: string } });

/**
 * A tensor whose buffer can move to a worker: its own data when the view spans its whole buffer (a record), a
 * copy of just the view otherwise (a weight inside a checkpoint's buffer, which must neither move nor be
 * cloned whole).
 */
function wire(t: Tensor, lend: boolean): WireTensor {
  const own = lend && t.data.byteOffset === 0 && t.data.byteLength === t.data.buffer.byteLength && t.data.buffer instanceof ArrayBuffer;
  return { data: own ? t.data : t.data.slice(), shape: [...t.shape] };
}
const wireOrNull = (t: Tensor | null, lend: boolean): WireTensor | null => (t ? wire(t, lend) : null);

/** The buffers of lent records (each once), for a postMessage transfer list. */
export function lentBuffers(records: LentRecords): ArrayBuffer[] {
  return [...new Set(Object.values(records).flatMap((t) => (t ? [t.data.buffer as ArrayBuffer] : [])))];
}

/** Whether a configuration can be searched in a worker: callbacks (report traces, sensitivities) stay in this thread. */
export function workerSafe(cfg: SearchConfig): boolean {
  return cfg.trace === undefined && cfg.sensitivity === undefined;
}

function wireConfig(cfg: SearchConfig): WireConfig {
  const { trace: _trace, sensitivity: _sensitivity, stats: _stats, ...rest } = cfg;
  // Anything else that is not data (e.g. CalibrationOptions.onProgress riding along) stays here.
  return Object.fromEntries(Object.entries(rest).filter(([, v]) => typeof v !== 'function')) as WireConfig;
}

export function linearTask(rec: LinearRecord, cfg: SearchConfig): SearchTask {
  const lent = { x: wire(rec.x, true), out: wire(rec.out, true), grad: wireOrNull(rec.grad, true) };
  return { kind: 'linear', record: { ...rec, ...lent, weight: wire(rec.weight, false), bias: wireOrNull(rec.bias, false) }, cfg: wireConfig(cfg), lent };
}

export function matmulTask(rec: MatmulRecord, cfg: SearchConfig): SearchTask {
  const lent = { a: wire(rec.a, true), b: wire(rec.b, true), out: wire(rec.out, true), grad: wireOrNull(rec.grad, true) };
  return { kind: 'matmul', record: { ...rec, ...lent }, cfg: wireConfig(cfg), lent };
}

/** A search's result and the records it borrowed, back as tensors (by the names the task lent them under). */
export interface SearchOutcome {
  result: PointQuant;
  records: Record<string, Tensor | null>;
}

interface Pending {
  resolve: (o: SearchOutcome) => void;
  reject: (e: Error) => void;
  stats?: SearchConfig['stats'];
}

/** What a search worker is started with. */
export interface SearchWorkerData {
  /** onnxruntime threads while it searches alone. */
  threads: number;
  /** …and while other workers search too. */
  share: number;
  /** [searches running now] (SharedArrayBuffer). */
  running: Int32Array;
}

/** `size` workers, each searching one point at a time. */
export class SearchPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: { task: SearchTask; pending: Pending }[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly busy = new Map<Worker, number>();
  private nextId = 0;
  private failure: Error | null = null;
  /** Searches running now, shared with the workers: alone, a worker uses every thread; together, its share. */
  private readonly running = new Int32Array(new SharedArrayBuffer(4));
  /** Most searches that ran at once so far. */
  mostRunning = 0;

  /** `size` workers sharing `threads` onnxruntime threads (a worker searching alone uses them all). */
  constructor(readonly size: number, threads: number) {
    const data: SearchWorkerData = { threads, share: Math.max(1, Math.floor(threads / size)), running: this.running };
    for (let i = 0; i < size; i++) {
      const w = new Worker(new URL('./searchworker.js', import.meta.url), { workerData: data });
      w.on('message', (reply: SearchReply) => this.settle(w, reply));
      w.on('error', (e) => this.crash(w, e));
      w.on('exit', (code) => {
        if (this.busy.has(w)) this.crash(w, new Error(`search worker exited with code ${code}`));
      });
      w.unref(); // an idle pool never keeps the process alive
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  /**
   * Search one point in a worker; `stats` (if given) is added to when the search ends. The task's lent records
   * are unusable here until the outcome returns them.
   */
  search(task: SearchTask, stats?: SearchConfig['stats']): Promise<SearchOutcome> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.queue.push({ task, pending: { resolve, reject, stats } });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const w = this.idle.pop()!;
      const { task, pending } = this.queue.shift()!;
      const id = this.nextId++;
      this.pending.set(id, pending);
      this.busy.set(w, id);
      this.mostRunning = Math.max(this.mostRunning, Atomics.add(this.running, 0, 1) + 1);
      w.ref();
      w.postMessage({ id, task }, lentBuffers(task.lent));
    }
  }

  private settle(w: Worker, reply: SearchReply): void {
    const p = this.pending.get(reply.id);
    this.pending.delete(reply.id);
    if (this.busy.delete(w)) Atomics.sub(this.running, 0, 1);
    w.unref();
    this.idle.push(w);
    if (p) {
      const records = Object.fromEntries(Object.entries(reply.records).map(([k, t]) => [k, t ? new Tensor(t.data, t.shape) : null]));
      if ('error' in reply) {
        // A user-facing error keeps its class (the CLI prints it as one line); anything else is a bug, with its stack.
        const e = reply.error.name === 'Ptq4vitError' ? new Ptq4vitError(reply.error.message) : Object.assign(new Error(reply.error.message), { stack: reply.error.stack });
        p.reject(e);
      } else {
        if (p.stats) {
          p.stats.scored += reply.stats.scored;
          p.stats.full += reply.stats.full;
        }
        p.resolve({ result: reply.result, records });
      }
    }
    this.dispatch();
  }

  private crash(w: Worker, e: Error): void {
    this.failure = e;
    const id = this.busy.get(w);
    if (this.busy.delete(w)) Atomics.sub(this.running, 0, 1);
    if (id !== undefined) {
      this.pending.get(id)?.reject(e);
      this.pending.delete(id);
    }
    for (const q of this.queue.splice(0)) q.pending.reject(e);
  }

  /** Stop the workers (searches still running are abandoned). */
  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
