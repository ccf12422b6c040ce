/**
 * The MLP activations of timm's vision transformers (`act_layer`), as scalar formulas shared by the three
 * kernel implementations (fast, tape, trace) and by the post-activation twin quantizer, which needs each
 * one's minimum:
 *
 *   gelu        x·Φ(x)                                        exact, erf            (nn.GELU; ViT, DeiT, DINOv2)
 *   gelu_tanh   ½x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))       tanh approximation    (SigLIP, some CLIP)
 *   quick_gelu  x·σ(1.702·x)                                   sigmoid approximation (OpenAI CLIP)
 */
import { erf } from './erf.js';

export type Activation = 'gelu' | 'gelu_tanh' | 'quick_gelu';

export const ACTIVATIONS: readonly Activation[] = ['gelu', 'gelu_tanh', 'quick_gelu'];

const TANH_C = Math.sqrt(2 / Math.PI);
const TANH_A = 0.044715;
/** QuickGELU's sigmoid slope. */
export const QUICK_GELU_SLOPE = 1.702;
export const GELU_TANH_COEFFS = { c: TANH_C, a: TANH_A };

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/** y = act(x) in double precision. */
export function activationValue(kind: Activation, x: number): number {
  switch (kind) {
    case 'gelu':
      return 0.5 * x * (1 + erf(x * Math.SQRT1_2));
    case 'gelu_tanh':
      return 0.5 * x * (1 + Math.tanh(TANH_C * (x + TANH_A * x * x * x)));
    case 'quick_gelu':
      return x * sigmoid(QUICK_GELU_SLOPE * x);
  }
}

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** d act(x)/dx in double precision. */
export function activationDerivative(kind: Activation, x: number): number {
  switch (kind) {
    case 'gelu':
      // Φ(x) + x·φ(x)
      return 0.5 * (1 + erf(x * Math.SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
    case 'gelu_tanh': {
      const t = Math.tanh(TANH_C * (x + TANH_A * x * x * x));
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * TANH_C * (1 + 3 * TANH_A * x * x);
    }
    case 'quick_gelu': {
      const s = sigmoid(QUICK_GELU_SLOPE * x);
      return s + QUICK_GELU_SLOPE * x * s * (1 - s);
    }
  }
}

/** min over x of act(x), found by golden-section search on [−3, 0] (each activation has one minimum there). */
function minimumOf(kind: Activation): number {
  let lo = -3, hi = 0;
  const r = (Math.sqrt(5) - 1) / 2;
  for (let i = 0; i < 200; i++) {
    const a = hi - r * (hi - lo), b = lo + r * (hi - lo);
    if (activationValue(kind, a) < activationValue(kind, b)) hi = b;
    else lo = a;
  }
  return activationValue(kind, (lo + hi) / 2);
}

/**
 * |min act(x)|: how far below zero the activation's output reaches — the negative twin range R1 of the
 * post-activation quantizer must reach it: GELU ≈ 0.169971, gelu_tanh ≈ 0.170041, QuickGELU ≈ 0.163610.
 * (QuickGELU is x·σ(1.702x) = SiLU(1.702x)/1.702: SiLU's minimum −0.27846 divided by the slope — the
 * activation reaches less far below zero than GELU, not further.)
 */
export const ACTIVATION_NEGATIVE_REACH: Readonly<Record<Activation, number>> = {
  gelu: -minimumOf('gelu'),
  gelu_tanh: -minimumOf('gelu_tanh'),
  quick_gelu: -minimumOf('quick_gelu'),
};
