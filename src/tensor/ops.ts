/**
 * The non-GEMM kernels of a vision transformer, as tight loops over contiguous float32 data.
 * Each returns a new tensor unless its name ends in `InPlace`.
 */
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

export function scaleInPlace(a: Tensor, factor: number): Tensor {
  const x = a.data;
  for (let i = 0; i < x.length; i++) x[i] *= factor;
  return a;
}

/** x·γ with γ over the last dimension (one factor per channel), repeated over every leading index. */
export function scaleChannels(x: Tensor, gamma: Tensor): Tensor {
  const C = gamma.size;
  if (x.lastDim !== C) throw new Error(`scaleChannels: ${shapeString(gamma.shape)} does not match the last dimension of ${shapeString(x.shape)}`);
  const out = new Float32Array(x.size);
  const src = x.data, g = gamma.data;
  for (let o = 0; o < out.length; o += C) for (let j = 0; j < C; j++) out[o + j] = src[o + j] * g[j];
  return new Tensor(out, x.shape);
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

/**
 * x / max(‖x‖₂, eps) over the last dimension: torch's F.normalize (Swin V2's cosine attention normalizes q
 * and k per head this way, eps 1e-12). The norm is summed in float64.
 */
export function l2Normalize(x: Tensor, eps: number): Tensor {
  const c = x.lastDim;
  const out = new Float32Array(x.size);
  const src = x.data;
  for (let o = 0; o < out.length; o += c) {
    let sq = 0;
    for (let j = 0; j < c; j++) sq += src[o + j] * src[o + j];
    const inv = 1 / Math.max(Math.sqrt(sq), eps);
    for (let j = 0; j < c; j++) out[o + j] = src[o + j] * inv;
  }
  return new Tensor(out, x.shape);
}
