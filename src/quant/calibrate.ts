/**
 * PTQ4ViT calibration in bounded memory. Each point's scales are searched on its own FP32 inputs, output and
 * (for the Hessian metric) ∂L/∂O over the calibration set — the parallel paradigm, so points are independent.
 * Holding all of that for every point at once grows with depth × images (~24 MB per image per ViT-B block),
 * so the points are processed in groups of consecutive points (in forward order) whose records fit a byte
 * budget: for each group, one pass over the calibration images (forward, and backward down to the group's
 * first point) records only that group, the group is searched, and its records are freed. More groups cost
 * more passes (time), fewer groups more memory; the budget chooses. Every group sees exactly the numbers an
 * all-at-once recording would (same chunks, same kernels), so the search is the same search.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { computeGradients } from '../grad/gradients.js';
import { crossEntropyGrad, lossTargets, seededRandom, type LossKind } from '../grad/loss.js';
import { Tape } from '../grad/tape.js';
import type { Arch, ForwardSegments, QuantPoint, Runner, VisionModel } from '../models/types.js';
import { linear as linearFp, matmul as matmulFp } from '../tensor/gemm.js';
import { ortThreads } from '../tensor/ort.js';
import { Tensor } from '../tensor/tensor.js';
import type { PointQuant } from './params.js';
import { searchLinear, searchMatmul, type SearchConfig } from './search.js';
import { linearTask, matmulTask, SearchPool, workerSafe } from './searchpool.js';

export interface CalibrationOptions extends SearchConfig {
  /** Loss whose gradient weights the Hessian metric (ignored by the cosine metric). */
  loss: LossKind;
  seed: number;
  /**
   * Images per forward/backward pass while recording (the tape of one chunk is held at once). Default:
   * 8, fewer for models whose tape would exceed TAPE_BUDGET_BYTES (defaultChunkSize).
   */
  chunkSize?: number;
  /**
   * Bytes of recorded inputs/outputs/∂L/∂O held at once (default DEFAULT_GROUP_BYTES): points are recorded
   * and searched in groups that fit it. A point larger than the budget is a group of its own.
   */
  groupBytes?: number;
  /**
   * Record with block recompute (default true for models with segments): one whole forward + backward pass
   * keeps the activations and ∂L/∂ at segment boundaries (model.segments), and every later group runs only
   * its own segments from them — the same numbers as whole passes, in a fraction of the time.
   */
  recompute?: boolean;
  /**
   * Points searched at once in worker threads (searchpool.ts), each worker with its share of the onnxruntime
   * threads (all of them while it searches alone). Default: 2 when onnxruntime may use 2 or more threads, else 0 (every search in this thread). Only
   * points whose records reach WORKER_MIN_FLOATS go to a worker; the chosen scales are the same either way.
   */
  searchWorkers?: number;
  /** Smallest records (floats) searched in a worker (default WORKER_MIN_FLOATS; 0 sends every point). */
  searchWorkerMinFloats?: number;
  /**
   * Record the next group while the previous group's points are searched in the workers (default: whenever there
   * are search workers). The groups after the first are then planned at half of `groupBytes`, so that two of them
   * are held at once within it; the chosen scales are the same either way.
   */
  pipeline?: boolean;
  onProgress?: (event: CalibrationProgress) => void;
}

/**
 * Records (inputs, output, ∂L/∂O) below this many floats are searched in this thread: their search takes
 * well under a second, less than a worker's start-up (the CIFAR models, the tests).
 */
export const WORKER_MIN_FLOATS = 4_000_000;

/** The searchWorkers default: two points at once when there are two cores' worth of threads. */
export function defaultSearchWorkers(): number {
  return ortThreads() >= 2 ? 2 : 0;
}

/** Default record budget per group (with the tape budget below: ViT-B/16-224 under 3 GiB peak RSS, BENCHMARKS.md). */
export const DEFAULT_GROUP_BYTES = 768 * 2 ** 20;

/** What one chunk's gradient tape may hold (estimated from the architecture, see defaultChunkSize). */
export const TAPE_BUDGET_BYTES = 640 * 2 ** 20;

/**
 * Images per recording chunk: 8, or fewer when the tape of 8 images would exceed TAPE_BUDGET_BYTES. The
 * tape keeps ~20 floats per token and channel per block (LayerNorm, qkv, GELU and MLP tensors, attention
 * maps excluded): ViT-B/16-224 ≈ 145 MB per image (measured 156: bench_grads), so 4 images per chunk.
 */
export function defaultChunkSize(arch: Arch): number {
  const floatsPerImage =
    arch.family === 'swin' || arch.family === 'swinv2'
      ? arch.depths.reduce((sum, depth, stage) => sum + depth * (arch.imgSize / arch.patchSize / 2 ** stage) ** 2 * arch.embedDim * 2 ** stage, 0)
      : arch.depth * ((arch.imgSize / arch.patchSize) ** 2 + 2) * arch.embedDim;
  return Math.max(1, Math.min(8, Math.floor(TAPE_BUDGET_BYTES / (4 * 20 * floatsPerImage))));
}

export type CalibrationProgress =
  /** Recording pass `group` of `groups` (1-based) has run forward (+ backward) over `images` images. */
  | { phase: 'record'; group: number; groups: number; images: number; totalImages: number }
  /** `done` of `total` points searched (for every configuration), the last one `point`. */
  | { phase: 'search'; done: number; total: number; point: string };

/** Where calibration time went. */
export interface CalibrationTiming {
  /** Forward (+ backward) passes recording the groups' data. */
  recordSeconds: number;
  /** Candidate search of every point: the wall time that is not recording (a pipelined search's overlap is in recordSeconds). */
  searchSeconds: number;
  /** The search time of each configuration. */
  searchSecondsPerConfig: number[];
  /** Number of groups, i.e. recording passes over the calibration images. */
  groups: number;
  /** Segments run while recording, in whole forward(+backward) passes (= groups without recompute). */
  passEquivalents?: number;
  /** Most point searches that ran at once in search workers (0: none ran in a worker). */
  concurrentSearches?: number;
  /** Groups recorded while earlier groups' searches were still running (CalibrationOptions.pipeline). */
  recordedDuringSearch?: number;
}

/** What the search of one point needs over the whole calibration set, in full-size buffers. */
interface PointData {
  inputs: Tensor[];
  /** FP32 output; for a linear point with a bias under the Hessian metric, O − b (the search's target). */
  output: Tensor;
  grad: Tensor | null;
  /** The output already has the bias subtracted. */
  biasFolded: boolean;
}

interface LinearParams {
  weight: Tensor;
  bias: Tensor | null;
}

/** Leading dimension scaled from one chunk to the whole set (it counts images, or images·heads…). */
function fullShape(shape: readonly number[], chunkImages: number, totalImages: number): number[] {
  return [(shape[0] / chunkImages) * totalImages, ...shape.slice(1)];
}

/** [G, N, K] → [G, K, N] into `out` (the B operand of q·kᵀ in the orientation the search multiplies with). */
function transposeLastInto(t: Tensor, out: Float32Array): void {
  const [g, n, k] = t.shape;
  for (let i = 0; i < g; i++) {
    const base = i * n * k;
    for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) out[base + c * n + r] = t.data[base + r * k + c];
  }
}

/** Floats per image a point's records take (inputs, output, ∂L/∂O) plus the search's fake-quantized copy. */
function floatsPerImage(inputs: Tensor[], output: Tensor, chunkImages: number, withGrad: boolean): number {
  const sizes = inputs.map((t) => t.size);
  const records = sizes.reduce((a, b) => a + b, 0) + output.size * (withGrad ? 2 : 1);
  return (records + Math.max(...sizes)) / chunkImages;
}

/**
 * Consecutive points (forward order) into groups whose records fit `budgetBytes` (the groups after the first:
 * `laterBytes`): greedy, so a group is decided from the sizes of its own points only (the first pass decides its
 * group while it runs).
 */
export function planGroups(points: readonly { name: string; bytes: number }[], budgetBytes: number, laterBytes = budgetBytes): string[][] {
  const groups: string[][] = [];
  let current: string[] = [], used = 0;
  for (const p of points) {
    if (current.length > 0 && used + p.bytes > (groups.length === 0 ? budgetBytes : laterBytes)) {
      groups.push(current);
      current = [];
      used = 0;
    }
    current.push(p.name);
    used += p.bytes;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}


/** Boundary records held in memory up to this many bytes; beyond, in an unlinked temporary file. */
export const BOUNDARY_MEMORY_BYTES = 512 * 2 ** 20;

/**
 * Full-set tensors at segment boundaries (activations, ∂L/∂), written and read chunk by chunk. Within
 * `memoryBytes` they live in memory, the rest in a temporary file (unlinked at once, so nothing is left
 * behind), which keeps recompute's memory bounded for ImageNet-sized models and many images.
 */
class BoundaryStore {
  private readonly entries = new Map<string, { data: Float32Array | null; offset: number; perImage: number; shape: number[]; lead: number }>();
  private used = 0;
  private fd: number | null = null;
  private fileBytes = 0;

  constructor(private readonly totalImages: number, private readonly memoryBytes: number) {}

  has(key: string): boolean {
    return this.entries.has(key);
  }

  write(key: string, start: number, count: number, t: Tensor): void {
    let e = this.entries.get(key);
    if (!e) {
      const perImage = t.size / count, bytes = 4 * perImage * this.totalImages;
      const inMemory = this.used + bytes <= this.memoryBytes;
      e = { data: inMemory ? new Float32Array(perImage * this.totalImages) : null, offset: inMemory ? 0 : this.fileBytes, perImage, shape: t.shape.slice(1), lead: t.shape[0] / count };
      if (inMemory) this.used += bytes;
      else this.fileBytes += bytes;
      this.entries.set(key, e);
    }
    if (e.data) e.data.set(t.data, e.perImage * start);
    else fs.writeSync(this.file(), new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), 0, t.data.byteLength, e.offset + 4 * e.perImage * start);
  }

  read(key: string, start: number, count: number): Tensor {
    const e = this.entries.get(key);
    if (!e) throw new Error(`calibration: boundary '${key}' was not recorded`);
    const shape = [e.lead * count, ...e.shape];
    if (e.data) return new Tensor(e.data.slice(e.perImage * start, e.perImage * (start + count)), shape);
    const out = new Float32Array(e.perImage * count);
    fs.readSync(this.file(), new Uint8Array(out.buffer), 0, out.byteLength, e.offset + 4 * e.perImage * start);
    return new Tensor(out, shape);
  }

  private file(): number {
    if (this.fd === null) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-boundaries-'));
      const file = path.join(dir, 'records.f32');
      this.fd = fs.openSync(file, 'w+');
      fs.rmSync(dir, { recursive: true, force: true }); // unlinked: the open descriptor keeps the data until closed
    }
    return this.fd;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    this.entries.clear();
  }
}

/** Thrown by the recording runner to end a forward pass once the group's last point has run. */
class GroupRecorded extends Error {}

/** State shared by the recording passes: what the first pass learns about every point. */
class Recording {
  /** Forward order of the points and bytes of their records over the whole set (first chunk of pass 1). */
  readonly order: { name: string; bytes: number }[] = [];
  readonly linearParams = new Map<string, LinearParams>();
  private plan: string[][] | null = null;

  constructor(
    readonly model: VisionModel,
    readonly images: Tensor,
    readonly labels: Int32Array | null,
    readonly withGradients: boolean,
    readonly chunkSize: number,
    readonly budgetBytes: number,
    /** The record budget of the groups after the first (a pipelined traversal holds two of them at once). */
    readonly laterBudgetBytes: number,
    readonly loss: LossKind,
    readonly seed: number,
    /** Store O − b for linear points (only when every configuration uses the Hessian metric). */
    readonly foldBias: boolean,
    /** Record groups by recomputing their segments from boundary records (null: whole passes). */
    readonly segments: ForwardSegments | null = null,
    boundaryBytes = BOUNDARY_MEMORY_BYTES,
  ) {
    this.boundaries = new BoundaryStore(images.shape[0], boundaryBytes);
  }

  /** The segment each point runs in (learned in the first pass, with segments). */
  private readonly segmentOf = new Map<string, number>();
  private readonly boundaries: BoundaryStore;
  /** Segments run so far, over all images, in whole-pass units (segments.count per pass). */
  segmentRuns = 0;

  /** Bytes of group `index`'s records over the whole set. */
  groupBytes(index: number): number {
    const points = new Set(this.groups()[index]);
    return this.order.reduce((sum, p) => sum + (points.has(p.name) ? p.bytes : 0), 0);
  }

  /** First and last segment of group `index`'s points. */
  private segmentRange(index: number): [number, number] {
    const segs = this.groups()[index].map((name) => this.segmentOf.get(name)!);
    return [Math.min(...segs), Math.max(...segs)];
  }

  close(): void {
    this.boundaries.close();
  }

  get totalImages(): number {
    return this.images.shape[0];
  }

  /** All groups, known once the first chunk of the first pass has run forward. */
  groups(): string[][] {
    if (!this.plan) throw new Error('groups are planned during the first recording pass');
    return this.plan;
  }

  /**
   * One pass over the calibration images recording the points of group `index` (the first pass also
   * discovers every point's size and weights, and plans the groups).
   */
  async record(index: number, onImages: (done: number) => void): Promise<Map<string, PointData>> {
    const total = this.totalImages;
    const data = new Map<string, PointData>();
    const points = new Map(this.model.quantPoints.map((p) => [p.name, p]));
    const firstPass = this.plan === null;
    let member: (name: string) => boolean;
    let lastMember: string | null = null;
    if (firstPass) {
      // Greedy admission in forward order, exactly as planGroups will decide group 0.
      let used = 0, open = true;
      const admitted = new Set<string>();
      member = (name) => admitted.has(name);
      this.admit = (name, bytes) => {
        if (open && (admitted.size === 0 || used + bytes <= this.budgetBytes)) {
          admitted.add(name);
          used += bytes;
        } else open = false;
      };
    } else {
      const group = new Set(this.groups()[index]);
      member = (name) => group.has(name);
      lastMember = this.groups()[index].at(-1)!;
    }

    const store = (point: string, start: number, count: number, output: Tensor, inputs: Tensor[]) => {
      const info = points.get(point);
      if (!info) throw new Error(`the forward pass called unknown quantization point '${point}'`);
      let d = data.get(point);
      const linear = this.linearParams.get(point);
      const foldBias = this.foldBias && info.kind !== 'matmul' && linear?.bias != null;
      if (!d) {
        const alloc = (t: Tensor) => new Tensor(new Float32Array((t.size / count) * total), fullShape(t.shape, count, total));
        const transB = info.kind === 'matmul' && info.transB === true;
        const ins = inputs.map((t, i) => (i === 1 && transB ? new Tensor(new Float32Array((t.size / count) * total), fullShape([t.shape[0], t.shape[2], t.shape[1]], count, total)) : alloc(t)));
        d = { inputs: ins, output: alloc(output), grad: this.withGradients ? alloc(output) : null, biasFolded: foldBias };
        data.set(point, d);
      }
      inputs.forEach((t, i) => {
        const target = d.inputs[i].data.subarray((t.size / count) * start, (t.size / count) * (start + count));
        if (i === 1 && info.kind === 'matmul' && info.transB) transposeLastInto(t, target);
        else target.set(t.data);
      });
      const out = d.output.data.subarray((output.size / count) * start, (output.size / count) * (start + count));
      out.set(output.data);
      if (foldBias) {
        const b = linear!.bias!.data, n = b.length;
        for (let i = 0; i < out.length; i++) out[i] -= b[i % n];
      }
    };

    let chunkStart = 0, chunkCount = 0;
    const seen = new Set<string>();
    // The runner every pass computes FP32 through: learns sizes/weights, stores the group's inputs and outputs.
    let segment = 0;
    const observe = (point: string, output: Tensor, inputs: Tensor[], params: LinearParams | null) => {
      if (firstPass && !this.segmentOf.has(point)) this.segmentOf.set(point, segment);
      if (firstPass && !seen.has(point)) {
        seen.add(point);
        if (params) this.linearParams.set(point, params);
        const bytes = 4 * floatsPerImage(inputs, output, chunkCount, this.withGradients) * total;
        this.order.push({ name: point, bytes });
        this.admit(point, bytes);
      }
      if (member(point)) store(point, chunkStart, chunkCount, output, inputs);
      // Without gradients the rest of the forward pass is not needed once the group is recorded.
      if (!this.withGradients && !firstPass && !this.segments && point === lastMember) throw new GroupRecorded();
    };
    const observer: Runner = {
      linear: async (point, x, weight, bias) => {
        const y = await linearFp(x, weight, bias);
        observe(point, y, [x], { weight, bias });
        return y;
      },
      matmul: async (point, a, b, transB) => {
        const y = await matmulFp(a, b, transB);
        observe(point, y, [a, b], null);
        return y;
      },
    };
    const afterFirstForward = () => {
      if (this.plan) return;
      if (this.order.length !== this.model.quantPoints.length) {
        const missing = this.model.quantPoints.find((p) => !this.order.some((o) => o.name === p.name));
        throw new Error(`quantization point '${missing?.name}' was never called in the forward pass`);
      }
      this.plan = planGroups(this.order, this.budgetBytes, this.laterBudgetBytes);
    };

    const wanted = () => {
      afterFirstForward();
      return new Set([...points.keys()].filter(member));
    };
    const gradSink = (start: number, count: number) => (point: string, g: Tensor) => {
      afterFirstForward();
      if (member(point)) data.get(point)!.grad!.data.set(g.data, (g.size / count) * start);
    };
    if (this.segments) {
      const segs = this.segments, last = segs.count - 1;
      const random = seededRandom(this.seed);
      // Boundaries the groups start from (activation before their first segment) and are seeded with
      // (∂L/∂ after their last segment), known once the first forward has planned the groups. Group 0's too:
      // a second traversal (mixed precision) records it again.
      let keep: { acts: Set<number>; grads: Set<number> } | null = null;
      const needed = () => {
        if (keep) return keep;
        keep = { acts: new Set(), grads: new Set() };
        for (let g = 0; g < this.groups().length; g++) {
          const [lo, hi] = this.segmentRange(g);
          if (lo > 0) keep.acts.add(lo - 1);
          if (this.withGradients) keep.grads.add(hi);
        }
        return keep;
      };
      const [lo, hi] = firstPass ? [0, last] : this.segmentRange(index);
      for (let start = 0; start < total; start += this.chunkSize) {
        const count = Math.min(this.chunkSize, total - start);
        chunkStart = start;
        chunkCount = count;
        const runner: Runner = this.withGradients ? new Tape(observer) : observer;
        let x = lo === 0 ? this.images.rows(start, start + count) : this.boundaries.read(`act:${lo - 1}`, start, count);
        const outputs: Tensor[] = [];
        for (segment = lo; segment <= hi; segment++) outputs.push((x = await segs.run(segment, x, runner)));
        afterFirstForward();
        if (firstPass) for (const s of needed().acts) this.boundaries.write(`act:${s}`, start, count, outputs[s]);
        if (this.withGradients) {
          const tape = runner as Tape;
          if (firstPass) {
            // The loss exactly as computeGradients forms it (same chunks, same random stream).
            const targets = lossTargets(this.loss, x, this.labels ? this.labels.subarray(start, start + count) : null, random);
            const { grad } = crossEntropyGrad(x, targets, total);
            const watch = new Map([...needed().grads].map((s) => [outputs[s], (g: Tensor) => this.boundaries.write(`grad:${s}`, start, count, g)] as const));
            await tape.backward(x, grad, gradSink(start, count), { points: wanted(), boundaries: watch });
          } else {
            await tape.backward(x, this.boundaries.read(`grad:${hi}`, start, count), gradSink(start, count), { points: wanted() });
          }
        }
        onImages(start + count);
      }
      this.segmentRuns += (hi - lo + 1) / segs.count;
    } else if (this.withGradients) {
      await computeGradients(
        this.model,
        this.images,
        this.labels,
        {
          loss: this.loss,
          chunkSize: this.chunkSize,
          seed: this.seed,
          runner: observer,
          // Only the group's gradients, and the backward pass stops below the group's first point.
          points: wanted,
          onChunk: (range, stage) => {
            if (stage === 'start') {
              chunkStart = range.start;
              chunkCount = range.count;
            } else onImages(range.start + range.count);
          },
        },
        (chunk, point, g) => gradSink(chunk.start, chunk.count)(point, g),
      );
      this.segmentRuns += 1;
    } else {
      for (let start = 0; start < total; start += this.chunkSize) {
        chunkStart = start;
        chunkCount = Math.min(this.chunkSize, total - start);
        const chunk = this.images.rows(start, start + chunkCount);
        try {
          await this.model.forward(chunk, observer);
        } catch (e) {
          if (!(e instanceof GroupRecorded)) throw e;
        }
        afterFirstForward();
        onImages(start + chunkCount);
      }
      this.segmentRuns += 1;
    }
    return data;
  }

  private admit: (name: string, bytes: number) => void = () => {};
}

/** Floats of a point's records: what decides whether its search is worth a worker. */
function recordFloats(d: PointData): number {
  return d.inputs.reduce((n, t) => n + t.size, 0) + d.output.size + (d.grad?.size ?? 0);
}

function returned(t: Tensor | null | undefined): Tensor {
  if (!t) throw new Error('a search worker did not return a record it borrowed');
  return t;
}

/**
 * Search one point: in a worker of `pool` when there is one and the point is large enough, else here. A worker
 * borrows the records (their buffers move to it and back, uncopied), so they are re-attached to `d` after.
 */
async function searchPoint(point: QuantPoint, d: PointData, params: Map<string, LinearParams>, opts: SearchConfig, pool: (floats: number) => SearchPool | null): Promise<PointQuant> {
  const worker = workerSafe(opts) ? pool(recordFloats(d)) : null;
  if (point.kind === 'matmul') {
    const rec = { point: point.name, heads: point.heads ?? 1, a: d.inputs[0], b: d.inputs[1], out: d.output, grad: d.grad, postSoftmax: point.input === 'post-softmax' };
    if (!worker) return searchMatmul(rec, opts);
    const { result, records } = await worker.search(matmulTask(rec, opts), opts.stats);
    [d.inputs[0], d.inputs[1], d.output, d.grad] = [returned(records.a), returned(records.b), returned(records.out), records.grad];
    return result;
  }
  const w = params.get(point.name);
  if (!w) throw new Error(`weights of '${point.name}' were not seen during recording`);
  // With the bias folded into the target, the search sees O − b and no bias (what it computes anyway).
  const bias = d.biasFolded ? null : w.bias;
  const rec = { point: point.name, kind: point.kind, x: d.inputs[0], weight: w.weight, bias, out: d.output, grad: d.grad, weightGroups: point.weightGroups ?? 1, postGelu: point.input === 'post-gelu', activation: point.activation };
  if (!worker) return searchLinear(rec, opts);
  const { result, records } = await worker.search(linearTask(rec, opts), opts.stats);
  [d.inputs[0], d.output, d.grad] = [returned(records.x), returned(records.out), records.grad];
  return result;
}

/** One point during a traversal of the calibration session, with its records in memory. */
export interface PointVisit {
  point: QuantPoint;
  /** Search this point's scales under a configuration (any number of times, while the visit lasts). */
  search: (cfg: SearchConfig) => Promise<PointQuant>;
  /** What the search sees: FP32 inputs, output (O − b when the bias is folded) and ∂L/∂O over the whole set. */
  records: { inputs: readonly Tensor[]; output: Tensor; grad: Tensor | null };
}

export interface SessionOptions {
  withGradients: boolean;
  chunkSize: number;
  groupBytes: number;
  loss: LossKind;
  seed: number;
  /** Store O − b for linear points (only when every search uses the Hessian metric). */
  foldBias: boolean;
  /** Recompute groups from segment boundaries (CalibrationOptions.recompute); default: when the model has segments. */
  recompute?: boolean;
  /** Boundary records held in memory (default BOUNDARY_MEMORY_BYTES); the rest go to a temporary file. */
  boundaryBytes?: number;
  /** Search workers (CalibrationOptions.searchWorkers); 0: every search in this thread. */
  searchWorkers?: number;
  searchWorkerMinFloats?: number;
  /** CalibrationOptions.pipeline. */
  pipeline?: boolean;
  onProgress?: (event: CalibrationProgress) => void;
}

/**
 * The recordings of one calibration set, visited group by group. A traversal records each group (one pass
 * over the images), visits its points, and frees them. With `keepLastGroup` the last group's records stay
 * in memory and the next traversal starts with them, so a second traversal of a model whose points fit one
 * group (the CIFAR models at 32 images) records nothing again: mixed precision measures sensitivities in
 * the first traversal and searches the chosen widths in the second.
 */
export class CalibrationSession {
  private readonly rec: Recording;
  private readonly byName: Map<string, QuantPoint>;
  private held: { group: number; data: Map<string, PointData> } | null = null;
  private pool: SearchPool | null = null;
  /** Whether a concurrent traversal records the next group while the previous one's searches run (opts.pipeline). */
  private readonly pipelined: boolean;
  /** Seconds spent in recording passes so far, and their number. */
  recordSeconds = 0;
  passes = 0;
  /** Groups recorded while earlier groups' visits were still running. */
  recordedDuringSearch = 0;

  constructor(readonly model: VisionModel, images: Tensor, labels: Int32Array | null, private readonly opts: SessionOptions) {
    const segments = opts.recompute === false ? null : (model.segments ?? null);
    this.pipelined = opts.pipeline !== false && this.workers > 0;
    // Pipelined, a group is recorded while the previous one is searched: the groups after the first get half the
    // budget each, so that two fit it. The first keeps all of it, so that a model whose records fit one group
    // (the CIFAR models) is still recorded in one pass.
    const laterBytes = this.pipelined ? opts.groupBytes / 2 : opts.groupBytes;
    this.rec = new Recording(model, images, labels, opts.withGradients, opts.chunkSize, opts.groupBytes, laterBytes, opts.loss, opts.seed, opts.foldBias, segments, opts.boundaryBytes);
    this.byName = new Map(model.quantPoints.map((p) => [p.name, p]));
  }

  /** Most searches that ran at once in the workers so far (0: no worker was used). */
  get concurrentSearches(): number {
    return this.pool?.mostRunning ?? this.mostRunning;
  }
  private mostRunning = 0;

  /** Recording work so far in whole forward(+backward) passes (segments run / segments per pass). */
  get passEquivalents(): number {
    return this.rec.segmentRuns;
  }

  /** Free the boundary records (and their temporary file, if any) and stop the search workers. */
  async close(): Promise<void> {
    this.rec.close();
    this.mostRunning = Math.max(this.mostRunning, this.pool?.mostRunning ?? 0);
    await this.pool?.close();
    this.pool = null;
  }

  /** Workers searching at once (0: none). */
  private get workers(): number {
    return Math.max(0, Math.floor(this.opts.searchWorkers ?? defaultSearchWorkers()));
  }

  /** Whether a point with records of `floats` floats is searched in a worker. */
  private inWorker(floats: number): boolean {
    return this.workers > 0 && floats >= (this.opts.searchWorkerMinFloats ?? WORKER_MIN_FLOATS);
  }

  /**
   * The worker pool for a point with records of `floats` floats, or null (search here): started on first use,
   * so a calibration whose points are all small never starts it.
   */
  private searchPool = (floats: number): SearchPool | null => {
    if (!this.inWorker(floats)) return null;
    this.pool ??= new SearchPool(this.workers, ortThreads());
    return this.pool;
  };

  /** Number of groups (known after the first recording pass). */
  get groups(): number {
    return this.rec.groups().length;
  }

  private async record(g: number): Promise<Map<string, PointData>> {
    const t0 = performance.now();
    const total = this.rec.totalImages;
    const data = await this.rec.record(g, (done) => this.opts.onProgress?.({ phase: 'record', group: g + 1, groups: this.rec.groups().length, images: done, totalImages: total }));
    this.recordSeconds += (performance.now() - t0) / 1000;
    this.passes++;
    return data;
  }

  /**
   * Visit every point, group by group. With `concurrent`, up to `searchWorkers` visits run at once (their
   * searches go to the workers), each freeing its point's records when it ends. Pipelined (`concurrent` and
   * opts.pipeline), the next group is recorded while the previous groups' visits still run — as long as the
   * records held at once stay within opts.groupBytes (or within one group, for a point larger than that);
   * otherwise a group's visits all end before the next group is recorded.
   */
  async forEachPoint(visit: (v: PointVisit) => Promise<void>, options: { keepLastGroup?: boolean; concurrent?: boolean } = {}): Promise<void> {
    const held = this.held;
    this.held = null;
    const concurrency = options.concurrent ? Math.max(1, this.workers) : 1;
    const pipelined = options.concurrent === true && this.pipelined;
    // The held group first (no recording), then the others in forward order. The first traversal learns
    // the plan while it records group 0.
    const order: number[] = [held ? held.group : 0];
    const inFlight = new Set<Promise<void>>();
    /** Groups whose visits may still run, with the bytes of their records. */
    const live: { bytes: number; visits: Promise<void>[] }[] = [];
    let failure: { error: unknown } | null = null;
    for (let i = 0; i < order.length && !failure; i++) {
      const group = order[i];
      // The records held while this group is recorded: its own and those of the groups still searched.
      const bytes = i === 0 ? 0 : this.rec.groupBytes(group);
      while (live.length > 0 && (!pipelined || live.reduce((sum, g) => sum + g.bytes, 0) + bytes > this.opts.groupBytes)) await Promise.all(live.shift()!.visits);
      if (failure) break;
      if (inFlight.size > 0 && !(held && held.group === group)) this.recordedDuringSearch++;
      const data = held && held.group === group ? held.data : await this.record(group);
      if (failure) break; // a visit of an earlier group failed while this one was recorded
      if (i === 0) for (let k = 0; k < this.groups; k++) if (k !== group) order.push(k);
      const keep = i === order.length - 1 && options.keepLastGroup === true;
      const visits: Promise<void>[] = [];
      live.push({ bytes: this.rec.groupBytes(group), visits });
      for (const name of this.rec.groups()[group]) {
        const d = data.get(name)!;
        const point = this.byName.get(name)!;
        // (Measured before the visit: a search in a worker borrows the records until it ends.)
        const inWorker = this.inWorker(recordFloats(d));
        const done: Promise<void> = visit({ point, search: (cfg) => searchPoint(point, d, this.rec.linearParams, cfg, this.searchPool), records: d }).then(
          () => {
            if (!keep) data.delete(name); // free this point's records before searching the next
          },
          (error: unknown) => {
            failure ??= { error };
          },
        );
        visits.push(done);
        inFlight.add(done);
        void done.then(() => inFlight.delete(done));
        // A point searched in this thread ends before the next one starts (the workers' searches go on meanwhile).
        if (!inWorker) await done;
        else if (inFlight.size >= concurrency) await Promise.race(inFlight);
        if (failure) break;
      }
      if (keep) this.held = { group, data };
    }
    await Promise.all(inFlight);
    if (failure) throw (failure as { error: unknown }).error;
  }
}

/** Recording settings shared by the configurations of one calibration run (the first configuration's). */
export function sessionOptions(model: VisionModel, configs: readonly CalibrationOptions[]): SessionOptions {
  const first = configs[0];
  return {
    withGradients: configs.some((c) => c.metric === 'hessian'),
    chunkSize: first.chunkSize ?? defaultChunkSize(model.spec.arch),
    groupBytes: first.groupBytes ?? DEFAULT_GROUP_BYTES,
    loss: first.loss,
    seed: first.seed,
    foldBias: configs.every((c) => c.metric === 'hessian'),
    recompute: first.recompute,
    searchWorkers: first.searchWorkers,
    searchWorkerMinFloats: first.searchWorkerMinFloats,
    pipeline: first.pipeline,
    onProgress: first.onProgress,
  };
}

/**
 * Search seconds per configuration: the wall search time split by each configuration's share of the summed
 * search durations (with search workers, searches of two points overlap, so the durations add up to more).
 */
export function splitWallSeconds(durationsMs: readonly number[], wallSeconds: number): number[] {
  const total = durationsMs.reduce((a, b) => a + b, 0);
  return durationsMs.map((ms) => (total > 0 ? (wallSeconds * ms) / total : 0));
}

/**
 * Calibrate under several search configurations at once (e.g. W8A8 and W6A6): each group is recorded once
 * and searched under every configuration. All configurations share the loss and seed of the first; records
 * carry gradients if any configuration uses the Hessian metric.
 */
export async function calibrateMany(model: VisionModel, images: Tensor, labels: Int32Array | null, configs: readonly CalibrationOptions[]): Promise<{ results: PointQuant[][]; timing: CalibrationTiming }> {
  if (configs.length === 0) return { results: [], timing: { recordSeconds: 0, searchSeconds: 0, searchSecondsPerConfig: [], groups: 0 } };
  const session = new CalibrationSession(model, images, labels, sessionOptions(model, configs));
  const chosen = configs.map(() => new Map<string, PointQuant>());
  const totalSearches = model.quantPoints.length * configs.length;
  let searched = 0;
  const perConfigMs = configs.map(() => 0);
  const t0 = performance.now();
  try {
    await session.forEachPoint(
      async ({ point, search }) => {
        for (let c = 0; c < configs.length; c++) {
          const ts = performance.now();
          chosen[c].set(point.name, await search(configs[c]));
          perConfigMs[c] += performance.now() - ts;
          configs[0].onProgress?.({ phase: 'search', done: ++searched, total: totalSearches, point: point.name });
        }
      },
      { concurrent: true },
    );
  } finally {
    await session.close();
  }
  const searchSeconds = (performance.now() - t0) / 1000 - session.recordSeconds;
  const results = chosen.map((m) => model.quantPoints.map((p) => m.get(p.name)!));
  return { results, timing: { recordSeconds: session.recordSeconds, searchSeconds, searchSecondsPerConfig: splitWallSeconds(perConfigMs, searchSeconds), groups: session.groups, passEquivalents: session.passEquivalents, concurrentSearches: session.concurrentSearches, recordedDuringSearch: session.recordedDuringSearch } };
}

export async function calibrate(model: VisionModel, images: Tensor, labels: Int32Array | null, opts: CalibrationOptions): Promise<PointQuant[]> {
  return (await calibrateMany(model, images, labels, [opts])).results[0];
}
