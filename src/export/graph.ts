/** A loaded model (float checkpoint or quantized file) as one whole-model onnxruntime session. */
import { Ptq4vitError } from '../errors.js';
import type { LoadedModel } from '../open.js';
import { DequantizedSource } from '../quant/file.js';
import { exportOnnx, type ExportOptions } from './onnx.js';
import type { WeightCodes } from './products.js';
import { OnnxModel } from './runtime.js';

/** The int8 codes stored in a quantized file (the integer graph never re-quantizes them). */
export function storedCodes(source: DequantizedSource): WeightCodes {
  return (q, weight) => {
    const codes = source.codes(`${q.point}.weight`, weight.shape);
    if (!(codes instanceof Int8Array)) throw new Ptq4vitError(`${source.file}: ${q.point} has ${q.weightBits}-bit weights; the integer graph holds 2–8-bit codes`);
    return codes;
  };
}

/** Export options for a loaded model: the integer graph of a quantized file (with its own codes), else FP32. */
export function exportOptionsFor(loaded: LoadedModel, extra: Omit<ExportOptions, 'quant' | 'codes'> = {}): ExportOptions {
  if (!loaded.quantized) return extra;
  const codes = loaded.weights instanceof DequantizedSource ? storedCodes(loaded.weights) : undefined;
  return { ...extra, quant: loaded.quantized.points, codes, metadata: { 'ptq4vit.provenance': JSON.stringify(loaded.quantized.provenance), ...extra.metadata } };
}

/** Export in memory and open as one session: how `eval` runs models. */
export async function wholeModelGraph(loaded: LoadedModel, source: string): Promise<OnnxModel> {
  const bytes = await exportOnnx(loaded.model, exportOptionsFor(loaded));
  return OnnxModel.create(bytes, loaded.model.spec, `${source} (as one ONNX graph)`);
}
