/** Loading a model's parameters from a checkpoint, with every shape checked up front. */
import { Ptq4vitError } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import type { QuantPoint } from './types.js';

/**
 * Where a model's parameters come from: a safetensors checkpoint, or a quantized model file whose
 * integer weights are dequantized on read (src/quant/file.ts).
 */
export interface TensorSource {
  readonly file: string;
  names(): string[];
  /** A float tensor; with `shape`, the stored shape must match (else a Ptq4vitError naming file and tensor). */
  tensor(name: string, shape?: readonly number[]): Tensor;
}

/** A linear layer (or the patch-embedding conv viewed as one): weight [out, in], optional bias [out]. */
export interface Linear {
  point: QuantPoint;
  weight: Tensor;
  bias: Tensor | null;
}

/** Reads tensors by name with an expected shape and remembers which names the model used. */
export class WeightReader {
  readonly used = new Set<string>();
  constructor(readonly weights: TensorSource) {}

  tensor(name: string, shape: number[]): Tensor {
    this.used.add(name);
    return this.weights.tensor(name, shape);
  }

  linear(name: string, outFeatures: number, inFeatures: number, hasBias = true): Linear {
    const weight = this.tensor(`${name}.weight`, [outFeatures, inFeatures]);
    const bias = hasBias ? this.tensor(`${name}.bias`, [outFeatures]) : null;
    return { point: { name, kind: 'linear', weight: `${name}.weight`, bias: hasBias ? `${name}.bias` : undefined }, weight, bias };
  }

  /** A kernel = stride = p conv, read as a linear layer over unfolded patches (see unfoldPatches). */
  patchConv(name: string, outChannels: number, inChannels: number, patch: number, hasBias = true): Linear {
    const weight = this.tensor(`${name}.weight`, [outChannels, inChannels, patch, patch]);
    const bias = hasBias ? this.tensor(`${name}.bias`, [outChannels]) : null;
    return {
      point: { name, kind: 'conv', weight: `${name}.weight`, bias: hasBias ? `${name}.bias` : undefined, weightGroups: outChannels },
      weight: weight.reshape([outChannels, inChannels * patch * patch]),
      bias,
    };
  }

  /**
   * Parameters the model did not ask for mean the checkpoint is of another architecture (deeper,
   * different head…): refuse rather than silently ignore them. Buffers timm may save are allowed.
   */
  checkAllUsed(modelName: string, ignorable: RegExp = /(relative_position_index|attn_mask)$/): void {
    const extra = this.weights.names().filter((n) => !this.used.has(n) && !ignorable.test(n));
    if (extra.length > 0) {
      const shown = extra.slice(0, 5).join(', ') + (extra.length > 5 ? `, … (${extra.length} in all)` : '');
      throw new Ptq4vitError(`${this.weights.file}: tensors not used by ${modelName} (is the architecture right?): ${shown}`);
    }
  }
}
