/**
 * Hugging Face **transformers** model folders (`save_pretrained`: config.json with `model_type`,
 * preprocessor_config.json, model.safetensors with transformers' key names) → the timm model we implement, in
 * one place per model type, as timm's `checkpoint_filter_fn` maps foreign checkpoints:
 *
 *   vit     ViTForImageClassification              → VisionTransformer, LayerNorm eps config.layer_norm_eps (1e-12)
 *   deit    DeiTForImageClassificationWithTeacher  → VisionTransformerDistilled (mean of the two heads), eps 1e-12
 *   swin    SwinForImageClassification             → SwinTransformer: transformers merges patches at the END of
 *           stage i (`layers.i.downsample`), timm at the start of stage i + 1; its stored relative_position_index
 *           buffers are checked against the index we compute
 *   dinov2  Dinov2ForImageClassification           → VisionTransformer with LayerScale (`layer_scale1/2.lambda1`),
 *           head on cat(cls, mean of the patch tokens); position embeddings stored for the config grid
 *           (image_size / patch_size) and bicubic-interpolated to the input grid by transformers' own rule
 *           (scale_factor (g + 0.1) / g0, antialias off; transformers 4.40), done once here
 *   dinov2_with_registers  Dinov2WithRegistersForImageClassification → the same with registers: timm's reg4 layout
 *           (reg_tokens, no_embed_class, the cls position folded into cls_token); positions resized by size with
 *           antialias (transformers ≥ 4.48); the head's patch mean skips the registers
 *
 * Attention: transformers' separate query/key/value Linears become timm's fused qkv (rows q; k; v), which is also
 * what PTQ4ViT quantizes (one Δ per part). Every tensor in the file must be used, or be a known buffer
 * (mask_token, relative_position_index): anything else means config.json does not describe the weights.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { describeFsError, SafeTensors } from '../io/safetensors.js';
import { Tensor, shapeString } from '../tensor/tensor.js';
import { archFromTimm, VIT_NORM_EPS } from './config.js';
import { HF_PREPROCESSOR_CONFIG, preprocessFromHfProcessor } from './hfprocessor.js';
import { interpolateBicubic } from './posembed.js';
import type { Arch, ModelSpec, VitArch } from './types.js';
import type { TensorSource } from './weights.js';

export const TRANSFORMERS_MODEL_TYPES = ['vit', 'deit', 'swin', 'dinov2', 'dinov2_with_registers'] as const;
type ModelType = (typeof TRANSFORMERS_MODEL_TYPES)[number];

type Json = Record<string, unknown>;
/** What the mapping reads of a checkpoint (a SafeTensors file, or its view with the model prefix added). */
type StoredTensors = Pick<SafeTensors, 'file' | 'names' | 'has' | 'tensor' | 'info' | 'bytes'>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A transformers config.json names its `model_type`; timm's hub config names an `architecture`. */
export function isTransformersConfig(config: unknown): boolean {
  return isObject(config) && typeof config.model_type === 'string' && !('architecture' in config);
}

function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Ptq4vitError(`cannot read ${file}${what}: ${describeFsError(e)}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Ptq4vitError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

// ---------------------------------------------------------------------------------------------
// A TensorSource that shows transformers' tensors under timm's names.

interface Mapped {
  /** The transformers tensor(s) this timm tensor is made of, for messages. */
  from: string;
  get(): Tensor;
}

/** timm-named view of a transformers checkpoint: tensors are built on first read and kept. */
class MappedSource implements TensorSource {
  private readonly cache = new Map<string, Tensor>();
  constructor(readonly file: string, private readonly entries: Map<string, Mapped>) {}

  names(): string[] {
    return [...this.entries.keys()];
  }

  tensor(name: string, shape?: readonly number[]): Tensor {
    const entry = this.entries.get(name);
    if (!entry) throw new Ptq4vitError(`${this.file}: no transformers tensor maps to '${name}' (does config.json describe these weights?)`);
    let t = this.cache.get(name);
    if (!t) {
      t = entry.get();
      this.cache.set(name, t);
    }
    if (shape && (shape.length !== t.shape.length || shape.some((d, i) => d !== t!.shape[i]))) {
      throw new Ptq4vitError(`${this.file}: tensor '${entry.from}' has shape ${shapeString(t.shape)}, but config.json implies ${shapeString(shape)} (for ${name})`);
    }
    return t;
  }
}

/** Builds the name map from a checkpoint, remembering which of its tensors were used. */
class Mapper {
  readonly entries = new Map<string, Mapped>();
  readonly used = new Set<string>();
  constructor(readonly st: StoredTensors) {}

  private need(name: string): void {
    if (!this.st.has(name)) throw new Ptq4vitError(`${this.st.file}: tensor '${name}' is missing (does config.json describe these weights?)`);
    this.used.add(name);
  }

  /** timm `to` ← transformers `from`, optionally transformed. */
  copy(to: string, from: string, transform?: (t: Tensor) => Tensor): void {
    this.need(from);
    this.entries.set(to, { from, get: () => (transform ? transform(this.st.tensor(from)) : this.st.tensor(from)) });
  }

  /** timm `to` computed from several transformers tensors. */
  combine(to: string, from: string[], get: (ts: Tensor[]) => Tensor): void {
    from.forEach((n) => this.need(n));
    this.entries.set(to, { from: from.join(' + '), get: () => get(from.map((n) => this.st.tensor(n))) });
  }

  /** A Linear `${to}.weight/.bias` ← `${from}.weight/.bias` (bias only if stored). */
  linear(to: string, from: string): void {
    this.copy(`${to}.weight`, `${from}.weight`);
    if (this.st.has(`${from}.bias`)) this.copy(`${to}.bias`, `${from}.bias`);
  }

  norm(to: string, from: string): void {
    this.copy(`${to}.weight`, `${from}.weight`);
    this.copy(`${to}.bias`, `${from}.bias`);
  }

  /** timm's fused qkv ← query, key, value stacked by rows (weights [3D, D], biases [3D]). */
  qkv(to: string, from: string): void {
    for (const part of ['weight', 'bias'] as const) {
      const names = ['query', 'key', 'value'].map((p) => `${from}.${p}.${part}`);
      if (part === 'bias' && !names.some((n) => this.st.has(n))) continue;
      names.forEach((n) => this.need(n));
      this.entries.set(`${to}.${part}`, {
        from: names.join(' + '),
        get: () => {
          const ts = names.map((n) => this.st.tensor(n));
          const rows = ts.reduce((s, t) => s + t.shape[0], 0);
          const data = new Float32Array(ts.reduce((s, t) => s + t.size, 0));
          let o = 0;
          for (const t of ts) {
            data.set(t.data, o);
            o += t.size;
          }
          return new Tensor(data, [rows, ...ts[0].shape.slice(1)]);
        },
      });
    }
  }

  /** Buffers transformers stores and we do not read (checked by `check` when given). */
  ignore(name: string, check?: () => void): void {
    if (!this.st.has(name)) return;
    check?.();
    this.used.add(name);
  }

  /** Every stored tensor must have been used: an extra one means the config and the weights disagree. */
  finish(configFile: string): MappedSource {
    const extra = this.st.names().filter((n) => !this.used.has(n));
    if (extra.length > 0) {
      const shown = extra.slice(0, 4).join(', ') + (extra.length > 4 ? `, … (${extra.length} in all)` : '');
      throw new Ptq4vitError(`${this.st.file}: tensors not described by ${configFile} (num_hidden_layers / depths / model_type?): ${shown}`);
    }
    return new MappedSource(this.st.file, this.entries);
  }
}

// ---------------------------------------------------------------------------------------------
// config.json → timm kwargs, per model type.

/** Reads config.json fields with their transformers defaults; errors name the file and field. */
function fields(config: Json, where: string) {
  const int = (key: string, fallback?: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new Ptq4vitError(`${where}: ${key} must be a positive integer, got ${JSON.stringify(config[key])}`);
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = config[key] ?? fallback;
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw new Ptq4vitError(`${where}: ${key} must be a positive number, got ${JSON.stringify(config[key])}`);
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = config[key] ?? fallback;
    if (typeof v !== 'boolean') throw new Ptq4vitError(`${where}: ${key} must be true or false, got ${JSON.stringify(config[key])}`);
    return v;
  };
  const ints = (key: string, fallback: number[]): number[] => {
    const v = config[key] ?? fallback;
    if (!Array.isArray(v) || v.length === 0 || v.some((d) => !Number.isInteger(d) || d <= 0)) throw new Ptq4vitError(`${where}: ${key} must be a list of positive integers, got ${JSON.stringify(config[key])}`);
    return v as number[];
  };
  /** A field whose other values we do not implement. */
  const only = (key: string, fallback: unknown, supported: unknown): void => {
    const v = config[key] ?? fallback;
    if (v !== supported) throw new Ptq4vitError(`${where}: ${key} ${JSON.stringify(v)} is not supported (only ${JSON.stringify(supported)})`);
  };
  return { int, num, bool, ints, only };
}

/** id2label → class names by index 0…n−1 (transformers' labels), with n = the classifier's rows. */
function labelsFrom(config: Json, where: string): string[] {
  const id2label = config.id2label;
  if (!isObject(id2label) || Object.keys(id2label).length === 0) throw new Ptq4vitError(`${where}: id2label must map class indices to names (a classifier needs them)`);
  const n = Object.keys(id2label).length;
  return Array.from({ length: n }, (_, i) => {
    const name = id2label[String(i)];
    if (typeof name !== 'string') throw new Ptq4vitError(`${where}: id2label must name every class 0…${n - 1}; "${i}" is ${JSON.stringify(name)}`);
    return name;
  });
}

/** timm's kwarg names in archFromTimm's messages → the config.json fields they came from. */
const FIELD_OF_KWARG: Record<string, string> = {
  img_size: 'image_size (or the preprocessor input size)',
  patch_size: 'patch_size',
  in_chans: 'num_channels',
  embed_dim: 'hidden_size / embed_dim',
  depth: 'num_hidden_layers',
  num_heads: 'num_attention_heads / num_heads',
  mlp_ratio: 'intermediate_size / mlp_ratio',
  window_size: 'window_size',
  depths: 'depths',
  num_classes: 'id2label',
};

function timmArch(timmClass: string, kwargs: Json, where: string): Arch {
  try {
    return archFromTimm(timmClass, kwargs, where);
  } catch (e) {
    if (e instanceof Ptq4vitError) throw new Ptq4vitError(e.message.replace(/timm_kwargs\.(\w+)/g, (_, k: string) => FIELD_OF_KWARG[k] ?? k));
    throw e;
  }
}

interface Mapping {
  arch: Arch;
  timmClass: string;
  /** Fills the mapper with every tensor the model reads. */
  map(m: Mapper): void;
}

/** ViT-style encoder layers (vit, deit, dinov2 differ only in the names of their norms and MLP). */
function vitLayers(m: Mapper, prefix: string, depth: number, names: { norm1: string; norm2: string; fc1: string; fc2: string; layerScale: boolean }): void {
  for (let i = 0; i < depth; i++) {
    const from = `${prefix}.encoder.layer.${i}`, to = `blocks.${i}`;
    m.norm(`${to}.norm1`, `${from}.${names.norm1}`);
    m.qkv(`${to}.attn.qkv`, `${from}.attention.attention`);
    m.linear(`${to}.attn.proj`, `${from}.attention.output.dense`);
    m.norm(`${to}.norm2`, `${from}.${names.norm2}`);
    m.linear(`${to}.mlp.fc1`, `${from}.${names.fc1}`);
    m.linear(`${to}.mlp.fc2`, `${from}.${names.fc2}`);
    if (names.layerScale) {
      m.copy(`${to}.ls1.gamma`, `${from}.layer_scale1.lambda1`);
      m.copy(`${to}.ls2.gamma`, `${from}.layer_scale2.lambda1`);
    }
  }
}

function vitEmbeddings(m: Mapper, prefix: string, posEmbed?: (t: Tensor) => Tensor): void {
  m.copy('cls_token', `${prefix}.embeddings.cls_token`);
  m.copy('pos_embed', `${prefix}.embeddings.position_embeddings`, posEmbed);
  m.linear('patch_embed.proj', `${prefix}.embeddings.patch_embeddings.projection`);
  m.ignore(`${prefix}.embeddings.mask_token`); // masked image modelling only
  m.norm('norm', `${prefix}.layernorm`);
}

/** ViT / DeiT / Dinov2 kwargs shared by all three. */
function vitKwargs(config: Json, where: string, imgSize: number, numClasses: number, mlpRatio: number): Json {
  const f = fields(config, where);
  f.only('hidden_act', 'gelu', 'gelu');
  return {
    img_size: imgSize,
    patch_size: f.int('patch_size', 16),
    in_chans: f.int('num_channels', 3),
    embed_dim: f.int('hidden_size', 768),
    depth: f.int('num_hidden_layers', 12),
    num_heads: f.int('num_attention_heads', 12),
    mlp_ratio: mlpRatio,
    qkv_bias: f.bool('qkv_bias', true),
    num_classes: numClasses,
  };
}

/** ViT/DeiT: intermediate_size must be a width timm's int(D · mlp_ratio) reproduces. */
function mlpRatioOf(config: Json, where: string): number {
  const f = fields(config, where);
  const hidden = f.int('hidden_size', 768), inter = f.int('intermediate_size', 3072);
  const ratio = inter / hidden;
  if (Math.floor(hidden * ratio) !== inter) throw new Ptq4vitError(`${where}: intermediate_size ${inter} is not int(hidden_size · r) for any ratio r we can represent`);
  return ratio;
}

/** The arch field for a LayerNorm eps: absent at timm's ViT default (1e-6), as a stored card reads it back. */
function normEps(eps: number): Pick<VitArch, 'normEps'> {
  return eps === VIT_NORM_EPS ? {} : { normEps: eps };
}

function mappingFor(type: ModelType, config: Json, st: StoredTensors, inputSize: number, where: string, { hasClassifier }: { hasClassifier: boolean }): Mapping {
  const f = fields(config, where);
  // Without classifier (ViTModel, Dinov2Model, SwinModel): timm's num_classes 0, the pooled embedding as output.
  const numClasses = hasClassifier ? labelsFrom(config, where).length : 0;
  switch (type) {
    case 'vit': {
      const imageSize = f.int('image_size', 224);
      if (imageSize !== inputSize) throw new Ptq4vitError(`${where}: image_size ${imageSize} differs from the ${inputSize}×${inputSize} input of ${HF_PREPROCESSOR_CONFIG} (ViT does not interpolate its position embeddings by default)`);
      const arch: VitArch = { ...(timmArch('VisionTransformer', vitKwargs(config, where, inputSize, numClasses, mlpRatioOf(config, where)), where) as VitArch), ...normEps(f.num('layer_norm_eps', 1e-12)) };
      return {
        arch,
        timmClass: 'VisionTransformer',
        map(m) {
          vitEmbeddings(m, 'vit');
          vitLayers(m, 'vit', arch.depth, { norm1: 'layernorm_before', norm2: 'layernorm_after', fc1: 'intermediate.dense', fc2: 'output.dense', layerScale: false });
          if (hasClassifier) m.linear('head', 'classifier');
          // ViTModel's pooler (dense + tanh on the cls token) feeds no classifier here: the embedding is the normed
          // cls token (timm's num_classes 0), the pooler is left out.
          m.ignore('vit.pooler.dense.weight');
          m.ignore('vit.pooler.dense.bias');
        },
      };
    }
    case 'deit': {
      if (!st.has('distillation_classifier.weight')) {
        throw new Ptq4vitError(`${st.file}: only DeiTForImageClassificationWithTeacher (cls_classifier + distillation_classifier) is supported; this file has no distillation_classifier`);
      }
      const imageSize = f.int('image_size', 224);
      if (imageSize !== inputSize) throw new Ptq4vitError(`${where}: image_size ${imageSize} differs from the ${inputSize}×${inputSize} input of ${HF_PREPROCESSOR_CONFIG}`);
      const arch: VitArch = { ...(timmArch('VisionTransformerDistilled', vitKwargs(config, where, inputSize, numClasses, mlpRatioOf(config, where)), where) as VitArch), ...normEps(f.num('layer_norm_eps', 1e-12)) };
      return {
        arch,
        timmClass: 'VisionTransformerDistilled',
        map(m) {
          vitEmbeddings(m, 'deit');
          m.copy('dist_token', 'deit.embeddings.distillation_token');
          vitLayers(m, 'deit', arch.depth, { norm1: 'layernorm_before', norm2: 'layernorm_after', fc1: 'intermediate.dense', fc2: 'output.dense', layerScale: false });
          m.linear('head', 'cls_classifier');
          m.linear('head_dist', 'distillation_classifier');
        },
      };
    }
    case 'dinov2': {
      f.only('use_swiglu_ffn', false, false);
      const patch = f.int('patch_size', 14);
      const base = timmArch('VisionTransformer', vitKwargs(config, where, inputSize, numClasses, f.num('mlp_ratio', 4)), where) as VitArch;
      const arch: VitArch = { ...base, ...normEps(f.num('layer_norm_eps', 1e-6)), initValues: f.num('layerscale_value', 1), ...(hasClassifier ? { headPool: 'token+patch-mean' as const } : {}) };
      const stored = f.int('image_size', 518) / patch;
      if (!Number.isInteger(stored)) throw new Ptq4vitError(`${where}: image_size ${config.image_size} is not a multiple of patch_size ${patch}`);
      const grid = inputSize / patch;
      return {
        arch,
        timmClass: 'VisionTransformer',
        map(m) {
          vitEmbeddings(m, 'dinov2', (t) => dinov2PositionEmbeddings(t, stored, grid, `${st.file}: dinov2.embeddings.position_embeddings`));
          vitLayers(m, 'dinov2', arch.depth, { norm1: 'norm1', norm2: 'norm2', fc1: 'mlp.fc1', fc2: 'mlp.fc2', layerScale: true });
          if (hasClassifier) m.linear('head', 'classifier');
        },
      };
    }
    case 'dinov2_with_registers': {
      // transformers ≥ 4.48: tokens [cls + pos_cls, registers, patches + pos_patches]; the head skips the registers.
      // timm's reg4 DINOv2 layout holds the same model: no_embed_class with pos_cls folded into cls_token.
      f.only('use_swiglu_ffn', false, false);
      const patch = f.int('patch_size', 14);
      const registers = f.int('num_register_tokens', 4);
      const base = timmArch('VisionTransformer', vitKwargs(config, where, inputSize, numClasses, f.num('mlp_ratio', 4)), where) as VitArch;
      const arch: VitArch = { ...base, ...normEps(f.num('layer_norm_eps', 1e-6)), initValues: f.num('layerscale_value', 1), regTokens: registers, noEmbedClass: true, ...(hasClassifier ? { headPool: 'token+patch-mean' as const } : {}) };
      const stored = f.int('image_size', 518) / patch;
      if (!Number.isInteger(stored)) throw new Ptq4vitError(`${where}: image_size ${config.image_size} is not a multiple of patch_size ${patch}`);
      const grid = inputSize / patch;
      const P = 'dinov2_with_registers';
      const posName = `${P}.embeddings.position_embeddings`;
      return {
        arch,
        timmClass: 'VisionTransformer',
        map(m) {
          m.combine('cls_token', [`${P}.embeddings.cls_token`, posName], ([cls, pos]) => new Tensor(Float32Array.from(cls.data, (v, i) => v + pos.data[i]), [1, 1, cls.size]));
          m.copy('reg_token', `${P}.embeddings.register_tokens`);
          m.copy('pos_embed', posName, (t) => registersPositionEmbeddings(t, stored, grid, `${st.file}: ${posName}`));
          m.linear('patch_embed.proj', `${P}.embeddings.patch_embeddings.projection`);
          m.ignore(`${P}.embeddings.mask_token`);
          m.norm('norm', `${P}.layernorm`);
          vitLayers(m, P, arch.depth, { norm1: 'norm1', norm2: 'norm2', fc1: 'mlp.fc1', fc2: 'mlp.fc2', layerScale: true });
          if (hasClassifier) m.linear('head', 'classifier');
        },
      };
    }
    case 'swin': {
      f.only('use_absolute_embeddings', false, false);
      f.only('hidden_act', 'gelu', 'gelu');
      // Our Swin uses nn.LayerNorm's 1e-5 everywhere, transformers' SwinConfig default.
      f.only('layer_norm_eps', 1e-5, 1e-5);
      const depths = f.ints('depths', [2, 2, 6, 2]);
      const embedDim = f.int('embed_dim', 96);
      const kwargs = {
        img_size: inputSize,
        patch_size: f.int('patch_size', 4),
        in_chans: f.int('num_channels', 3),
        embed_dim: embedDim,
        depths,
        num_heads: f.ints('num_heads', [3, 6, 12, 24]),
        window_size: f.int('window_size', 7),
        mlp_ratio: f.num('mlp_ratio', 4),
        qkv_bias: f.bool('qkv_bias', true),
        num_classes: numClasses,
      };
      const arch = timmArch('SwinTransformer', kwargs, where);
      const last = embedDim * 2 ** (depths.length - 1);
      if (config.hidden_size !== undefined && config.hidden_size !== last) throw new Ptq4vitError(`${where}: hidden_size ${JSON.stringify(config.hidden_size)} is not embed_dim · 2^(stages − 1) = ${last}`);
      return {
        arch,
        timmClass: 'SwinTransformer',
        map(m) {
          m.linear('patch_embed.proj', 'swin.embeddings.patch_embeddings.projection');
          m.norm('patch_embed.norm', 'swin.embeddings.norm');
          m.ignore('swin.embeddings.mask_token');
          const window = kwargs.window_size;
          let resolution = inputSize / kwargs.patch_size;
          depths.forEach((depth, i) => {
            // The window actually used at this stage (clamped to the grid), as relative_position_index was built.
            const w = Math.min(window, resolution);
            for (let j = 0; j < depth; j++) {
              const from = `swin.encoder.layers.${i}.blocks.${j}`, to = `layers.${i}.blocks.${j}`;
              m.norm(`${to}.norm1`, `${from}.layernorm_before`);
              m.qkv(`${to}.attn.qkv`, `${from}.attention.self`);
              m.copy(`${to}.attn.relative_position_bias_table`, `${from}.attention.self.relative_position_bias_table`);
              m.ignore(`${from}.attention.self.relative_position_index`, () => checkRelativePositionIndex(st, `${from}.attention.self.relative_position_index`, w));
              m.linear(`${to}.attn.proj`, `${from}.attention.output.dense`);
              m.norm(`${to}.norm2`, `${from}.layernorm_after`);
              m.linear(`${to}.mlp.fc1`, `${from}.intermediate.dense`);
              m.linear(`${to}.mlp.fc2`, `${from}.output.dense`);
            }
            // transformers: stage i ends with the merge; timm: stage i + 1 begins with it.
            if (i + 1 < depths.length) {
              m.norm(`layers.${i + 1}.downsample.norm`, `swin.encoder.layers.${i}.downsample.norm`);
              m.linear(`layers.${i + 1}.downsample.reduction`, `swin.encoder.layers.${i}.downsample.reduction`);
              resolution /= 2;
            }
          });
          m.norm('norm', 'swin.layernorm');
          if (hasClassifier) m.linear('head.fc', 'classifier');
        },
      };
    }
  }
}

/**
 * transformers' Dinov2 `interpolate_pos_encoding` (4.40): the patch part of the stored table, a g0 × g0 grid,
 * bicubic-interpolated with scale_factor (g + 0.1) / g0 (the + 0.1 avoids a floating-point floor below g),
 * antialias off; the cls position is kept. When the grid is already g × g the table is used as stored.
 */
export function dinov2PositionEmbeddings(table: Tensor, storedGrid: number, grid: number, where: string): Tensor {
  const D = table.shape[table.rank - 1];
  const n = table.size / D;
  if (n !== storedGrid * storedGrid + 1) throw new Ptq4vitError(`${where}: ${n} positions, config.json's image_size / patch_size implies ${storedGrid}² + 1 = ${storedGrid * storedGrid + 1}`);
  if (storedGrid === grid) return table.reshape([1, n, D]);
  const scale = (grid + 0.1) / storedGrid;
  const outSize = Math.floor(storedGrid * scale);
  if (outSize !== grid) throw new Ptq4vitError(`${where}: interpolating ${storedGrid}² positions by ${scale} gives ${outSize}², not the ${grid}² input grid`);
  const patches = new Tensor(table.data.slice(D), [storedGrid * storedGrid, D]);
  const resampled = interpolateBicubic(patches, [storedGrid, storedGrid], { size: [grid, grid], antialias: false, scaleFactor: [scale, scale] });
  const out = new Float32Array((grid * grid + 1) * D);
  out.set(table.data.subarray(0, D));
  out.set(resampled.data, D);
  return new Tensor(out, [1, grid * grid + 1, D]);
}

/**
 * transformers' Dinov2WithRegisters `interpolate_pos_encoding` (≥ 4.48): the patch grid bicubic-resized to the
 * input grid by `size` with antialias = true. Returns the patch rows only ([1, g², D]: timm's no_embed_class
 * table; the cls row is folded into cls_token).
 */
export function registersPositionEmbeddings(table: Tensor, storedGrid: number, grid: number, where: string): Tensor {
  const D = table.shape[table.rank - 1];
  const n = table.size / D;
  if (n !== storedGrid * storedGrid + 1) throw new Ptq4vitError(`${where}: ${n} positions, config.json's image_size / patch_size implies ${storedGrid}² + 1 = ${storedGrid * storedGrid + 1}`);
  const patches = new Tensor(table.data.slice(D), [storedGrid * storedGrid, D]);
  const resampled = storedGrid === grid ? patches : interpolateBicubic(patches, [storedGrid, storedGrid], { size: [grid, grid], antialias: true });
  return resampled.reshape([1, grid * grid, D]);
}

/** The stored Swin index buffer must be the one timm's get_relative_position_index builds for this window. */
function checkRelativePositionIndex(st: StoredTensors, name: string, window: number): void {
  const info = st.info(name);
  const n = window * window;
  if (info.dtype !== 'I64' || info.shape.length !== 2 || info.shape[0] !== n || info.shape[1] !== n) {
    throw new Ptq4vitError(`${st.file}: tensor '${name}' is ${info.dtype} ${shapeString(info.shape)}, expected I64 [${n}, ${n}] for the ${window}×${window} window config.json implies`);
  }
  const bytes = st.bytes(name);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const span = 2 * window - 1;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const expected = (Math.floor(i / window) - Math.floor(j / window) + window - 1) * span + ((i % window) - (j % window) + window - 1);
      if (view.getBigInt64((i * n + j) * 8, true) !== BigInt(expected)) {
        throw new Ptq4vitError(`${st.file}: tensor '${name}' [${i}, ${j}] is ${view.getBigInt64((i * n + j) * 8, true)}, not the relative position index ${expected} of a ${window}×${window} window`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

export interface TransformersModel {
  spec: ModelSpec;
  /** The checkpoint under timm's names. */
  weights: TensorSource;
}

/** Open a transformers folder: DIR/config.json (already parsed), DIR/preprocessor_config.json, DIR/model.safetensors. */
/**
 * A base model saved on its own (ViTModel, Dinov2Model, SwinModel: `save_pretrained` of the encoder) stores its tensors
 * without the `vit.` / `dinov2.` / `swin.` prefix its ForImageClassification wrapper adds: viewed here with it, so
 * one mapping reads both.
 */
function withModelPrefix(st: SafeTensors, prefix: string): StoredTensors {
  if (st.names().some((n) => n.startsWith(`${prefix}.`))) return st;
  const inner = (name: string) => (name.startsWith(`${prefix}.`) ? name.slice(prefix.length + 1) : name);
  return {
    file: st.file,
    names: () => st.names().map((n) => `${prefix}.${n}`),
    has: (name) => st.has(inner(name)),
    tensor: (name, shape) => st.tensor(inner(name), shape),
    info: (name) => st.info(inner(name)),
    bytes: (name) => st.bytes(inner(name)),
  };
}

export function openTransformersFolder(dir: string, configFile: string, config: unknown, raw: SafeTensors): TransformersModel {
  if (!isObject(config)) throw new Ptq4vitError(`${configFile}: must be a JSON object`);
  const type = config.model_type;
  if (!TRANSFORMERS_MODEL_TYPES.includes(type as ModelType)) {
    throw new Ptq4vitError(`${configFile}: model_type ${JSON.stringify(type)} is not supported (supported: ${TRANSFORMERS_MODEL_TYPES.join(', ')})`);
  }
  // ViTModel / Dinov2Model / SwinModel: an encoder without a classifier (a backbone for its embeddings): num_classes 0.
  const st = withModelPrefix(raw, type as string);
  const classifier = type === 'deit' ? 'cls_classifier.weight' : 'classifier.weight';
  const hasClassifier = st.has(classifier);
  if (!hasClassifier && type === 'deit') {
    throw new Ptq4vitError(`${st.file}: no classifier (${classifier}): a DeiT backbone (DeiTModel) is not supported (config.json architectures ${JSON.stringify(config.architectures ?? null)}); ViTModel, Dinov2Model and SwinModel are`);
  }
  const processorFile = path.join(dir, HF_PREPROCESSOR_CONFIG);
  if (!fs.existsSync(processorFile)) throw new Ptq4vitError(`${dir}: ${HF_PREPROCESSOR_CONFIG} is missing (a transformers folder's image processor: the model's preprocessing)`);
  const processorConfig = readJson(processorFile, '');
  const preprocess = preprocessFromHfProcessor(processorConfig, processorFile);
  const mapping = mappingFor(type as ModelType, config, st, preprocess.inputSize, configFile, { hasClassifier });
  const mapper = new Mapper(st);
  mapping.map(mapper);
  const weights = mapper.finish(configFile);
  const labelNames = hasClassifier ? labelsFrom(config, configFile) : undefined;
  const name = typeof config._name_or_path === 'string' && config._name_or_path ? config._name_or_path : `${type}:${path.basename(path.resolve(dir))}`;
  const spec: ModelSpec = {
    name,
    timmClass: mapping.timmClass,
    arch: mapping.arch,
    preprocess,
    ...(labelNames ? { labelNames } : {}),
    transformers: { modelType: type as string, config, preprocessorConfig: processorConfig as Json },
  };
  return { spec, weights };
}

/** The folder's model when DIR/config.json is a transformers config (it names a model_type), else null (a timm hub folder). */
export function readTransformersFolder(dir: string, configFile: string, st: SafeTensors): TransformersModel | null {
  const config = readJson(configFile, '');
  return isTransformersConfig(config) ? openTransformersFolder(dir, configFile, config, st) : null;
}
