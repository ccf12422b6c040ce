/** `ptq4vit export`: a float checkpoint or a quantized file as one ONNX model (the quantized one with integer products). */
import fs from 'node:fs';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { exportOptionsFor } from '../export/graph.js';
import { exportOnnx } from '../export/onnx.js';
import { writeFileAtomic } from '../io/safetensors.js';
import { locateModel } from '../models/hub.js';
import { openModel } from '../open.js';
import { applyCommon, commandHelp, parse, requireFlag, type CommandSpec } from './args.js';
import { describeQuantization } from './describe.js';
import { printReport } from './report.js';

function sameFile(a: string, b: string): boolean {
  try {
    const sa = fs.statSync(a), sb = fs.statSync(b);
    return sa.dev === sb.dev && sa.ino === sb.ino;
  } catch {
    return path.resolve(a) === path.resolve(b);
  }
}

function checkOutput(out: string, inputs: (string | undefined)[]): void {
  for (const input of inputs) if (input && sameFile(out, input)) throw new Ptq4vitError(`--out ${out} would overwrite the input ${input}`);
  const dir = path.dirname(path.resolve(out));
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Ptq4vitError(`cannot write ${out}: directory ${dir} does not exist`);
  if (fs.existsSync(out) && fs.statSync(out).isDirectory()) throw new Ptq4vitError(`cannot write ${out}: it is a directory`);
}

export const EXPORT_COMMAND: CommandSpec = {
  name: 'export',
  summary: 'a float checkpoint or a quantized model file as one ONNX model (the quantized one with integer products)',
  synopsis: '--model <path> [--config <card.json> | --arch <preset>] --out <model.onnx> [--float]',
  flags: {
    model: { type: 'string', value: 'path', required: true, help: 'a quantized model file, a float .safetensors checkpoint (a NAME.json card beside it is used without --config) or a timm hub folder (config.json + model.safetensors)' },
    config: { type: 'string', value: 'card.json', help: 'JSON model card for a float checkpoint' },
    arch: { type: 'string', value: 'preset', help: "timm architecture by name for a float checkpoint ('ptq4vit presets' lists them)" },
    out: { type: 'string', value: 'model.onnx', required: true, help: 'where the ONNX model is written (atomically)' },
    float: { type: 'boolean', help: 'export a quantized file as an FP32 graph of its dequantized weights instead of integer products' },
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
  const out = requireFlag(v, 'out', 'export');
  const config = v.config as string | undefined, arch = v.arch as string | undefined;
  const input = locateModel(weights); // a hub folder's model.safetensors and config.json are inputs too
  checkOutput(out, [weights, input.weights, input.hubConfig ?? input.siblingCard, config]);
  const loaded = openModel({ weights, config, arch });
  const asFloat = v.float === true || !loaded.quantized;
  const t0 = performance.now();
  const bytes = await exportOnnx(loaded.model, asFloat ? {} : exportOptionsFor(loaded));
  writeFileAtomic(out, bytes);
  const { spec } = loaded.model;
  const kind = asFloat ? (loaded.quantized ? `FP32 graph of the dequantized weights (${describeQuantization(loaded.quantized.provenance)})` : 'FP32') : `${describeQuantization(loaded.quantized!.provenance)}, integer products`;
  printReport({
    title: `${spec.name} (${spec.timmClass}) → ONNX`,
    rows: [
      ['graph', kind],
      ['input', `pixel_values float32 [batch, ${spec.arch.inChans}, ${spec.arch.imgSize}, ${spec.arch.imgSize}]`],
      ['output', `logits float32 [batch, ${spec.arch.numClasses}]`],
      ['size', `${(bytes.length / 1e6).toFixed(2)} MB`],
      ['time', `${((performance.now() - t0) / 1000).toFixed(1)} s`],
      ['written', out],
    ],
    json: v.json === true ? { command: 'export', model: spec.name, integer: !asFloat, out, bytes: bytes.length } : undefined,
  });
}
