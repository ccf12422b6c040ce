/**
 * timm hub folders (config.json + model.safetensors, as timm's save_for_hf writes them) and the card
 * beside a checkpoint: the same model as the card describes, the same accuracy, and one clear error
 * naming the field for each bad config.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { readCard } from '../src/models/config.js';
import { specFromHubConfig } from '../src/models/hub.js';
import { openModel } from '../src/open.js';
import { runCli, scratchDir, sharedDir, showRun, type CliRun } from './helpers.js';

const modelsDir = path.join(sharedDir, 'models');
const TEST1K = path.join(sharedDir, 'data', 'cifar10', 'test1k.json');
const CIFAR_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
const scratch = scratchDir('hub');

/** config.json for vit_tiny_c10 as timm's save_for_hf writes it: a preset name plus model_args. */
function vitConfig(over: Record<string, unknown> = {}, pretrained: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architecture: 'vit_tiny_patch16_224',
    num_classes: 10,
    num_features: 192,
    global_pool: 'token',
    label_names: CIFAR_CLASSES,
    model_args: { img_size: 32, patch_size: 4, drop_path_rate: 0.1 },
    pretrained_cfg: {
      tag: 'c10',
      custom_load: false,
      input_size: [3, 32, 32],
      fixed_input_size: true,
      interpolation: 'bicubic',
      crop_pct: 1.0,
      crop_mode: 'center',
      mean: [0.4914, 0.4822, 0.4465],
      std: [0.247, 0.2435, 0.2616],
      num_classes: 10,
      pool_size: null,
      first_conv: 'patch_embed.proj',
      classifier: 'head',
      ...pretrained,
    },
    ...over,
  };
}

/** A hub folder: config.json (an object, or raw text) and a copy of the checkpoint as model.safetensors. */
function hubFolder(config: unknown, model = 'vit_tiny_c10', raw = false): string {
  const dir = path.join(scratch.next(), `${model}.hub`);
  fs.mkdirSync(dir);
  if (config !== undefined) fs.writeFileSync(path.join(dir, 'config.json'), raw ? String(config) : JSON.stringify(config, null, 2));
  fs.copyFileSync(path.join(modelsDir, `${model}.safetensors`), path.join(dir, 'model.safetensors'));
  return dir;
}

function assertUserError(r: CliRun, pattern: RegExp): void {
  assert.equal(r.status, 2, showRun(r));
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, showRun(r));
  assert.match(lines[0], /^ptq4vit: error: /, showRun(r));
  assert.match(lines[0], pattern, showRun(r));
}

function assertError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof Ptq4vitError, `expected a Ptq4vitError, got ${(e as Error)?.stack ?? e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const lastJson = (r: CliRun): Record<string, number> => JSON.parse(r.stdout.trimEnd().split('\n').pop()!) as Record<string, number>;

describe('timm hub folders', () => {
  test('a ViT folder with model_args: the card architecture and preprocessing, label names kept', () => {
    const card = readCard(path.join(modelsDir, 'vit_tiny_c10.json'));
    const { model } = openModel({ weights: hubFolder(vitConfig()) });
    assert.deepEqual(model.spec.arch, card.arch);
    assert.deepEqual(model.spec.preprocess, card.preprocess);
    assert.deepEqual(model.spec.labelNames, CIFAR_CLASSES);
    assert.equal(model.spec.name, 'vit_tiny_patch16_224.c10');
  });

  test('a Swin folder with model_args (lists) equals its card', () => {
    const card = readCard(path.join(modelsDir, 'swin_micro_c10.json'));
    const config = {
      architecture: 'swin_tiny_patch4_window7_224',
      num_classes: 10,
      model_args: { img_size: 32, patch_size: 2, window_size: 4, embed_dim: 48, depths: [2, 2, 6, 2], num_heads: [3, 6, 12, 24] },
      pretrained_cfg: { input_size: [3, 32, 32], interpolation: 'bicubic', crop_pct: 1.0, crop_mode: 'center', mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] },
    };
    const { model } = openModel({ weights: hubFolder(config, 'swin_micro_c10') });
    assert.deepEqual(model.spec.arch, card.arch);
    assert.deepEqual(model.spec.preprocess, card.preprocess);
    assert.equal(model.spec.labelNames, undefined);
  });

  test('eval of a hub folder = eval with the card (top-1/top-5 on 64 images)', () => {
    const dir = hubFolder(vitConfig());
    const hub = runCli(['eval', '--model', dir, '--data', TEST1K, '--limit', '64', '--json']);
    const card = runCli(['eval', '--model', path.join(modelsDir, 'vit_tiny_c10.safetensors'), '--config', path.join(modelsDir, 'vit_tiny_c10.json'), '--data', TEST1K, '--limit', '64', '--json']);
    assert.equal(hub.status, 0, showRun(hub));
    assert.equal(card.status, 0, showRun(card));
    assert.deepEqual([lastJson(hub).top1, lastJson(hub).top5], [lastJson(card).top1, lastJson(card).top5]);
    assert.ok(lastJson(hub).top1 > 0.5);
  });

  test("timm's older single-dict config (labels at the top level) and label_names as {index: name}", () => {
    const legacy = { architecture: 'vit_tiny_patch16_224', num_classes: 10, labels: CIFAR_CLASSES, input_size: [3, 32, 32], crop_pct: 1.0, interpolation: 'bilinear', mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], model_args: { img_size: 32, patch_size: 4 } };
    const spec = specFromHubConfig(legacy, 'legacy/config.json');
    assert.deepEqual(spec.labelNames, CIFAR_CLASSES);
    assert.equal(spec.preprocess.interpolation, 'bilinear');
    const byIndex = specFromHubConfig(vitConfig({ label_names: { 0: 'plane', 9: 'truck' } }), 'x/config.json');
    assert.deepEqual(byIndex.labelNames, ['plane', '1', '2', '3', '4', '5', '6', '7', '8', 'truck']);
  });

  test('a preset without model_args takes the preset architecture and the folder preprocessing', () => {
    const spec = specFromHubConfig({ architecture: 'deit_small_patch16_224', num_classes: 1000, pretrained_cfg: { input_size: [3, 224, 224], crop_pct: 0.875, interpolation: 'bicubic', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] } }, 'c.json');
    assert.equal(spec.arch.embedDim, 384);
    assert.equal(spec.preprocess.cropPct, 0.875);
  });
});

describe('hub folder errors: exit 2, the file and field named', () => {
  test('a folder without config.json', () => {
    const dir = hubFolder(undefined);
    assertUserError(runCli(['eval', '--model', dir, '--data', TEST1K]), new RegExp(`${escape(dir)}: not a timm hub folder: config\\.json is missing`));
  });

  test('a folder without model.safetensors', () => {
    const dir = hubFolder(vitConfig());
    fs.renameSync(path.join(dir, 'model.safetensors'), path.join(dir, 'pytorch_model.bin'));
    assertUserError(runCli(['eval', '--model', dir, '--data', TEST1K]), /model\.safetensors is missing \(pytorch_model\.bin is a pickle and is not read/);
  });

  test('config.json that is not JSON, or not an object', () => {
    const dir = hubFolder('{"architecture": ', 'vit_tiny_c10', true);
    assertUserError(runCli(['eval', '--model', dir, '--data', TEST1K]), new RegExp(`${escape(path.join(dir, 'config.json'))}: not valid JSON`));
    assertError(() => specFromHubConfig([1, 2], 'c.json'), /^c\.json: must be a JSON object/);
  });

  test('missing architecture; an unknown architecture lists the supported families', () => {
    const { architecture: _, ...noArch } = vitConfig();
    const dir = hubFolder(noArch);
    assertUserError(runCli(['quantize', '--model', dir, '--calib', TEST1K]), /config\.json: missing "architecture"/);
    const other = hubFolder(vitConfig({ architecture: 'resnet50' }));
    assertUserError(runCli(['eval', '--model', other, '--data', TEST1K]), /architecture "resnet50" is not supported; supported families: vit_\* \(VisionTransformer\), deit_\* .*swin_\* \(SwinTransformer\)/);
  });

  test('each bad field is named', () => {
    const cases: [Record<string, unknown>, Record<string, unknown>, RegExp][] = [
      [{ model_args: { img_size: 32, patch_size: 4, dynamic_img_size: true } }, {}, /model_args\.dynamic_img_size (= true )?is not supported/],
      [{ model_args: { img_size: 32, patch_size: 4, embed_dim: 'big' } }, {}, /model_args\.embed_dim must be a positive integer/],
      [{ model_args: [1] }, {}, /"model_args" must be an object/],
      [{ num_classes: -1 }, {}, /num_classes must be a positive integer, or 0 for a backbone without classifier, got -1/],
      [{ label_names: ['a', 'b'] }, {}, /label_names must be a list of 10 strings \(num_classes\), got 2 entries/],
      [{ label_names: { 12: 'x' } }, {}, /label_names must map class indices 0…9 to names/],
      [{ pretrained_cfg: 'x' }, {}, /"pretrained_cfg" must be an object/],
      [{}, { input_size: [3, 224, 224], fixed_input_size: false }, /pretrained_cfg\.input_size \[3,224,224\] does not match the architecture's \[3, 32, 32\]/],
      [{}, { mean: [0.5, 0.5] }, /pretrained_cfg\.mean must be a list of 3 numbers/],
      [{}, { std: [0.5, 0, 0.5] }, /pretrained_cfg\.std values must be positive/],
      [{}, { crop_pct: 1.5 }, /pretrained_cfg\.crop_pct must be in \[0\.25, 1\], got 1\.5/],
      [{}, { crop_pct: 1e-320 }, /pretrained_cfg\.crop_pct must be in \[0\.25, 1\], got 1e-320/],
      [{}, { crop_mode: 'squash' }, /pretrained_cfg\.crop_mode "squash" is not supported \(only "center"\)/],
      [{}, { interpolation: 'nearest' }, /pretrained_cfg\.interpolation must be "bicubic" or "bilinear", got "nearest"/],
    ];
    for (const [over, pretrained, pattern] of cases) assertError(() => specFromHubConfig(vitConfig(over, pretrained), 'dir/config.json'), new RegExp(`^dir/config\\.json: ${pattern.source}`));
    // Through the CLI: exit 2, the field named.
    const dir = hubFolder(vitConfig({}, { crop_mode: 'squash' }));
    assertUserError(runCli(['eval', '--model', dir, '--data', TEST1K]), /config\.json: pretrained_cfg\.crop_mode "squash" is not supported/);
  });

  test('--config/--arch with a hub folder; --out onto the folder weights or config.json', () => {
    const dir = hubFolder(vitConfig());
    assertUserError(runCli(['eval', '--model', dir, '--arch', 'vit_tiny_patch16_224', '--data', TEST1K]), /is a timm hub folder described by its .*config\.json: drop --config\/--arch/);
    const before = fs.readFileSync(path.join(dir, 'config.json'));
    assertUserError(runCli(['quantize', '--model', dir, '--calib', TEST1K, '--out', path.join(dir, 'model.safetensors')]), /would overwrite the input checkpoint/);
    assertUserError(runCli(['quantize', '--model', dir, '--calib', TEST1K, '--out', path.join(dir, 'config.json')]), /would overwrite the --config file/);
    assert.deepEqual(fs.readFileSync(path.join(dir, 'config.json')), before);
  });
});

describe('the card beside the checkpoint', () => {
  test('NAME.json beside NAME.safetensors is used without --config', () => {
    const dir = scratch.next();
    fs.copyFileSync(path.join(modelsDir, 'vit_tiny_c10.safetensors'), path.join(dir, 'mine.safetensors'));
    const bare = runCli(['eval', '--model', path.join(dir, 'mine.safetensors'), '--data', TEST1K, '--limit', '8']);
    assertUserError(bare, /the architecture is needed: pass --config <card\.json> or --arch <preset> \(or put its card beside it as mine\.json\)/);
    fs.copyFileSync(path.join(modelsDir, 'vit_tiny_c10.json'), path.join(dir, 'mine.json'));
    const r = runCli(['eval', '--model', path.join(dir, 'mine.safetensors'), '--data', TEST1K, '--limit', '8', '--json']);
    assert.equal(r.status, 0, showRun(r));
    assert.equal(lastJson(r).images, 8);
    // --arch still wins over the card beside the checkpoint (here: the wrong one, so the shapes fail).
    assertUserError(runCli(['eval', '--model', path.join(dir, 'mine.safetensors'), '--arch', 'vit_tiny_patch16_224', '--data', TEST1K]), /mine\.safetensors/);
  });
});
