/**
 * A seeded mutation fuzzer for everything ptq4vit reads from disk: safetensors checkpoints and
 * quantized model files, model cards, raw-uint8 manifests, and images (JPEG, PNG, BMP, WebP).
 * Every case must end in a result or a Ptq4vitError — never another exception (an internal error),
 * a case slower than the time bound (a hang), or memory growth beyond what the file size implies.
 * Used by test/fuzz.test.ts (a short run) and scripts/fuzz.ts (a long run for RESULTS.md).
 */
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { openDataset, loadBatch } from '../src/data/datasets.js';
import { decodeImage } from '../src/data/decode.js';
import { Ptq4vitError } from '../src/errors.js';
import { encodeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { specFromCard } from '../src/models/config.js';
import { buildModel } from '../src/models/load.js';
import type { Preprocess, QuantPoint, VisionModel } from '../src/models/types.js';
import type { TensorSource } from '../src/models/weights.js';
import { openModel } from '../src/open.js';
import { saveQuantizedModel } from '../src/quant/file.js';
import type { ActivationQuant, PointQuant } from '../src/quant/params.js';
import { Tensor } from '../src/tensor/tensor.js';
import { joinSafetensors, splitSafetensors } from './mutate.js';
import { seededRandom } from '../src/grad/loss.js';

// ---------------------------------------------------------------------------------------------
// Randomness

export type Rng = () => number;

/** mulberry32: small, fast, seeded. */
export function rng(seed: number): Rng {
  return seededRandom(seed);
}
const int = (r: Rng, n: number): number => Math.floor(r() * n);
const pick = <T>(r: Rng, items: readonly T[]): T => items[int(r, items.length)];

/** Raw JSON text standing in for values JSON.stringify cannot write (JSON.parse reads 1e999 as Infinity). */
const INFINITY_TOKEN = '"__INF__"';
const NEG_INFINITY_TOKEN = '"__NEGINF__"';
const jsonText = (v: unknown): string => JSON.stringify(v).replaceAll(INFINITY_TOKEN, '1e999').replaceAll(NEG_INFINITY_TOKEN, '-1e999');

/** Values that break assumptions: wrong types, zero, negatives, fractions, extremes, infinities. */
const ODD_VALUES: readonly unknown[] = [
  null, true, false, 0, -0, -1, 1, 2, 3, 0.5, -0.5, 1.5, 7, 8, 16, 17, 40, 255, 256, 65536, 100000, 2 ** 31, 2 ** 53, 1e308, -1e308, 1e-320,
  '__INF__', '__NEGINF__', '', 'x', '8', 'VisionTransformer', 'SwinTransformer', 'uniform', 'twin-gelu', 'twin-softmax', 'linear', 'matmul',
  [], [0], [1], [1, 2, 3], [0, 0, 0], [-1, 1, 1], [3, 32, 32], [1e308, 1, 1], {}, { a: 1 },
];

function oddValue(r: Rng, current: unknown): unknown {
  if (typeof current === 'number' && r() < 0.5) return pick(r, [current * 2, current / 2, -current, current + 1, current - 1, Math.round(current * 1e6) / 1e6 + 0.5, 0, current * 1e6]);
  return pick(r, ODD_VALUES);
}

/** A random path into a JSON value (objects and arrays), for a structural edit there. */
function randomPath(r: Rng, v: unknown): (string | number)[] {
  const p: (string | number)[] = [];
  let cur = v;
  while (typeof cur === 'object' && cur !== null && r() < 0.75) {
    const keys = Array.isArray(cur) ? cur.map((_, i) => i) : Object.keys(cur);
    if (keys.length === 0) break;
    const k = pick(r, keys as (string | number)[]);
    p.push(k);
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return p;
}

/** One structural edit of a JSON document: delete, replace, perturb, duplicate or add a field. */
export function mutateJson(r: Rng, doc: unknown): unknown {
  const root = { doc: structuredClone(doc) } as Record<string, unknown>;
  const p = ['doc', ...randomPath(r, root.doc)];
  const parent = p.slice(0, -1).reduce<any>((o, k) => o[k], root);
  const key = p[p.length - 1];
  const op = int(r, 5);
  if (op === 0 && p.length > 1) {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key];
  } else if (op === 1 && typeof parent[key] === 'object' && parent[key] !== null) {
    const target = parent[key];
    if (Array.isArray(target)) target.push(oddValue(r, target[0]));
    else target[pick(r, ['extra', 'name', 'kind', 'bits', 'deltas', 'timm_kwargs', 'format', 'count', 'reg_tokens', 'init_values', 'global_pool', 'act_layer', 'fc_norm', 'class_token', 'layer_norm_eps'])] = oddValue(r, undefined);
  } else {
    parent[key] = oddValue(r, parent[key]);
  }
  return root.doc;
}

// ---------------------------------------------------------------------------------------------
// Seeds: a tiny ViT and a tiny Swin with random weights, their quantized files, a manifest, images

export interface Outcome {
  kind: 'result' | 'error';
  message?: string;
}

export interface Failure {
  corpus: string;
  seed: number;
  mutation: string;
  problem: string;
}

/** Records the tensors a model asks for and serves random ones: a checkpoint for any spec. */
class RandomWeights implements TensorSource {
  readonly file = '<random>';
  readonly made = new Map<string, Tensor>();
  constructor(private readonly r: Rng) {}
  names(): string[] {
    return [...this.made.keys()];
  }
  tensor(name: string, shape?: readonly number[]): Tensor {
    const known = this.made.get(name);
    if (known && !shape) return known;
    const s = [...(shape ?? [1])];
    const n = s.reduce((a, b) => a * b, 1);
    const unit = /norm\d?\.weight$|^norm\.weight$/.test(name);
    const data = Float32Array.from({ length: n }, () => (unit ? 1 : 0) + (this.r() - 0.5) * 0.2);
    const t = new Tensor(data, s);
    this.made.set(name, t);
    return t;
  }
}

const TINY_CARDS: Record<string, unknown> = {
  vit: { name: 'tiny_vit', timm_class: 'VisionTransformer', timm_kwargs: { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, num_classes: 3 }, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
  deit: { name: 'tiny_deit', timm_class: 'VisionTransformerDistilled', timm_kwargs: { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, num_classes: 3 }, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
  // timm VisionTransformer's optional parts (DINOv2 registers + LayerScale, CLIP pre_norm + QuickGELU + eps, avg pool, q/k norms).
  vit_variants: {
    name: 'tiny_vit_variants',
    timm_class: 'VisionTransformer',
    timm_kwargs: { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, num_classes: 3, reg_tokens: 2, no_embed_class: true, init_values: 0.1, pre_norm: true, act_layer: 'quick_gelu', global_pool: 'avg', qk_norm: true },
    layer_norm_eps: 1e-5,
    mean: [0.5, 0.5, 0.5],
    std: [0.25, 0.25, 0.25],
  },
  swin: { name: 'tiny_swin', timm_class: 'SwinTransformer', timm_kwargs: { img_size: 16, patch_size: 2, embed_dim: 8, depths: [1, 1], num_heads: [2, 2], window_size: 4, num_classes: 3 }, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
};

/** Valid quantization parameters for every point of a model (all quantizer kinds appear). */
function quantParams(model: VisionModel, weights: RandomWeights): PointQuant[] {
  const act = (p: QuantPoint, heads: number, which: 'a' | 'b' | 'input'): ActivationQuant => {
    if (which === 'input' && p.input === 'post-gelu') return { kind: 'twin-gelu', bits: 6, deltaNeg: 0.17 / 32, deltaPos: 0.17 / 8 };
    if (which === 'a' && p.input === 'post-softmax') return { kind: 'twin-softmax', bits: 6, deltaR1: 1 / 256, deltaR2: 1 / 32 };
    return { kind: 'uniform', bits: 6, deltas: Array.from({ length: heads }, (_, h) => 0.05 + 0.01 * h) };
  };
  return model.quantPoints.map((p): PointQuant => {
    if (p.kind === 'matmul') return { kind: 'matmul', point: p.name, heads: p.heads ?? 1, a: act(p, p.heads ?? 1, 'a'), b: act(p, p.heads ?? 1, 'b') };
    const groups = p.weightGroups ?? 1;
    const w = weights.made.get(p.weight!)!;
    const per = w.size / groups;
    const weightDeltas = Array.from({ length: groups }, (_, g) => {
      let m = 0;
      for (let i = g * per; i < (g + 1) * per; i++) m = Math.max(m, Math.abs(w.data[i]));
      return (m || 1) / 31.5;
    });
    return { kind: p.kind, point: p.name, weightBits: p.name === 'head' ? 12 : 6, weightDeltas, input: p.kind === 'conv' ? null : act(p, 1, 'input') };
  });
}

export interface Seeds {
  dir: string;
  /** name → bytes of a valid checkpoint or quantized model file */
  checkpoints: Map<string, { bytes: Uint8Array; card: string | null }>;
  cards: Map<string, unknown>;
  /** A timm hub folder's config.json for the tiny ViT (model.safetensors beside it when a case runs). */
  hubConfig: unknown;
  manifest: { json: Record<string, unknown>; images: Uint8Array; labels: Uint8Array };
  images: Map<string, Uint8Array>;
  /** A tiny dataset for forward passes: one 8×8 image per class. */
  data: string;
}

function bmp24(w: number, h: number, r: Rng): Uint8Array {
  const stride = Math.ceil((w * 3) / 4) * 4;
  const b = Buffer.alloc(54 + stride * h);
  b.write('BM', 0, 'ascii');
  b.writeUInt32LE(b.length, 2);
  b.writeUInt32LE(54, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(w, 18);
  b.writeInt32LE(h, 22);
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(24, 28);
  for (let i = 54; i < b.length; i++) b[i] = int(r, 256);
  return b;
}

function bmp8(w: number, h: number, r: Rng): Uint8Array {
  const stride = Math.ceil(w / 4) * 4;
  const b = Buffer.alloc(54 + 1024 + stride * h);
  b.write('BM', 0, 'ascii');
  b.writeUInt32LE(b.length, 2);
  b.writeUInt32LE(54 + 1024, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(w, 18);
  b.writeInt32LE(-h, 22); // top-down
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(8, 28);
  b.writeUInt32LE(256, 46);
  for (let i = 54; i < b.length; i++) b[i] = int(r, 256);
  return b;
}

export async function makeSeeds(dir: string): Promise<Seeds> {
  const r = rng(1);
  fs.mkdirSync(dir, { recursive: true });
  const checkpoints = new Map<string, { bytes: Uint8Array; card: string | null }>();
  const cards = new Map<string, unknown>();
  for (const [name, card] of Object.entries(TINY_CARDS)) {
    const spec = specFromCard(card, name);
    const weights = new RandomWeights(r);
    const model = buildModel(spec, weights);
    const cardFile = path.join(dir, `${name}.json`);
    fs.writeFileSync(cardFile, JSON.stringify(card));
    cards.set(name, card);
    const tensors: Record<string, TensorToWrite> = {};
    for (const [n, t] of weights.made) tensors[n] = { dtype: n.includes('pos_embed') ? 'F16' : n.includes('cls_token') ? 'BF16' : 'F32', shape: t.shape, data: t.data };
    checkpoints.set(`${name}.safetensors`, { bytes: encodeSafetensors(tensors), card: cardFile });
    const qfile = path.join(dir, `${name}.q.safetensors`);
    saveQuantizedModel(qfile, weights, { spec, points: quantParams(model, weights), provenance: { tool: 'ptq4vit', method: 'ptq4vit', w_bits: 6, a_bits: 6 } });
    checkpoints.set(`${name}.q.safetensors`, { bytes: fs.readFileSync(qfile), card: null });
  }
  // A raw-uint8 manifest: 3 classes, 6 images of 8×8.
  const images = Uint8Array.from({ length: 6 * 8 * 8 * 3 }, () => int(r, 256));
  const labels = Uint8Array.from([0, 1, 2, 0, 1, 2]);
  const manifest = { format: 'raw-uint8-hwc', images: 'images.u8', labels: 'labels.u8', count: 6, height: 8, width: 8, channels: 3, classes: ['a', 'b', 'c'] };
  const data = path.join(dir, 'data.json');
  fs.writeFileSync(path.join(dir, 'images.u8'), images);
  fs.writeFileSync(path.join(dir, 'labels.u8'), labels);
  fs.writeFileSync(data, JSON.stringify(manifest));
  // Images of every format we read.
  const raw = { data: Buffer.from(Uint8Array.from({ length: 24 * 16 * 3 }, () => int(r, 256))), info: { width: 24, height: 16, channels: 3 as const } };
  const img = () => sharp(raw.data, { raw: raw.info });
  const imageSeeds = new Map<string, Uint8Array>([
    ['jpeg', await img().jpeg({ quality: 80 }).toBuffer()],
    ['jpeg-progressive', await img().jpeg({ quality: 70, progressive: true }).toBuffer()],
    ['png', await img().png().toBuffer()],
    ['png-gray16', await img().toColourspace('grey16').png().toBuffer()],
    ['png-palette', await img().png({ palette: true, colours: 16 }).toBuffer()],
    ['webp', await img().webp({ quality: 80 }).toBuffer()],
    ['webp-lossless', await img().webp({ lossless: true }).toBuffer()],
    ['bmp24', bmp24(13, 7, r)],
    ['bmp8', bmp8(9, 5, r)],
  ]);
  const hubConfig = {
    architecture: 'vit_tiny_patch16_224',
    num_classes: 3,
    model_args: { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2 },
    label_names: ['a', 'b', 'c'],
    pretrained_cfg: { input_size: [3, 8, 8], interpolation: 'bicubic', crop_pct: 0.875, crop_mode: 'center', mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
  };
  return { dir, checkpoints, cards, hubConfig, manifest: { json: manifest, images, labels }, images: imageSeeds, data };
}

// ---------------------------------------------------------------------------------------------
// Mutations

const DTYPES = ['F32', 'F16', 'BF16', 'F64', 'I8', 'U8', 'I16', 'I32', 'I64', 'BOOL', 'F8', 'f32', '', 'Q4'];

/** One mutation of a safetensors file (bytes, header JSON, entries, metadata); returns its description. */
export function mutateSafetensors(r: Rng, bytes: Uint8Array): { bytes: Uint8Array; mutation: string } {
  const op = int(r, 9);
  const out = new Uint8Array(bytes);
  switch (op) {
    case 0: { // flip bytes anywhere (biased to the header)
      const n = 1 + int(r, 4);
      const headerEnd = 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
      for (let i = 0; i < n; i++) out[r() < 0.6 ? int(r, headerEnd) : int(r, bytes.length)] ^= 1 << int(r, 8);
      return { bytes: out, mutation: `flip ${n} bytes` };
    }
    case 1: { // truncate
      const len = r() < 0.3 ? int(r, 16) : int(r, bytes.length);
      return { bytes: bytes.subarray(0, len), mutation: `truncate to ${len}` };
    }
    case 2: { // header size field
      const v = pick(r, [0n, 1n, 7n, 2n ** 63n, 2n ** 64n - 1n, 100_000_001n, BigInt(bytes.length), BigInt(bytes.length - 8), BigInt(int(r, bytes.length))]);
      const dv = new DataView(out.buffer);
      const current = dv.getBigUint64(0, true);
      const value = r() < 0.3 ? current + BigInt(pick(r, [-1, 1, -8, 8])) : v;
      dv.setBigUint64(0, BigInt.asUintN(64, value), true);
      return { bytes: out, mutation: `header size ${value}` };
    }
    case 3: { // append or insert garbage
      const extra = Uint8Array.from({ length: 1 + int(r, 64) }, () => int(r, 256));
      const at = int(r, bytes.length);
      const res = new Uint8Array(bytes.length + extra.length);
      res.set(bytes.subarray(0, at));
      res.set(extra, at);
      res.set(bytes.subarray(at), at + extra.length);
      return { bytes: res, mutation: `insert ${extra.length} bytes at ${at}` };
    }
    default: { // structural edits of the header
      const { header, data } = splitSafetensors(bytes);
      const names = Object.keys(header).filter((k) => k !== '__metadata__');
      const name = pick(r, names);
      const entry = header[name] as { dtype: string; shape: number[]; data_offsets: number[] };
      let mutation: string;
      let newData = data;
      switch (op) {
        case 4:
          entry.dtype = pick(r, DTYPES);
          mutation = `${name}.dtype = ${entry.dtype}`;
          break;
        case 5: {
          const s = mutateJson(r, entry.shape);
          (entry as Record<string, unknown>).shape = r() < 0.3 ? pick(r, [[2 ** 31, 2 ** 31], [0], [1e308], [-1], [2 ** 53, 2], 'x', null]) : s;
          mutation = `${name}.shape = ${jsonText(entry.shape)}`;
          break;
        }
        case 6: {
          const o = entry.data_offsets;
          const edits: unknown[] = [[o[0] + 1, o[1] + 1], [o[1], o[0]], [o[0], o[1] + 4], [0, o[1] - o[0]], [o[0], 2 ** 53], [-4, o[1]], [o[0]], 'x', [o[0] + 0.5, o[1]]];
          (entry as Record<string, unknown>).data_offsets = pick(r, edits);
          mutation = `${name}.data_offsets = ${jsonText(entry.data_offsets)}`;
          break;
        }
        case 7: { // metadata: structural JSON edit of one value, or a value replaced by garbage
          const m = { ...((header.__metadata__ as Record<string, string>) ?? {}) };
          const keys = Object.keys(m);
          if (keys.length === 0 || r() < 0.15) {
            header.__metadata__ = pick(r, [null, 'x', [], { 'ptq4vit.format': 'ptq4vit-quantized-model/2' }, { 'ptq4vit.format': 7 }]);
            mutation = `__metadata__ = ${JSON.stringify(header.__metadata__)}`;
            break;
          }
          const key = pick(r, keys);
          let value: string;
          try {
            value = r() < 0.1 ? m[key].slice(0, int(r, m[key].length)) : jsonText(mutateJson(r, JSON.parse(m[key])));
          } catch {
            value = jsonText(mutateJson(r, m[key]));
          }
          m[key] = value;
          header.__metadata__ = m;
          mutation = `metadata ${key} = ${value.slice(0, 120)}`;
          break;
        }
        default: { // data section: plant NaN/Inf floats, out-of-range codes, or drop/duplicate an entry
          const choice = int(r, 3);
          if (choice === 0) {
            newData = new Uint8Array(data);
            const [b] = entry.data_offsets;
            const dv = new DataView(newData.buffer);
            if (entry.dtype === 'F32') dv.setFloat32(b, pick(r, [NaN, Infinity, -Infinity, 3e38]), true);
            else if (entry.dtype === 'I8') dv.setInt8(b, pick(r, [-128, 127]));
            else if (entry.dtype === 'I16') dv.setInt16(b, pick(r, [-32768, 32767]), true);
            else dv.setUint16(b, 0x7c00, true); // +Inf in F16 (and a large BF16)
            mutation = `${name}: extreme value at its first element`;
          } else if (choice === 1) {
            delete header[name];
            mutation = `drop entry ${name}`;
          } else {
            header[`${name}.copy`] = { ...entry };
            mutation = `duplicate entry ${name}`;
          }
        }
      }
      return { bytes: joinSafetensors(header, newData, jsonText(header)), mutation };
    }
  }
}

/** One mutation of an image file: bytes in the header or body, truncation, or format-specific fields. */
export function mutateImage(r: Rng, kind: string, bytes: Uint8Array): { bytes: Uint8Array; mutation: string } {
  const out = new Uint8Array(bytes);
  const op = int(r, 6);
  if (op === 0) {
    const n = 1 + int(r, 3);
    for (let i = 0; i < n; i++) out[int(r, Math.min(64, bytes.length))] = int(r, 256);
    return { bytes: out, mutation: `${n} header bytes randomized` };
  }
  if (op === 1) {
    const n = 1 + int(r, 8);
    for (let i = 0; i < n; i++) out[int(r, bytes.length)] ^= 1 << int(r, 8);
    return { bytes: out, mutation: `${n} bits flipped` };
  }
  if (op === 2) {
    const len = int(r, bytes.length);
    return { bytes: bytes.subarray(0, len), mutation: `truncated to ${len}` };
  }
  if (op === 3) {
    const at = int(r, bytes.length);
    const len = 1 + int(r, 32);
    out.fill(pick(r, [0, 0xff, 0xab]), at, at + len);
    return { bytes: out, mutation: `${len} bytes filled at ${at}` };
  }
  // Size fields: width/height where each format keeps them.
  const dv = new DataView(out.buffer);
  const big = pick(r, [0, 1, 0xffff, 0x7fffffff, 0xffffffff, 15000, 40000, 65535]);
  if (kind.startsWith('bmp')) {
    const field = pick(r, [18, 22, 28, 10, 14, 30, 46]);
    dv.setInt32(field, field === 28 ? pick(r, [0, 2, 16, 24, 32, 64]) : r() < 0.5 ? big : -big, true);
    return { bytes: out, mutation: `BMP field @${field} edited` };
  }
  if (kind.startsWith('png')) {
    dv.setUint32(pick(r, [16, 20]), big);
    return { bytes: out, mutation: `PNG IHDR size = ${big} (CRC now wrong)` };
  }
  if (kind.startsWith('jpeg')) {
    // SOF0/SOF2 marker: height and width follow the length and precision bytes.
    for (let i = 2; i + 8 < out.length; i++) {
      if (out[i] === 0xff && (out[i + 1] === 0xc0 || out[i + 1] === 0xc2)) {
        dv.setUint16(i + 5 + (r() < 0.5 ? 0 : 2), big & 0xffff);
        return { bytes: out, mutation: `JPEG SOF size = ${big & 0xffff}` };
      }
    }
  }
  if (kind.startsWith('webp')) {
    dv.setUint32(4, big, true); // RIFF size
    return { bytes: out, mutation: `RIFF size = ${big}` };
  }
  out[int(r, out.length)] ^= 0xff;
  return { bytes: out, mutation: 'one byte inverted' };
}

// ---------------------------------------------------------------------------------------------
// Running cases

export interface Limits {
  /** A case slower than this is a failure (a hang, or work out of proportion to the input). */
  caseMs: number;
}

/** Memory held by typed arrays/buffers after a case, beyond this multiple of the input size, is a failure. */
const MEMORY_FACTOR = 64;
const MEMORY_SLACK = 64 * 1024 * 1024;

export class Fuzzer {
  readonly failures: Failure[] = [];
  readonly counts = new Map<string, { cases: number; results: number; errors: number }>();
  private file = 0;

  constructor(readonly seeds: Seeds, readonly limits: Limits) {}

  private scratchFile(name: string, bytes: Uint8Array): string {
    const f = path.join(this.seeds.dir, `case${this.file++ % 8}-${name}`);
    fs.writeFileSync(f, bytes);
    return f;
  }

  /** Run one case: `body` returns the objects it produced (kept alive while memory is measured). */
  async run(corpus: string, seed: number, mutation: string, inputBytes: number, body: () => Promise<unknown>): Promise<void> {
    const c = this.counts.get(corpus) ?? { cases: 0, results: 0, errors: 0 };
    this.counts.set(corpus, c);
    c.cases++;
    const before = process.memoryUsage().arrayBuffers;
    const start = performance.now();
    let kept: unknown = null;
    try {
      kept = await body();
      c.results++;
    } catch (e) {
      if (e instanceof Ptq4vitError) {
        c.errors++;
        if (/\n/.test(e.message.split('\n\n')[0]) || e.message.trim() === '') this.failures.push({ corpus, seed, mutation, problem: `unclear message: ${JSON.stringify(e.message)}` });
      } else {
        this.failures.push({ corpus, seed, mutation, problem: `internal error: ${(e as Error)?.stack?.split('\n').slice(0, 3).join(' | ') ?? e}` });
      }
    }
    const ms = performance.now() - start;
    const grown = process.memoryUsage().arrayBuffers - before;
    if (ms > this.limits.caseMs) this.failures.push({ corpus, seed, mutation, problem: `took ${ms.toFixed(0)} ms (bound ${this.limits.caseMs} ms)` });
    if (grown > MEMORY_FACTOR * inputBytes + MEMORY_SLACK) this.failures.push({ corpus, seed, mutation, problem: `holds ${(grown / 1e6).toFixed(0)} MB for a ${inputBytes}-byte input` });
    kept = null;
  }

  /** A mutated checkpoint or quantized model: open it, and if that works, classify one batch with it. */
  async safetensorsCase(seed: number): Promise<void> {
    const r = rng(seed);
    const [name, base] = pick(r, [...this.seeds.checkpoints]);
    const { bytes, mutation } = mutateSafetensors(r, base.bytes);
    const file = this.scratchFile('model.safetensors', bytes);
    await this.run(name.includes('.q.') ? 'quantized model files' : 'checkpoints', seed, `${name}: ${mutation}`, bytes.length, async () => {
      const loaded = openModel({ weights: file, config: base.card ?? undefined });
      const batch = await loadBatch(await openDataset(this.seeds.data), [0, 1], loaded.model.spec.preprocess);
      return [loaded, await loaded.model.forward(batch.images, loaded.runner)];
    });
  }

  /**
   * A mutated card, or a mutated hub folder config.json (every other case): parsed, and if valid, the
   * model built from it with the tiny checkpoint of the original card's shapes.
   */
  async cardCase(seed: number): Promise<void> {
    const r = rng(seed);
    const hub = seed % 2 === 1;
    const [name, card] = hub ? ['vit', this.seeds.hubConfig] : pick(r, [...this.seeds.cards]);
    let doc = card;
    const edits = 1 + int(r, 3);
    for (let i = 0; i < edits; i++) doc = mutateJson(r, doc);
    const text = r() < 0.05 ? jsonText(doc).slice(0, int(r, 40)) : jsonText(doc);
    const checkpoint = this.seeds.checkpoints.get(`${name}.safetensors`)!.bytes;
    if (hub) {
      const dir = path.join(this.seeds.dir, `hub${seed % 4}`);
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'config.json'), text);
      fs.writeFileSync(path.join(dir, 'model.safetensors'), checkpoint);
      await this.run('hub configs', seed, text.slice(0, 160), text.length, async () => openModel({ weights: dir }));
      return;
    }
    const file = this.scratchFile('card.json', Buffer.from(text));
    await this.run('cards', seed, `${name}: ${text.slice(0, 160)}`, text.length, async () => openModel({ weights: this.scratchFile(`${name}.safetensors`, checkpoint), config: file }));
  }

  /** A mutated manifest (its JSON, or the size of its arrays): opened, and a few items loaded. */
  async manifestCase(seed: number): Promise<void> {
    const r = rng(seed);
    const m = this.seeds.manifest;
    let json: unknown = m.json;
    let images = m.images, labels = m.labels;
    let mutation: string;
    if (r() < 0.75) {
      json = mutateJson(r, json);
      if (r() < 0.3) json = mutateJson(r, json);
      mutation = jsonText(json).slice(0, 160);
    } else if (r() < 0.5) {
      images = images.subarray(0, int(r, images.length + 1));
      mutation = `images truncated to ${images.length}`;
    } else {
      labels = Uint8Array.from(labels, (l) => (r() < 0.3 ? int(r, 256) : l));
      mutation = `labels ${Array.from(labels)}`;
    }
    const dir = path.join(this.seeds.dir, `manifest${seed % 4}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'images.u8'), images);
    fs.writeFileSync(path.join(dir, 'labels.u8'), labels);
    const file = path.join(dir, 'm.json');
    fs.writeFileSync(file, jsonText(json));
    const p: Preprocess = { inputSize: 8, cropPct: 1, interpolation: 'bicubic', mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
    await this.run('manifests', seed, mutation, images.length + labels.length + 512, async () => {
      const ds = await openDataset(file);
      const n = Math.min(ds.size, 3);
      return loadBatch(ds, Array.from({ length: n }, (_, i) => i), p);
    });
  }

  /** A mutated image: decoded (or refused), and if decoded, checked for a consistent size. */
  async imageCase(seed: number): Promise<void> {
    const r = rng(seed);
    const [kind, base] = pick(r, [...this.seeds.images]);
    const { bytes, mutation } = mutateImage(r, kind, base);
    const ext = kind.startsWith('jpeg') ? 'jpg' : kind.startsWith('png') ? 'png' : kind.startsWith('bmp') ? 'bmp' : 'webp';
    const file = this.scratchFile(`image.${ext}`, bytes);
    await this.run('images', seed, `${kind}: ${mutation}`, bytes.length, async () => {
      // An ImageDecodeError (a Ptq4vitError) is how a dataset skips an unreadable image: a clean outcome.
      const img = await decodeImage(file);
      if (img.data.length !== img.width * img.height * 3) throw new Error(`decoded ${img.data.length} bytes for ${img.width}×${img.height}`);
      return img;
    });
  }

  report(): string {
    const rows = [...this.counts].map(([corpus, c]) => `${corpus}: ${c.cases} (${c.results} read, ${c.errors} refused with a Ptq4vitError)`);
    return rows.join('\n');
  }

  get total(): number {
    let n = 0;
    for (const c of this.counts.values()) n += c.cases;
    return n;
  }
}

