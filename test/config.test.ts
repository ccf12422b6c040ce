/** Model cards and presets → architecture + preprocessing, and the messages for every bad card. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { cardFromSpec, PRESETS, readCard, specFromCard, specFromPreset } from '../src/models/config.js';
import { resolveSpec } from '../src/models/load.js';
import type { SwinArch, VitArch } from '../src/models/types.js';
import { fixturesDir, runCli, sharedDir, showRun } from './helpers.js';

const modelsDir = path.join(sharedDir, 'models');
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-config-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let tmpCount = 0;
function writeCard(content: unknown, raw = false): string {
  const file = path.join(tmpRoot, `card${tmpCount++}.json`);
  fs.writeFileSync(file, raw ? String(content) : JSON.stringify(content));
  return file;
}

const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];
const HALF = [0.5, 0.5, 0.5];

function assertError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof Ptq4vitError, `expected a Ptq4vitError, got ${(e as Error)?.stack ?? e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

const vitCard = (kwargs: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => ({
  timm_class: 'VisionTransformer',
  timm_kwargs: { img_size: 32, patch_size: 4, embed_dim: 192, depth: 12, num_heads: 3, num_classes: 10, ...kwargs },
  mean: [0.4914, 0.4822, 0.4465],
  std: [0.247, 0.2435, 0.2616],
  ...extra,
});

describe('real cards', () => {
  test('vit_tiny_c10.json', () => {
    const spec = readCard(path.join(modelsDir, 'vit_tiny_c10.json'));
    assert.equal(spec.name, 'vit_tiny_c10');
    assert.equal(spec.timmClass, 'VisionTransformer');
    assert.deepEqual(spec.arch, {
      family: 'vit', imgSize: 32, patchSize: 4, inChans: 3, embedDim: 192, depth: 12, numHeads: 3, mlpRatio: 4, qkvBias: true, numClasses: 10,
    } satisfies VitArch);
    assert.deepEqual(spec.preprocess, {
      inputSize: 32, cropPct: 1, interpolation: 'bicubic', mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616],
    });
  });

  test('swin_micro_c10.json', () => {
    const spec = readCard(path.join(modelsDir, 'swin_micro_c10.json'));
    assert.equal(spec.name, 'swin_micro_c10');
    assert.deepEqual(spec.arch, {
      family: 'swin', imgSize: 32, patchSize: 2, inChans: 3, embedDim: 48, depths: [2, 2, 6, 2], numHeads: [3, 6, 12, 24], windowSize: 4, mlpRatio: 4, qkvBias: true, numClasses: 10,
    } satisfies SwinArch);
    assert.equal(spec.preprocess.inputSize, 32);
    assert.equal(spec.preprocess.cropPct, 1);
    assert.deepEqual(spec.preprocess.mean, [0.4914, 0.4822, 0.4465]);
  });

  test('fixture cards (224×224, timm defaults for absent kwargs)', () => {
    const vit = readCard(path.join(fixturesDir, 'vit_p16_224_fixture.json'));
    assert.deepEqual(vit.arch, { family: 'vit', imgSize: 224, patchSize: 16, inChans: 3, embedDim: 48, depth: 2, numHeads: 3, mlpRatio: 4, qkvBias: true, numClasses: 16 });
    const deit = readCard(path.join(fixturesDir, 'deit_distilled_p16_224_fixture.json'));
    assert.equal(deit.timmClass, 'VisionTransformerDistilled');
    assert.deepEqual(deit.arch, { ...vit.arch, family: 'deit-distilled' });
    const swin = readCard(path.join(fixturesDir, 'swin_p4_w7_224_fixture.json'));
    assert.deepEqual(swin.arch, {
      family: 'swin', imgSize: 224, patchSize: 4, inChans: 3, embedDim: 16, depths: [2, 2, 2, 2], numHeads: [1, 2, 4, 8], windowSize: 7, mlpRatio: 4, qkvBias: true, numClasses: 16,
    });
    // Fixture cards carry no mean/std: ImageNet statistics by default, no crop.
    for (const spec of [vit, deit, swin]) {
      assert.deepEqual(spec.preprocess, { inputSize: 224, cropPct: 1, interpolation: 'bicubic', mean: IMAGENET_MEAN, std: IMAGENET_STD });
    }
  });

  test('timm defaults when a kwarg is absent', () => {
    const v = specFromCard({ timm_class: 'VisionTransformer' }, 'card').arch as VitArch;
    assert.deepEqual(v, { family: 'vit', imgSize: 224, patchSize: 16, inChans: 3, embedDim: 768, depth: 12, numHeads: 12, mlpRatio: 4, qkvBias: true, numClasses: 1000 });
    const s = specFromCard({ timm_class: 'SwinTransformer' }, 'card').arch as SwinArch;
    assert.deepEqual(s, { family: 'swin', imgSize: 224, patchSize: 4, inChans: 3, embedDim: 96, depths: [2, 2, 6, 2], numHeads: [3, 6, 12, 24], windowSize: 7, mlpRatio: 4, qkvBias: true, numClasses: 1000 });
    // Training-only kwargs are ignored; inference-equivalent settings are accepted.
    const spec = specFromCard(vitCard({ drop_path_rate: 0.1, drop_rate: 0.2, attn_drop_rate: 0.1, global_pool: 'token', class_token: true, qkv_bias: false }), 'card');
    assert.equal((spec.arch as VitArch).qkvBias, false);
    assert.equal(specFromCard(vitCard({}, { crop_pct: 0.875, interpolation: 'bilinear' }), 'card').preprocess.interpolation, 'bilinear');
  });
});

describe('presets', () => {
  test('every preset builds, and its name agrees with its architecture', () => {
    assert.ok(Object.keys(PRESETS).length >= 10);
    // ViT, DeiT and Swin names (Mixer and BEiT presets: mixer_beit.test.ts).
    for (const name of Object.keys(PRESETS).filter((n) => /^(vit|deit3?|swin|swinv2)_/.test(n))) {
      const spec = specFromPreset(name);
      assert.equal(spec.name, name);
      assert.equal(spec.timmClass, PRESETS[name].timmClass);
      const a = spec.arch;
      // timm's swinv2_* names leave the patch (4) out.
      const patch = /patch(\d+)/.exec(name)?.[1] ?? (name.startsWith('swinv2_') ? '4' : '');
      // DINOv2's names carry no size: timm registers them at 518 (their pretrained cfg's fixed input size).
      // 192to256: pre-trained at 192, run at 256.
      const size = /_(?:\d+to)?(\d+)$/.exec(name)?.[1] ?? (name.endsWith('_dinov2') ? '518' : 'none');
      assert.equal(a.patchSize, Number(patch), `${name}: patch size`);
      assert.equal(a.imgSize, Number(size), `${name}: image size`);
      assert.equal(spec.preprocess.inputSize, a.imgSize, `${name}: input size`);
      // The OpenAI CLIP QuickGELU weights end in their 512-d projection (timm's num_classes=512); timm's
      // swinv2_*_window12_192 weights are ImageNet-22k classifiers.
      assert.equal(a.numClasses, name.includes('quickgelu') ? 512 : /^swinv2_.*_192$/.test(name) ? 21841 : 1000, `${name}: ImageNet classes`);
      assert.equal(spec.preprocess.interpolation, 'bicubic', `${name}: interpolation`);
      if (name.startsWith('swinv2_')) {
        assert.ok(a.family === 'swinv2', `${name}: family`);
        // window12to16: pre-trained with 12, run with 16
        assert.equal(a.windowSize, Number(/window(?:\d+to)?(\d+)/.exec(name)![1]), `${name}: window`);
      } else if (name.startsWith('swin')) {
        assert.equal(a.family, 'swin');
        assert.equal((a as SwinArch).windowSize, Number(/window(\d+)/.exec(name)![1]), `${name}: window`);
      } else {
        assert.equal(a.family, name.includes('distilled') ? 'deit-distilled' : 'vit', `${name}: family`);
        assert.equal(a.embedDim % (a as VitArch).numHeads, 0, `${name}: head dim`);
        const expectedDim = { tiny: 192, small: 384, base: 768, large: 1024 }[/_(tiny|small|base|large)_/.exec(name)![1] as 'tiny'];
        assert.equal(a.embedDim, expectedDim, `${name}: width`);
      }
      // timm: ViT (augreg) and SigLIP weights use mean/std 0.5; DeiT, DINOv2 and Swin ImageNet statistics; CLIP its own.
      const half = name.startsWith('vit') && !name.includes('dinov2') && !name.includes('clip');
      if (!name.includes('clip')) {
        assert.deepEqual(spec.preprocess.mean, half ? HALF : IMAGENET_MEAN, `${name}: mean`);
        assert.deepEqual(spec.preprocess.std, half ? HALF : IMAGENET_STD, `${name}: std`);
      }
    }
  });

  test("timm's real preprocessing for the three models of the paper", () => {
    const vit = specFromPreset('vit_base_patch16_224');
    assert.deepEqual(vit.preprocess, { inputSize: 224, cropPct: 0.9, interpolation: 'bicubic', mean: HALF, std: HALF });
    assert.deepEqual(vit.arch, { family: 'vit', imgSize: 224, patchSize: 16, inChans: 3, embedDim: 768, depth: 12, numHeads: 12, mlpRatio: 4, qkvBias: true, numClasses: 1000 });
    const deit = specFromPreset('deit_base_distilled_patch16_224');
    assert.deepEqual(deit.preprocess, { inputSize: 224, cropPct: 0.875, interpolation: 'bicubic', mean: IMAGENET_MEAN, std: IMAGENET_STD });
    assert.equal(deit.arch.family, 'deit-distilled');
    assert.equal(deit.timmClass, 'VisionTransformerDistilled');
    const swin = specFromPreset('swin_tiny_patch4_window7_224');
    assert.deepEqual(swin.preprocess, { inputSize: 224, cropPct: 0.9, interpolation: 'bicubic', mean: IMAGENET_MEAN, std: IMAGENET_STD });
    assert.deepEqual(swin.arch, { family: 'swin', imgSize: 224, patchSize: 4, inChans: 3, embedDim: 96, depths: [2, 2, 6, 2], numHeads: [3, 6, 12, 24], windowSize: 7, mlpRatio: 4, qkvBias: true, numClasses: 1000 });
    assert.equal(specFromPreset('vit_base_patch16_384').preprocess.cropPct, 1.0);
    assert.equal(specFromPreset('deit_small_patch16_224').preprocess.cropPct, 0.875);
  });

  test('unknown preset: the message lists the presets and suggests --config', () => {
    assertError(() => specFromPreset('vit_huge_patch14_224'), /unknown architecture 'vit_huge_patch14_224'; known presets: vit_tiny_patch16_224, .*deit_base_distilled_patch16_224.*swin_tiny_patch4_window7_224.*--config/);
  });
});

describe('bad cards', () => {
  const bad = (card: unknown, pattern: RegExp): void => assertError(() => specFromCard(card, 'my.json'), new RegExp(`^my\\.json: ${pattern.source}`));

  test('unknown timm_class', () => {
    bad({ timm_class: 'ConvNeXt' }, /unknown architecture timm_class "ConvNeXt" \(supported: VisionTransformer, VisionTransformerDistilled, SwinTransformer, SwinTransformerV2, MlpMixer, Beit\)/);
    bad({ timm_kwargs: {} }, /missing "timm_class"/);
    bad({ timm_class: 7 }, /missing "timm_class"/);
  });

  test('not an object', () => {
    for (const card of [null, 3, 'VisionTransformer', [vitCard()]]) bad(card, /a model card must be a JSON object/);
    for (const kwargs of [null, [1, 2], 'patch_size=4']) bad({ timm_class: 'VisionTransformer', timm_kwargs: kwargs }, /"timm_kwargs" must be an object/);
  });

  test('unsupported kwarg', () => {
    // timm VisionTransformer's optional parts are supported (test/vit_families.test.ts); what is not, is refused.
    bad(vitCard({ mlp_layer: 'SwiGLUPacked' }), /timm_kwargs\.mlp_layer is not supported \(supported: img_size, patch_size, .*init_values.*\)/);
    bad(vitCard({ global_pool: 'prr' }), /timm_kwargs\.global_pool = "prr" is not supported \(AttentionPoolPrr/);
    bad({ timm_class: 'SwinTransformer', timm_kwargs: { depth: 12 } }, /timm_kwargs\.depth is not supported \(supported: .*depths/);
    bad({ timm_class: 'VisionTransformerDistilled', timm_kwargs: { global_pool: 'avg' } }, /timm_kwargs\.global_pool = "avg" is not supported \(only "token"\)/);
    bad({ timm_class: 'VisionTransformerDistilled', timm_kwargs: { reg_tokens: 4 } }, /timm_kwargs\.reg_tokens is not supported/);
    bad(vitCard({ class_token: false }), /timm_kwargs\.global_pool "token" needs the class token/);
    bad({ timm_class: 'SwinTransformer', timm_kwargs: { global_pool: 'token' } }, /timm_kwargs\.global_pool = "token" is not supported \(only "avg"\)/);
  });

  test('bad kwarg types', () => {
    bad(vitCard({ embed_dim: '192' }), /timm_kwargs\.embed_dim must be a positive integer, got "192"/);
    bad(vitCard({ depth: 1.5 }), /timm_kwargs\.depth must be a positive integer, got 1\.5/);
    bad(vitCard({ num_heads: 0 }), /timm_kwargs\.num_heads must be a positive integer, got 0/);
    bad(vitCard({ num_classes: -10 }), /timm_kwargs\.num_classes must be a positive integer, or 0 for a backbone without classifier, got -10/);
    bad(vitCard({ img_size: [32, 32] }), /timm_kwargs\.img_size must be a positive integer, got \[32,32\]/);
    bad(vitCard({ depth: 1e308 }), /timm_kwargs\.depth 1e\+308 is larger than the 1000000 supported/); // found by fuzzing: an internal RangeError
    bad(vitCard({ num_classes: 2 ** 40 }), /timm_kwargs\.num_classes 1099511627776 is larger than the 1000000 supported/);
    bad(vitCard({ mlp_ratio: 'four' }), /timm_kwargs\.mlp_ratio must be a positive number, got "four"/);
    bad(vitCard({ mlp_ratio: -4 }), /timm_kwargs\.mlp_ratio must be a positive number/);
    bad(vitCard({ qkv_bias: 'true' }), /timm_kwargs\.qkv_bias must be true or false, got "true"/);
    bad(vitCard({ qkv_bias: 1 }), /timm_kwargs\.qkv_bias must be true or false, got 1/);
    const swin = (kwargs: Record<string, unknown>) => ({ timm_class: 'SwinTransformer', timm_kwargs: kwargs });
    bad(swin({ depths: '2,2,6,2' }), /timm_kwargs\.depths must be a list of positive integers, got "2,2,6,2"/);
    bad(swin({ depths: [] }), /timm_kwargs\.depths must be a list of positive integers/);
    bad(swin({ depths: [2, 0] , num_heads: [1, 2] }), /timm_kwargs\.depths must be a list of positive integers, got \[2,0\]/);
    bad(swin({ num_heads: [3, 6, '12', 24] }), /timm_kwargs\.num_heads must be a list of positive integers/);
    bad(swin({ depths: [2, 2], num_heads: [3, 6, 12] }), /timm_kwargs\.num_heads has 3 entries but depths has 2/);
    bad(swin({ window_size: 0 }), /timm_kwargs\.window_size must be a positive integer/);
  });

  test('bad preprocessing fields', () => {
    bad(vitCard({}, { mean: [0.5, 0.5] }), /mean must be a list of 3 numbers, got \[0\.5,0\.5\]/);
    bad(vitCard({}, { mean: 'imagenet' }), /mean must be a list of 3 numbers/);
    bad(vitCard({}, { std: [0.2, 0, 0.2] }), /std values must be positive/);
    bad(vitCard({}, { std: [0.2, '0.2', 0.2] }), /std must be a list of 3 numbers/);
    bad(vitCard({}, { interpolation: 'nearest' }), /interpolation must be "bicubic" or "bilinear"/);
  });

  test('input_size mismatch', () => {
    bad(vitCard({}, { input_size: [3, 224, 224] }), /input_size \[3,224,224\] does not match the architecture's \[3, 32, 32\]/);
    bad(vitCard({}, { input_size: [1, 32, 32] }), /input_size \[1,32,32\] does not match/);
    bad(vitCard({}, { input_size: [3, 32, 16] }), /input_size \[3,32,16\] does not match/);
    bad(vitCard({}, { input_size: [32, 32] }), /input_size must be a list of 3 numbers, got \[32,32\]/);
    assert.equal(specFromCard(vitCard({}, { input_size: [3, 32, 32] }), 'my.json').preprocess.inputSize, 32);
  });

  test('bad crop_pct', () => {
    for (const crop of [0, -0.5, 1.5, '0.9', [0.9], 1e-320, 0.2]) bad(vitCard({}, { crop_pct: crop }), new RegExp(`crop_pct must be in \\[0\\.25, 1\\], got ${JSON.stringify(crop).replace(/[.[\]]/g, '\\$&')}`));
    assert.equal(specFromCard(vitCard({}, { crop_pct: 0.875 }), 'my.json').preprocess.cropPct, 0.875);
  });
});

describe('geometry checks (issue 9: num_heads 5 with embed_dim 192 was an internal error)', () => {
  const bad = (card: unknown, pattern: RegExp): void => assertError(() => specFromCard(card, 'my.json'), new RegExp(`^my\\.json: ${pattern.source}`));
  const swin = (kwargs: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ timm_class: 'SwinTransformer', timm_kwargs: { img_size: 224, ...kwargs }, ...extra });
  test('ViT: num_heads must divide embed_dim; img_size a multiple of patch_size; bounded input', () => {
    bad(vitCard({ num_heads: 5 }), /timm_kwargs\.num_heads 5 must divide timm_kwargs\.embed_dim 192/);
    bad(vitCard({ num_heads: 7, embed_dim: 192 }), /timm_kwargs\.num_heads 7 must divide timm_kwargs\.embed_dim 192/);
    bad(vitCard({ img_size: 30 }, { input_size: [3, 30, 30] }), /timm_kwargs\.img_size 30 is not a multiple of timm_kwargs\.patch_size 4/);
    bad(vitCard({ img_size: 100000 }, { input_size: [3, 100000, 100000] }), /timm_kwargs\.img_size 100000 is larger than the 2048 supported/);
    bad(vitCard({ img_size: 2048, patch_size: 2 }, { input_size: [3, 2048, 2048] }), /timm_kwargs\.img_size 2048 \/ patch_size 2 gives 1048576 patches, more than the 4096 supported/);
    assert.equal((specFromCard(vitCard({ num_heads: 4 }), 'my.json').arch as VitArch).numHeads, 4);
  });

  test('Swin: every stage width embed_dim·2^i divisible by its heads; merges need even grids', () => {
    bad(swin({ embed_dim: 96, num_heads: [3, 6, 12, 25] }), /timm_kwargs\.num_heads\[3\] = 25 must divide stage 3's width 768 \(embed_dim 96 × 2\^3\)/);
    bad(swin({ embed_dim: 96, num_heads: [5, 6, 12, 24] }), /timm_kwargs\.num_heads\[0\] = 5 must divide stage 0's width 96/);
    bad(swin({ img_size: 36 }, { input_size: [3, 36, 36] }), /timm_kwargs\.img_size 36: stage 1 would merge an odd 9×9 patch grid \(img_size \/ patch_size must be divisible by 8\)/);
  });

  test('through the CLI: exit 2 naming the field, not an internal error', () => {
    const card = writeCard(vitCard({ num_heads: 5 }));
    const r = runCli(['eval', '--model', path.join(modelsDir, 'vit_tiny_c10.safetensors'), '--config', card, '--data', path.join(sharedDir, 'data', 'cifar10', 'test1k.json'), '--limit', '8']);
    assert.equal(r.status, 2, showRun(r));
    assert.match(r.stderr.split('\n')[0], /^ptq4vit: error: .*card\d+\.json: timm_kwargs\.num_heads 5 must divide timm_kwargs\.embed_dim 192/, showRun(r));
  });
});

describe('cardFromSpec (how a quantized file stores its spec)', () => {
  test('specFromCard(cardFromSpec(spec)) is the spec, for every preset and the real cards', () => {
    const specs = Object.keys(PRESETS).map((name) => specFromPreset(name));
    for (const f of ['vit_tiny_c10.json', 'swin_micro_c10.json']) if (fs.existsSync(path.join(modelsDir, f))) specs.push(readCard(path.join(modelsDir, f)));
    for (const spec of specs) assert.deepEqual(specFromCard(JSON.parse(JSON.stringify(cardFromSpec(spec))), 'x'), { ...spec, timmClass: spec.timmClass }, spec.name);
  });

  test('label_names (a hub folder\'s class names) travel in the card; a wrong count is refused', () => {
    const names = Array.from({ length: 10 }, (_, i) => `class ${i}`);
    const spec = specFromCard(vitCard({}, { label_names: names }), 'my.json');
    assert.deepEqual(spec.labelNames, names);
    assert.deepEqual(specFromCard(JSON.parse(JSON.stringify(cardFromSpec(spec))), 'x'), spec);
    assertError(() => specFromCard(vitCard({}, { label_names: names.slice(1) }), 'my.json'), /^my\.json: label_names must be a list of 10 class names \(num_classes\)/);
    assertError(() => specFromCard(vitCard({}, { label_names: [...names.slice(1), 3] }), 'my.json'), /label_names must be a list of 10 class names/);
  });
});

describe('card files', () => {
  test('non-JSON card: message names the file', () => {
    const file = writeCard('{"timm_class": "VisionTransformer",', true);
    assertError(() => readCard(file), new RegExp(`^${file.replace(/[.]/g, '\\.')}: not valid JSON`));
    const empty = writeCard('', true);
    assertError(() => readCard(empty), /: not valid JSON/);
  });

  test('missing card file', () => {
    const file = path.join(tmpRoot, 'nope', 'card.json');
    assertError(() => readCard(file), new RegExp(`^cannot read model card ${file.replace(/[.]/g, '\\.')}: no such file or directory`));
    assertError(() => readCard(tmpRoot), /^cannot read model card .*: is a directory/);
  });

  test('a bad card read from a file names the file', () => {
    const file = writeCard(vitCard({ patch_size: 'four' }));
    assertError(() => readCard(file), new RegExp(`^${file.replace(/[.]/g, '\\.')}: timm_kwargs\\.patch_size must be a positive integer`));
  });

  test('both --config and --arch; neither', () => {
    const card = path.join(modelsDir, 'vit_tiny_c10.json');
    assertError(() => resolveSpec({ weights: 'w.safetensors', config: card, arch: 'vit_tiny_patch16_224' }), /give either --config or --arch, not both/);
    assertError(() => resolveSpec({ weights: 'w.safetensors' }), /^w\.safetensors: the architecture is needed: pass --config <card\.json> or --arch <preset>/);
    assert.equal(resolveSpec({ weights: 'w.safetensors', config: card }).name, 'vit_tiny_c10');
    assert.equal(resolveSpec({ weights: 'w.safetensors', arch: 'deit_tiny_patch16_224' }).name, 'deit_tiny_patch16_224');
    assertError(() => resolveSpec({ weights: 'w.safetensors', arch: 'nope' }), /unknown architecture 'nope'/);
  });
});
