/**
 * The CLI contract, by running bin/ptq4vit.js: results on stdout (a human report, then one JSON line
 * with --json), and every user mistake as exit code 2 + one `ptq4vit: error: …` message, no stack trace.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { repoRoot, runCli, scratchDir, sharedDir, showRun, type CliRun } from './helpers.js';
import { bigPng } from './mutate.js';

const MODEL = '../shared/models/vit_tiny_c10.safetensors';
const CARD = '../shared/models/vit_tiny_c10.json';
const SWIN_CARD = '../shared/models/swin_micro_c10.json';
const TEST1K = '../shared/data/cifar10/test1k.json';
const JPEGS = '../shared/data/cifar10/jpeg_sample';

const scratch = scratchDir('cli');
const tmpRoot = scratch.root;
const tmpDir = scratch.next;

type Run = CliRun;
const run = (...args: string[]): Run => runCli(args, 300_000);

/** An image folder with the 10 CIFAR-10 classes, one JPEG each (copied from jpeg_sample). */
function oneImagePerClass(classes?: string[]): string {
  const root = tmpDir();
  const sample = path.join(sharedDir, 'data', 'cifar10', 'jpeg_sample');
  for (const cls of classes ?? fs.readdirSync(sample).sort()) {
    fs.mkdirSync(path.join(root, cls));
    const jpg = fs.readdirSync(path.join(sample, cls)).filter((f) => f.endsWith('.jpg')).sort()[0];
    fs.copyFileSync(path.join(sample, cls, jpg), path.join(root, cls, 'good.jpg'));
  }
  return root;
}

const show = showRun;

function assertOk(r: Run): void {
  assert.equal(r.status, 0, show(r));
  assert.ok(!r.stderr.includes('error'), `stderr mentions an error:\n${show(r)}`);
}

/** A user error: exit 2, one `ptq4vit: error:` line first on stderr matching `pattern`, no stack trace. */
function assertUserError(r: Run, pattern: RegExp): void {
  assert.equal(r.status, 2, show(r));
  assert.match(r.stderr, /^ptq4vit: error: /, show(r));
  assert.ok(!r.stderr.includes('    at '), `stack trace on stderr:\n${show(r)}`);
  assert.ok(!r.stderr.includes('internal error'), show(r));
  assert.match(r.stderr.split('\n')[0], pattern, show(r));
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function lastJson(stdout: string): Record<string, unknown> {
  const lines = stdout.trimEnd().split('\n');
  const last = lines[lines.length - 1];
  let json: unknown;
  assert.doesNotThrow(() => (json = JSON.parse(last)), `last stdout line is not JSON: ${last}`);
  assert.ok(typeof json === 'object' && json !== null && !Array.isArray(json), `last stdout line is not a JSON object: ${last}`);
  return json as Record<string, unknown>;
}

describe('eval', () => {
  test('on a manifest with --json: human report, then one JSON line last', () => {
    const r = run('eval', '--model', MODEL, '--config', CARD, '--data', TEST1K, '--limit', '64', '--json');
    assertOk(r);
    const json = lastJson(r.stdout);
    for (const key of ['top1', 'top5', 'images', 'seconds', 'images_per_second']) {
      assert.equal(typeof json[key], 'number', `${key} is a number: ${JSON.stringify(json)}`);
      assert.ok(Number.isFinite(json[key] as number), `${key} is finite`);
    }
    assert.equal(json.images, 64);
    const [top1, top5] = [json.top1 as number, json.top5 as number];
    assert.ok(top1 >= 0.5 && top1 <= 1 && top5 >= top1 && top5 <= 1, `plausible accuracies: ${top1}, ${top5}`);
    assert.ok((json.seconds as number) > 0 && (json.images_per_second as number) > 0);
    // The human report comes first and agrees with the JSON.
    const human = r.stdout.slice(0, r.stdout.trimEnd().lastIndexOf('\n'));
    assert.match(human, /vit_tiny_c10/);
    assert.match(human, new RegExp(`top-1\\s+${escape((top1 * 100).toFixed(2))}%`));
    assert.match(human, new RegExp(`top-5\\s+${escape((top5 * 100).toFixed(2))}%`));
    assert.match(human, /images\s+64\b/);
  });

  test('without --json, stdout has no JSON line', () => {
    const r = run('eval', '--model', MODEL, '--config', CARD, '--data', TEST1K, '--limit', '8');
    assertOk(r);
    assert.match(r.stdout, /top-1\s+\d+\.\d\d%/);
    assert.ok(!r.stdout.trimEnd().split('\n').some((l) => l.trimStart().startsWith('{')), r.stdout);
  });

  test('on an image folder', () => {
    const r = run('eval', '--model', MODEL, '--config', CARD, '--data', JPEGS, '--limit', '16', '--json');
    assertOk(r);
    const json = lastJson(r.stdout);
    assert.equal(json.images, 16);
    assert.match(r.stdout, /on jpeg_sample/);
  });

  test('an unreadable image is skipped and reported, not fatal', () => {
    const root = oneImagePerClass();
    fs.writeFileSync(path.join(root, 'airplane', 'broken.jpg'), 'not a jpeg');
    const r = run('eval', '--model', MODEL, '--config', CARD, '--data', root, '--json');
    assert.equal(r.status, 0, show(r));
    const json = lastJson(r.stdout);
    assert.equal(json.images, 10);
    assert.equal(json.skipped, 1);
    assert.match(r.stdout, /1 unreadable skipped/);
    assert.match(r.stdout, /broken\.jpg/);
  });

  test('issue 9: a corrupt JPEG and a 15000×15000 PNG are skipped with reasons that say what is wrong', () => {
    const root = oneImagePerClass();
    const jpeg = fs.readFileSync(path.join(root, 'cat', 'good.jpg'));
    fs.writeFileSync(path.join(root, 'cat', 'cut.jpg'), jpeg.subarray(0, 200));
    fs.writeFileSync(path.join(root, 'dog', 'huge.png'), bigPng(15000, 15000));
    const r = run('eval', '--model', MODEL, '--config', CARD, '--data', root, '--json');
    assert.equal(r.status, 0, show(r));
    const json = lastJson(r.stdout);
    assert.equal(json.images, 10);
    assert.equal(json.skipped, 2);
    assert.match(r.stdout, /skipped .*cut\.jpg: corrupt JPEG data: \S.*\n/, show(r));
    assert.match(r.stdout, /skipped .*huge\.png: image is 15000×15000 \(225\.0 megapixels\), above the limit of 89\.5 megapixels/, show(r));
  });

  test('--help exits 0 with the usage; eval --help lists its flags', () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const r = run(...args);
      assert.equal(r.status, 0, show(r));
      assert.match(r.stdout, /Usage: ptq4vit <command>/);
      assert.match(r.stdout, /\n {2}eval {2,}top-1\/top-5/);
      assert.equal(r.stderr, '');
    }
    const r = run('eval', '--help');
    assert.equal(r.status, 0, show(r));
    assert.match(r.stdout, /ptq4vit eval --model/);
    assert.match(r.stdout, /--batch-size <N> +images per forward pass, 1 to 4096 \(default: 64\)/);
  });

  test('presets lists the known architectures', () => {
    const r = run('presets');
    assertOk(r);
    assert.match(r.stdout, /vit_base_patch16_224\s+VisionTransformer\s+224×224\s+0\.9\s+bicubic\s+0\.5,0\.5,0\.5\s+0\.5,0\.5,0\.5/);
    assert.match(r.stdout, /swin_tiny_patch4_window7_224\s+SwinTransformer\s+224×224\s+0\.9\s+bicubic\s+0\.485,0\.456,0\.406\s+0\.229,0\.224,0\.225/);
    assert.match(r.stdout, /vit_base_patch16_384\s+VisionTransformer\s+384×384\s+1\s+bicubic/);
  });
});

describe('demo', () => {
  test('demo --help exits 0; demo rejects unknown flags', () => {
    const help = run('demo', '--help');
    assert.equal(help.status, 0, show(help));
    assert.match(help.stdout, /ptq4vit demo/);
    assertUserError(run('demo', '--bogus'), /unknown option '--bogus'; see 'ptq4vit demo --help'$/);
  });

  // The full demo (a 101-point, 3-round search on 500 images) takes minutes; the same path with a
  // coarse search on 100 images runs here.
  test('demo runs on the bundled assets and prints FP32 and quantized top-1', () => {
    const r = run('demo', '--limit', '100', '--n', '8', '--rounds', '1', '--json');
    assertOk(r);
    assert.match(r.stdout, /FP32\s+top-1 \d+\.\d\d%/);
    assert.match(r.stdout, /W8A8\s+top-1 \d+\.\d\d%/);
    assert.match(r.stdout, /W6A6\s+top-1 \d+\.\d\d%.*integer graph \d+ img\/s, ONNX \d+\.\d MB/);
    const json = lastJson(r.stdout) as { command: string; images: number; fp32_top1: number; quantized: { top1: number; onnx_bytes: number }[] };
    // The integer graphs hold int8 weight codes: about a quarter of the FP32 model's 21.5 MB.
    for (const q of json.quantized) assert.ok(q.onnx_bytes > 4e6 && q.onnx_bytes < 0.3 * 21.5e6, JSON.stringify(q));
    assert.equal(json.command, 'demo');
    assert.equal(json.images, 100);
    assert.equal(json.quantized.length, 2);
    // W8A8 on a 5 M-parameter ViT stays within a few points of FP32 even with a coarse search.
    assert.ok(Math.abs(json.quantized[0].top1 - json.fp32_top1) < 0.05, JSON.stringify(json));
  });
});

describe('user errors: exit 2, one clear message, no stack trace', () => {
  const evalArgs = (...over: string[]): string[] => {
    const flags: Record<string, string> = { '--model': MODEL, '--config': CARD, '--data': TEST1K, '--limit': '4' };
    const extra: string[] = [];
    for (let i = 0; i < over.length; i++) {
      if (over[i].startsWith('--') && i + 1 < over.length && !over[i + 1].startsWith('--')) {
        flags[over[i]] = over[i + 1];
        i++;
      } else if (over[i].startsWith('!')) {
        delete flags[over[i].slice(1)];
      } else extra.push(over[i]);
    }
    return ['eval', ...Object.entries(flags).flat(), ...extra];
  };

  test('missing --model', () => {
    assertUserError(run(...evalArgs('!--model')), /eval: --model is required/);
  });

  test('missing --data', () => {
    assertUserError(run(...evalArgs('!--data')), /eval: --data is required/);
  });

  test('neither --config nor --arch (and no card beside the checkpoint)', () => {
    // ../shared/models has vit_tiny_c10.json beside the checkpoint, which is its card: use a copy without one.
    const bare = path.join(tmpDir(), 'bare.safetensors');
    fs.copyFileSync(path.join(sharedDir, 'models', 'vit_tiny_c10.safetensors'), bare);
    assertUserError(run(...evalArgs('--model', bare, '!--config')), /the architecture is needed: pass --config <card\.json> or --arch <preset>/);
  });

  test('nonexistent weights file', () => {
    assertUserError(run(...evalArgs('--model', '../shared/models/nope.safetensors')), /cannot read \.\.\/shared\/models\/nope\.safetensors: no such file or directory/);
  });

  test('nonexistent card', () => {
    assertUserError(run(...evalArgs('--config', 'nope.json')), /cannot read model card nope\.json: no such file or directory/);
  });

  test('unknown --arch lists the presets', () => {
    assertUserError(run(...evalArgs('!--config', '--arch', 'vit_gigantic')), /unknown architecture 'vit_gigantic'; known presets: .*vit_base_patch16_224/);
  });

  test('both --config and --arch', () => {
    assertUserError(run(...evalArgs('--arch', 'vit_tiny_patch16_224')), /give either --config or --arch, not both/);
  });

  test('a preset whose shapes do not fit the checkpoint: names the file and a tensor', () => {
    assertUserError(run(...evalArgs('!--config', '--arch', 'vit_tiny_patch16_224')), new RegExp(`${escape(MODEL)}: tensor '[\\w.]+' has shape \\[.*\\], expected \\[`));
  });

  test('ViT weights with the Swin card: names the file and a tensor', () => {
    const r = run(...evalArgs('--config', SWIN_CARD));
    assertUserError(r, new RegExp(`${escape(MODEL)}: tensor 'patch_embed\\.proj\\.weight' has shape \\[192, 3, 4, 4\\], expected \\[48, 3, 2, 2\\]`));
  });

  test('Swin weights with the ViT card: names the file and a tensor', () => {
    const r = run(...evalArgs('--model', '../shared/models/swin_micro_c10.safetensors'));
    assertUserError(r, /swin_micro_c10\.safetensors: tensor '[\w.]+' (has shape|is missing)/);
  });

  test('ViT weights with the Swin card: no misleading "timm < 0.9 Swin checkpoint" hint', () => {
    const r = run(...evalArgs('--config', SWIN_CARD));
    assert.doesNotMatch(r.stderr, /timm < 0\.9 Swin/);
  });

  test('truncated safetensors', () => {
    const file = path.join(tmpDir(), 'cut.safetensors');
    const real = fs.readFileSync(path.join(repoRoot, MODEL));
    for (const n of [5, 1000, real.length - 100]) {
      fs.writeFileSync(file, real.subarray(0, n));
      assertUserError(run(...evalArgs('--model', file)), new RegExp(`${escape(file)}: not a valid safetensors file: .*(too short|truncated)`));
    }
  });

  test('nonexistent data', () => {
    assertUserError(run(...evalArgs('--data', '../shared/data/nope')), /cannot open dataset \.\.\/shared\/data\/nope: no such file or directory/);
  });

  test('empty data folder', () => {
    const dir = tmpDir();
    assertUserError(run(...evalArgs('--data', dir)), new RegExp(`image folder ${escape(dir)} is empty`));
  });

  test('folder of non-image files', () => {
    const dir = tmpDir();
    for (const cls of ['cat', 'dog']) {
      fs.mkdirSync(path.join(dir, cls));
      fs.writeFileSync(path.join(dir, cls, 'README.txt'), 'no images here');
    }
    assertUserError(run(...evalArgs('--data', dir)), new RegExp(`image folder ${escape(dir)}: class folders with no images: cat, dog`));
  });

  test('a folder whose classes do not match the model', () => {
    const root = oneImagePerClass(['airplane', 'cat']);
    assertUserError(run(...evalArgs('--data', root)), new RegExp(`${escape(root)} has 2 classes but the model predicts 10`));
  });

  test('unknown flag', () => {
    const r = run(...evalArgs('--bogus'));
    assertUserError(r, /unknown option '--bogus'; see 'ptq4vit eval --help'$/);
  });

  test('a flag without its value', () => {
    assertUserError(run('eval', '--model'), /--model/);
  });

  test('unknown command', () => {
    assertUserError(run('quantise', '--model', MODEL), /unknown command 'quantise'/);
  });

  test("--limit 0, --limit abc, --limit 1.5, --limit '', --batch-size 0", () => {
    assertUserError(run(...evalArgs('--limit', '0')), /--limit must be an integer ≥ 1, got '0'/);
    assertUserError(run(...evalArgs('--limit', 'abc')), /--limit must be an integer ≥ 1, got 'abc'/);
    assertUserError(run(...evalArgs('--limit', '1.5')), /--limit must be an integer ≥ 1, got '1\.5'/);
    assertUserError(run(...evalArgs('--limit', '')), /--limit must be an integer ≥ 1, got ''/);
    assertUserError(run(...evalArgs('--batch-size', '0')), /--batch-size must be an integer from 1 to 4096, got '0'/);
    assertUserError(run(...evalArgs('--threads', '0')), /--threads must be an integer from 1 to 256, got '0'/);
  });

  test('a bad card', () => {
    const card = path.join(tmpDir(), 'card.json');
    fs.writeFileSync(card, '{"timm_class": "ResNet"}');
    assertUserError(run(...evalArgs('--config', card)), new RegExp(`${escape(card)}: unknown architecture timm_class "ResNet"`));
    fs.writeFileSync(card, '{not json');
    assertUserError(run(...evalArgs('--config', card)), new RegExp(`${escape(card)}: not valid JSON`));
  });
});
