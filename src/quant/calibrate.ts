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
import { Ptq4vitError } from '../errors.js';
import type { Arch, ForwardSegments, QuantPoint, Runner, VisionModel } from '../models/types.js';
import { linear as linearFp, matmul as matmulFp } from '../tensor/gemm.js';
import { ortThreads } from '../tensor/ort.js';
import { numel, Tensor } from '../tensor/tensor.js';
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
   * are search workers). With records in memory, the groups after the first are then planned at half of
   * `groupBytes`, so that two of them are held at once within it; with record files (recordFileBytes), a group is
   * recorded to its file while the previous one is searched. The chosen scales are the same either way.
   */
  pipeline?: boolean;
  /**
   * Bytes of a group's records that may go to a temporary file besides the `groupBytes` in memory (default
   * DEFAULT_RECORD_FILE_BYTES; 0: none, every group fits `groupBytes`). When the records outgrow `groupBytes`,
   * the groups are planned at this budget instead (group 0: both together) — far fewer, larger groups, so
   * fewer recording passes — and each point's records are read back from the file when its search starts,
   * as many at once as fit `groupBytes`. The chosen scales are the same either way.
   */
  recordFileBytes?: number;
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

/**
 * Default record-file budget per group: ViT-B/16-224 at 128 images records ~3 GB per block, so a group spans
 * about a block and a half; a pipelined traversal has two groups' files at once (8 GiB of temporary disk).
 */
export const DEFAULT_RECORD_FILE_BYTES = 4 * 2 ** 30;

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
  /** Groups whose records went (wholly or partly) to a temporary file (CalibrationOptions.recordFileBytes). */
  groupsInFiles?: number;
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
 * An unlinked temporary file of float32 records, its space handed out in regions: nothing is left behind
 * (the data live as long as the open descriptor), and the space is the operating system's again on close.
 */
class TempFile {
  private fd: number | null = null;
  private size = 0;

  constructor(private readonly prefix: string) {}

  /** A region of `bytes` bytes; returns its offset. */
  allocate(bytes: number): number {
    const at = this.size;
    this.size += bytes;
    return at;
  }

  write(offset: number, data: Float32Array): void {
    try {
      fs.writeSync(this.open(), new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 0, data.byteLength, offset);
    } catch (e) {
      throw new Ptq4vitError(`calibration: could not write records to a temporary file in ${os.tmpdir()} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): free space there, point TMPDIR elsewhere, or lower recordFileBytes`);
    }
  }

  read(offset: number, floats: number): Float32Array {
    const out = new Float32Array(floats);
    fs.readSync(this.open(), new Uint8Array(out.buffer), 0, out.byteLength, offset);
    return out;
  }

  private open(): number {
    if (this.fd === null) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), this.prefix));
      const file = path.join(dir, 'records.f32');
      this.fd = fs.openSync(file, 'w+');
      fs.rmSync(dir, { recursive: true, force: true }); // unlinked: the open descriptor keeps the data until closed
    }
    return this.fd;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    this.size = 0;
  }
}

/**
 * Full-set tensors at segment boundaries (activations, ∂L/∂), written and read chunk by chunk. Within
 * `memoryBytes` they live in memory, the rest in a temporary file, which keeps recompute's memory bounded
 * for ImageNet-sized models and many images.
 */
class BoundaryStore {
  private readonly entries = new Map<string, { data: Float32Array | null; offset: number; perImage: number; shape: number[]; lead: number }>();
  private used = 0;
  private readonly file = new TempFile('ptq4vit-boundaries-');

  constructor(private readonly totalImages: number, private memoryBytes: number) {}

  /** Keep every boundary in the file (before the first write): the memory is the searches' then. */
  allInFile(): void {
    if (this.entries.size > 0) throw new Error('calibration: boundaries already written');
    this.memoryBytes = 0;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  write(key: string, start: number, count: number, t: Tensor): void {
    let e = this.entries.get(key);
    if (!e) {
      const perImage = t.size / count, bytes = 4 * perImage * this.totalImages;
      const inMemory = this.used + bytes <= this.memoryBytes;
      e = { data: inMemory ? new Float32Array(perImage * this.totalImages) : null, offset: inMemory ? 0 : this.file.allocate(bytes), perImage, shape: t.shape.slice(1), lead: t.shape[0] / count };
      if (inMemory) this.used += bytes;
      this.entries.set(key, e);
    }
    if (e.data) e.data.set(t.data, e.perImage * start);
    else this.file.write(e.offset + 4 * e.perImage * start, t.data);
  }

  read(key: string, start: number, count: number): Tensor {
    const e = this.entries.get(key);
    if (!e) throw new Error(`calibration: boundary '${key}' was not recorded`);
    const shape = [e.lead * count, ...e.shape];
    if (e.data) return new Tensor(e.data.slice(e.perImage * start, e.perImage * (start + count)), shape);
    return new Tensor(this.file.read(e.offset + 4 * e.perImage * start, e.perImage * count), shape);
  }

  close(): void {
    this.file.close();
    this.entries.clear();
  }
}

/**
 * One full-set record tensor (a point's input, output or ∂L/∂O over every image): in memory, or in its
 * group's temporary file until the point is visited. Chunks fill it row range by row range.
 */
class RecordSlot {
  private constructor(
    readonly shape: number[],
    private readonly data: Float32Array | null,
    private readonly file: { store: TempFile; offset: number } | null,
  ) {}

  static inMemory(shape: number[]): RecordSlot {
    return new RecordSlot(shape, new Float32Array(numel(shape)), null);
  }

  static inFile(shape: number[], store: TempFile): RecordSlot {
    return new RecordSlot(shape, null, { store, offset: store.allocate(4 * numel(shape)) });
  }

  /** Write `rows` as floats [at, at + rows.length). */
  put(at: number, rows: Float32Array): void {
    if (this.data) this.data.set(rows, at);
    else this.file!.store.write(this.file!.offset + 4 * at, rows);
  }

  /**
   * Write floats [at, at + length) through `fill`, which fills the target array it is given (for rows that are
   * transformed on the way: a file slot fills a scratch array first).
   */
  fill(at: number, length: number, fill: (target: Float32Array) => void): void {
    if (this.data) return fill(this.data.subarray(at, at + length));
    const rows = new Float32Array(length);
    fill(rows);
    this.put(at, rows);
  }

  /** The whole tensor (the slot's own buffer in memory, a fresh copy read from the file). */
  load(): Tensor {
    if (this.data) return new Tensor(this.data, this.shape);
    return new Tensor(this.file!.store.read(this.file!.offset, numel(this.shape)), this.shape);
  }
}

/** A recorded point: its records' slots, and the bytes its search holds (floatsPerImage). */
interface StoredPoint {
  inputs: RecordSlot[];
  output: RecordSlot;
  grad: RecordSlot | null;
  biasFolded: boolean;
  /** Its records are in the group's temporary file (read back when the point is visited). */
  inFile: boolean;
  bytes: number;
  /**
   * An in-memory point's records as the search sees them, made once: a search worker borrows their buffers
   * and hands back new ones, which a later traversal (mixed precision's) must find here.
   */
  loaded: PointData | null;
}

/** The point's records for a visit: read from the file (a fresh copy each time), or the in-memory ones. */
function loadPoint(s: StoredPoint): PointData {
  const load = (): PointData => ({ inputs: s.inputs.map((slot) => slot.load()), output: s.output.load(), grad: s.grad?.load() ?? null, biasFolded: s.biasFolded });
  return s.inFile ? load() : (s.loaded ??= load());
}

/** One group's recording: its points, and the temporary file of those that do not stay in memory. */
interface RecordedGroup {
  points: Map<string, StoredPoint>;
  file: TempFile | null;
}

/** What a Recording is set up with (CalibrationSession derives it from SessionOptions). */
interface RecordingOptions {
  withGradients: boolean;
  chunkSize: number;
  /** Records of a group held in memory (CalibrationOptions.groupBytes). */
  budgetBytes: number;
  /** The memory budget of the groups after the first (a pipelined traversal holds two of them at once). */
  laterBudgetBytes: number;
  /** Records of a group that may go to its temporary file besides (CalibrationOptions.recordFileBytes; 0: none). */
  fileBytes: number;
  loss: LossKind;
  seed: number;
  /** Store O − b for linear points (only when every configuration uses the Hessian metric). */
  foldBias: boolean;
  /** Record groups by recomputing their segments from boundary records (null: whole passes). */
  segments: ForwardSegments | null;
  boundaryBytes: number;
}

/** Thrown by the recording runner to end a forward pass once the group's last point has run. */
class GroupRecorded extends Error {}

/** State shared by the recording passes: what the first pass learns about every point. */
class Recording {
  /**
   * Bytes of each point's records over the whole set (floatsPerImage), in forward order: learned in the first
   * chunk of pass 1.
   */
  private readonly bytesOf = new Map<string, number>();
  readonly linearParams = new Map<string, LinearParams>();
  private plan: string[][] | null = null;

  constructor(
    readonly model: VisionModel,
    readonly images: Tensor,
    readonly labels: Int32Array | null,
    private readonly opts: RecordingOptions,
  ) {
    this.boundaries = new BoundaryStore(images.shape[0], opts.boundaryBytes);
  }

  /**
   * Whether groups go to record files: decided in the first pass, when group 0's records outgrow the memory
   * budget and a file budget is set. Group 0 then keeps the points that fit the memory budget in memory; every
   * later group is planned at the file budget and written to its file whole, and the boundaries go to a file too.
   */
  spilling = false;

  /** The segment each point runs in (learned in the first pass, with segments). */
  private readonly segmentOf = new Map<string, number>();
  private readonly boundaries: BoundaryStore;
  /** Segments run so far, over all images, in whole-pass units (segments.count per pass). */
  segmentRuns = 0;

  /** Bytes of group `index`'s records over the whole set. */
  groupBytes(index: number): number {
    return this.groups()[index].reduce((sum, name) => sum + this.bytesOf.get(name)!, 0);
  }

  /** First and last segment of group `index`'s points. */
  private segmentRange(index: number): [number, number] {
    const segs = this.groups()[index].map((name) => this.segmentOf.get(name)!);
    return [Math.min(...segs), Math.max(...segs)];
  }

  /** Record files not closed yet (a traversal closes each once its group is searched). */
  private readonly files = new Set<TempFile>();

  close(): void {
    this.boundaries.close();
    for (const f of this.files) f.close();
    this.files.clear();
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
  async record(index: number, onImages: (done: number) => void): Promise<RecordedGroup> {
    const total = this.totalImages;
    const data = new Map<string, StoredPoint>();
    const points = new Map(this.model.quantPoints.map((p) => [p.name, p]));
    const firstPass = this.plan === null;
    const { budgetBytes, fileBytes } = this.opts;
    let member: (name: string) => boolean;
    let inFile: (name: string) => boolean;
    let lastMember: string | null = null;
    if (firstPass) {
      // Greedy admission in forward order, exactly as planGroups will decide group 0: in memory within the
      // budget, then (with a file budget) in the record file up to both budgets together.
      let used = 0, open = true;
      const admitted = new Map<string, { inFile: boolean }>();
      member = (name) => admitted.has(name);
      inFile = (name) => admitted.get(name)?.inFile === true;
      this.admit = (name, bytes) => {
        if (!open) return;
        if (admitted.size === 0 || used + bytes <= budgetBytes) admitted.set(name, { inFile: false });
        else if (fileBytes > 0 && used + bytes <= budgetBytes + fileBytes) admitted.set(name, { inFile: (this.spilling = true) });
        else {
          open = false;
          this.spilling = fileBytes > 0;
          return;
        }
        used += bytes;
      };
    } else {
      const group = new Set(this.groups()[index]);
      member = (name) => group.has(name);
      inFile = () => this.spilling;
      lastMember = this.groups()[index].at(-1)!;
    }
    let file: TempFile | null = null;
    const groupFile = (): TempFile => {
      if (!file) this.files.add((file = new TempFile('ptq4vit-records-')));
      return file;
    };
    const slot = (point: string, shape: number[]) => (inFile(point) ? RecordSlot.inFile(shape, groupFile()) : RecordSlot.inMemory(shape));

    const store = (point: string, start: number, count: number, output: Tensor, inputs: Tensor[]) => {
      const info = points.get(point);
      if (!info) throw new Error(`the forward pass called unknown quantization point '${point}'`);
      let d = data.get(point);
      const linear = this.linearParams.get(point);
      const foldBias = this.opts.foldBias && info.kind !== 'matmul' && linear?.bias != null;
      const transB = info.kind === 'matmul' && info.transB === true;
      if (!d) {
        const ins = inputs.map((t, i) => slot(point, fullShape(i === 1 && transB ? [t.shape[0], t.shape[2], t.shape[1]] : t.shape, count, total)));
        const outShape = fullShape(output.shape, count, total);
        d = { inputs: ins, output: slot(point, outShape), grad: this.opts.withGradients ? slot(point, outShape) : null, biasFolded: foldBias, inFile: inFile(point), bytes: this.bytesOf.get(point)!, loaded: null };
        data.set(point, d);
      }
      inputs.forEach((t, i) => {
        const at = (t.size / count) * start;
        if (i === 1 && transB) d.inputs[i].fill(at, t.size, (target) => transposeLastInto(t, target));
        else d.inputs[i].put(at, t.data);
      });
      const outAt = (output.size / count) * start;
      if (!foldBias) d.output.put(outAt, output.data);
      else
        d.output.fill(outAt, output.size, (out) => {
          out.set(output.data);
          const b = linear!.bias!.data, n = b.length;
          for (let i = 0; i < out.length; i++) out[i] -= b[i % n];
        });
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
        const bytes = 4 * floatsPerImage(inputs, output, chunkCount, this.opts.withGradients) * total;
        this.bytesOf.set(point, bytes);
        this.admit(point, bytes);
      }
      if (member(point)) store(point, chunkStart, chunkCount, output, inputs);
      // Without gradients the rest of the forward pass is not needed once the group is recorded.
      if (!this.opts.withGradients && !firstPass && !this.opts.segments && point === lastMember) throw new GroupRecorded();
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
      if (this.bytesOf.size !== this.model.quantPoints.length) {
        const missing = this.model.quantPoints.find((p) => !this.bytesOf.has(p.name));
        throw new Error(`quantization point '${missing?.name}' was never called in the forward pass`);
      }
      const order = [...this.bytesOf].map(([name, bytes]) => ({ name, bytes }));
      this.plan = this.spilling ? planGroups(order, budgetBytes + fileBytes, fileBytes) : planGroups(order, budgetBytes, this.opts.laterBudgetBytes);
      // With record files the boundaries go to a file too: read once per group and chunk, they cost little
      // there, and the memory they would take lets more records be searched at once.
      if (this.spilling) this.boundaries.allInFile();
    };

    const wanted = () => {
      afterFirstForward();
      return new Set([...points.keys()].filter(member));
    };
    const gradSink = (start: number, count: number) => (point: string, g: Tensor) => {
      afterFirstForward();
      if (member(point)) data.get(point)!.grad!.put((g.size / count) * start, g.data);
    };
    if (this.opts.segments) {
      const segs = this.opts.segments, last = segs.count - 1;
      const random = seededRandom(this.opts.seed);
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
          if (this.opts.withGradients) keep.grads.add(hi);
        }
        return keep;
      };
      const [lo, hi] = firstPass ? [0, last] : this.segmentRange(index);
      for (let start = 0; start < total; start += this.opts.chunkSize) {
        const count = Math.min(this.opts.chunkSize, total - start);
        chunkStart = start;
        chunkCount = count;
        const runner: Runner = this.opts.withGradients ? new Tape(observer) : observer;
        let x = lo === 0 ? this.images.rows(start, start + count) : this.boundaries.read(`act:${lo - 1}`, start, count);
        const outputs: Tensor[] = [];
        for (segment = lo; segment <= hi; segment++) outputs.push((x = await segs.run(segment, x, runner)));
        afterFirstForward();
        if (firstPass) for (const s of needed().acts) this.boundaries.write(`act:${s}`, start, count, outputs[s]);
        if (this.opts.withGradients) {
          const tape = runner as Tape;
          if (firstPass) {
            // The loss exactly as computeGradients forms it (same chunks, same random stream).
            const targets = lossTargets(this.opts.loss, x, this.labels ? this.labels.subarray(start, start + count) : null, random);
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
    } else if (this.opts.withGradients) {
      await computeGradients(
        this.model,
        this.images,
        this.labels,
        {
          loss: this.opts.loss,
          chunkSize: this.opts.chunkSize,
          seed: this.opts.seed,
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
      for (let start = 0; start < total; start += this.opts.chunkSize) {
        chunkStart = start;
        chunkCount = Math.min(this.opts.chunkSize, total - start);
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
    return { points: data, file };
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
  /** CalibrationOptions.recordFileBytes. */
  recordFileBytes?: number;
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
  private held: { group: number; recorded: RecordedGroup } | null = null;
  /** Bytes of records in memory: recorded in-memory points not yet freed, and points read back from a file for their visit. */
  private resident = 0;
  private pool: SearchPool | null = null;
  /** Whether a concurrent traversal records the next group while the previous one's searches run (opts.pipeline). */
  private readonly pipelined: boolean;
  /** Seconds spent in recording passes so far, and their number. */
  recordSeconds = 0;
  passes = 0;
  /** Groups recorded while earlier groups' visits were still running. */
  recordedDuringSearch = 0;
  /** Groups recorded (wholly or partly) to a record file. */
  groupsInFiles = 0;

  constructor(readonly model: VisionModel, images: Tensor, labels: Int32Array | null, private readonly opts: SessionOptions) {
    const segments = opts.recompute === false ? null : (model.segments ?? null);
    this.pipelined = opts.pipeline !== false && this.workers > 0;
    // Pipelined, a group is recorded while the previous one is searched: the groups after the first get half the
    // budget each, so that two fit it. The first keeps all of it, so that a model whose records fit one group
    // (the CIFAR models) is still recorded in one pass.
    const laterBytes = this.pipelined ? opts.groupBytes / 2 : opts.groupBytes;
    this.rec = new Recording(model, images, labels, {
      withGradients: opts.withGradients,
      chunkSize: opts.chunkSize,
      budgetBytes: opts.groupBytes,
      laterBudgetBytes: laterBytes,
      fileBytes: Math.max(0, opts.recordFileBytes ?? DEFAULT_RECORD_FILE_BYTES),
      loss: opts.loss,
      seed: opts.seed,
      foldBias: opts.foldBias,
      segments,
      boundaryBytes: opts.boundaryBytes ?? BOUNDARY_MEMORY_BYTES,
    });
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

  private async record(g: number): Promise<RecordedGroup> {
    const t0 = performance.now();
    const total = this.rec.totalImages;
    const recorded = await this.rec.record(g, (done) => this.opts.onProgress?.({ phase: 'record', group: g + 1, groups: this.rec.groups().length, images: done, totalImages: total }));
    for (const p of recorded.points.values()) if (!p.inFile) this.resident += p.bytes;
    this.recordSeconds += (performance.now() - t0) / 1000;
    this.passes++;
    if (recorded.file) this.groupsInFiles++;
    return recorded;
  }

  /**
   * Visit every point, group by group. With `concurrent`, up to `searchWorkers` visits run at once (their
   * searches go to the workers), each freeing its point's records when it ends. Pipelined (`concurrent` and
   * opts.pipeline), the next group is recorded while the previous groups' visits still run: in memory as long
   * as the records held at once stay within opts.groupBytes (or within one group, for a point larger than
   * that), in its record file while one earlier group is still searched; otherwise a group's visits all end
   * before the next group is recorded. A point recorded in a file is read back when its visit starts, once the
   * records in memory leave room for it within opts.groupBytes (or nothing else is searched).
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
    /** Groups whose visits may still run, with the bytes of their records and their record file. */
    const live: { bytes: number; visits: Promise<void>[]; file: TempFile | null }[] = [];
    /** Wait for the oldest live group's visits, then give its file's space back. */
    const retire = async () => {
      const oldest = live.shift()!;
      await Promise.all(oldest.visits);
      oldest.file?.close();
    };
    let failure: { error: unknown } | null = null;
    try {
      for (let i = 0; i < order.length && !failure; i++) {
        const group = order[i];
        // The records held while this group is recorded: its own and those of the groups still searched; in
        // files, the disk space of two groups at most.
        const bytes = i === 0 ? 0 : this.rec.groupBytes(group);
        const waitFirst = () => !pipelined || (this.rec.spilling ? live.length > 1 : live.reduce((sum, g) => sum + g.bytes, 0) + bytes > this.opts.groupBytes);
        while (live.length > 0 && waitFirst()) await retire();
        if (failure) break;
        const isHeld = held !== null && held.group === group;
        if (inFlight.size > 0 && !isHeld) this.recordedDuringSearch++;
        const recorded = isHeld ? held.recorded : await this.record(group);
        if (i === 0) for (let k = 0; k < this.groups; k++) if (k !== group) order.push(k);
        const keep = i === order.length - 1 && options.keepLastGroup === true;
        const visits: Promise<void>[] = [];
        live.push({ bytes: this.rec.groupBytes(group), visits, file: keep ? null : recorded.file });
        if (failure) break; // a visit of an earlier group failed while this one was recorded
        for (const name of this.rec.groups()[group]) {
          const stored = recorded.points.get(name)!;
          if (stored.inFile) {
            while (inFlight.size > 0 && this.resident + stored.bytes > this.opts.groupBytes && !failure) await Promise.race(inFlight);
            if (failure) break;
            this.resident += stored.bytes;
          }
          const d = loadPoint(stored);
          const point = this.byName.get(name)!;
          // (Measured before the visit: a search in a worker borrows the records until it ends.)
          const inWorker = this.inWorker(recordFloats(d));
          const done: Promise<void> = visit({ point, search: (cfg) => searchPoint(point, d, this.rec.linearParams, cfg, this.searchPool), records: d }).then(
            () => {
              // Free this point's records before searching the next (a file's copy in any case).
              if (stored.inFile) this.resident -= stored.bytes;
              if (keep) return;
              recorded.points.delete(name);
              if (!stored.inFile) this.resident -= stored.bytes;
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
        if (keep) this.held = { group, recorded };
      }
      await Promise.all(inFlight);
    } finally {
      await Promise.allSettled(inFlight);
      for (const g of live) g.file?.close();
    }
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
    recordFileBytes: first.recordFileBytes,
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
  return { results, timing: { recordSeconds: session.recordSeconds, searchSeconds, searchSecondsPerConfig: splitWallSeconds(perConfigMs, searchSeconds), groups: session.groups, passEquivalents: session.passEquivalents, concurrentSearches: session.concurrentSearches, recordedDuringSearch: session.recordedDuringSearch, groupsInFiles: session.groupsInFiles } };
}

export async function calibrate(model: VisionModel, images: Tensor, labels: Int32Array | null, opts: CalibrationOptions): Promise<PointQuant[]> {
  return (await calibrateMany(model, images, labels, [opts])).results[0];
}
