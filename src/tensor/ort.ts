/**
 * The onnxruntime-node backend. Heavy kernels run as tiny ONNX graphs, built once per signature and
 * cached: at ViT sizes ORT's MLAS kernels are vectorized and use every core, which TypeScript loops
 * cannot (see BENCHMARKS.md for the measured gap).
 */
import os from 'node:os';
import ort from 'onnxruntime-node';
import { encodeModel, type GraphSpec } from '../onnx/proto.js';
import { Tensor } from './tensor.js';

let threads = Math.max(1, os.availableParallelism());

/** Threads ORT may use for one kernel (default: every core). Applies to sessions created afterwards. */
export function setOrtThreads(n: number): void {
  threads = Math.max(1, Math.floor(n));
  sessions.clear();
}

/** Threads ORT may use for one kernel (setOrtThreads, default every core). */
export function ortThreads(): number {
  return threads;
}

let threadPolicy: (() => number) | null = null;

/**
 * Choose the thread count at every run instead (null: back to setOrtThreads'): a search worker uses all of its
 * threads while it is the only one searching and its share while others are (searchpool.ts). Sessions are kept
 * per thread count; results do not depend on it.
 */
export function setOrtThreadPolicy(policy: (() => number) | null): void {
  threadPolicy = policy;
}

/** Per-kernel call counts and time, when PTQ4VIT_PROFILE is set. */
export const profile = new Map<string, { calls: number; ms: number }>();

const sessions = new Map<string, Promise<ort.InferenceSession>>();

export interface GraphOptions {
  /**
   * ORT's memory arena (default on). Every session keeps its own arena at its high-water mark, so graphs
   * with large intermediates that run now and then (the candidate search) turn it off; otherwise dozens
   * of them would hold gigabytes between uses.
   */
  arena?: boolean;
}

function session(key: string, graph: () => GraphSpec, options: GraphOptions): Promise<ort.InferenceSession> {
  const n = threadPolicy ? Math.max(1, Math.floor(threadPolicy())) : threads;
  const cacheKey = threadPolicy ? `${key}@${n}` : key;
  let s = sessions.get(cacheKey);
  if (!s) {
    s = ort.InferenceSession.create(encodeModel(graph()), {
      enableCpuMemArena: options.arena ?? true,
      intraOpNumThreads: n,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3, // errors only: ORT's shape-merge notes are noise for our generated graphs
      // ORT's worker threads spin between runs by default. We call ORT many times per forward pass with
      // TypeScript work in between, so spinning workers compete with the main thread (and anything else
      // on the machine): measured 4x slower ViT inference on 2 cores (BENCHMARKS.md).
      // (PTQ4VIT_ORT_SPINNING=1 restores ORT's default, for measuring exactly that.)
      extra: { session: { intra_op: { allow_spinning: process.env.PTQ4VIT_ORT_SPINNING === '1' ? '1' : '0' } } },
    });
    sessions.set(cacheKey, s);
  }
  return s;
}

/** A graph input: float32, or the uint8/int8 codes of an integer product. */
export type GraphInput = { data: Float32Array | Uint8Array | Int8Array; shape: readonly number[] };

const elementType = (data: GraphInput['data']): 'float32' | 'uint8' | 'int8' => (data instanceof Uint8Array ? 'uint8' : data instanceof Int8Array ? 'int8' : 'float32');

/** Run the cached graph `key` (built by `graph` on first use) on its inputs; returns output `output` (float32). */
export async function runGraph(
  key: string,
  graph: () => GraphSpec,
  inputs: Record<string, GraphInput>,
  output = 'y',
  options: GraphOptions = {},
): Promise<Tensor> {
  const s = await session(key, graph, options);
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(inputs)) feeds[name] = new ort.Tensor(elementType(t.data), t.data, t.shape as number[]);
  const t0 = performance.now();
  const y = (await s.run(feeds))[output];
  if (process.env.PTQ4VIT_PROFILE) {
    const e = profile.get(key) ?? { calls: 0, ms: 0 };
    e.calls++;
    e.ms += performance.now() - t0;
    profile.set(key, e);
  }
  return new Tensor(y.data as Float32Array, y.dims as number[]);
}
