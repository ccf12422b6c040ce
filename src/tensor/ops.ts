/**
 * The non-GEMM kernels of a vision transformer, as tight loops over contiguous float32 data.
 * Each returns a new tensor unless its name ends in `InPlace`.
 */
import { erf } from './erf.js';
import { Tensor, shapeString } from './tensor.js';

function assertSameShape(a: Tensor, b: Tensor, op: string): void {
  if (a.size !== b.size || a.rank !== b.rank || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new Error(`${op}: shapes differ: ${shapeString(a.shape)} vs ${shapeString(b.shape)}`);
  }
}

export function add(a: Tensor, b: Tensor): Tensor {
  assertSameShape(a, b, 'add');
  const out = new Float32Array(a.size);
  const x = a.data, y = b.data;
  for (let i = 0; i < out.length; i++) out[i] = x[i] + y[i];
  return new Tensor(out, a.shape);
}

export function addInPlace(a: Tensor, b: Tensor): Tensor {
  assertSameShape(a, b, 'addInPlace');
  const x = a.data, y = b.data;
  for (let i = 0; i < x.length; i++) x[i] += y[i];
  return a;
}

export function scaleInPlace(a: Tensor, factor: number): Tensor {
  const x = a.data;
  for (let i = 0; i < x.length; i++) x[i] *= factor;
  return a;
}

/**
 * scale·x + bias, where bias covers the trailing dimensions of x and repeats over the leading ones
 * (e.g. a relative position bias [heads, N, N] added to scores [B·heads, N, N]).
 */
export function addRepeatedBias(x: Tensor, bias: Tensor, scale = 1): Tensor {
  const period = bias.size;
  if (x.size % period !== 0) throw new Error(`addRepeatedBias: ${shapeString(bias.shape)} does not tile ${shapeString(x.shape)}`);
  const out = new Float32Array(x.size);
  const src = x.data, b = bias.data;
  for (let o = 0; o < out.length; o += period) {
    for (let j = 0; j < period; j++) out[o + j] = src[o + j] * scale + b[j];
  }
  return new Tensor(out, x.shape);
}

/** LayerNorm over the last dimension (biased variance, as torch). */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  const c = x.lastDim;
  if (weight.size !== c || bias.size !== c) throw new Error(`layerNorm: ${c} features but weight ${weight.size}, bias ${bias.size}`);
  const rows = x.size / c;
  const src = x.data, w = weight.data, b = bias.data;
  const out = new Float32Array(x.size);
  for (let r = 0; r < rows; r++) {
    const o = r * c;
    let mean = 0;
    for (let j = 0; j < c; j++) mean += src[o + j];
    mean /= c;
    let variance = 0;
    for (let j = 0; j < c; j++) {
      const d = src[o + j] - mean;
      variance += d * d;
    }
    const inv = 1 / Math.sqrt(variance / c + eps);
    for (let j = 0; j < c; j++) out[o + j] = (src[o + j] - mean) * inv * w[j] + b[j];
  }
  return new Tensor(out, x.shape);
}

/** Exact GELU: x·Φ(x) = x/2·(1 + erf(x/√2)). */
export function gelu(x: Tensor): Tensor {
  const out = new Float32Array(x.size);
  const src = x.data;
  for (let i = 0; i < out.length; i++) out[i] = 0.5 * src[i] * (1 + erf(src[i] * Math.SQRT1_2));
  return new Tensor(out, x.shape);
}

/** Softmax over the last dimension, in place (max-subtracted for stability). */
export function softmaxInPlace(x: Tensor): Tensor {
  return softmaxInto(x, 1, x.data);
}

/** softmax(scale·x) over the last dimension, into a new tensor (x is left untouched). */
export function scaledSoftmax(x: Tensor, scale: number): Tensor {
  return softmaxInto(x, scale, new Float32Array(x.size));
}

function softmaxInto(x: Tensor, scale: number, d: Float32Array): Tensor {
  const c = x.lastDim;
  const rows = x.size / c;
  const src = x.data;
  for (let r = 0; r < rows; r++) {
    const o = r * c;
    let max = -Infinity;
    for (let j = 0; j < c; j++) {
      const v = src[o + j] * scale;
      d[o + j] = v;
      if (v > max) max = v;
    }
    let sum = 0;
    for (let j = 0; j < c; j++) {
      const e = Math.exp(d[o + j] - max);
      d[o + j] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let j = 0; j < c; j++) d[o + j] *= inv;
  }
  return new Tensor(d, x.shape);
}

/**
 * Permute a 4-D tensor. Used to move heads and tokens around in attention, e.g.
 * [B, N, 3, H, d] qkv split is handled by `splitHeads`.
 */
export function permute4(x: Tensor, perm: readonly [number, number, number, number]): Tensor {
  if (x.rank !== 4) throw new Error(`permute4: expected rank 4, got ${shapeString(x.shape)}`);
  const s = x.shape;
  const outShape = perm.map((p) => s[p]);
  const strides = [s[1] * s[2] * s[3], s[2] * s[3], s[3], 1];
  const ps = perm.map((p) => strides[p]);
  const out = new Float32Array(x.size);
  const src = x.data;
  let k = 0;
  for (let a = 0; a < outShape[0]; a++) {
    for (let b = 0; b < outShape[1]; b++) {
      for (let c = 0; c < outShape[2]; c++) {
        let idx = a * ps[0] + b * ps[1] + c * ps[2];
        const step = ps[3];
        for (let d = 0; d < outShape[3]; d++, idx += step) out[k++] = src[idx];
      }
    }
  }
  return new Tensor(out, outShape);
}

/**
 * Slice `part` of `parts` equal column blocks of x [B, N, parts·C] and split it into heads:
 * [B·H, N, C/H]. With parts = 3 this reads q, k or v out of timm's fused qkv projection.
 */
export function toHeads(x: Tensor, heads: number, part = 0, parts = 1): Tensor {
  const [batch, tokens, width] = x.shape;
  const c = width / parts;
  const headDim = c / heads;
  const out = new Float32Array(batch * tokens * c);
  const src = x.data;
  for (let b = 0; b < batch; b++) {
    for (let n = 0; n < tokens; n++) {
      let from = (b * tokens + n) * width + part * c;
      for (let h = 0; h < heads; h++) {
        let to = ((b * heads + h) * tokens + n) * headDim;
        for (let j = 0; j < headDim; j++) out[to++] = src[from++];
      }
    }
  }
  return new Tensor(out, [batch * heads, tokens, headDim]);
}

/** The adjoint of toHeads: heads [B·H, N, d] back into column block `part` of a zero [B, N, parts·H·d]. */
export function fromHeads(x: Tensor, heads: number, part = 0, parts = 1): Tensor {
  const [bh, tokens, headDim] = x.shape;
  const batch = bh / heads;
  const c = heads * headDim;
  const width = parts * c;
  const out = new Float32Array(batch * tokens * width);
  const src = x.data;
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let n = 0; n < tokens; n++) {
        let from = ((b * heads + h) * tokens + n) * headDim;
        let to = (b * tokens + n) * width + part * c + h * headDim;
        for (let j = 0; j < headDim; j++) out[to++] = src[from++];
      }
    }
  }
  return new Tensor(out, [batch, tokens, width]);
}

/** qkv [B, N, 3·C] → q, k, v each [B·H, N, C/H]. */
export function splitHeads(qkv: Tensor, heads: number): [Tensor, Tensor, Tensor] {
  return [toHeads(qkv, heads, 0, 3), toHeads(qkv, heads, 1, 3), toHeads(qkv, heads, 2, 3)];
}

/** [B·H, N, d] → [B, N, H·d]: the inverse of splitHeads for one of q/k/v. */
export function mergeHeads(x: Tensor, heads: number): Tensor {
  return fromHeads(x, heads);
}

/** Token t of every image: [B, N, C] → [B, C]. */
export function selectToken(x: Tensor, token: number): Tensor {
  const [batch, tokens, c] = x.shape;
  const out = new Float32Array(batch * c);
  for (let b = 0; b < batch; b++) out.set(x.data.subarray((b * tokens + token) * c, (b * tokens + token + 1) * c), b * c);
  return new Tensor(out, [batch, c]);
}

/** The adjoint of selectToken: [B, C] into token t of a zero [B, N, C]. */
export function scatterToken(x: Tensor, token: number, tokens: number): Tensor {
  const [batch, c] = x.shape;
  const out = new Float32Array(batch * tokens * c);
  for (let b = 0; b < batch; b++) out.set(x.data.subarray(b * c, (b + 1) * c), (b * tokens + token) * c);
  return new Tensor(out, [batch, tokens, c]);
}

export function scale(x: Tensor, factor: number): Tensor {
  return scaleInPlace(x.clone(), factor);
}
