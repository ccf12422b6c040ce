/**
 * Tracing: run the model code once on an example batch with a Runner + Kernels that compute eagerly AND
 * emit every op into one ONNX graph (as torch.onnx traces a module). Nothing about an architecture is
 * written here: layout ops bring their own ONNX translation (src/tensor/layout.ts), the four kernels map
 * to standard ops, and products are emitted by a `ProductEmitter` — float32 or integer-quantized.
 */
import type { GraphBuilder } from '../onnx/builder.js';
import { GELU_TANH_COEFFS, QUICK_GELU_SLOPE } from '../tensor/activation.js';
import { fastKernels, type Kernels } from '../tensor/kernels.js';
import type { Runner } from '../tensor/runner.js';
import type { Tensor } from '../tensor/tensor.js';

/** A traced value: its name in the graph and its shape in the trace (the leading dimension is dynamic). */
export interface Traced {
  name: string;
  shape: readonly number[];
}

/** How the quantization points become ONNX nodes. */
export interface ProductEmitter {
  /** y = x·Wᵀ + b over the last dimension of x (weight [out, in] as the model holds it). */
  linear(g: GraphBuilder, point: string, x: Traced, weight: Tensor, bias: Tensor | null): string;
  /** a·b or a·bᵀ over [G, M, K] operands. */
  matmul(g: GraphBuilder, point: string, a: Traced, b: Traced, transB: boolean): string;
}

export class Tracer implements Runner {
  readonly kernels: Kernels;
  private readonly names = new Map<Tensor, string>();

  /** `eager` computes the values (fp32Runner, or the fake-quant runner for a quantized model). */
  constructor(readonly graph: GraphBuilder, private readonly eager: Runner, private readonly products: ProductEmitter) {
    this.kernels = this.makeKernels();
  }

  /** Name `t` as a graph input. */
  bind(t: Tensor, name: string): void {
    this.names.set(t, name);
  }

  /** The graph value holding `t`: an op's output, a bound input, or (any other tensor) a constant. */
  value(t: Tensor, hint = 'const'): string {
    return this.names.get(t) ?? this.graph.floats(hint, t.data, t.shape, t.data);
  }

  private traced(t: Tensor): Traced {
    return { name: this.value(t), shape: t.shape };
  }

  private emit(t: Tensor, name: string): Tensor {
    this.names.set(t, name);
    return t;
  }

  async linear(point: string, x: Tensor, weight: Tensor, bias: Tensor | null): Promise<Tensor> {
    const y = await this.eager.linear(point, x, weight, bias);
    return this.emit(y, this.products.linear(this.graph, point, this.traced(x), weight, bias));
  }

  async matmul(point: string, a: Tensor, b: Tensor, transB: boolean): Promise<Tensor> {
    const y = await this.eager.matmul(point, a, b, transB);
    return this.emit(y, this.products.matmul(this.graph, point, this.traced(a), this.traced(b), transB));
  }

  private makeKernels(): Kernels {
    const g = this.graph;
    return {
      layerNorm: async (x, weight, bias, eps) => {
        const y = await fastKernels.layerNorm(x, weight, bias, eps);
        const w = this.value(weight, 'ln_weight'), b = this.value(bias, 'ln_bias');
        return this.emit(y, g.op('LayerNormalization', [this.value(x), w, b], { axis: -1, epsilon: { float: eps } }, 'layernorm'));
      },
      gelu: async (x, kind = 'gelu') => {
        const y = await fastKernels.gelu(x, kind);
        const v = this.value(x);
        if (kind === 'quick_gelu') {
          // x·σ(1.702·x) (opset 17 has no QuickGelu; onnxruntime fuses this pattern).
          const s = g.op('Sigmoid', [g.op('Mul', [v, g.float('quick_gelu_slope', QUICK_GELU_SLOPE)], undefined, 'quick_gelu_in')], undefined, 'quick_gelu_sigmoid');
          return this.emit(y, g.op('Mul', [v, s], undefined, 'quick_gelu'));
        }
        if (kind === 'gelu_tanh') {
          // ½x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), the pattern onnxruntime fuses into FastGelu.
          const { c, a } = GELU_TANH_COEFFS;
          const cube = g.op('Mul', [g.op('Mul', [v, v], undefined, 'gelu_tanh_x2'), v], undefined, 'gelu_tanh_x3');
          const inner = g.op('Add', [v, g.op('Mul', [cube, g.float('gelu_tanh_a', a)], undefined, 'gelu_tanh_ax3')], undefined, 'gelu_tanh_poly');
          const t = g.op('Tanh', [g.op('Mul', [inner, g.float('gelu_tanh_c', c)], undefined, 'gelu_tanh_in')], undefined, 'gelu_tanh_t');
          const scaled = g.op('Mul', [v, g.op('Add', [t, g.float('one', 1)], undefined, 'gelu_tanh_1p')], undefined, 'gelu_tanh_x');
          return this.emit(y, g.op('Mul', [scaled, g.float('half', 0.5)], undefined, 'gelu_tanh'));
        }
        // Exact GELU, x·½·(1 + erf(x/√2)), written as the pattern onnxruntime fuses into its Gelu kernel.
        const erf = g.op('Erf', [g.op('Div', [v, g.float('sqrt2', Math.SQRT2)], undefined, 'gelu_in')], undefined, 'gelu_erf');
        const scaled = g.op('Mul', [v, g.op('Add', [erf, g.float('one', 1)], undefined, 'gelu_1p')], undefined, 'gelu_x');
        return this.emit(y, g.op('Mul', [scaled, g.float('half', 0.5)], undefined, 'gelu'));
      },
      softmax: async (x, scale, bias) => {
        const y = await fastKernels.softmax(x, scale, bias);
        let s = this.value(x);
        // A power-of-two scale folds into an integer product's rescale (same bits, one pass less).
        if (scale !== 1) s = g.foldScale(s, scale) ?? g.op('Mul', [s, g.float('attn_scale', scale)], undefined, 'scores_scaled');
        if (bias) {
          // bias [P, N, N] repeats over the scores [B·P, N, N]: add it to [B, P, N, N].
          const [p, n, m] = bias.shape;
          const grouped = g.reshape(s, [-1, p, n, m], 'scores_grouped');
          s = g.reshape(g.op('Add', [grouped, this.value(bias, 'attn_bias')], undefined, 'scores_biased'), [-1, n, m], 'scores_flat');
        }
        return this.emit(y, g.op('Softmax', [s], { axis: -1 }, 'probs'));
      },
      add: (a, b) => this.emit(fastKernels.add(a, b), g.op('Add', [this.value(a), this.value(b)], undefined, 'residual')),
      l2Normalize: async (x, eps) => {
        const y = await fastKernels.l2Normalize(x, eps);
        // F.normalize: x / max(‖x‖₂, eps), ReduceL2 over the last axis (opset 17: axes as an attribute).
        const norm = g.op('ReduceL2', [this.value(x)], { axes: [-1], keepdims: 1 }, 'l2_norm');
        const clamped = g.op('Max', [norm, g.float('l2_eps', eps)], undefined, 'l2_norm_clamped');
        return this.emit(y, g.op('Div', [this.value(x), clamped], undefined, 'l2_normalized'));
      },
      layout: (op, inputs) => {
        const y = op.forward(inputs);
        return this.emit(y, op.onnx(g, inputs.map((t) => this.value(t)), inputs.map((t) => t.shape)));
      },
    };
  }
}
