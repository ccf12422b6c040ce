/** `ptq4vit export`: a float checkpoint or a quantized file as one ONNX model (the quantized one with integer products). */
import fs from 'node:fs';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { isPinnable } from '../quant/mixed.js';
import { exportOptionsFor } from '../export/graph.js';
import { writeHfDir } from '../export/hfdir.js';
import { exportOnnx, onnxOutputName } from '../export/onnx.js';
import { isEmbeddingModel, outputDim } from '../models/types.js';
import { writeFileAtomic } from '../io/safetensors.js';
import { locateModel } from '../models/hub.js';
import { openModel } from '../open.js';
import { applyCommon, commandHelp, FLOAT_CHECKPOINT_FLAGS, imgSizeFlag, parse, requireFlag, type CommandSpec } from './args.js';
import { describeQuantization } from './describe.js';
import { checkOutputNotInput, type InputPath } from './paths.js';
import { printReport } from './report.js';

function inputPaths(inputs: (string | undefined)[]): InputPath[] {
  return inputs.filter((p): p is string => !!p).map((p) => ({ what: 'input', path: p }));
}

function checkOutput(out: string, inputs: (string | undefined)[]): void {
  checkOutputNotInput(out, inputPaths(inputs));
  const dir = path.dirname(path.resolve(out));
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Ptq4vitError(`cannot write ${out}: directory ${dir} does not exist`);
  if (fs.existsSync(out) && fs.statSync(out).isDirectory()) throw new Ptq4vitError(`cannot write ${out}: it is a directory`);
}

export const EXPORT_COMMAND: CommandSpec = {
  name: 'export',
  summary: 'a float checkpoint or a quantized model file as one ONNX model (the quantized one with integer products)',
  synopsis: '--model <path> [--config <card.json> | --arch <preset>] (--out <model.onnx> | --hf-dir <dir>) [--float] [--labels <names.txt>]',
  flags: {
    model: { type: 'string', value: 'path', required: true, help: 'a quantized model file, a float .safetensors checkpoint (a NAME.json card beside it is used without --config), a Hugging Face transformers folder (config.json with model_type vit/deit/swin/dinov2/dinov2_with_registers, preprocessor_config.json, model.safetensors) or a timm hub folder (config.json + model.safetensors)' },
    ...FLOAT_CHECKPOINT_FLAGS,
    out: { type: 'string', value: 'model.onnx', help: 'where the ONNX model is written (atomically); --out and/or --hf-dir is required' },
    'hf-dir': { type: 'string', value: 'dir', help: 'write a folder transformers.js loads offline: config.json, preprocessor_config.json, onnx/model.onnx (FP32; for a quantized file, its dequantized weights) and, for a quantized file, onnx/model_quantized.onnx (the integer graph, dtype q8) or, when its linear weights are all 4 bits or fewer (the classifier excepted, as --pin keeps it at 8), onnx/model_q4.onnx (the same graph with packed weights, dtype q4)' },
    float: { type: 'boolean', help: 'export a quantized file as an FP32 graph of its dequantized weights instead of integer products' },
    labels: { type: 'string', value: 'names.txt', help: "class names, one per line, for the ONNX metadata and the folder's id2label (default: a hub folder's label_names, else class_0, class_1, …)" },
  },
};

export async function runExport(args: string[]): Promise<void> {
  const v = parse(args, EXPORT_COMMAND);
  if (v.help) {
    process.stdout.write(commandHelp(EXPORT_COMMAND));
    return;
  }
  applyCommon(v);
  const weights = requireFlag(v, 'model', 'export');
  const out = v.out as string | undefined, hfDir = v['hf-dir'] as string | undefined;
  if (!out && !hfDir) throw new Ptq4vitError("export: give --out <model.onnx> and/or --hf-dir <dir>; see 'ptq4vit export --help'");
  const config = v.config as string | undefined, arch = v.arch as string | undefined;
  const input = locateModel(weights); // a hub folder's model.safetensors and config.json are inputs too
  const inputs = [weights, input.weights, input.hubConfig ?? input.siblingCard, config, v.labels as string | undefined];
  if (out) checkOutput(out, inputs);
  if (hfDir) checkOutputNotInput(hfDir, inputPaths(inputs), '--hf-dir');
  const loaded = openModel({ weights, config, arch, imgSize: imgSizeFlag(v) });
  const { spec } = loaded.model;
  if (v.labels && isEmbeddingModel(spec.arch)) throw new Ptq4vitError(`--labels: ${spec.name} has no classifier (num_classes 0, it outputs its embedding), so it has no class names`);
  const labels = v.labels ? readLabels(v.labels as string, spec.arch.numClasses) : spec.labelNames;
  const asFloat = v.float === true || !loaded.quantized;
  const t0 = performance.now();
  const bytes = await exportOnnx(loaded.model, asFloat ? { labels } : exportOptionsFor(loaded, { labels }));
  const rows: [string, string][] = [];
  if (out) {
    writeFileAtomic(out, bytes);
    const kind = asFloat ? (loaded.quantized ? `FP32 graph of the dequantized weights (${describeQuantization(loaded.quantized.provenance)})` : 'FP32') : `${describeQuantization(loaded.quantized!.provenance)}, integer products`;
    rows.push(['graph', kind], ['size', `${(bytes.length / 1e6).toFixed(2)} MB`], ['written', out]);
  }
  if (hfDir) {
    // model.onnx is always a float graph; model_quantized.onnx the integer graph of a quantized file.
    const fp32 = asFloat ? bytes : await exportOnnx(loaded.model, { labels });
    const quantized = loaded.quantized ? (asFloat ? await exportOnnx(loaded.model, exportOptionsFor(loaded, { labels })) : bytes) : undefined;
    // Linear weights all ≤ 4 bits (the classifier may be pinned wider, as the patch embedding): the integer graph
    // holds them packed, transformers.js's dtype 'q4'.
    const fourBit = loaded.quantized?.points.every((p) => p.kind !== 'linear' || p.weightBits <= 4 || isPinnable({ kind: p.kind, name: p.point })) === true;
    writeHfDir(hfDir, spec, fourBit ? { fp32, q4: quantized } : { fp32, quantized }, labels);
    rows.push(['hf folder', `${hfDir} (onnx/model.onnx ${(fp32.length / 1e6).toFixed(2)} MB${quantized ? `, onnx/${fourBit ? 'model_q4' : 'model_quantized'}.onnx ${(quantized.length / 1e6).toFixed(2)} MB` : ''})`]);
  }
  printReport({
    title: `${spec.name} (${spec.timmClass}) → ONNX`,
    rows: [
      ...rows,
      ['input', `pixel_values float32 [batch, ${spec.arch.inChans}, ${spec.arch.imgSize}, ${spec.arch.imgSize}]`],
      ['output', `${onnxOutputName(spec)} float32 [batch, ${outputDim(spec.arch)}]`],
      ['time', `${((performance.now() - t0) / 1000).toFixed(1)} s`],
    ],
    json: v.json === true ? { command: 'export', model: spec.name, integer: !asFloat, out: out ?? null, hf_dir: hfDir ?? null, bytes: bytes.length } : undefined,
  });
}

/** Class names, one per line (blank lines ignored), exactly as many as the model has classes. */
function readLabels(file: string, classes: number): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Ptq4vitError(`cannot read --labels ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  const names = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  if (names.length !== classes) throw new Ptq4vitError(`--labels ${file}: ${names.length} class names, the model has ${classes} classes`);
  if (new Set(names).size !== names.length) throw new Ptq4vitError(`--labels ${file}: class names must be distinct`);
  return names;
}
