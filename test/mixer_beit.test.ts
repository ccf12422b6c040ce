/**
 * MLP-Mixer and BEiT (timm MlpMixer, Beit): parity with timm 1.0.28 on the public fixtures — logits, every
 * recorded point's inputs and output, ∂L/∂O at every recorded point — plus config round trips, presets, and
 * checkpoint / kwarg errors. Other sizes (random weights, finite differences) are in gradcheck.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { computeGradients } from '../src/grad/gradients.js';
import { SafeTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { beitRelativePositionBias } from '../src/models/beit.js';
import { archFromTimm, cardFromSpec, PRESETS, specFromCard, specFromPreset } from '../src/models/config.js';
import { specFromHubConfig } from '../src/models/hub.js';
import { buildModel } from '../src/models/load.js';
import type { QuantPoint } from '../src/models/types.js';
import { RecordingRunner } from '../src/tensor/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { assertClose, fixturesDir, maxAbs, maxAbsDiff, runCli, scratchDir, showRun, type CliRun } from './helpers.js';
import { writeRandomCifarModel } from './random_models.js';

const FIXTURES = ['mixer_p16_224_fixture', 'beit_p16_224_fixture'];

function fixture(name: string) {
  const card = JSON.parse(fs.readFileSync(path.join(fixturesDir, `${name}.json`), 'utf8'));
  const weights = SafeTensors.read(path.join(fixturesDir, `${name}.safetensors`));
  const acts = SafeTensors.read(path.join(fixturesDir, `${name}.activations.safetensors`));
  return { card, weights, acts, spec: specFromCard(card, name) };
}

/** [G, M, N] → [G, N, M]. */
function transposeLast2(t: Tensor): Float32Array {
  const [g, m, n] = [t.size / (t.shape.at(-1)! * t.shape.at(-2)!), t.shape.at(-2)!, t.shape.at(-1)!];
  const out = new Float32Array(t.size);
  for (let i = 0; i < g; i++) for (let r = 0; r < m; r++) for (let c = 0; c < n; c++) out[(i * n + c) * m + r] = t.data[(i * m + r) * n + c];
  return out;
}

/**
 * Our layout → timm's recorded one: the stem conv's output is NCHW there ([B, P, D] here), kᵀ is recorded
 * where we pass k with transB. Everything else (incl. the token MLP's [B, C, N] input) has timm's memory order.
 */
function toTimmLayout(point: QuantPoint, which: 'out' | 'in1', t: Tensor): Float32Array {
  if (point.kind === 'conv' && which === 'out') return transposeLast2(t);
  if (point.kind === 'matmul' && point.transB && which === 'in1') return transposeLast2(t);
  return t.data;
}

for (const name of FIXTURES) {
  describe(`${name}: timm parity`, () => {
    const { card, weights, acts, spec } = fixture(name);
    const model = buildModel(spec, weights);
    const points = new Map(model.quantPoints.map((p) => [p.name, p]));

    test('the quantization points are the card\'s, in order; fc2 inputs are post-GELU', () => {
      assert.deepEqual(model.quantPoints.map((p) => p.name), card.quant_points);
      const fc2 = model.quantPoints.filter((p) => p.name.endsWith('.fc2'));
      assert.ok(fc2.length >= 2 && fc2.every((p) => p.input === 'post-gelu'), 'every fc2 is post-GELU (twin)');
      for (const p of model.quantPoints) if (p.name.endsWith('.matmul2')) assert.equal(p.input, 'post-softmax');
      assert.equal(model.quantPoints[0].kind, 'conv');
    });

    test('logits and every recorded point\'s inputs and output match timm (1e-4)', async () => {
      const runner = new RecordingRunner();
      const logits = await model.forward(acts.tensor('input'), runner);
      assertClose(logits.data, acts.tensor('logits').data, `${name} logits`);
      for (const pointName of card.recorded_points as string[]) {
        const rec = runner.records.get(pointName);
        const point = points.get(pointName);
        assert.ok(rec && point, `${pointName} was not called`);
        assertClose(toTimmLayout(point, 'out', rec.output), acts.tensor(`${pointName}.out`).data, `${pointName}.out`);
        if (point.kind !== 'conv') assertClose(rec.inputs[0].data, acts.tensor(`${pointName}.in0`).data, `${pointName}.in0`);
        if (point.kind === 'matmul') assertClose(toTimmLayout(point, 'in1', rec.inputs[1]), acts.tensor(`${pointName}.in1`).data, `${pointName}.in1`);
      }
    });

    test('∂L/∂O from the tape matches torch autograd at every recorded point', async () => {
      const images = acts.tensor('input');
      const batch = images.shape[0];
      const grads = new Map<string, Float32Array>();
      const loss = await computeGradients(model, images, Int32Array.from(card.labels), { loss: 'label', chunkSize: 1 }, (chunk, pointName, g) => {
        const per = g.size / chunk.count;
        const all = grads.get(pointName) ?? new Float32Array(per * batch);
        all.set(toTimmLayout(points.get(pointName)!, 'out', g), chunk.start * per);
        grads.set(pointName, all);
      });
      assert.ok(Math.abs(loss - card.loss_value) < 1e-4 * (1 + card.loss_value), `loss ${loss} vs ${card.loss_value}`);
      for (const pointName of card.recorded_points as string[]) {
        const ref = acts.tensor(`${pointName}.grad_out`).data;
        const ours = grads.get(pointName);
        assert.ok(ours, `no gradient for ${pointName}`);
        const { max, at } = maxAbsDiff(ours, ref);
        const bound = 1e-3 * maxAbs(ref);
        assert.ok(max <= bound, `${pointName}.grad_out: max abs error ${max} at ${at} (${ours[at]} vs ${ref[at]}) exceeds ${bound}`);
      }
    });
  });
}

describe('BEiT relative position index (timm gen_relative_position_index)', () => {
  test('cls rows/columns use the three last table rows; patch pairs depend only on their offset', () => {
    const grid = 3, heads = 2, rows = (2 * grid - 1) ** 2 + 3;
    // table[r, h] = 100·r + h: the bias names the table row it came from.
    const table = new Tensor(Float32Array.from({ length: rows * heads }, (_, i) => 100 * Math.floor(i / heads) + (i % heads)), [rows, heads]);
    const bias = beitRelativePositionBias(table, grid, heads);
    const n = grid * grid + 1;
    assert.deepEqual(bias.shape, [heads, n, n]);
    const at = (h: number, i: number, j: number) => bias.data[(h * n + i) * n + j];
    assert.equal(at(1, 0, 0), 100 * (rows - 1) + 1, 'cls → cls');
    for (let j = 1; j < n; j++) assert.equal(at(0, 0, j), 100 * (rows - 3), 'cls → patch');
    for (let i = 1; i < n; i++) assert.equal(at(0, i, 0), 100 * (rows - 2), 'patch → cls');
    // patch (0,0) → itself: offset (0,0) → row (g−1)(2g−1) + (g−1); (2,1) → (0,0): Δ = (2,1).
    assert.equal(at(0, 1, 1), 100 * ((grid - 1) * (2 * grid - 1) + grid - 1));
    assert.equal(at(0, 1 + 2 * grid + 1, 1), 100 * ((2 + grid - 1) * (2 * grid - 1) + (1 + grid - 1)));
  });
});

describe('config: MlpMixer and Beit kwargs, cards, presets', () => {
  test('cardFromSpec round trips (fixtures and every new preset)', () => {
    const specs = [...FIXTURES.map((n) => fixture(n).spec), ...Object.keys(PRESETS).filter((n) => /^(mixer|beit)/.test(n)).map(specFromPreset)];
    for (const spec of specs) {
      const card = JSON.parse(JSON.stringify(cardFromSpec(spec)));
      assert.deepEqual(specFromCard(card, spec.name), spec, spec.name);
    }
  });

  test('every mixer_* / beit* preset: its name agrees with its architecture (patch, size, width), ImageNet head', () => {
    const names = Object.keys(PRESETS).filter((n) => /^(mixer|beit)/.test(n));
    assert.ok(names.includes('mixer_b16_224') && names.includes('mixer_l16_224') && names.includes('beit_base_patch16_224') && names.includes('beitv2_base_patch16_224'));
    for (const name of names) {
      const { arch: a, preprocess } = specFromPreset(name);
      const [, size, patch, size2] = /^mixer_([sbl])(\d+)_(\d+)$/.exec(name) ?? /^beit(?:v2)?_(base|large)_patch(\d+)_(\d+)$/.exec(name)!;
      assert.equal(a.family, name.startsWith('mixer') ? 'mixer' : 'beit', name);
      assert.equal(a.patchSize, Number(patch), `${name}: patch`);
      assert.equal(a.imgSize, Number(size2), `${name}: image size`);
      assert.equal(preprocess.inputSize, a.imgSize);
      assert.equal(a.embedDim, { s: 512, b: 768, l: 1024, base: 768, large: 1024 }[size], `${name}: width`);
      assert.equal(a.depth, { s: 8, b: 12, l: 24, base: 12, large: 24 }[size], `${name}: depth`);
      assert.equal(a.numClasses, 1000);
    }
  });

  test('timm\'s defaults and entrypoints: Mixer tokens ratio int(r·C), BEiT presets', () => {
    const mixer = archFromTimm('MlpMixer', { mlp_ratio: 2 }, 'card');
    assert.equal(mixer.family, 'mixer');
    assert.deepEqual(mixer.family === 'mixer' && [mixer.mlpRatio, mixer.depth, mixer.embedDim], [[2, 2], 8, 512]);
    const b16 = specFromPreset('mixer_b16_224');
    assert.deepEqual([b16.timmClass, b16.preprocess.cropPct, b16.preprocess.mean], ['MlpMixer', 0.875, [0.5, 0.5, 0.5]]);
    const beit = specFromPreset('beit_base_patch16_224').arch;
    assert.ok(beit.family === 'beit' && !beit.useAbsPosEmb && beit.useRelPosBias && beit.initValues === 0.1 && beit.qkvBias);
    assert.deepEqual(specFromPreset('beitv2_base_patch16_224').preprocess.mean, [0.485, 0.456, 0.406]);
    assert.equal(specFromPreset('beit_base_patch16_384').preprocess.cropPct, 1);
  });

  test('a timm hub config of a mixer_* / beit_* model opens (model_args applied)', () => {
    const spec = specFromHubConfig({ architecture: 'beit_base_patch16_224.in22k_ft_in22k_in1k', num_classes: 10, model_args: { depth: 2 }, pretrained_cfg: { crop_pct: 0.9, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] } }, 'config.json');
    assert.ok(spec.arch.family === 'beit' && spec.arch.depth === 2 && spec.arch.numClasses === 10);
    const mixer = specFromHubConfig({ architecture: 'mixer_b16_224', pretrained_cfg: { interpolation: 'bilinear', mean: [0, 0, 0], std: [1, 1, 1] } }, 'config.json');
    assert.deepEqual([mixer.timmClass, mixer.preprocess.interpolation, mixer.preprocess.std], ['MlpMixer', 'bilinear', [1, 1, 1]]);
  });

  test('unsupported variants are refused naming the kwarg', () => {
    const refused = (cls: string, kwargs: Record<string, unknown>, pattern: RegExp) =>
      assert.throws(() => archFromTimm(cls, kwargs, 'card.json'), (e: unknown) => e instanceof Ptq4vitError && pattern.test(e.message) && !e.message.includes('\n'));
    refused('Beit', { use_shared_rel_pos_bias: true }, /card\.json: timm_kwargs\.use_shared_rel_pos_bias = true is not supported/);
    refused('Beit', { swiglu_mlp: true }, /timm_kwargs\.swiglu_mlp/);
    refused('Beit', { scale_mlp: true }, /timm_kwargs\.scale_mlp/);
    refused('Beit', { global_pool: 'token' }, /timm_kwargs\.global_pool = "token" is not supported/);
    refused('Beit', { attn_head_dim: 32 }, /timm_kwargs\.attn_head_dim is not supported/);
    refused('Beit', { init_values: 'x' }, /timm_kwargs\.init_values must be/);
    refused('Beit', { num_heads: 5 }, /num_heads 5 must divide/);
    refused('MlpMixer', { stem_norm: true }, /timm_kwargs\.stem_norm = true is not supported/);
    refused('MlpMixer', { global_pool: '' }, /timm_kwargs\.global_pool/);
    refused('MlpMixer', { block_layer: 'ResBlock' }, /timm_kwargs\.block_layer is not supported/);
    refused('MlpMixer', { mlp_ratio: [0.5] }, /timm_kwargs\.mlp_ratio must be/);
    refused('MlpMixer', { img_size: 225 }, /img_size 225 is not a multiple of/);
    assert.throws(() => specFromHubConfig({ architecture: 'resmlp_12_224', pretrained_cfg: {} }, 'config.json'), /resmlp_12_224.*not supported.*mixer_\*/);
  });
});

describe('checkpoints that do not fit the spec: one line naming the tensor', () => {
  const scratch = scratchDir('mixbeit');
  const rewrite = (name: string, edit: (t: Record<string, TensorToWrite>) => void): SafeTensors => {
    const { weights } = fixture(name);
    const tensors: Record<string, TensorToWrite> = {};
    for (const n of weights.names()) {
      const t = weights.tensor(n);
      tensors[n] = { dtype: 'F32', shape: t.shape, data: t.data };
    }
    edit(tensors);
    const file = path.join(scratch.next(), 'bad.safetensors');
    writeSafetensors(file, tensors);
    return SafeTensors.read(file);
  };
  const rejects = (name: string, edit: (t: Record<string, TensorToWrite>) => void, pattern: RegExp) => {
    const bad = rewrite(name, edit);
    assert.throws(() => buildModel(fixture(name).spec, bad), (e: unknown) => e instanceof Ptq4vitError && pattern.test(e.message) && e.message.includes(bad.file) && !e.message.includes('\n'));
  };
  const f32 = (shape: number[]): TensorToWrite => ({ dtype: 'F32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });

  test('Mixer: missing token-MLP weight, wrong-shaped token MLP (another token count), extra block', () => {
    rejects('mixer_p16_224_fixture', (t) => delete t['blocks.1.mlp_tokens.fc2.weight'], /'blocks\.1\.mlp_tokens\.fc2\.weight' is missing/);
    rejects('mixer_p16_224_fixture', (t) => (t['blocks.0.mlp_tokens.fc1.weight'] = f32([24, 49])), /'blocks\.0\.mlp_tokens\.fc1\.weight' has shape \[24, 49\], expected \[24, 196\]/);
    rejects('mixer_p16_224_fixture', (t) => (t['blocks.2.norm1.weight'] = f32([48])), /not used by .*blocks\.2\.norm1\.weight/);
  });

  test('BEiT: missing q_bias, gamma_2, relative table of another grid; a pos_embed the spec does not use', () => {
    rejects('beit_p16_224_fixture', (t) => delete t['blocks.0.attn.q_bias'], /'blocks\.0\.attn\.q_bias' is missing/);
    rejects('beit_p16_224_fixture', (t) => delete t['blocks.1.gamma_2'], /'blocks\.1\.gamma_2' is missing/);
    rejects('beit_p16_224_fixture', (t) => (t['blocks.1.attn.relative_position_bias_table'] = f32([172, 3])), /relative_position_bias_table' has shape \[172, 3\], expected \[732, 3\]/);
    rejects('beit_p16_224_fixture', (t) => (t['pos_embed'] = f32([1, 197, 48])), /not used by .*pos_embed/);
    rejects('beit_p16_224_fixture', (t) => (t['blocks.0.attn.qkv.bias'] = f32([144])), /not used by .*blocks\.0\.attn\.qkv\.bias/);
    // timm < 1.0 saved relative_position_index as a persistent buffer: recomputed, so ignored.
    const withIndex = rewrite('beit_p16_224_fixture', (t) => (t['blocks.0.attn.relative_position_index'] = { dtype: 'I32', shape: [197, 197], data: new Int32Array(197 * 197) }));
    assert.equal(buildModel(fixture('beit_p16_224_fixture').spec, withIndex).quantPoints.length, 14);
  });
});

// ---------------------------------------------------------------------------------------------
// Quantize → file → eval (integer graph) on random-weight CIFAR-size models of both families

describe('quantize → file → eval: the integer graph\'s top-1 is the simulation\'s (random-weight CIFAR-size models)', () => {
  const scratch = scratchDir('mixbeit-quant');
  const CALIB = 'assets/cifar10-calib32/calib32.json';
  const TEST = 'assets/cifar10-test500';
  const lastJson = (r: CliRun): Record<string, unknown> => {
    assert.equal(r.status, 0, showRun(r));
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  };
  for (const family of ['mixer', 'beit'] as const) {
    // Mixer through its card, BEiT as a timm hub folder (the beit_base_patch16_224 preset with model_args).
    const source = family === 'mixer' ? 'a card' : 'a timm hub folder';
    test(`${family} from ${source}, W8A8 PTQ4ViT: eval of the file (integer ONNX graph) = in-memory top-1/top-5; weights stored as I8 codes`, () => {
      const dir = scratch.next();
      const { model, card } = writeRandomCifarModel(dir, family);
      let from = ['--model', model, '--config', card];
      if (family === 'beit') {
        const { timm_kwargs: k, mean, std } = JSON.parse(fs.readFileSync(card, 'utf8'));
        const hub = path.join(dir, 'hub');
        fs.mkdirSync(hub);
        fs.copyFileSync(model, path.join(hub, 'model.safetensors'));
        const modelArgs = { img_size: k.img_size, patch_size: k.patch_size, embed_dim: k.embed_dim, depth: k.depth, num_heads: k.num_heads };
        fs.writeFileSync(path.join(hub, 'config.json'), JSON.stringify({ architecture: 'beit_base_patch16_224', num_classes: 10, model_args: modelArgs, pretrained_cfg: { input_size: [3, 32, 32], crop_pct: 1, interpolation: 'bicubic', mean, std } }));
        from = ['--model', hub];
      }
      const out = path.join(dir, 'q.safetensors');
      const q = lastJson(runCli(['quantize', ...from, '--calib', CALIB, '--bits', '8', '--calib-size', '8', '--n', '8', '--rounds', '1', '--out', out, '--eval', TEST, '--limit', '100', '--json']));
      const e = lastJson(runCli(['eval', '--model', out, '--data', TEST, '--limit', '100', '--json']));
      assert.equal(e.quantized, true);
      assert.deepEqual([e.top1, e.top5], [q.top1, q.top5], 'eval of the file (integer graph) = in-memory simulation');
      const st = SafeTensors.read(out);
      const points = buildModel(specFromCard(JSON.parse(fs.readFileSync(card, 'utf8')), card), SafeTensors.read(model)).quantPoints.filter((p) => p.kind !== 'matmul');
      for (const p of points) assert.equal(st.info(p.weight!).dtype, 'I8', `${p.weight} is stored as codes`);
      if (family === 'beit') assert.equal(st.info('blocks.0.attn.q_bias').dtype, 'F32');
    });
  }
});
