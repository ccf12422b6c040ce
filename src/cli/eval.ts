import path from 'node:path';
import { openDataset } from '../data/datasets.js';
import { evaluate } from '../eval/evaluate.js';
import { wholeModelGraph } from '../export/graph.js';
import { openOnnxModel } from '../export/runtime.js';
import { resolveSpec } from '../models/load.js';
import { isEmbeddingModel, outputDim, type VisionModel } from '../models/types.js';
import { Ptq4vitError } from '../errors.js';
import { fp32Runner } from '../tensor/runner.js';
import { embeddingFidelity, fidelityJson, fidelityRows } from './fidelity.js';
import { openModel } from '../open.js';
import type { Runner } from '../tensor/runner.js';
import { checkClasses, describeQuantization } from './describe.js';
import { applyCommon, commandHelp, FLOAT_CHECKPOINT_FLAGS, imgSizeFlag, intFlag, parse, requireFlag, type CommandSpec, type Values } from './args.js';
import { ProgressBar } from './progress.js';
import { printReport } from './report.js';

interface EvalTarget {
  model: VisionModel;
  runner?: Runner;
  /** FP32, the integer graph, the simulation… for the report. */
  what: string;
  quantized: boolean;
  /** A quantized .safetensors file's own float weights, as one FP32 graph (the default --reference). */
  reference?: () => Promise<EvalTarget>;
}

/**
 * What `eval --model` runs: an .onnx file as is; a checkpoint or quantized file exported in memory to one
 * whole-model graph (the quantized file as its integer graph); with --simulate, the op-by-op fake-quant
 * simulation that calibration measured.
 */
async function evalTarget(weights: string, v: Record<string, string | boolean | undefined>): Promise<EvalTarget> {
  const config = v.config as string | undefined, arch = v.arch as string | undefined;
  if (weights.toLowerCase().endsWith('.onnx')) {
    const spec = config || arch ? resolveSpec({ weights, config, arch }) : undefined;
    const opened = await openOnnxModel(weights, spec);
    return { model: opened.model, what: opened.quantized ? 'integer ONNX' : 'ONNX', quantized: opened.quantized };
  }
  const loaded = openModel({ weights, config, arch, imgSize: imgSizeFlag(v) });
  const label = loaded.quantized ? describeQuantization(loaded.quantized.provenance) : 'FP32';
  // Codes wider than 8 bits have no int8 container: such a file runs op by op (the simulation).
  const wide = loaded.quantized?.points.some((p) => (p.kind === 'matmul' ? Math.max(p.a.bits, p.b.bits) : Math.max(p.weightBits, p.input?.bits ?? 0)) > 8);
  if (v.simulate === true || wide) {
    const why = wide ? 'op by op: wider than 8 bits, no integer graph' : 'op by op';
    return { model: loaded.model, runner: loaded.runner, what: `${label}, ${why}`, quantized: loaded.quantized !== null };
  }
  const reference = loaded.quantized
    ? async (): Promise<EvalTarget> => ({ model: await wholeModelGraph({ ...loaded, runner: fp32Runner, quantized: null }, weights), what: 'FP32 (its float weights)', quantized: false })
    : undefined;
  return { model: await wholeModelGraph(loaded, weights), what: `${label}${loaded.quantized ? ', integer graph' : ''}`, quantized: loaded.quantized !== null, reference };
}

/** eval of a model without classifier: cosine of its embeddings to the reference's, k-NN top-1 of both. */
async function evalEmbedding(target: EvalTarget, v: Values, data: string, options: { limit?: number; batchSize: number }): Promise<void> {
  const { model } = target;
  const refPath = v.reference as string | undefined, knnPath = v['knn-train'] as string | undefined;
  let reference: EvalTarget | null = null;
  if (refPath !== undefined) {
    reference = await evalTarget(refPath, v);
    const a = reference.model.spec;
    if (!isEmbeddingModel(a.arch) || outputDim(a.arch) !== outputDim(model.spec.arch)) {
      throw new Ptq4vitError(`--reference ${refPath}: ${a.name} outputs ${isEmbeddingModel(a.arch) ? `a ${outputDim(a.arch)}-wide embedding` : `${a.arch.numClasses} logits`}, expected a ${outputDim(model.spec.arch)}-wide embedding like ${model.spec.name} (a model without classifier)`);
    }
  } else if (target.reference) reference = await target.reference();
  if (!reference && knnPath === undefined) {
    throw new Ptq4vitError(`${model.spec.name} has no classifier (num_classes 0): eval compares its embeddings, so give --knn-train <labelled data> and/or --reference <FP32 model>`);
  }
  const dataset = await openDataset(data, { allowUnlabeled: knnPath === undefined });
  const knnTrain = knnPath === undefined ? null : await openDataset(knnPath);
  const quiet = v.json === true && !process.stderr.isTTY;
  const f = await embeddingFidelity(
    { model: { model, runner: target.runner, label: target.what }, reference: reference ? { model: reference.model, runner: reference.runner, label: reference.what } : null },
    dataset, knnTrain, { ...options, quiet },
  );
  const ignored = dataset.ignored?.length ?? 0;
  printReport({
    title: `${model.spec.name} (${model.spec.timmClass} without classifier, ${target.what}) on ${path.basename(data)}`,
    rows: [
      ...(reference ? [['reference', reference.what + (refPath ? ` (${refPath})` : '')] as [string, string]] : []),
      ...fidelityRows(f, { model: target.what, reference: reference ? 'FP32' : '' }),
      ['time', `${f.seconds.toFixed(1)} s`],
    ],
    notes: ignored ? [`${ignored} non-image files ignored`] : [],
    json: v.json === true
      ? { command: 'eval', model: model.spec.name, quantized: target.quantized, runtime: target.runner ? 'simulation' : 'onnx-graph', data, ...fidelityJson(f), skipped: f.skipped, ignored, seconds: f.seconds }
      : undefined,
  });
}

export const EVAL_COMMAND: CommandSpec = {
  name: 'eval',
  summary: 'top-1/top-5 and throughput of a float checkpoint, a quantized model file or an ONNX model (a model without classifier: embedding cosine to FP32 and k-NN top-1)',
  synopsis: '--model <path> [--config <card.json> | --arch <preset>] --data <data> [options]',
  flags: {
    model: { type: 'string', value: 'path', required: true, help: 'a quantized model file (carries its own architecture), an exported model.onnx, a float .safetensors checkpoint (a NAME.json card beside it is used without --config), a Hugging Face transformers folder (config.json with model_type vit/deit/swin/dinov2/dinov2_with_registers, preprocessor_config.json, model.safetensors) or a timm hub folder (config.json + model.safetensors)' },
    ...FLOAT_CHECKPOINT_FLAGS,
    data: { type: 'string', value: 'data', required: true, help: 'an image folder (one subfolder per class) or a raw-uint8 manifest.json' },
    limit: { type: 'string', value: 'N', default: 'all', help: 'evaluate on the first N images' },
    'batch-size': { type: 'string', value: 'N', default: '64', help: 'images per forward pass, 1 to 4096' },
    simulate: { type: 'boolean', help: 'run the op-by-op fake-quant simulation that calibration measured instead of one whole-model ONNX graph (the integer graph for a quantized file)' },
    reference: { type: 'string', value: 'path', default: "a quantized file's own float weights", help: 'model without classifier: the FP32 model (checkpoint, hub folder or .onnx, with the same --config/--arch) whose embeddings the per-image cosine and the side-by-side k-NN compare with' },
    'knn-train': { type: 'string', value: 'data', help: 'model without classifier: labelled neighbours for k-NN top-1 (k = 20, cosine) on --data, e.g. the calibration pool' },
  },
  notes: [
    'A model without classifier (num_classes 0) outputs its embedding: eval reports the per-image cosine similarity to the FP32 embedding (mean, 1st percentile) and, with --knn-train, k-NN top-1 of the model and of FP32 side by side; it needs --knn-train or a reference (--reference, or a quantized file).',
  ],
};

export async function runEval(args: string[]): Promise<void> {
  const v = parse(args, EVAL_COMMAND);
  if (v.help) {
    process.stdout.write(commandHelp(EVAL_COMMAND));
    return;
  }
  applyCommon(v);
  const weights = requireFlag(v, 'model', 'eval');
  const data = requireFlag(v, 'data', 'eval');
  const limit = intFlag(v, 'limit', undefined);
  const batchSize = intFlag(v, 'batch-size', 64, 1, 4096)!;
  const { model, runner, what, quantized, reference } = await evalTarget(weights, v);
  if (isEmbeddingModel(model.spec.arch)) return evalEmbedding({ model, runner, what, quantized, reference }, v, data, { limit, batchSize });
  for (const flag of ['reference', 'knn-train']) if (v[flag] !== undefined) throw new Ptq4vitError(`--${flag} applies to a model without classifier (num_classes 0); ${model.spec.name} outputs ${model.spec.arch.numClasses} logits`);
  const dataset = await openDataset(data);
  checkClasses(dataset, model.spec.arch.numClasses);
  const total = Math.min(limit ?? dataset.size, dataset.size);
  const bar = new ProgressBar(`eval ${model.spec.name}`, total, { quiet: v.json === true && !process.stderr.isTTY });
  const result = await evaluate(model, dataset, { limit, batchSize, runner, onProgress: (done) => bar.update(done) });
  const ignored = dataset.ignored?.length ?? 0;
  printReport({
    title: `${model.spec.name} (${model.spec.timmClass}, ${what}) on ${path.basename(data)}`,
    rows: [
      ['top-1', `${(result.top1 * 100).toFixed(2)}%`],
      ['top-5', `${(result.top5 * 100).toFixed(2)}%`],
      ['images', `${result.images}${result.skipped.length ? ` (${result.skipped.length} unreadable skipped)` : ''}${ignored ? ` (${ignored} non-image files ignored)` : ''}`],
      ['time', `${result.seconds.toFixed(1)} s · ${result.imagesPerSecond.toFixed(1)} img/s`],
    ],
    notes: result.skipped.slice(0, 10).map((s) => `skipped ${s.file}: ${s.reason}`),
    json: v.json === true
      ? { command: 'eval', model: model.spec.name, quantized, runtime: runner ? 'simulation' : 'onnx-graph', data, top1: result.top1, top5: result.top5, images: result.images, skipped: result.skipped.length, ignored, seconds: result.seconds, images_per_second: result.imagesPerSecond }
      : undefined,
  });
}
