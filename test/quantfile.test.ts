/**
 * The quantized model file's metadata is validated as strictly as a card (issue 9). Each row of the
 * issue's table, run through `ptq4vit eval` on a real quantized file whose metadata was edited: exit 2
 * and one line naming the file and the field — never an internal error or a silently wrong accuracy.
 * The rows are checked on format /1 files (what main writes and reads) and on /2 files (what we write).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { PRESETS, specFromPreset } from '../src/models/config.js';
import { checkSpecStorable } from '../src/quant/file.js';
import { runCli, scratchDir, showRun } from './helpers.js';
import { editJson, splitSafetensors, withMetadata, type Metadata } from './mutate.js';

const MODEL = 'assets/models/vit_tiny_c10.safetensors';
const CARD = 'assets/models/vit_tiny_c10.json';
const CALIB = 'assets/cifar10-calib32/calib32.json';
const TEST = 'assets/cifar10-test500';

const scratch = scratchDir('quantfile');
let v2File = '';
let v1File = '';
let v2Bytes: Uint8Array;
let v1Bytes: Uint8Array;

const camel = (k: string): string => k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
function camelKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(camelKeys);
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [camel(k), camelKeys(x)]));
}

/** Format /1 metadata, as main wrote it: the in-memory spec and points as JSON (camelCase). */
function toV1(m: Metadata): void {
  if (m['ptq4vit.format'] === 'ptq4vit-quantized-model/1') return;
  const card = JSON.parse(m['ptq4vit.spec']);
  const family = card.timm_class === 'SwinTransformer' ? 'swin' : card.timm_class === 'VisionTransformer' ? 'vit' : 'deit-distilled';
  const kw = card.timm_kwargs;
  m['ptq4vit.spec'] = JSON.stringify({
    name: card.name,
    timmClass: card.timm_class,
    arch: { family, ...(camelKeys(kw) as object) },
    preprocess: { inputSize: kw.img_size, cropPct: card.crop_pct, interpolation: card.interpolation, mean: card.mean, std: card.std },
  });
  m['ptq4vit.quant'] = JSON.stringify(camelKeys(JSON.parse(m['ptq4vit.quant'])));
  m['ptq4vit.format'] = 'ptq4vit-quantized-model/1';
}

function write(bytes: Uint8Array): string {
  const file = path.join(scratch.next(), 'q.safetensors');
  fs.writeFileSync(file, bytes);
  return file;
}

const evalFile = (file: string) => runCli(['eval', '--model', file, '--data', TEST, '--limit', '16', '--json'], 120_000);

function assertRefused(bytes: Uint8Array, pattern: RegExp): void {
  const file = write(bytes);
  const r = evalFile(file);
  assert.equal(r.status, 2, showRun(r));
  assert.ok(!r.stderr.includes('internal error') && !r.stderr.includes('    at '), showRun(r));
  const first = r.stderr.split('\n')[0];
  assert.ok(first.startsWith(`ptq4vit: error: ${file}: `), `names the file:\n${showRun(r)}`);
  assert.match(first, pattern, showRun(r));
}

before(() => {
  v2File = path.join(scratch.next(), 'q.safetensors');
  const r = runCli(['quantize', '--model', MODEL, '--config', CARD, '--calib', CALIB, '--bits', '6', '--calib-size', '4', '--n', '4', '--rounds', '1', '--out', v2File], 300_000);
  assert.equal(r.status, 0, showRun(r));
  v2Bytes = fs.readFileSync(v2File);
  v1Bytes = withMetadata(v2Bytes, toV1);
  v1File = write(v1Bytes);
});

/** One metadata edit, described in the in-memory (v1, camelCase) or on-disk (v2, snake_case) vocabulary. */
interface Row {
  what: string;
  v1: (m: Metadata) => void;
  v2: (m: Metadata) => void;
  pattern: RegExp;
}

const firstPoint = (kind: string) => (points: any[]) => points.find((p) => p.kind === kind || p.a?.kind === kind || p.input?.kind === kind);

const ROWS: Row[] = [
  {
    what: 'spec without its architecture',
    v1: (m) => editJson(m, 'ptq4vit.spec', (s) => { delete s.arch; }),
    v2: (m) => editJson(m, 'ptq4vit.spec', (s) => { delete s.timm_kwargs; }),
    pattern: /metadata ptq4vit\.spec: .*(arch|timm_kwargs)/,
  },
  {
    what: 'spec.preprocess.inputSize 100000 (a 120 GB allocation on main)',
    v1: (m) => editJson(m, 'ptq4vit.spec', (s) => { s.preprocess.inputSize = 100000; }),
    v2: (m) => editJson(m, 'ptq4vit.spec', (s) => { s.input_size = [3, 100000, 100000]; s.timm_kwargs.img_size = 100000; }),
    pattern: /metadata ptq4vit\.spec: .*(input_size|img_size)/,
  },
  {
    what: 'std [0, 0, 0]',
    v1: (m) => editJson(m, 'ptq4vit.spec', (s) => { s.preprocess.std = [0, 0, 0]; }),
    v2: (m) => editJson(m, 'ptq4vit.spec', (s) => { s.std = [0, 0, 0]; }),
    pattern: /metadata ptq4vit\.spec: std values must be positive, got \[0,0,0\]/,
  },
  {
    what: 'a zero weight Δ',
    v1: (m) => editJson(m, 'ptq4vit.quant', (p) => { firstPoint('linear')(p).weightDeltas[0] = 0; }),
    v2: (m) => editJson(m, 'ptq4vit.quant', (p) => { firstPoint('linear')(p).weight_deltas[0] = 0; }),
    pattern: /metadata ptq4vit\.quant: points\[\d+\]\.weight_deltas\[0\]: Too small: expected number to be >0 \(got 0\)/,
  },
  {
    what: 'a negative activation Δ',
    v1: (m) => editJson(m, 'ptq4vit.quant', (p) => { firstPoint('uniform')(p).input.deltas[0] = -0.5; }),
    v2: (m) => editJson(m, 'ptq4vit.quant', (p) => { firstPoint('uniform')(p).input.deltas[0] = -0.5; }),
    pattern: /points\[\d+\]\.input\.deltas\[0\]: Too small: expected number to be >0 \(got -0\.5\)/,
  },
  {
    what: 'an empty Δ list',
    v1: (m) => editJson(m, 'ptq4vit.quant', (p) => { firstPoint('matmul')(p).b.deltas = []; }),
    v2: (m) => editJson(m, 'ptq4vit.quant', (p) => { firstPoint('matmul')(p).b.deltas = []; }),
    pattern: /points\[\d+\]\.b\.deltas: Too small: expected array to have >=1 items/,
  },
  {
    what: 'activation bits 40',
    v1: (m) => editJson(m, 'ptq4vit.quant', (p) => { for (const q of p) if (q.kind === 'matmul') q.a.bits = 40; }),
    v2: (m) => editJson(m, 'ptq4vit.quant', (p) => { for (const q of p) if (q.kind === 'matmul') q.a.bits = 40; }),
    pattern: /points\[\d+\]\.a\.bits: Too big: expected number to be <=16 \(got 40\)/,
  },
  {
    what: 'weight bits 1',
    v1: (m) => editJson(m, 'ptq4vit.quant', (p) => { firstPoint('linear')(p).weightBits = 1; }),
    v2: (m) => editJson(m, 'ptq4vit.quant', (p) => { firstPoint('linear')(p).weight_bits = 1; }),
    pattern: /points\[\d+\]\.weight_bits: Too small: expected number to be >=2 \(got 1\)/,
  },
  {
    what: 'a point list that does not match the model (one point dropped)',
    v1: (m) => editJson(m, 'ptq4vit.quant', (p) => p.filter((q: any) => q.point !== 'blocks.5.attn.matmul1')),
    v2: (m) => editJson(m, 'ptq4vit.quant', (p) => p.filter((q: any) => q.point !== 'blocks.5.attn.matmul1')),
    pattern: /metadata ptq4vit\.quant: has 73 quantization points, vit_tiny_c10 has 74/,
  },
  {
    what: 'qkv weight Δs: 2 groups for 3 (q, k, v)',
    v1: (m) => editJson(m, 'ptq4vit.quant', (p) => { const q = p.find((x: any) => x.point === 'blocks.0.attn.qkv'); q.weightDeltas = q.weightDeltas.slice(0, 2); }),
    v2: (m) => editJson(m, 'ptq4vit.quant', (p) => { const q = p.find((x: any) => x.point === 'blocks.0.attn.qkv'); q.weight_deltas = q.weight_deltas.slice(0, 2); }),
    pattern: /blocks\.0\.attn\.qkv.*2 weight_deltas|weight_deltas has 2 entries, expected 3/,
  },
];

describe('quantized file metadata: each bad edit is exit 2 naming the field (format /1 and /2)', () => {
  test('the unedited files evaluate alike: /1 files are still read', () => {
    const a = evalFile(v2File), b = evalFile(v1File);
    assert.equal(a.status, 0, showRun(a));
    assert.equal(b.status, 0, showRun(b));
    const last = (s: string) => JSON.parse(s.trimEnd().split('\n').pop()!) as { top1: number; top5: number };
    assert.deepEqual(last(b.stdout), { ...last(b.stdout), top1: last(a.stdout).top1, top5: last(a.stdout).top5 });
  });

  for (const row of ROWS) {
    test(row.what, () => {
      assertRefused(withMetadata(v1Bytes, row.v1), row.pattern);
      assertRefused(withMetadata(v2Bytes, row.v2), row.pattern);
    });
  }

  test('/2 metadata is snake_case and versioned; the spec is a complete card', () => {
    const m = splitSafetensors(v2Bytes).header.__metadata__ as Metadata;
    // What we write is /3 (/2's metadata; ≤ 4-bit codes packed, none here at 6 bits); the same bytes as a /2 file still read.
    assert.equal(m['ptq4vit.format'], 'ptq4vit-quantized-model/3');
    const asV2 = evalFile(write(withMetadata(v2Bytes, (meta) => { meta['ptq4vit.format'] = 'ptq4vit-quantized-model/2'; })));
    assert.equal(asV2.status, 0, showRun(asV2));
    for (const key of ['ptq4vit.spec', 'ptq4vit.quant', 'ptq4vit.provenance']) {
      const keys = JSON.stringify(JSON.parse(m[key])).match(/"[A-Za-z_0-9]+":/g) ?? [];
      assert.ok(keys.every((k) => !/[A-Z]/.test(k)), `${key} keys are snake_case: ${keys.filter((k) => /[A-Z]/.test(k))}`);
    }
    const card = JSON.parse(m['ptq4vit.spec']);
    assert.equal(card.timm_class, 'VisionTransformer');
    assert.deepEqual(card.timm_kwargs, { img_size: 32, patch_size: 4, in_chans: 3, embed_dim: 192, depth: 12, num_heads: 3, mlp_ratio: 4, qkv_bias: true, num_classes: 10 });
  });

  test('/2 spec with a field left to a default, an unknown format, unknown keys', () => {
    assertRefused(withMetadata(v2Bytes, (m) => editJson(m, 'ptq4vit.spec', (s) => { delete s.timm_kwargs.depth; })), /metadata ptq4vit\.spec: field timm_kwargs\.depth is missing/);
    assertRefused(withMetadata(v2Bytes, (m) => { m['ptq4vit.format'] = 'ptq4vit-quantized-model/4'; }), /unsupported quantized model format "ptq4vit-quantized-model\/4"/);
    assertRefused(withMetadata(v2Bytes, (m) => editJson(m, 'ptq4vit.quant', (p) => { p[0].weightBits = 8; })), /points\[0\]: Unrecognized key: "weightBits"/);
    assertRefused(withMetadata(v2Bytes, (m) => {
      editJson(m, 'ptq4vit.quant', (p) => { firstPoint('twin-softmax')(p).a.delta_r1 = 12345.5; });
      m['ptq4vit.quant'] = m['ptq4vit.quant'].replace('12345.5', '1e999'); // JSON.parse reads it as Infinity
    }), /points\[\d+\]\.a\.delta_r1: expected number, received Infinity \(got Infinity\)/);
    assertRefused(withMetadata(v2Bytes, (m) => editJson(m, 'ptq4vit.quant', (p) => p.filter((q: any) => q.point !== 'head'))), /tensor 'head\.weight' holds I8 integer codes, but metadata ptq4vit\.quant has no point 'head'/);
    assertRefused(withMetadata(v2Bytes, (m) => editJson(m, 'ptq4vit.quant', (p) => { const q = firstPoint('twin-gelu')(p); const b = p.find((x: any) => x.kind === 'matmul'); b.a = q.input; })), /a is twin-gelu, but it is not a post-GELU input/);
    assertRefused(withMetadata(v2Bytes, (m) => editJson(m, 'ptq4vit.provenance', (p) => { delete p.method; })), /metadata ptq4vit\.provenance: method: /);
  });
});

describe('checkSpecStorable: a spec the file format cannot hold fails before calibration', () => {
  test('every preset is storable; a preprocessing size other than the model input is not', () => {
    for (const name of Object.keys(PRESETS)) checkSpecStorable(specFromPreset(name));
    const spec = specFromPreset('vit_base_patch16_224');
    assert.throws(() => checkSpecStorable({ ...spec, preprocess: { ...spec.preprocess, inputSize: 256 } }), (e: unknown) =>
      e instanceof Ptq4vitError && /^model vit_base_patch16_224: cannot be stored in a quantized model file: input_size \[3,256,256\] does not match/.test(e.message));
  });
});
