/**
 * Running an exported ONNX model where users run it: onnxruntime-node (what ptq4vit itself uses),
 * onnxruntime-web's wasm backend in Node, and transformers.js's image-classification pipeline on a folder
 * written by writeHfDir. These take ONNX bytes / folders, not a particular model: any exported graph with
 * input `pixel_values` [batch, 3, S, S] and output `logits` [batch, classes] runs through them. For many
 * batches (test1k) keep one session open with openOrtWeb / openOrtNode instead of runOrtWeb / runOrtNode.
 *
 * onnxruntime-web and @huggingface/transformers are devDependencies: only tests and scripts import this.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import ortNode from 'onnxruntime-node';
import * as ortWeb from 'onnxruntime-web';
import { openImageFolder } from '../src/data/folder.js';
import { evalTransform } from '../src/data/transform.js';
import type { ModelSpec } from '../src/models/types.js';

/** A batch of model inputs or outputs: float32, row-major. */
export interface Batch {
  data: Float32Array;
  dims: number[];
}

const require = createRequire(import.meta.url);

/**
 * Where onnxruntime-web's .wasm/.mjs files are: its dist/ folder (require.resolve gives dist/ort.node.min.js).
 * Set explicitly so the wasm backend never looks anywhere but node_modules (it fetches nothing).
 */
export const ortWebDist = path.dirname(require.resolve('onnxruntime-web'));

let ortWebReady = false;
function setUpOrtWeb(): void {
  if (ortWebReady) return;
  ortWeb.env.wasm.wasmPaths = `${pathToFileURL(ortWebDist).href}/`;
  ortWeb.env.wasm.numThreads = 1; // no worker threads: deterministic, and fair beside a 1-thread ORT-node run
  ortWeb.env.logLevel = 'error';
  ortWebReady = true;
}

export interface OrtModel {
  /** pixel_values [B, 3, H, W] → logits [B, classes]. */
  run(pixelValues: Batch): Promise<Batch>;
  release(): Promise<void>;
}

/** onnxruntime-web, wasm backend, one thread. Keep the model open for many batches (test1k). */
export async function openOrtWeb(bytes: Uint8Array): Promise<OrtModel> {
  setUpOrtWeb();
  const session = await ortWeb.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  return {
    async run(x) {
      const out = await session.run({ pixel_values: new ortWeb.Tensor('float32', x.data, x.dims) });
      return toBatch(out.logits as { data: unknown; dims: readonly number[] });
    },
    release: () => session.release(),
  };
}

/** onnxruntime-node, CPU, `threads` intra-op threads: the reference the other runtimes are compared with. */
export async function openOrtNode(bytes: Uint8Array, threads = 1): Promise<OrtModel> {
  const session = await ortNode.InferenceSession.create(bytes, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
  });
  return {
    async run(x) {
      const out = await session.run({ pixel_values: new ortNode.Tensor('float32', x.data, x.dims) });
      return toBatch(out.logits as { data: unknown; dims: readonly number[] });
    },
    release: () => session.release(),
  };
}

function toBatch(t: { data: unknown; dims: readonly number[] }): Batch {
  if (!(t.data instanceof Float32Array)) throw new Error('the model output `logits` is not float32');
  return { data: t.data, dims: [...t.dims] };
}

/** One batch through onnxruntime-web's wasm backend: logits [B, classes]. */
export async function runOrtWeb(bytes: Uint8Array, pixelValues: Batch): Promise<Batch> {
  const model = await openOrtWeb(bytes);
  try {
    return await model.run(pixelValues);
  } finally {
    await model.release();
  }
}

/** One batch through onnxruntime-node: logits [B, classes]. */
export async function runOrtNode(bytes: Uint8Array, pixelValues: Batch, threads = 1): Promise<Batch> {
  const model = await openOrtNode(bytes, threads);
  try {
    return await model.run(pixelValues);
  } finally {
    await model.release();
  }
}

export interface TransformersJsResult {
  /** Top-1 label per image. */
  labels: string[];
  /** Softmax scores per image in class-id order (label2id of the folder's config.json). */
  scores: Float32Array[];
}

export interface TransformersJsOptions {
  /** Which ONNX file: 'fp32' → onnx/model.onnx, 'q8' → onnx/model_quantized.onnx, 'q4' → onnx/model_q4.onnx. */
  dtype: 'fp32' | 'q8' | 'q4';
  /**
   * transformers.js device. In Node it offers only 'cpu' (onnxruntime-node; its 'wasm' device is browser-only:
   * "Unsupported device: wasm. Should be one of: cuda, webgpu, cpu"), so its wasm path is covered by openOrtWeb.
   */
  device?: 'cpu';
  /** Images per pipeline call (default 16). */
  batchSize?: number;
}

/**
 * Load DIR with transformers.js exactly as a user would, offline (remote models off, the folder's parent
 * as the local model path), and classify image files with pipeline('image-classification').
 */
export async function runTransformersJs(dir: string, images: readonly string[], options: TransformersJsOptions = { dtype: 'fp32' }): Promise<TransformersJsResult> {
  const { env, pipeline } = await import('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = `${path.dirname(path.resolve(dir))}/`;
  const classify = await pipeline('image-classification', path.basename(path.resolve(dir)), { dtype: options.dtype, device: options.device ?? 'cpu' });
  try {
    const label2id = (classify.model.config as unknown as { label2id: Record<string, number> }).label2id;
    const classes = Object.keys(label2id).length;
    const labels: string[] = [];
    const scores: Float32Array[] = [];
    const batchSize = options.batchSize ?? 16;
    for (let start = 0; start < images.length; start += batchSize) {
      const chunk = images.slice(start, start + batchSize);
      const out = (await classify([...chunk], { top_k: classes })) as { label: string; score: number }[][];
      for (const ranked of out) {
        const row = new Float32Array(classes);
        for (const { label, score } of ranked) row[label2id[label]] = score;
        labels.push(ranked[0].label);
        scores.push(row);
      }
    }
    return { labels, scores };
  } finally {
    await classify.dispose();
  }
}

/** Row-wise softmax of logits [B, C] (float64 accumulation), to compare with a pipeline's scores. */
export function softmaxRows(logits: Batch): Float32Array[] {
  const [rows, cols] = logits.dims;
  const out: Float32Array[] = [];
  for (let r = 0; r < rows; r++) {
    const row = logits.data.subarray(r * cols, (r + 1) * cols);
    const max = Math.max(...row);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    out.push(Float32Array.from(row, (v) => Math.exp(v - max) / sum));
  }
  return out;
}

export function argmaxRows(logits: Batch): number[] {
  return argmaxPerRow(logits.data, logits.dims[1]);
}

/** The index of the largest value in each row of `cols` values (first on ties). */
export function argmaxPerRow(data: Float32Array, cols: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < data.length / cols; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (data[r * cols + c] > data[r * cols + best]) best = c;
    out.push(best);
  }
  return out;
}

/**
 * transformers.js's image processor for DIR (AutoImageProcessor on its preprocessor_config.json) applied to
 * image files as its pipeline does (RawImage.read): pixel_values [3, H, W] per image.
 */
export async function runHfProcessor(dir: string, images: readonly string[]): Promise<Batch[]> {
  const { env, AutoImageProcessor, RawImage } = await import('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = `${path.dirname(path.resolve(dir))}/`;
  const processor = await AutoImageProcessor.from_pretrained(path.basename(path.resolve(dir)));
  const out: Batch[] = [];
  for (const file of images) {
    const { pixel_values } = await processor(await RawImage.read(file));
    out.push({ data: Float32Array.from(pixel_values.data as Float32Array), dims: pixel_values.dims.slice(1) });
  }
  return out;
}

/**
 * transformers.js's labels for `count` images spread over an image folder, loading `dir` (written by writeHfDir)
 * with `dtype`, beside the labels onnxruntime-node's argmax of `onnx` gives on our preprocessing of the same files
 * (`LABEL_c`). For images at the model's resolution both see the same pixels up to float rounding.
 */
export async function transformersJsVsNode(dir: string, onnx: Uint8Array, spec: ModelSpec, images: string, count: number, dtype: TransformersJsOptions['dtype']): Promise<{ got: string[]; node: string[] }> {
  const folder = await openImageFolder(images);
  const picks = Array.from({ length: count }, (_, i) => Math.floor((i * folder.size) / count));
  const S = spec.preprocess.inputSize;
  const pixels = new Float32Array(picks.length * 3 * S * S);
  for (let i = 0; i < picks.length; i++) pixels.set(evalTransform(await folder.image(picks[i]), spec.preprocess), i * 3 * S * S);
  const logits = await runOrtNode(onnx, { data: pixels, dims: [picks.length, 3, S, S] });
  const got = await runTransformersJs(dir, picks.map((i) => folder.itemName(i)), { dtype });
  return { got: got.labels, node: argmaxPerRow(logits.data, spec.arch.numClasses).map((c) => `LABEL_${c}`) };
}
