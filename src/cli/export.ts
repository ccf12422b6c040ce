/** `ptq4vit export`: a float checkpoint or a quantized file as one ONNX model (the quantized one with integer products). */
import fs from 'node:fs';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { exportOptionsFor } from '../export/graph.js';
import { exportOnnx } from '../export/onnx.js';
import { writeFileAtomic } from '../io/safetensors.js';
import { openModel } from '../open.js';
import { applyCommon, parse, requireFlag, USAGE } from './args.js';
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

export async function runExport(args: string[]): Promise<void> {
  const v = parse(args, {
    model: { type: 'string' },
    config: { type: 'string' },
    arch: { type: 'string' },
    out: { type: 'string' },
    float: { type: 'boolean', default: false },
  });
  if (v.help) {
    process.stdout.write(USAGE);
    return;
  }
  applyCommon(v);
  const weights = requireFlag(v, 'model', 'export');
  const out = requireFlag(v, 'out', 'export');
  const config = v.config as string | undefined, arch = v.arch as string | undefined;
  checkOutput(out, [weights, config]);
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
