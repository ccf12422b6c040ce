/**
 * Layout kernels of hierarchical (Swin-style) vision transformers: cutting a token grid into
 * (cyclically shifted) windows and putting them back, 2×2 patch merging and token pooling — each with
 * its adjoint for the backward pass (patch unfolding is in patches.ts). Activations are token grids
 * [B, H·W, C] in row-major (NHWC) order. Every kernel copies whole rows of C contiguous floats and
 * returns a new tensor, so nothing a runner handed out (and may have recorded) is ever modified.
 */
import { Tensor, shapeString } from './tensor.js';

/** A token grid cut into square windows after a cyclic shift of the grid by −shift along H and W. */
export interface WindowGrid {
  height: number;
  width: number;
  window: number;
  shift: number;
}

function checkGrid(x: Tensor, g: WindowGrid, op: string): void {
  if (x.rank !== 3 || x.shape[1] !== g.height * g.width) {
    throw new Error(`${op}: expected tokens [B, ${g.height}·${g.width}, C], got ${shapeString(x.shape)}`);
  }
  if (g.height % g.window !== 0 || g.width % g.window !== 0 || g.shift < 0 || g.shift >= g.window) {
    throw new Error(`${op}: window ${g.window} (shift ${g.shift}) does not tile a ${g.height}×${g.width} grid`);
  }
}

/**
 * Tokens [B, H·W, C] → windows [B·nW, window², C], windows in row-major order per image, tokens
 * row-major inside a window. With a shift, the grid is first rolled by −shift along H and W
 * (torch.roll(x, (−s, −s), (1, 2))): window token (y, x) reads grid token ((y + s) mod H, (x + s) mod W).
 */
export function windowPartition(x: Tensor, g: WindowGrid): Tensor {
  checkGrid(x, g, 'windowPartition');
  const [batch, , c] = x.shape;
  const { height, width, window, shift } = g;
  const src = x.data;
  const out = new Float32Array(x.size);
  let o = 0;
  for (let b = 0; b < batch; b++) {
    const image = b * height * width;
    for (let wy = 0; wy < height; wy += window) {
      for (let wx = 0; wx < width; wx += window) {
        for (let iy = 0; iy < window; iy++) {
          const rowStart = image + ((wy + iy + shift) % height) * width;
          for (let ix = 0; ix < window; ix++) {
            let s = (rowStart + ((wx + ix + shift) % width)) * c;
            for (let j = 0; j < c; j++) out[o++] = src[s++];
          }
        }
      }
    }
  }
  return new Tensor(out, [batch * (height / window) * (width / window), window * window, c]);
}

/**
 * Windows [B·nW, window², C] → tokens [B, H·W, C]: the inverse (and adjoint) of `windowPartition`.
 * Window token (y, x) goes back to grid token ((y + s) mod H, (x + s) mod W), i.e. the reverse roll.
 */
export function windowReverse(windows: Tensor, g: WindowGrid): Tensor {
  const batch = windows.size / (g.height * g.width * windows.lastDim);
  if (!Number.isInteger(batch)) throw new Error(`windowReverse: windows ${shapeString(windows.shape)} do not tile ${g.height}×${g.width} grids`);
  return scatterWindows(windows, g, Tensor.zeros([batch, g.height * g.width, windows.lastDim]), false);
}

/**
 * residual + windowReverse(windows) in one pass, as a new tensor: a Swin block's attention residual.
 * Linear in (residual, windows); its adjoint sends ∂L/∂y to the residual as is and to the windows
 * through `windowPartition`.
 */
export function windowReverseAdd(residual: Tensor, windows: Tensor, g: WindowGrid): Tensor {
  checkGrid(residual, g, 'windowReverseAdd');
  if (windows.size !== residual.size || windows.lastDim !== residual.lastDim) {
    throw new Error(`windowReverseAdd: windows ${shapeString(windows.shape)} do not tile tokens ${shapeString(residual.shape)}`);
  }
  return scatterWindows(windows, g, residual, true);
}

/** out[token] = (add ? base[token] : 0) + windows[window token], over the geometry of `base`. */
function scatterWindows(windows: Tensor, g: WindowGrid, base: Tensor, add: boolean): Tensor {
  checkGrid(base, g, 'windowReverse');
  const [batch, , c] = base.shape;
  const { height, width, window, shift } = g;
  const res = base.data, win = windows.data;
  const out = add ? new Float32Array(base.size) : base.data;
  let w = 0;
  for (let b = 0; b < batch; b++) {
    const image = b * height * width;
    for (let wy = 0; wy < height; wy += window) {
      for (let wx = 0; wx < width; wx += window) {
        for (let iy = 0; iy < window; iy++) {
          const rowStart = image + ((wy + iy + shift) % height) * width;
          for (let ix = 0; ix < window; ix++) {
            let t = (rowStart + ((wx + ix + shift) % width)) * c;
            if (add) for (let j = 0; j < c; j++, t++) out[t] = res[t] + win[w++];
            else for (let j = 0; j < c; j++) out[t++] = win[w++];
          }
        }
      }
    }
  }
  return new Tensor(out, base.shape);
}

/**
 * Swin patch merging: tokens [B, H·W, C] → [B, (H/2)·(W/2), 4C], each output token the concatenation
 * of its 2×2 neighbourhood in timm's order (x.reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5)):
 * (dy, dx) = (0, 0), (1, 0), (0, 1), (1, 1) — column offset outermost.
 */
export function mergePatches2x2(x: Tensor, height: number, width: number): Tensor {
  if (x.rank !== 3 || x.shape[1] !== height * width) {
    throw new Error(`mergePatches2x2: expected tokens [B, ${height}·${width}, C], got ${shapeString(x.shape)}`);
  }
  if (height % 2 !== 0 || width % 2 !== 0) throw new Error(`mergePatches2x2: ${height}×${width} grid is not even`);
  const [batch, , c] = x.shape;
  const src = x.data;
  const out = new Float32Array(x.size);
  let o = 0;
  for (let b = 0; b < batch; b++) {
    for (let y = 0; y < height; y += 2) {
      for (let xx = 0; xx < width; xx += 2) {
        for (let dx = 0; dx < 2; dx++) {
          for (let dy = 0; dy < 2; dy++) {
            let s = ((b * height + y + dy) * width + xx + dx) * c;
            for (let j = 0; j < c; j++) out[o++] = src[s++];
          }
        }
      }
    }
  }
  return new Tensor(out, [batch, (height / 2) * (width / 2), 4 * c]);
}

/** The adjoint (and inverse) of `mergePatches2x2`: [B, (H/2)·(W/2), 4C] → [B, H·W, C]. */
export function splitPatches2x2(merged: Tensor, height: number, width: number): Tensor {
  if (merged.rank !== 3 || merged.shape[1] !== (height / 2) * (width / 2) || merged.lastDim % 4 !== 0) {
    throw new Error(`splitPatches2x2: expected [B, ${height / 2}·${width / 2}, 4C], got ${shapeString(merged.shape)}`);
  }
  const [batch, , c4] = merged.shape;
  const c = c4 / 4;
  const src = merged.data;
  const out = new Float32Array(merged.size);
  let s = 0;
  for (let b = 0; b < batch; b++) {
    for (let y = 0; y < height; y += 2) {
      for (let xx = 0; xx < width; xx += 2) {
        for (let dx = 0; dx < 2; dx++) {
          for (let dy = 0; dy < 2; dy++) {
            let o = ((b * height + y + dy) * width + xx + dx) * c;
            for (let j = 0; j < c; j++) out[o++] = src[s++];
          }
        }
      }
    }
  }
  return new Tensor(out, [batch, height * width, c]);
}

/** Global average pool of tokens: [B, L, C] → [B, C]. */
export function meanOverTokens(x: Tensor): Tensor {
  if (x.rank !== 3) throw new Error(`meanOverTokens: expected [B, L, C], got ${shapeString(x.shape)}`);
  const [batch, tokens, c] = x.shape;
  const src = x.data;
  const out = new Float32Array(batch * c);
  const sum = new Float64Array(c);
  for (let b = 0; b < batch; b++) {
    sum.fill(0);
    let s = b * tokens * c;
    for (let t = 0; t < tokens; t++) {
      for (let j = 0; j < c; j++) sum[j] += src[s++];
    }
    for (let j = 0; j < c; j++) out[b * c + j] = sum[j] / tokens;
  }
  return new Tensor(out, [batch, c]);
}

/** The adjoint of `meanOverTokens`: [B, C] → [B, L, C], every token getting g / L. */
export function spreadOverTokens(g: Tensor, tokens: number): Tensor {
  const [batch, c] = g.shape;
  const src = g.data;
  const out = new Float32Array(batch * tokens * c);
  const inv = 1 / tokens;
  let o = 0;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < tokens; t++) {
      for (let j = 0; j < c; j++) out[o++] = src[b * c + j] * inv;
    }
  }
  return new Tensor(out, [batch, tokens, c]);
}
