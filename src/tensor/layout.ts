/**
 * The named layout ops every model lowers its data movement to: linear maps y = f(x₁, …) such as
 * splitting attention heads, cutting windows or prepending the class token. Each op carries
 *   - `forward`: the eager kernel (tight loops in ops.ts / window.ts / patches.ts),
 *   - `adjoint`: the transposed map, ∂L/∂xᵢ from ∂L/∂y, for the backward pass (src/grad/tape.ts),
 *   - `onnx`: the same map as ONNX nodes, for tracing a whole model into one graph (src/export/trace.ts).
 * In ONNX the leading (batch-like) dimension is always −1 in reshapes, so traced graphs take any batch.
 */
import type { GraphBuilder } from '../onnx/builder.js';
import { add, fromHeads, scale, scaleChannels, scaleInPlace, scatterToken, selectToken, toHeads } from './ops.js';
import { unfoldPatches } from './patches.js';
import { Tensor } from './tensor.js';
import {
  meanOverTokens,
  mergePatches2x2,
  splitPatches2x2,
  spreadOverTokens,
  windowPartition,
  windowReverse,
  windowReverseAdd,
  type WindowGrid,
} from './window.js';

export interface LayoutOp {
  /** What the op is, with its parameters (shows in traced graphs and error messages). */
  readonly name: string;
  forward(inputs: readonly Tensor[]): Tensor;
  /** ∂L/∂inputs from ∂L/∂y; null where an input needs no gradient. `inputs` are the forward inputs. */
  adjoint(gradOut: Tensor, inputs: readonly Tensor[]): (Tensor | null)[];
  /** Emit the op into `g`; `inputs` are value names, `shapes` the traced input shapes. Returns the output name. */
  onnx(g: GraphBuilder, inputs: readonly string[], shapes: readonly (readonly number[])[]): string;
}

/** NCHW images → p×p patches [B, (H/p)·(W/p), C·p·p] in (c, ky, kx) order; images get no gradient. */
export function unfoldPatchesOp(patch: number): LayoutOp {
  return {
    name: `unfoldPatches(${patch})`,
    forward: ([images]) => unfoldPatches(images, patch),
    adjoint: () => [null],
    onnx(g, [x], [[, c, h, w]]) {
      const gh = h / patch, gw = w / patch;
      const grid = g.reshape(x, [-1, c, gh, patch, gw, patch], 'patches');
      const ordered = g.transpose(grid, [0, 2, 4, 1, 3, 5], 'patches_t');
      return g.reshape(ordered, [-1, gh * gw, c * patch * patch], 'patches_flat');
    },
  };
}

export interface HeadSplit {
  heads: number;
  /** Column block `part` of `parts` equal blocks (q, k, v = 0, 1, 2 of timm's fused qkv). */
  part: number;
  parts: number;
  /** A factor applied on the way (Swin scales q by head_dim^-½ before q·kᵀ); default 1. */
  factor?: number;
}

/** [B, N, parts·H·d] → block `part` as heads [B·H, N, d] (times `factor`). */
export function splitHeadsOp({ heads, part, parts, factor = 1 }: HeadSplit): LayoutOp {
  return {
    name: `splitHeads(${heads}, ${part}/${parts}${factor !== 1 ? `, ×${factor}` : ''})`,
    forward: ([x]) => {
      const y = toHeads(x, heads, part, parts);
      return factor === 1 ? y : scaleInPlace(y, factor);
    },
    adjoint: (g) => [fromHeads(factor === 1 ? g : scale(g, factor), heads, part, parts)],
    onnx(b, [x], [[, tokens, width]]) {
      const c = width / parts;
      const block = parts === 1 ? x : b.slice(x, 2, part * c, (part + 1) * c, 'qkv_part');
      // The factor (elementwise, so the same numbers in either layout) comes before the head transpose, which
      // then stays the last step: the integer graph quantizes before it and moves 1-byte codes (integer.ts).
      const scaled = factor === 1 ? block : b.op('Mul', [block, b.float('factor', factor)], undefined, 'heads_scaled');
      const split = b.reshape(scaled, [-1, tokens, heads, c / heads], 'heads');
      return b.reshape(b.transpose(split, [0, 2, 1, 3], 'heads_t'), [-1, tokens, c / heads], 'heads_flat');
    },
  };
}

/** Heads [B·H, N, d] → [B, N, H·d]: the inverse of splitHeads with one part. */
export function mergeHeadsOp(heads: number): LayoutOp {
  return {
    name: `mergeHeads(${heads})`,
    forward: ([x]) => fromHeads(x, heads),
    adjoint: (g) => [toHeads(g, heads)],
    onnx(b, [x], [[, tokens, d]]) {
      const split = b.reshape(x, [-1, heads, tokens, d], 'merge');
      return b.reshape(b.transpose(split, [0, 2, 1, 3], 'merge_t'), [-1, tokens, heads * d], 'merged');
    },
  };
}

/**
 * Patch embeddings [B, P, D] → tokens [B, prefix + P, D]: the class (and distillation) tokens prepended,
 * position embeddings added (none: BEiT with use_abs_pos_emb false). Affine, not linear: its adjoint is that of
 * the linear part (drop the prefix).
 */
export function prependTokensOp(prefix: Tensor, position: Tensor | null): LayoutOp {
  const [numPrefix, D] = prefix.shape;
  return {
    name: `prependTokens(${numPrefix})`,
    forward([patches]) {
      const [batch, numPatches] = patches.shape;
      const tokens = numPatches + numPrefix;
      const out = new Float32Array(batch * tokens * D);
      for (let b = 0; b < batch; b++) {
        const base = b * tokens * D;
        out.set(prefix.data, base);
        out.set(patches.data.subarray(b * numPatches * D, (b + 1) * numPatches * D), base + numPrefix * D);
        if (position) for (let j = 0; j < tokens * D; j++) out[base + j] += position.data[j];
      }
      return new Tensor(out, [batch, tokens, D]);
    },
    adjoint(g) {
      const [batch, tokens] = g.shape;
      const numPatches = tokens - numPrefix;
      const out = new Float32Array(batch * numPatches * D);
      for (let b = 0; b < batch; b++) out.set(g.data.subarray((b * tokens + numPrefix) * D, (b + 1) * tokens * D), b * numPatches * D);
      return [new Tensor(out, [batch, numPatches, D])];
    },
    onnx(b, [x], [[, numPatches]]) {
      // No prefix tokens (class_token=False, no registers): only the position add (or nothing).
      if (numPrefix === 0 && !position) return x;
      if (numPrefix === 0 && position) return b.op('Add', [x, b.floats('pos_embed', position.data, [1, numPatches, D], position.data)], undefined, 'tokens_pos');
      // Broadcast the prefix over the batch: Expand to [B, prefix, D] with B read off the input's shape.
      const batch = b.slice(b.op('Shape', [x], undefined, 'batch_shape'), 0, 0, 1, 'batch');
      const target = b.op('Concat', [batch, b.int64s('prefix_dims', [numPrefix, D])], { axis: 0 }, 'prefix_shape');
      const tokens = b.floats('prefix_tokens', prefix.data, [1, numPrefix, D], prefix.data);
      const expanded = b.op('Expand', [tokens, target], undefined, 'prefix');
      const joined = b.op('Concat', [expanded, x], { axis: 1 }, 'tokens');
      if (!position) return joined;
      return b.op('Add', [joined, b.floats('pos_embed', position.data, [1, numPrefix + numPatches, D], position.data)], undefined, 'tokens_pos');
    },
  };
}

/**
 * x·γ per channel over the last dimension: timm's LayerScale (`ls1.gamma`, DeiT III / DINOv2) and BEiT's
 * `gamma_1`/`gamma_2`. A diagonal linear map, so its adjoint is itself.
 */
export function channelScaleOp(gamma: Tensor): LayoutOp {
  return {
    name: `channelScale(${gamma.size})`,
    forward: ([x]) => scaleChannels(x, gamma),
    adjoint: (g) => [scaleChannels(g, gamma)],
    onnx: (b, [x]) => b.op('Mul', [x, b.floats('gamma', gamma.data, [gamma.size], gamma.data)], undefined, 'layer_scale'),
  };
}

/**
 * Scores [G·H, N, M] (head fastest, as the attention products give them) times one factor per head:
 * Swin V2's logit scale exp(min(logit_scale, ln 100)) on the cosine similarities. Diagonal, so its own adjoint.
 */
export function headScaleOp(factors: Float32Array): LayoutOp {
  const heads = factors.length;
  const apply = (x: Tensor): Tensor => {
    const per = x.size / x.shape[0];
    if (x.shape[0] % heads !== 0) throw new Error(`headScale: ${x.shape[0]} groups are not a multiple of ${heads} heads`);
    const out = new Float32Array(x.size);
    const src = x.data;
    for (let g = 0; g < x.shape[0]; g++) {
      const f = factors[g % heads];
      for (let o = g * per, end = o + per; o < end; o++) out[o] = src[o] * f;
    }
    return new Tensor(out, x.shape);
  };
  return {
    name: `headScale(${heads})`,
    forward: ([x]) => apply(x),
    adjoint: (g) => [apply(g)],
    onnx(b, [x], [[, n, m]]) {
      const grouped = b.reshape(x, [-1, heads, n, m], 'scores_heads');
      const scaled = b.op('Mul', [grouped, b.floats('head_scale', factors, [heads, 1, 1], factors)], undefined, 'scores_head_scaled');
      return b.reshape(scaled, [-1, n, m], 'scores_scaled');
    },
  };
}

/** Token t of every image: [B, N, C] → [B, C]. */
export function selectTokenOp(token: number): LayoutOp {
  return {
    name: `selectToken(${token})`,
    forward: ([x]) => selectToken(x, token),
    adjoint: (g, [x]) => [scatterToken(g, token, x.shape[1])],
    onnx: (b, [x]) => b.op('Gather', [x, b.int64('token', token)], { axis: 1 }, `token${token}`),
  };
}

/** (a + b)/2: the distilled DeiT's inference output, the mean of its two heads. */
export const averageOp: LayoutOp = {
  name: 'average',
  forward: ([a, b]) => scaleInPlace(add(a, b), 0.5),
  adjoint: (g) => [scale(g, 0.5), scale(g, 0.5)],
  onnx: (b, [x, y]) => b.op('Mul', [b.op('Add', [x, y], undefined, 'sum'), b.float('half', 0.5)], undefined, 'average'),
};

/** Roll a [B, H, W, C] grid by `by` along H and W (torch.roll semantics), as Slice + Concat. */
function rollGrid(b: GraphBuilder, x: string, height: number, width: number, by: number): string {
  let y = x;
  for (const [axis, size] of [[1, height], [2, width]] as const) {
    const s = ((by % size) + size) % size;
    if (s === 0) continue;
    // roll(x, s)[i] = x[(i − s) mod size]: the last s entries move to the front.
    y = b.op('Concat', [b.slice(y, axis, size - s, size, 'roll_tail'), b.slice(y, axis, 0, size - s, 'roll_head')], { axis }, 'rolled');
  }
  return y;
}

/** Tokens [B, H·W, C] → (shifted) windows [B·nW, window², C] (see windowPartition). */
export function windowPartitionOp(grid: WindowGrid): LayoutOp {
  const { height, width, window, shift } = grid;
  return {
    name: `windowPartition(${height}×${width}, w${window}, s${shift})`,
    forward: ([x]) => windowPartition(x, grid),
    adjoint: (g) => [windowReverse(g, grid)],
    onnx(b, [x], [[, , c]]) {
      const rolled = rollGrid(b, b.reshape(x, [-1, height, width, c], 'grid'), height, width, -shift);
      const cut = b.reshape(rolled, [-1, height / window, window, width / window, window, c], 'windows');
      const ordered = b.transpose(cut, [0, 1, 3, 2, 4, 5], 'windows_t');
      return b.reshape(ordered, [-1, window * window, c], 'windows_flat');
    },
  };
}

/** residual [B, H·W, C] + windowReverse(windows): a Swin block's attention residual in one pass. */
export function windowReverseAddOp(grid: WindowGrid): LayoutOp {
  const { height, width, window, shift } = grid;
  return {
    name: `windowReverseAdd(${height}×${width}, w${window}, s${shift})`,
    forward: ([residual, windows]) => windowReverseAdd(residual, windows, grid),
    adjoint: (g) => [g, windowPartition(g, grid)],
    onnx(b, [residual, windows], [, [, , c]]) {
      const cut = b.reshape(windows, [-1, height / window, width / window, window, window, c], 'unwindow');
      const placed = b.reshape(b.transpose(cut, [0, 1, 3, 2, 4, 5], 'unwindow_t'), [-1, height, width, c], 'ungrid');
      const tokens = b.reshape(rollGrid(b, placed, height, width, shift), [-1, height * width, c], 'untokens');
      return b.op('Add', [residual, tokens], undefined, 'residual');
    },
  };
}

/** Swin patch merging's gather: [B, H·W, C] → [B, (H/2)·(W/2), 4C] in timm's (dx, dy) order. */
export function mergePatchesOp(height: number, width: number): LayoutOp {
  return {
    name: `mergePatches(${height}×${width})`,
    forward: ([x]) => mergePatches2x2(x, height, width),
    adjoint: (g) => [splitPatches2x2(g, height, width)],
    onnx(b, [x], [[, , c]]) {
      // reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5), as timm's PatchMerging.
      const grid = b.reshape(x, [-1, height / 2, 2, width / 2, 2, c], 'merge_grid');
      return b.reshape(b.transpose(grid, [0, 1, 3, 4, 2, 5], 'merge_grid_t'), [-1, (height / 2) * (width / 2), 4 * c], 'merged_patches');
    },
  };
}

/** Global average pool over tokens: [B, L, C] → [B, C]. */
export const meanOverTokensOp: LayoutOp = {
  name: 'meanOverTokens',
  forward: ([x]) => meanOverTokens(x),
  adjoint: (g, [x]) => [spreadOverTokens(g, x.shape[1])],
  onnx: (b, [x]) => b.op('ReduceMean', [x], { axes: [1], keepdims: 0 }, 'pooled'),
};

/**
 * [B, N, C] → [B, 2C] = cat(token 0, mean of the tokens after the `numPrefix` prefix tokens): transformers'
 * Dinov2ForImageClassification feeds its head the cls token beside the mean of the patch tokens.
 */
export function clsAndPatchMeanOp(numPrefix: number): LayoutOp {
  return {
    name: `clsAndPatchMean(${numPrefix})`,
    forward([x]) {
      const [batch, tokens, c] = x.shape;
      const patches = tokens - numPrefix;
      const out = new Float32Array(batch * 2 * c);
      for (let b = 0; b < batch; b++) {
        const base = b * tokens * c;
        out.set(x.data.subarray(base, base + c), b * 2 * c);
        // Summed token by token in float32, then divided, as torch's mean over a dimension.
        const sum = new Float32Array(c);
        for (let t = numPrefix; t < tokens; t++) for (let j = 0; j < c; j++) sum[j] += x.data[base + t * c + j];
        for (let j = 0; j < c; j++) out[b * 2 * c + c + j] = sum[j] / patches;
      }
      return new Tensor(out, [batch, 2 * c]);
    },
    adjoint(g, [x]) {
      const [batch, tokens, c] = x.shape;
      const patches = tokens - numPrefix;
      const out = new Float32Array(batch * tokens * c);
      for (let b = 0; b < batch; b++) {
        const base = b * tokens * c;
        out.set(g.data.subarray(b * 2 * c, b * 2 * c + c), base);
        for (let t = numPrefix; t < tokens; t++) for (let j = 0; j < c; j++) out[base + t * c + j] = g.data[b * 2 * c + c + j] / patches;
      }
      return [new Tensor(out, [batch, tokens, c])];
    },
    onnx(b, [x], [[, tokens]]) {
      const cls = b.op('Gather', [x, b.int64('token', 0)], { axis: 1 }, 'cls');
      const patches = b.op('ReduceMean', [b.slice(x, 1, numPrefix, tokens, 'patch_tokens')], { axes: [1], keepdims: 0 }, 'patch_mean');
      return b.op('Concat', [cls, patches], { axis: 1 }, 'cls_patch_mean');
    },
  };
}
/** timm's global_pool over tokens other than the first `skip` (the prefix tokens): avg, max or ½(avg + max). */
export type TokenPool = 'avg' | 'max' | 'avgmax';

/**
 * [B, N, C] → [B, C]: the mean, max or ½(max + mean) over tokens skip … N−1 (timm's global_pool_nlc with the
 * class and register tokens excluded). Max is piecewise linear: linear for a fixed argmax, so its adjoint sends
 * ∂L/∂y to the token that held each channel's maximum in the forward input (the first one on ties, as here).
 */
export function poolTokensOp(pool: TokenPool, skip: number): LayoutOp {
  const withMean = pool !== 'max', withMax = pool !== 'avg';
  const meanWeight = pool === 'avgmax' ? 0.5 : 1, maxWeight = pool === 'avgmax' ? 0.5 : 1;
  /** For each (image, channel): the token index of the maximum over tokens skip … N−1. */
  const argmax = (x: Tensor): Int32Array => {
    const [batch, tokens, C] = x.shape;
    const at = new Int32Array(batch * C);
    for (let b = 0; b < batch; b++) {
      for (let c = 0; c < C; c++) {
        let best = skip;
        for (let t = skip + 1; t < tokens; t++) if (x.data[(b * tokens + t) * C + c] > x.data[(b * tokens + best) * C + c]) best = t;
        at[b * C + c] = best;
      }
    }
    return at;
  };
  return {
    name: `poolTokens(${pool}, from ${skip})`,
    forward([x]) {
      const [batch, tokens, C] = x.shape;
      const n = tokens - skip;
      const out = new Float32Array(batch * C);
      if (withMean) {
        for (let b = 0; b < batch; b++) {
          for (let t = skip; t < tokens; t++) {
            const row = (b * tokens + t) * C;
            for (let c = 0; c < C; c++) out[b * C + c] += x.data[row + c];
          }
        }
        for (let i = 0; i < out.length; i++) out[i] = (out[i] / n) * meanWeight;
      }
      if (withMax) {
        const at = argmax(x);
        for (let b = 0; b < batch; b++) for (let c = 0; c < C; c++) out[b * C + c] += maxWeight * x.data[(b * tokens + at[b * C + c]) * C + c];
      }
      return new Tensor(out, [batch, C]);
    },
    adjoint(g, [x]) {
      const [batch, tokens, C] = x.shape;
      const n = tokens - skip;
      const gx = new Float32Array(x.size);
      if (withMean) {
        for (let b = 0; b < batch; b++) {
          for (let t = skip; t < tokens; t++) for (let c = 0; c < C; c++) gx[(b * tokens + t) * C + c] = (meanWeight * g.data[b * C + c]) / n;
        }
      }
      if (withMax) {
        const at = argmax(x);
        for (let b = 0; b < batch; b++) for (let c = 0; c < C; c++) gx[(b * tokens + at[b * C + c]) * C + c] += maxWeight * g.data[b * C + c];
      }
      return [new Tensor(gx, x.shape)];
    },
    onnx(b, [x], [[, tokens]]) {
      const kept = skip === 0 ? x : b.slice(x, 1, skip, tokens, 'pool_tokens');
      const mean = withMean ? b.op('ReduceMean', [kept], { axes: [1], keepdims: 0 }, 'pool_mean') : null;
      const max = withMax ? b.op('ReduceMax', [kept], { axes: [1], keepdims: 0 }, 'pool_max') : null;
      if (mean && max) return b.op('Mul', [b.op('Add', [max, mean], undefined, 'pool_sum'), b.float('half', 0.5)], undefined, 'pooled');
      return (mean ?? max)!;
    },
  };
}

/**
 * Constant tokens [L, D] repeated over the batch of the input: [B, N, C] → [B, L, D] (timm AttentionPoolLatent's
 * `latent.expand(B, -1, -1)`). The output does not depend on the input's values, so the input gets no gradient.
 */
export function batchOfTokensOp(tokens: Tensor): LayoutOp {
  const [L, D] = tokens.shape;
  return {
    name: `batchOfTokens(${L})`,
    forward([x]) {
      const batch = x.shape[0];
      const out = new Float32Array(batch * L * D);
      for (let b = 0; b < batch; b++) out.set(tokens.data, b * L * D);
      return new Tensor(out, [batch, L, D]);
    },
    adjoint: () => [null],
    onnx(b, [x]) {
      const batch = b.slice(b.op('Shape', [x], undefined, 'batch_shape'), 0, 0, 1, 'batch');
      const target = b.op('Concat', [batch, b.int64s('latent_dims', [L, D])], { axis: 0 }, 'latent_shape');
      return b.op('Expand', [b.floats('latent', tokens.data, [1, L, D], tokens.data), target], undefined, 'latent_batch');
    },
  };
}

/** Tokens [B, N, C] → [B, N − k, C] without the first k (the class and register tokens); adjoint: zeros back in front. */
export function dropTokensOp(k: number): LayoutOp {
  return {
    name: `dropTokens(${k})`,
    forward([x]) {
      const [batch, tokens, C] = x.shape;
      const out = new Float32Array(batch * (tokens - k) * C);
      for (let b = 0; b < batch; b++) out.set(x.data.subarray((b * tokens + k) * C, (b + 1) * tokens * C), b * (tokens - k) * C);
      return new Tensor(out, [batch, tokens - k, C]);
    },
    adjoint(g, [x]) {
      const [batch, tokens, C] = x.shape;
      const gx = new Float32Array(x.size);
      for (let b = 0; b < batch; b++) gx.set(g.data.subarray(b * (tokens - k) * C, (b + 1) * (tokens - k) * C), (b * tokens + k) * C);
      return [new Tensor(gx, x.shape)];
    },
    onnx: (b, [x], [[, tokens]]) => b.slice(x, 1, k, tokens, 'patch_tokens'),
  };
}
/**
 * [B, N, C] ↔ [B, C, N]: MLP-Mixer's token mixing runs its MLP over the token axis of the transposed tokens
 * (timm: `mlp_tokens(norm1(x).transpose(1, 2)).transpose(1, 2)`). A permutation whose inverse is itself, so
 * the adjoint is the same transpose.
 */
export const transposeTokensOp: LayoutOp = {
  name: 'transposeTokens',
  forward: ([x]) => transposeLast2(x),
  adjoint: (g) => [transposeLast2(g)],
  onnx: (b, [x]) => b.transpose(x, [0, 2, 1], 'tokens_t'),
};

function transposeLast2(x: Tensor): Tensor {
  const [batch, rows, cols] = x.shape;
  const out = new Float32Array(x.size);
  const src = x.data;
  for (let b = 0; b < batch; b++) {
    const base = b * rows * cols;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[base + c * rows + r] = src[base + r * cols + c];
  }
  return new Tensor(out, [batch, cols, rows]);
}

/**
 * Average over the patch tokens only, the first `numPrefix` (class) tokens left out: [B, N, C] → [B, C]
 * (timm's `global_pool='avg'` of BEiT: `x[:, num_prefix_tokens:].mean(dim=1)`). Adjoint: ∂L/∂y / (N − prefix)
 * to every patch token, nothing to the prefix.
 */
export function meanOverPatchTokensOp(numPrefix: number): LayoutOp {
  return {
    name: `meanOverPatchTokens(${numPrefix})`,
    forward([x]) {
      const [batch, tokens, c] = x.shape;
      const sum = new Float64Array(c);
      const out = new Float32Array(batch * c);
      for (let b = 0; b < batch; b++) {
        sum.fill(0);
        for (let t = numPrefix; t < tokens; t++) {
          const row = (b * tokens + t) * c;
          for (let j = 0; j < c; j++) sum[j] += x.data[row + j];
        }
        for (let j = 0; j < c; j++) out[b * c + j] = sum[j] / (tokens - numPrefix);
      }
      return new Tensor(out, [batch, c]);
    },
    adjoint(g, [x]) {
      const [batch, tokens, c] = x.shape;
      const inv = 1 / (tokens - numPrefix);
      const out = new Float32Array(batch * tokens * c);
      for (let b = 0; b < batch; b++) {
        for (let t = numPrefix; t < tokens; t++) for (let j = 0; j < c; j++) out[(b * tokens + t) * c + j] = g.data[b * c + j] * inv;
      }
      return [new Tensor(out, x.shape)];
    },
    onnx(b, [x], [[, tokens]]) {
      const patches = numPrefix === 0 ? x : b.slice(x, 1, numPrefix, tokens, 'patch_tokens');
      return b.op('ReduceMean', [patches], { axes: [1], keepdims: 0 }, 'pooled');
    },
  };
}
