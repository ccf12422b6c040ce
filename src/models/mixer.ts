/**
 * timm's MlpMixer (MLP-Mixer, Tolstikhin et al. 2021; timm/models/mlp_mixer.py):
 *
 *   stem:  conv(kernel = stride = patch)                                   tokens x [B, N, C]
 *   for each block:
 *     x = x + mlp_tokens(norm1(x)ᵀ)ᵀ      token mixing: an MLP over the token axis of [B, C, N]
 *                                         (N → int(r_tokens·C) → N)
 *     x = x + mlp_channels(norm2(x))      channel mixing (C → int(r_channels·C) → C)
 *   logits = head(mean over tokens of norm(x))
 *
 * LayerNorm eps 1e-6, exact GELU. No attention: the quantization points are the stem conv, the four
 * linear layers of each block (both fc2 inputs are post-GELU: twin quantizer) and the head.
 */
import { Ptq4vitError } from '../errors.js';
import { meanOverTokensOp, transposeTokensOp } from '../tensor/layout.js';
import { fp32Runner, type Runner } from '../tensor/runner.js';
import type { Tensor } from '../tensor/tensor.js';
import { applyLinear, feedsFrom, kernelsOf, LayerNorm, mlpHiddenWidth, Mlp, PatchEmbed, checkImageBatch, runSegments, segmentChain, type SegmentStep } from './layers.js';
import type { ForwardSegments, MixerArch, ModelSpec, QuantPoint, VisionModel } from './types.js';
import { WeightReader, type Linear, type TensorSource } from './weights.js';

const LN_EPS = 1e-6;

class MixerBlock {
  readonly norm1: LayerNorm;
  readonly mlpTokens: Mlp;
  readonly norm2: LayerNorm;
  readonly mlpChannels: Mlp;

  constructor(reader: WeightReader, name: string, a: MixerArch, numTokens: number) {
    const D = a.embedDim;
    const [tokensRatio, channelsRatio] = a.mlpRatio;
    this.norm1 = new LayerNorm(reader, `${name}.norm1`, D, LN_EPS);
    // timm: tokens_dim = int(r·dim) of the embedding width, not of the token count.
    this.mlpTokens = new Mlp(reader, `${name}.mlp_tokens`, numTokens, tokensRatio, { hidden: mlpHiddenWidth(D, tokensRatio) });
    this.norm2 = new LayerNorm(reader, `${name}.norm2`, D, LN_EPS);
    this.mlpChannels = new Mlp(reader, `${name}.mlp_channels`, D, channelsRatio);
    // norm1's channels become rows of the token MLP's input (not its input columns): no smoothing there.
    feedsFrom(this.mlpChannels.fc1, this.norm2);
  }

  get points(): QuantPoint[] {
    return [...this.mlpTokens.points, ...this.mlpChannels.points];
  }

  async forward(runner: Runner, x: Tensor): Promise<Tensor> {
    const k = kernelsOf(runner);
    const mixedTokens = await this.mlpTokens.forward(runner, k.layout(transposeTokensOp, [await this.norm1.forward(k, x)]));
    x = k.add(x, k.layout(transposeTokensOp, [mixedTokens]));
    return k.add(x, await this.mlpChannels.forward(runner, await this.norm2.forward(k, x)));
  }
}

export class MlpMixer implements VisionModel {
  readonly spec: ModelSpec;
  readonly quantPoints: readonly QuantPoint[];
  private readonly arch: MixerArch;
  private readonly stem: PatchEmbed;
  private readonly blocks: MixerBlock[];
  private readonly norm: LayerNorm;
  private readonly head: Linear;

  constructor(spec: ModelSpec, weights: TensorSource) {
    if (spec.arch.family !== 'mixer') throw new Ptq4vitError(`${spec.name}: MlpMixer needs a mixer architecture, got family '${spec.arch.family}'`);
    this.spec = spec;
    const a = (this.arch = spec.arch);
    const grid = a.imgSize / a.patchSize;
    if (!Number.isInteger(grid)) throw new Ptq4vitError(`${spec.name}: img_size ${a.imgSize} is not a multiple of patch_size ${a.patchSize}`);
    const reader = new WeightReader(weights);
    this.stem = new PatchEmbed(reader, 'stem', { inChans: a.inChans, embedDim: a.embedDim, patch: a.patchSize });
    this.blocks = Array.from({ length: a.depth }, (_, i) => new MixerBlock(reader, `blocks.${i}`, a, grid * grid));
    this.norm = new LayerNorm(reader, 'norm', a.embedDim, LN_EPS);
    this.head = reader.linear('head', a.numClasses, a.embedDim);
    reader.checkAllUsed(`${spec.name} (MlpMixer, num_blocks ${a.depth}, embed_dim ${a.embedDim})`);
    this.quantPoints = [...this.stem.points, ...this.blocks.flatMap((b) => b.points), this.head.point];
  }

  async forward(images: Tensor, runner: Runner = fp32Runner): Promise<Tensor> {
    checkImageBatch(this.spec, images);
    return runSegments(this.segments, images, runner);
  }

  /** Segments: the stem, each block, then norm + mean over tokens + head. */
  get segments(): ForwardSegments {
    return segmentChain([
      (runner, images) => this.stem.forward(runner, images),
      ...this.blocks.map((block): SegmentStep => (runner, x) => block.forward(runner, x)),
      async (runner, x) => {
        const k = kernelsOf(runner);
        return applyLinear(runner, this.head, k.layout(meanOverTokensOp, [await this.norm.forward(k, x)]));
      },
    ]);
  }
}
