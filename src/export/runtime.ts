/**
 * Whole-model inference: an ONNX graph (exported by us, or any classifier with our metadata) run by
 * onnxruntime as one session — one call per batch instead of one per op. `ptq4vit eval` runs FP32 and
 * quantized models this way; `--simulate` keeps the op-by-op fake-quant path calibration measured.
 */
import fs from 'node:fs';
import ort from 'onnxruntime-node';
import { Ptq4vitError } from '../errors.js';
import { outputDim, type ModelSpec, type QuantPoint, type VisionModel } from '../models/types.js';
import { OnnxReadError, readOnnxInfo, type OnnxInfo } from '../onnx/read.js';
import { specFromStoredCard } from '../quant/file.js';
import { ortThreads } from '../tensor/ort.js';
import { Tensor, shapeString } from '../tensor/tensor.js';
import { ONNX_INPUT, onnxOutputName } from './onnx.js';

export class OnnxModel implements VisionModel {
  readonly quantPoints: readonly QuantPoint[] = [];

  private constructor(
    readonly spec: ModelSpec,
    private readonly session: ort.InferenceSession,
    private readonly input: string,
    private readonly output: string,
    readonly source: string,
  ) {}

  /** A session over `bytes`; `source` names the model in errors (a file, or "exported in memory"). */
  static async create(bytes: Uint8Array, spec: ModelSpec, source: string, io: { input?: string; output?: string } = {}): Promise<OnnxModel> {
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, {
        intraOpNumThreads: ortThreads(),
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
        logSeverityLevel: 3,
        // One call per batch, with image decoding in between: spinning workers would only take CPU from it.
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
    } catch (e) {
      throw new Ptq4vitError(`${source}: onnxruntime cannot load this model: ${(e as Error).message.split('\n')[0]}`);
    }
    return new OnnxModel(spec, session, io.input ?? ONNX_INPUT, io.output ?? onnxOutputName(spec), source);
  }

  async forward(images: Tensor): Promise<Tensor> {
    const { inChans, imgSize } = this.spec.arch;
    const numClasses = outputDim(this.spec.arch); // logits, or the embedding's width without classifier
    const s = images.shape;
    if (images.rank !== 4 || s[1] !== inChans || s[2] !== imgSize || s[3] !== imgSize) {
      throw new Ptq4vitError(`${this.source}: expects images [B, ${inChans}, ${imgSize}, ${imgSize}], got ${shapeString(s)}`);
    }
    const out = (await this.session.run({ [this.input]: new ort.Tensor('float32', images.data, s as number[]) }))[this.output];
    const dims = out.dims as number[];
    if (dims.length !== 2 || dims[0] !== s[0] || dims[1] !== numClasses) {
      throw new Ptq4vitError(`${this.source}: output '${this.output}' has shape ${shapeString(dims)}, expected [${s[0]}, ${numClasses}]`);
    }
    return new Tensor(out.data as Float32Array, dims);
  }
}

export interface OpenedOnnx {
  model: OnnxModel;
  info: OnnxInfo;
  quantized: boolean;
  labels: string[] | null;
}

/** The spec stored by exportOnnx: a model card, checked exactly as a quantized file's card is. */
function parseSpec(file: string, text: string): ModelSpec {
  let card: unknown;
  try {
    card = JSON.parse(text);
  } catch {
    throw new Ptq4vitError(`${file}: metadata 'ptq4vit.spec' is not valid JSON`);
  }
  return specFromStoredCard(card, `${file}: metadata 'ptq4vit.spec'`);
}

/**
 * Open an .onnx classifier. Our exports carry their spec; a foreign model needs `spec` (from --config or
 * --arch) for its preprocessing, and must take `pixel_values` and give `logits` (`image_embeds` for a spec
 * without classifier), or have one input/output.
 */
export async function openOnnxModel(file: string, spec?: ModelSpec): Promise<OpenedOnnx> {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new Ptq4vitError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  let info: OnnxInfo;
  try {
    info = readOnnxInfo(bytes);
  } catch (e) {
    throw new Ptq4vitError(`${file}: not an ONNX model (${e instanceof OnnxReadError ? e.message : 'unreadable'})`);
  }
  const own = info.metadata['ptq4vit.spec'];
  if (own !== undefined && spec) throw new Ptq4vitError(`${file} carries its own architecture and preprocessing: drop --config/--arch`);
  const resolved = own !== undefined ? parseSpec(file, own) : spec;
  if (!resolved) throw new Ptq4vitError(`${file} was not exported by ptq4vit: pass --config <card.json> or --arch <preset> for its preprocessing`);
  const pick = (names: string[], wanted: string, what: string): string => {
    if (names.includes(wanted)) return wanted;
    if (names.length === 1) return names[0];
    throw new Ptq4vitError(`${file}: expected one ${what} or one named '${wanted}', found ${names.length ? names.map((n) => `'${n}'`).join(', ') : 'none'}`);
  };
  const input = pick(info.inputs, ONNX_INPUT, 'input');
  const output = pick(info.outputs, onnxOutputName(resolved), 'output');
  const model = await OnnxModel.create(bytes, resolved, file, { input, output });
  let labels: string[] | null = null;
  try {
    const parsed = info.metadata['ptq4vit.labels'] ? (JSON.parse(info.metadata['ptq4vit.labels']) as unknown) : null;
    if (Array.isArray(parsed) && parsed.every((l) => typeof l === 'string')) labels = parsed;
  } catch {
    labels = null; // labels are informative only
  }
  return { model, info, quantized: info.metadata['ptq4vit.quantized'] === 'integer', labels };
}
