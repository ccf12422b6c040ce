/**
 * Vector-Jacobian products of the non-GEMM kernels: given the input (or output) of the forward op and
 * ∂L/∂y, return ∂L/∂x. Only activation gradients are needed — PTQ4ViT's Hessian metric uses ∂L/∂O at
 * each quantization point — so no parameter gradients are ever formed.
 */
import { activationDerivative, type Activation } from '../tensor/activation.js';
import { Tensor } from '../tensor/tensor.js';

/**
 * LayerNorm: y = x̂·w + b with x̂ = (x − μ)·r, r = 1/√(σ² + ε). Per row of C features,
 * ∂L/∂x = r·(g − mean(g) − x̂·mean(g·x̂)) where g = ∂L/∂y·w.
 */
export function layerNormBackward(x: Tensor, weight: Tensor, gradOut: Tensor, eps: number): Tensor {
  const c = x.lastDim;
  const rows = x.size / c;
  const src = x.data, w = weight.data, gy = gradOut.data;
  const gx = new Float32Array(x.size);
  const xhat = new Float64Array(c);
  const g = new Float64Array(c);
  for (let r = 0; r < rows; r++) {
    const o = r * c;
    let mean = 0;
    for (let j = 0; j < c; j++) mean += src[o + j];
    mean /= c;
    let variance = 0;
    for (let j = 0; j < c; j++) variance += (src[o + j] - mean) ** 2;
    const rstd = 1 / Math.sqrt(variance / c + eps);
    let meanG = 0, meanGX = 0;
    for (let j = 0; j < c; j++) {
      xhat[j] = (src[o + j] - mean) * rstd;
      g[j] = gy[o + j] * w[j];
      meanG += g[j];
      meanGX += g[j] * xhat[j];
    }
    meanG /= c;
    meanGX /= c;
    for (let j = 0; j < c; j++) gx[o + j] = rstd * (g[j] - meanG - xhat[j] * meanGX);
  }
  return new Tensor(gx, x.shape);
}

/** GELU(x) = x·Φ(x): ∂/∂x = Φ(x) + x·φ(x); the other activations by their own derivative (activation.ts). */
export function geluBackward(x: Tensor, gradOut: Tensor, kind: Activation = 'gelu'): Tensor {
  const src = x.data, gy = gradOut.data;
  const gx = new Float32Array(x.size);
  for (let i = 0; i < gx.length; i++) gx[i] = gy[i] * activationDerivative(kind, src[i]);
  return new Tensor(gx, x.shape);
}

/**
 * p = softmax(scale·x + bias) over the last dimension, from its output p:
 * ∂L/∂x = scale·p·(g − Σ g·p), row by row (the bias has no gradient we need).
 */
export function softmaxBackward(probs: Tensor, gradOut: Tensor, scale: number): Tensor {
  const c = probs.lastDim;
  const rows = probs.size / c;
  const p = probs.data, gy = gradOut.data;
  const gx = new Float32Array(probs.size);
  for (let r = 0; r < rows; r++) {
    const o = r * c;
    let dot = 0;
    for (let j = 0; j < c; j++) dot += gy[o + j] * p[o + j];
    for (let j = 0; j < c; j++) gx[o + j] = scale * p[o + j] * (gy[o + j] - dot);
  }
  return new Tensor(gx, probs.shape);
}
