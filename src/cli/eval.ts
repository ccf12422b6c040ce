import path from 'node:path';
import { openDataset } from '../data/datasets.js';
import { evaluate } from '../eval/evaluate.js';
import { wholeModelGraph } from '../export/graph.js';
import { openOnnxModel } from '../export/runtime.js';
import { resolveSpec } from '../models/load.js';
import type { VisionModel } from '../models/types.js';
import { openModel } from '../open.js';
import type { Runner } from '../tensor/runner.js';
import { checkClasses, describeQuantization } from './describe.js';
import { applyCommon, commandHelp, FLOAT_CHECKPOINT_FLAGS, imgSizeFlag, intFlag, parse, requireFlag, type CommandSpec } from './args.js';
import { ProgressBar } from './progress.js';
import { printReport } from './report.js';

interface EvalTarget {
  model: VisionModel;
  runner?: Runner;
  /** FP32, the integer graph, the simulation… for the report. */
  what: string;
  quantized: boolean;
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
  return { model: await wholeModelGraph(loaded, weights), what: `${label}${loaded.quantized ? ', integer graph' : ''}`, quantized: loaded.quantized !== null };
}

export const EVAL_COMMAND: CommandSpec = {
  name: 'eval',
  summary: 'top-1/top-5 and throughput of a float checkpoint, a quantized model file or an ONNX model',
  synopsis: '--model <path> [--config <card.json> | --arch <preset>] --data <data> [options]',
  flags: {
    model: { type: 'string', value: 'path', required: true, help: 'a quantized model file (carries its own architecture), an exported model.onnx, a float .safetensors checkpoint (a NAME.json card beside it is used without --config), a Hugging Face transformers folder (config.json with model_type vit/deit/swin/dinov2/dinov2_with_registers, preprocessor_config.json, model.safetensors) or a timm hub folder (config.json + model.safetensors)' },
    ...FLOAT_CHECKPOINT_FLAGS,
    data: { type: 'string', value: 'data', required: true, help: 'an image folder (one subfolder per class) or a raw-uint8 manifest.json' },
    limit: { type: 'string', value: 'N', default: 'all', help: 'evaluate on the first N images' },
    'batch-size': { type: 'string', value: 'N', default: '64', help: 'images per forward pass, 1 to 4096' },
    simulate: { type: 'boolean', help: 'run the op-by-op fake-quant simulation that calibration measured instead of one whole-model ONNX graph (the integer graph for a quantized file)' },
  },
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
  const batchSize = intFlag(v, 'batch-size', 64, 1, 4096);
  const { model, runner, what, quantized } = await evalTarget(weights, v);
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
