/**
 * `ptq4vit quantize` end to end, by running bin/ptq4vit.js on the bundled model and data:
 *  - round trip: the quantized file evaluated by `ptq4vit eval` gives exactly the top-1/top-5 that
 *    quantize measured in memory; integer weights, complete metadata; the same seed gives the same bytes;
 *  - every user mistake: exit 2, one `ptq4vit: error:` line, no stack trace, and nothing written —
 *    neither the output file nor a temporary file beside it.
 * Search settings are tiny (--n 10 --rounds 1, small calibration subsets) to keep the file fast.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { SafeTensors } from '../src/io/safetensors.js';
import { parseMetadata, QUANTIZED_FORMAT } from '../src/quant/file.js';
import type { PointQuant } from '../src/quant/params.js';
import { repoRoot, runCli, scratchDir, showRun, type CliRun } from './helpers.js';

const MODEL = 'assets/models/vit_tiny_c10.safetensors';
const CARD = 'assets/models/vit_tiny_c10.json';
const CALIB = 'assets/cifar10-calib32/calib32.json';
const TEST = 'assets/cifar10-test500';
const SWIN_MODEL = '../shared/models/swin_micro_c10.safetensors';
const SWIN_CARD = '../shared/models/swin_micro_c10.json';

const scratch = scratchDir('quantize');
const tmpRoot = scratch.root;
const tmpDir = scratch.next;

type Run = CliRun;
const run = (...args: string[]): Run => runCli(args, 600_000);

const show = showRun;

/** `quantize` of the bundled ViT on the bundled calibration set, with extra flags. */
const quantize = (...args: string[]): Run => run('quantize', '--model', MODEL, '--config', CARD, '--calib', CALIB, ...args);

function lastJson(r: Run): Record<string, unknown> {
  assert.equal(r.status, 0, show(r));
  const lines = r.stdout.trimEnd().split('\n');
  try {
    return JSON.parse(lines[lines.length - 1]) as Record<string, unknown>;
  } catch {
    assert.fail(`last stdout line is not JSON:\n${show(r)}`);
  }
}

interface QuantFile {
  st: SafeTensors;
  points: PointQuant[];
  provenance: Record<string, unknown>;
  spec: { name: string };
}

function readQuantFile(file: string): QuantFile {
  const st = SafeTensors.read(file);
  assert.equal(st.metadata['ptq4vit.format'], QUANTIZED_FORMAT);
  for (const key of ['ptq4vit.spec', 'ptq4vit.quant', 'ptq4vit.provenance']) assert.equal(typeof st.metadata[key], 'string', `metadata ${key}`);
  return {
    st,
    points: parseMetadata(st.metadata, file).points,
    provenance: JSON.parse(st.metadata['ptq4vit.provenance']) as Record<string, unknown>,
    spec: JSON.parse(st.metadata['ptq4vit.spec']) as { name: string },
  };
}

/** Quantized weights are integer codes within their bit width; everything else stays F32. */
function assertIntegerWeights(q: QuantFile, weightBits: number): void {
  const dtype = weightBits <= 8 ? 'I8' : 'I16';
  const lo = -(2 ** (weightBits - 1)), hi = 2 ** (weightBits - 1) - 1;
  const quantized = new Set(q.points.filter((p) => p.kind !== 'matmul').map((p) => `${p.point}.weight`));
  assert.ok(quantized.size > 0);
  for (const name of q.st.names()) {
    const info = q.st.info(name);
    if (!quantized.has(name)) {
      assert.equal(info.dtype, 'F32', `${name} is not quantized and stays F32`);
      continue;
    }
    assert.equal(info.dtype, dtype, `${name}: ${weightBits}-bit codes are ${dtype}`);
    const codes = q.st.ints(name);
    let min = Infinity, max = -Infinity;
    for (const c of codes) {
      if (c < min) min = c;
      if (c > max) max = c;
    }
    assert.ok(min >= lo && max <= hi, `${name}: codes ${min}…${max} outside [${lo}, ${hi}]`);
  }
  for (const p of q.points) if (p.kind !== 'matmul') assert.equal(p.weightBits, weightBits, `${p.point} weight bits`);
}

/** Activation bit widths of every quantized input and attention operand. */
function activationBits(points: PointQuant[]): Set<number> {
  const bits = new Set<number>();
  for (const p of points) {
    if (p.kind === 'matmul') bits.add(p.a.bits).add(p.b.bits);
    else if (p.input) bits.add(p.input.bits);
  }
  return bits;
}

/** `ptq4vit eval` of a quantized file reproduces the in-memory evaluation that quantize printed. */
function assertRoundTrip(quantizeJson: Record<string, unknown>, file: string, limit: number): void {
  assert.equal(quantizeJson.eval_images, limit);
  const e = lastJson(run('eval', '--model', file, '--data', TEST, '--limit', String(limit), '--json'));
  assert.equal(e.quantized, true);
  assert.equal(e.images, limit);
  assert.equal(e.top1, quantizeJson.top1, 'top-1 of the file = top-1 in memory');
  assert.equal(e.top5, quantizeJson.top5, 'top-5 of the file = top-5 in memory');
}

/** A quantized file for the "already quantized" test: the round trip's, or a quick one of its own. */
let quantizedFile: string | null = null;

describe('round trip: quantize → file → eval', () => {
  test('PTQ4ViT W6A6: eval of the file = in-memory top-1/top-5; I8 codes; metadata; same seed → same bytes', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'q.safetensors');
    // A 4 GiB memory budget holds every record (at the default 768 MiB, 32 images of this model spill a little).
    const q = lastJson(quantize('--bits', '6', '--n', '10', '--rounds', '1', '--out', out, '--eval', TEST, '--limit', '200', '--memory-mib', '4096', '--json'));
    assert.equal(q.out, out);
    assert.equal(q.calib_images, 32);
    assert.equal(typeof q.top1, 'number');
    assert.ok((q.top1 as number) > 0.3 && (q.top1 as number) <= (q.top5 as number), `plausible accuracy: ${JSON.stringify(q)}`);
    assert.deepEqual(fs.readdirSync(dir), ['q.safetensors'], 'only the output file, no temporary left');
    assertRoundTrip(q, out, 200);

    const file = readQuantFile(out);
    assert.equal(file.st.info('blocks.0.attn.qkv.weight').dtype, 'I8');
    assert.equal(file.st.info('patch_embed.proj.weight').dtype, 'I8');
    assert.equal(file.st.info('head.weight').dtype, 'I8');
    assert.equal(file.st.info('blocks.0.attn.qkv.bias').dtype, 'F32');
    assertIntegerWeights(file, 6);
    assert.deepEqual([...activationBits(file.points)], [6]);
    assert.equal(file.spec.name, 'vit_tiny_c10');
    assert.equal(file.points.length, 2 + 12 * 6, 'patch embedding, head and six points per block');
    const kinds = new Map(file.points.map((p) => [p.point, p]));
    const fc2 = kinds.get('blocks.3.mlp.fc2');
    assert.ok(fc2 && fc2.kind === 'linear' && fc2.input?.kind === 'twin-gelu', 'fc2 input: twin GELU');
    const sv = kinds.get('blocks.3.attn.matmul2');
    assert.ok(sv && sv.kind === 'matmul' && sv.a.kind === 'twin-softmax' && sv.a.deltaR2 === 1 / 32, 'softmax·v: twin softmax, Δ_R2 = 1/2^(k−1)');
    assert.ok(sv.b.kind === 'uniform' && sv.b.deltas.length === 3, 'per-head v scales');
    const pe = kinds.get('patch_embed.proj');
    assert.ok(pe && pe.kind === 'conv' && pe.input === null && pe.weightDeltas.length === 192, 'conv: float image input, per-channel weight');
    const p = file.provenance;
    assert.equal(p.method, 'ptq4vit');
    assert.equal(p.w_bits, 6);
    assert.equal(p.a_bits, 6);
    assert.equal(p.seed, 0);
    assert.equal(p.loss, 'label');
    assert.equal(p.source_checkpoint, 'vit_tiny_c10.safetensors');
    assert.deepEqual(p.search, { metric: 'hessian', alpha: 0.01, beta: 1.2, n: 10, rounds: 1, twin_softmax: true, twin_gelu: true, gelu_aligned: true, softmax_delta_r2: 'paper' });
    const calib = p.calibration as { images: number; indices: number[] };
    assert.equal(calib.images, 32);
    assert.deepEqual(calib.indices, Array.from({ length: 32 }, (_, i) => i));

    assert.equal(q.record_groups_in_files, 0, 'every record in memory');
    // Determinism: the same command again (without --eval, which does not enter the file) → the same bytes — here
    // with a 1 MiB memory budget, so that the records go through temporary files: where they live is not a choice.
    const again = path.join(dir, 'again.safetensors');
    const a = lastJson(quantize('--bits', '6', '--n', '10', '--rounds', '1', '--out', again, '--memory-mib', '1', '--json'));
    assert.ok((a.record_groups_in_files as number) >= 1, `records in temporary files: ${JSON.stringify(a)}`);
    assert.ok(fs.readFileSync(again).equals(fs.readFileSync(out)), 'a second run with the same seed writes a byte-identical file');
    quantizedFile = out;
  });

  test('Base PTQ (cosine) W8A8 on 16 images: round trip, I8, provenance', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'base.safetensors');
    const q = lastJson(quantize('--method', 'base', '--calib-size', '16', '--n', '10', '--out', out, '--eval', TEST, '--limit', '100', '--json'));
    assert.equal(q.method, 'base');
    assertRoundTrip(q, out, 100);
    const file = readQuantFile(out);
    assertIntegerWeights(file, 8);
    assert.deepEqual([...activationBits(file.points)], [8]);
    for (const pt of file.points) {
      const ops = pt.kind === 'matmul' ? [pt.a, pt.b] : pt.input ? [pt.input] : [];
      for (const a of ops) assert.equal(a.kind, 'uniform', `${pt.point}: Base PTQ has no twin quantizers`);
    }
    assert.equal(file.provenance.method, 'base');
    assert.equal(file.provenance.loss, null, 'the cosine metric uses no loss');
    assert.equal((file.provenance.search as { metric: string }).metric, 'cosine');
    const calib = file.provenance.calibration as { images: number; indices: number[] };
    assert.equal(calib.images, 16);
    assert.equal(new Set(calib.indices).size, 16);
    assert.ok(calib.indices.every((i, k) => i >= 0 && i < 32 && (k === 0 || i > calib.indices[k - 1])), `a sorted subset of the 32: ${calib.indices}`);
  });

  test('PTQ4ViT W8A4 (--w-bits 8 --a-bits 4): round trip, 8-bit I8 weights, 4-bit activations', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'w8a4.safetensors');
    const q = lastJson(quantize('--w-bits', '8', '--a-bits', '4', '--calib-size', '16', '--n', '10', '--rounds', '1', '--out', out, '--eval', TEST, '--limit', '100', '--json'));
    assert.equal(q.w_bits, 8);
    assert.equal(q.a_bits, 4);
    assertRoundTrip(q, out, 100);
    const file = readQuantFile(out);
    assertIntegerWeights(file, 8);
    assert.deepEqual([...activationBits(file.points)], [4]);
    assert.equal(file.provenance.w_bits, 8);
    assert.equal(file.provenance.a_bits, 4);
  });

  test('W12A8: weights above 8 bits are I16 codes, round trip exact', () => {
    const dir = tmpDir();
    const out = path.join(dir, 'w12.safetensors');
    const q = lastJson(quantize('--method', 'base', '--w-bits', '12', '--a-bits', '8', '--calib-size', '8', '--n', '4', '--out', out, '--eval', TEST, '--limit', '50', '--json'));
    assertRoundTrip(q, out, 50);
    const file = readQuantFile(out);
    assert.equal(file.st.info('blocks.0.attn.qkv.weight').dtype, 'I16');
    assertIntegerWeights(file, 12);
  });

  test('Swin (swin_micro_c10) W6A6: round trip exact, buffers not stored', { skip: !fs.existsSync(path.join(repoRoot, SWIN_MODEL)) && 'no ../shared/models' }, () => {
    const dir = tmpDir();
    const out = path.join(dir, 'swin.safetensors');
    const q = lastJson(run('quantize', '--model', SWIN_MODEL, '--config', SWIN_CARD, '--calib', CALIB, '--bits', '6', '--calib-size', '8', '--n', '10', '--rounds', '1', '--out', out, '--eval', TEST, '--limit', '100', '--json'));
    assertRoundTrip(q, out, 100);
    const file = readQuantFile(out);
    assertIntegerWeights(file, 6);
    assert.equal(file.spec.name, 'swin_micro_c10');
    assert.ok(!file.st.names().some((n) => /relative_position_index|attn_mask/.test(n)), 'recomputed buffers are not stored');
  });
});

describe('progress and accounting', () => {
  test('on a pipe (not a TTY): plain progress lines for every phase, with ETA; --json has per-phase seconds and peak RSS', () => {
    const dir = tmpDir();
    const r = quantize('--bits', '8', '--n', '4', '--rounds', '1', '--calib-size', '16', '--out', path.join(dir, 'q.safetensors'));
    assert.equal(r.status, 0, showRun(r));
    assert.ok(!r.stderr.includes('\r') && !r.stderr.includes('\x1b'), 'no carriage returns or escape codes on a pipe');
    const lines = r.stderr.split('\n').filter(Boolean);
    // Recording (one pass here: vit_tiny_c10 on 16 images fits one group) by images, ending at 16/16.
    const record = lines.filter((l) => /^ptq4vit W8A8 record 1\/1 /.test(l));
    assert.ok(record.length >= 2, r.stderr);
    // (A rate needs two updates half a second apart: 16 images may record faster, hence '?' allowed.)
    assert.match(record.at(-1)!, /100% 16\/16 img (?:[\d.]+|\?) img\/s [\dhms]+<0s$/);
    // The search by points, at most every 10%, with elapsed<ETA and the point just searched; rate and ETA
    // measured from the first point on ('?' until then), so the last line has a rate.
    const search = lines.filter((l) => /^ptq4vit W8A8 search /.test(l));
    assert.ok(search.length >= 5 && search.length <= 11, r.stderr);
    for (const l of search) assert.match(l, /\d+% \d+\/74 layers (?:[\d.]+|\?) layers\/s [\dhms]+<(?:[\dhms]+|\?) \S+$/);
    assert.match(search.at(-1)!, /100% 74\/74 layers [\d.]+ layers\/s [\dhms]+<0s head$/);
    assert.ok(lines.indexOf(record.at(-1)!) < lines.indexOf(search[0]), 'recording before its search');

    const q = lastJson(quantize('--bits', '8', '--n', '4', '--rounds', '1', '--calib-size', '16', '--out', path.join(dir, 'q2.safetensors'), '--json'));
    const phases = q.phase_seconds as Record<string, number>;
    assert.deepEqual(Object.keys(phases).sort(), ['load_calibration', 'record', 'search', 'write']);
    for (const v of Object.values(phases)) assert.ok(v >= 0 && v < 600, JSON.stringify(q));
    assert.ok(phases.record + phases.search <= (q.calib_seconds as number) + 1e-6, JSON.stringify(q));
    assert.equal(q.record_passes, 1);
    assert.ok((q.peak_rss_bytes as number) > 50 * 2 ** 20 && (q.peak_rss_bytes as number) < 8 * 2 ** 30, JSON.stringify(q));
  });
});

describe('user errors: exit 2, one clear message, no stack trace, nothing written', () => {
  /** Run quantize into a fresh directory; assert the error and that the directory is still empty. */
  function refused(pattern: RegExp, args: string[], options: { model?: string[]; out?: (dir: string) => string } = {}): void {
    const dir = tmpDir();
    const out = options.out ? options.out(dir) : path.join(dir, 'q.safetensors');
    const model = options.model ?? ['--model', MODEL, '--config', CARD];
    const r = run('quantize', ...model, '--calib', CALIB, '--n', '2', '--rounds', '1', '--out', out, ...args);
    assert.equal(r.status, 2, show(r));
    assert.match(r.stderr, /^ptq4vit: error: /, show(r));
    assert.ok(!r.stderr.includes('    at '), `stack trace on stderr:\n${show(r)}`);
    assert.ok(!r.stderr.includes('internal error'), show(r));
    assert.ok(!r.stderr.includes('recording'), `failed only after starting calibration:\n${show(r)}`);
    assert.match(r.stderr.split('\n')[0], pattern, show(r));
    assert.deepEqual(fs.readdirSync(dir), [], `nothing written to the output directory:\n${show(r)}`);
  }

  test('--bits 1, --bits 17, --bits abc', () => {
    refused(/--bits must be an integer from 2 to 16, got '1'/, ['--bits', '1']);
    refused(/--bits must be an integer from 2 to 16, got '17'/, ['--bits', '17']);
    refused(/--bits must be an integer from 2 to 16, got 'abc'/, ['--bits', 'abc']);
  });

  test('--memory-mib 0, --memory-mib 1.5, --memory-mib lots', () => {
    refused(/--memory-mib must be an integer from 1 to 1048576, got '0'/, ['--memory-mib', '0']);
    refused(/--memory-mib must be an integer from 1 to 1048576, got '1.5'/, ['--memory-mib', '1.5']);
    refused(/--memory-mib must be an integer from 1 to 1048576, got 'lots'/, ['--memory-mib', 'lots']);
  });

  test('--w-bits 1, --a-bits 17', () => {
    refused(/--w-bits must be an integer from 2 to 16, got '1'/, ['--w-bits', '1']);
    refused(/--a-bits must be an integer from 2 to 16, got '17'/, ['--a-bits', '17']);
  });

  test('--bits together with --w-bits', () => {
    refused(/give either --bits or --w-bits\/--a-bits, not both/, ['--bits', '8', '--w-bits', '9']);
  });

  test('--calib-size 33 with a 32-image calibration set', () => {
    refused(/calibration set .*calib32\.json has 32 images, fewer than the 33 requested \(--calib-size\)/, ['--calib-size', '33']);
  });

  test('an empty --calib folder', () => {
    const empty = tmpDir();
    const dir = tmpDir();
    const r = run('quantize', '--model', MODEL, '--config', CARD, '--calib', empty, '--out', path.join(dir, 'q.safetensors'));
    assert.equal(r.status, 2, show(r));
    assert.match(r.stderr.split('\n')[0], new RegExp(`^ptq4vit: error: image folder ${empty.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is empty`), show(r));
    assert.ok(!r.stderr.includes('    at '), show(r));
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  test('a Swin card with the ViT checkpoint, and the other way round', { skip: !fs.existsSync(path.join(repoRoot, SWIN_CARD)) && 'no ../shared/models' }, () => {
    refused(/vit_tiny_c10\.safetensors: tensor '[\w.]+' has shape \[[\d, ]+\], expected \[[\d, ]+\]/, [], { model: ['--model', MODEL, '--config', SWIN_CARD] });
    refused(/swin_micro_c10\.safetensors: /, [], { model: ['--model', SWIN_MODEL, '--config', CARD] });
  });

  test('--out into a nonexistent directory', () => {
    const dir = tmpDir();
    refused(/cannot write .*: directory .*missing does not exist or is not writable/, [], { out: () => path.join(dir, 'missing', 'q.safetensors') });
    assert.ok(!fs.existsSync(path.join(dir, 'missing')));
  });

  test('--out under a regular file, and --out naming a directory', () => {
    refused(/cannot write .*: directory .* does not exist or is not writable/, [], {
      out: () => {
        const file = path.join(tmpDir(), 'file');
        fs.writeFileSync(file, 'x');
        return path.join(file, 'q.safetensors');
      },
    });
    const existing = tmpDir();
    refused(/cannot write .*: it is a directory/, [], { out: () => existing });
    assert.deepEqual(fs.readdirSync(existing), [], 'nothing written into the directory');
  });

  test('--out equal to the input checkpoint: refused, the checkpoint untouched', () => {
    const before = fs.readFileSync(path.join(repoRoot, MODEL));
    const modelsDir = path.join(repoRoot, 'assets', 'models');
    const listing = fs.readdirSync(modelsDir).sort();
    for (const out of [MODEL, `./assets/../${MODEL}`, path.join(repoRoot, MODEL)]) {
      const r = run('quantize', '--model', MODEL, '--config', CARD, '--calib', CALIB, '--out', out);
      assert.equal(r.status, 2, show(r));
      assert.match(r.stderr.split('\n')[0], /^ptq4vit: error: --out .* would overwrite the input checkpoint/, show(r));
      assert.ok(!r.stderr.includes('    at '), show(r));
    }
    assert.ok(fs.readFileSync(path.join(repoRoot, MODEL)).equals(before), 'checkpoint unchanged');
    assert.deepEqual(fs.readdirSync(modelsDir).sort(), listing, 'no temporary file beside the checkpoint');
  });

  test('--out equal to the card or the calibration manifest: refused, both untouched', () => {
    for (const [flag, file] of [['config', CARD], ['calib', CALIB]] as const) {
      const before = fs.readFileSync(path.join(repoRoot, file));
      const r = run('quantize', '--model', MODEL, '--config', CARD, '--calib', CALIB, '--out', file);
      assert.equal(r.status, 2, show(r));
      assert.match(r.stderr.split('\n')[0], new RegExp(`^ptq4vit: error: --out .* would overwrite the --${flag} file`), show(r));
      assert.ok(fs.readFileSync(path.join(repoRoot, file)).equals(before), `${file} unchanged`);
    }
  });

  /**
   * Issue 9: the same-file check compared resolved path strings, so an --out reaching an input through
   * a symbolic link (or a hard link) passed, and the quantized file replaced the input checkpoint.
   */
  describe('--out reaching an input through a link: refused, every input untouched', () => {
    /** A private copy of the model, card and calibration manifest (never the repository's files). */
    function inputs(): { dir: string; model: string; card: string; calib: string; images: string } {
      const dir = tmpDir();
      fs.copyFileSync(path.join(repoRoot, MODEL), path.join(dir, 'm.safetensors'));
      fs.copyFileSync(path.join(repoRoot, CARD), path.join(dir, 'card.json'));
      const calibDir = path.join(repoRoot, path.dirname(CALIB));
      for (const f of fs.readdirSync(calibDir)) fs.copyFileSync(path.join(calibDir, f), path.join(dir, f));
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, path.basename(CALIB)), 'utf8')) as { images: string };
      return { dir, model: path.join(dir, 'm.safetensors'), card: path.join(dir, 'card.json'), calib: path.join(dir, path.basename(CALIB)), images: path.join(dir, manifest.images) };
    }

    function refusedKeepingInputs(pattern: RegExp, i: ReturnType<typeof inputs>, out: string, model = i.model, calib = i.calib): void {
      const before = new Map([i.model, i.card, i.calib, i.images].map((f) => [f, fs.readFileSync(f)]));
      const listing = fs.readdirSync(i.dir).sort();
      const r = run('quantize', '--model', model, '--config', i.card, '--calib', calib, '--method', 'base', '--calib-size', '2', '--n', '2', '--out', out);
      assert.equal(r.status, 2, show(r));
      assert.match(r.stderr.split('\n')[0], pattern, show(r));
      assert.ok(!r.stderr.includes('internal error') && !r.stderr.includes('    at '), show(r));
      for (const [f, bytes] of before) assert.ok(fs.readFileSync(f).equals(bytes), `${f} unchanged`);
      assert.deepEqual(fs.readdirSync(i.dir).sort(), listing, 'no file added beside the inputs (no temporary either)');
    }

    test('--out through a linked directory names the input checkpoint', () => {
      const i = inputs();
      const link = path.join(tmpDir(), 'linked');
      fs.symlinkSync(i.dir, link);
      refusedKeepingInputs(/^ptq4vit: error: --out .* would overwrite the input checkpoint/, i, path.join(link, 'm.safetensors'));
    });

    test('--model given as a symbolic link, --out naming the real checkpoint', () => {
      const i = inputs();
      const link = path.join(tmpDir(), 'link.safetensors');
      fs.symlinkSync(i.model, link);
      refusedKeepingInputs(/^ptq4vit: error: --out .* would overwrite the input checkpoint/, i, i.model, link);
    });

    test('--out a symbolic link to the checkpoint, and a hard link to it', () => {
      const i = inputs();
      const soft = path.join(tmpDir(), 'soft.safetensors');
      fs.symlinkSync(i.model, soft);
      refusedKeepingInputs(/^ptq4vit: error: --out .* would overwrite the input checkpoint/, i, soft);
      const hard = path.join(tmpDir(), 'hard.safetensors');
      fs.linkSync(i.model, hard);
      refusedKeepingInputs(/^ptq4vit: error: --out .* would overwrite the input checkpoint/, i, hard);
    });

    test('--out reaching the card, the manifest, or the raw images the manifest names, through a link', () => {
      const i = inputs();
      const link = path.join(tmpDir(), 'linked');
      fs.symlinkSync(i.dir, link);
      refusedKeepingInputs(/would overwrite the --config file/, i, path.join(link, 'card.json'));
      refusedKeepingInputs(/would overwrite the --calib file/, i, path.join(link, path.basename(CALIB)));
      refusedKeepingInputs(/would overwrite the --calib manifest's images file/, i, path.join(link, path.basename(i.images)));
      refusedKeepingInputs(/would overwrite the --calib manifest's images file/, i, i.images);
    });

    test('--out naming an image inside the --calib folder', () => {
      const i = inputs();
      const folder = tmpDir();
      const jpegs = path.join(repoRoot, '..', 'shared', 'data', 'cifar10', 'jpeg_sample');
      if (!fs.existsSync(jpegs)) return;
      for (const cls of fs.readdirSync(jpegs)) {
        fs.mkdirSync(path.join(folder, cls));
        const f = fs.readdirSync(path.join(jpegs, cls)).sort()[0];
        fs.copyFileSync(path.join(jpegs, cls, f), path.join(folder, cls, 'a.jpg'));
      }
      const cat = path.join(folder, 'cat', 'a.jpg');
      const before = fs.readFileSync(cat);
      const r = run('quantize', '--model', i.model, '--config', i.card, '--calib', folder, '--out', cat);
      assert.equal(r.status, 2, show(r));
      assert.match(r.stderr.split('\n')[0], /would overwrite a file inside the --calib folder/, show(r));
      assert.ok(fs.readFileSync(cat).equals(before));
      // An image list (unlabeled calibration): --out naming a listed image, through a linked directory.
      const list = path.join(tmpDir(), 'list.txt');
      fs.writeFileSync(list, `${path.join(folder, 'dog', 'a.jpg')}\n${cat}\n`);
      const link = path.join(tmpDir(), 'linked');
      fs.symlinkSync(path.join(folder, 'cat'), link);
      const viaList = run('quantize', '--model', i.model, '--config', i.card, '--calib', list, '--out', path.join(link, 'a.jpg'));
      assert.equal(viaList.status, 2, show(viaList));
      assert.match(viaList.stderr.split('\n')[0], /would overwrite the image listed in --calib/, show(viaList));
      assert.ok(fs.readFileSync(cat).equals(before));
    });
  });

  test('unknown --method, --loss bogus, --softmax-r2 bogus', () => {
    refused(/--method must be one of ptq4vit, base, got 'foo'/, ['--method', 'foo']);
    refused(/--loss must be one of label, pseudo, fisher, projection, contrastive, got 'bogus'/, ['--loss', 'bogus']);
    refused(/--softmax-r2 must be one of paper, exact-one, got 'bogus'/, ['--softmax-r2', 'bogus']);
  });

  test('--alpha 0 / --beta 0 (a zero scale among the candidates) and out-of-range search settings', () => {
    refused(/--alpha must be greater than 0/, ['--alpha', '0']);
    refused(/--beta must be greater than 0/, ['--beta', '0']);
    refused(/--alpha must be a number from 0 to 10, got '-1'/, ['--alpha=-1']);
    refused(/--n must be an integer from 1 to 10000, got '0'/, ['--n', '0']);
    refused(/--rounds must be an integer from 1 to 100, got '1\.5'/, ['--rounds', '1.5']);
  });

  test('quantizing an already-quantized file', () => {
    let file = quantizedFile;
    if (!file || !fs.existsSync(file)) {
      file = path.join(tmpDir(), 'quick.safetensors');
      assert.equal(quantize('--method', 'base', '--calib-size', '4', '--n', '2', '--out', file).status, 0);
    }
    refused(/is already a quantized model; quantize the float checkpoint/, [], { model: ['--model', file] });
    refused(/is a quantized model file and carries its own architecture: drop --config\/--arch/, [], { model: ['--model', file, '--config', CARD] });
  });
});
