/**
 * The CLI explains itself: --version, per-command --help from one flag table, one-line flag errors
 * pointing at that help, and strict numeric flags (issue 9's rows: 1e1, 0x8, ' 8', negative values,
 * a missing value, a reversed --alpha/--beta range). Every case here fails before any model is loaded.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { repoRoot, runCli, showRun, type CliRun } from './helpers.js';

const MODEL = '../shared/models/vit_tiny_c10.safetensors';
const CARD = '../shared/models/vit_tiny_c10.json';
const CALIB = '../shared/data/cifar10/calib32.json';

/** Exit 2 and exactly one stderr line, matching `pattern`. */
function assertOneLineError(r: CliRun, pattern: RegExp): void {
  assert.equal(r.status, 2, showRun(r));
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one stderr line expected:\n${showRun(r)}`);
  assert.match(lines[0], /^ptq4vit: error: /, showRun(r));
  assert.match(lines[0], pattern, showRun(r));
  assert.equal(r.stdout, '', showRun(r));
}

const quantize = (...extra: string[]): CliRun => runCli(['quantize', '--model', MODEL, '--config', CARD, '--calib', CALIB, '--out', '/nonexistent-dir/x.safetensors', ...extra], 60_000);

describe('--version and --help', () => {
  test('--version prints the package version', () => {
    const r = runCli(['--version']);
    const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    assert.equal(r.status, 0, showRun(r));
    assert.equal(r.stdout, `ptq4vit ${pkg.version}\n`);
  });

  test('every command has a --help listing every flag with its meaning, and defaults', () => {
    const expected: Record<string, string[]> = {
      quantize: ['model', 'config', 'arch', 'calib', 'calib-size', 'method', 'bits', 'w-bits', 'a-bits', 'out', 'eval', 'limit', 'report', 'seed', 'loss', 'alpha', 'beta', 'n', 'rounds', 'no-hessian', 'no-twin-softmax', 'no-twin-gelu', 'gelu-unaligned', 'skip-unreadable', 'softmax-r2'],
      eval: ['model', 'config', 'arch', 'data', 'limit', 'batch-size', 'simulate'],
      export: ['model', 'config', 'arch', 'out', 'float'],
      demo: ['limit', 'n', 'rounds'],
      presets: [],
    };
    for (const [command, flags] of Object.entries(expected)) {
      // `-h` and `help <command>` once each (every spawn costs a second on a busy machine).
      for (const args of command === 'eval' ? [[command, '--help'], [command, '-h'], ['help', command]] : [[command, '--help']]) {
        const r = runCli(args);
        assert.equal(r.status, 0, showRun(r));
        assert.match(r.stdout, new RegExp(`^ptq4vit ${command} — `));
        for (const flag of [...flags, 'threads', 'json', 'help']) {
          // Each flag has a line with its name and a description after it.
          assert.match(r.stdout, new RegExp(`\\n {2}(-h, )?--${flag}\\b[^\\n]*\\s{2,}\\S`), `${command} --help lists --${flag}:\n${r.stdout}`);
        }
      }
    }
    const q = runCli(['quantize', '--help']).stdout;
    assert.match(q, /--bits <K> +weight and activation bits, 2 to 16 \(default: 8\)/);
    assert.match(q.replace(/\s+/g, " "), /--calib-size <N> calibration images drawn \(seeded\) from --calib \(default: 32, or all images if fewer\)/);
    assert.match(q.replace(/\s+/g, ' '), /--model <path> float checkpoint: .* or a timm hub folder \(config\.json \+ model\.safetensors\) \(required\)/);
  });

  test("README's command reference is each command's --help, verbatim", () => {
    const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
    for (const command of ['quantize', 'eval', 'export', 'demo', 'presets']) {
      const help = runCli([command, '--help']).stdout;
      assert.ok(readme.includes('```text\n' + help + '```'), `README's section for 'ptq4vit ${command} --help' differs from the command's output; paste the output of: node bin/ptq4vit.js ${command} --help`);
    }
  });

  test('the global usage lists every command', () => {
    const r = runCli(['--help']);
    for (const command of ['demo', 'quantize', 'eval', 'export', 'presets']) assert.match(r.stdout, new RegExp(`\\n {2}${command} +\\S`));
  });

  test('presets --json: input size, crop, interpolation, mean/std of each preset', () => {
    const r = runCli(['presets', '--json']);
    assert.equal(r.status, 0, showRun(r));
    const last = JSON.parse(r.stdout.trimEnd().split('\n').pop()!) as { presets: { name: string; input_size: number[]; crop_pct: number; interpolation: string; mean: number[]; std: number[] }[] };
    const deit = last.presets.find((p) => p.name === 'deit_small_patch16_224')!;
    assert.deepEqual([deit.input_size, deit.crop_pct, deit.interpolation, deit.mean, deit.std], [[3, 224, 224], 0.875, 'bicubic', [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]);
  });
});

describe('flag errors: one line and a pointer to the help', () => {
  test('unknown flag: one line, no usage dump', () => {
    assertOneLineError(quantize('--bogus'), /unknown option '--bogus'; see 'ptq4vit quantize --help'$/);
    assertOneLineError(runCli(['eval', '--modle', MODEL]), /unknown option '--modle'; see 'ptq4vit eval --help'$/);
    assertOneLineError(runCli(['presets', '--all']), /unknown option '--all'; see 'ptq4vit presets --help'$/);
  });

  test('a stray argument, a value given to a switch', () => {
    assertOneLineError(quantize('extra.safetensors'), /unexpected argument 'extra\.safetensors'.*see 'ptq4vit quantize --help'$/);
    assertOneLineError(quantize('--json=yes'), /--json takes no value, got 'yes'; see 'ptq4vit quantize --help'$/);
  });

  test('missing required flag: one line', () => {
    assertOneLineError(runCli(['quantize', '--calib', CALIB]), /quantize: --model is required; see 'ptq4vit quantize --help'$/);
  });

  test('unknown command: one line', () => {
    assertOneLineError(runCli(['quantise']), /unknown command 'quantise' \(commands: demo, quantize, eval, export, presets\); see 'ptq4vit --help'$/);
  });
});

// issue 9: each of these was accepted, or answered by Node's own multi-line message, before.
describe('strict numeric flags (issue 9)', () => {
  test("--bits 1e1, --bits 0x8, --bits ' 8' are not decimal integers", () => {
    for (const bad of ['1e1', '0x8', ' 8', '8 ', '8.0', '+8', '']) {
      assertOneLineError(quantize('--bits', bad), new RegExp(`--bits must be an integer from 2 to 16, got '${bad.replace('+', '\\+').replace('.', '\\.')}'$`));
    }
    assertOneLineError(quantize('--calib-size', '1e1'), /--calib-size must be an integer ≥ 1, got '1e1'$/);
    assertOneLineError(runCli(['eval', '--model', MODEL, '--data', CALIB, '--limit', '0x10']), /--limit must be an integer ≥ 1, got '0x10'$/);
  });

  test('--bits -1, --seed -1: negative values are parsed as values and get our range message', () => {
    assertOneLineError(quantize('--bits', '-1'), /--bits must be an integer from 2 to 16, got '-1'$/);
    assertOneLineError(quantize('--seed', '-1'), /--seed must be an integer from 0 to 2147483647, got '-1'$/);
    assertOneLineError(quantize('--alpha', '-0.5'), /--alpha must be a number from 0 to 10, got '-0\.5'$/);
  });

  test('--alpha and --beta: decimal numbers only', () => {
    assertOneLineError(quantize('--alpha', '1e-2'), /--alpha must be a number from 0 to 10, got '1e-2'$/);
    assertOneLineError(quantize('--beta', '0x1'), /--beta must be a number from 0 to 10, got '0x1'$/);
  });

  test('--model with no value: our own one line', () => {
    assertOneLineError(runCli(['quantize', '--model']), /--model needs a value <path>; see 'ptq4vit quantize --help'$/);
    assertOneLineError(runCli(['quantize', '--model', '--calib', CALIB]), /--model needs a value <path>; see 'ptq4vit quantize --help'$/);
  });

  test('--alpha must be below --beta', () => {
    assertOneLineError(quantize('--alpha', '1.5', '--beta', '0.5'), /--alpha \(1\.5\) must be less than --beta \(0\.5\)/);
    assertOneLineError(quantize('--alpha', '1.2'), /--alpha \(1\.2\) must be less than --beta \(1\.2\)/);
  });
});
