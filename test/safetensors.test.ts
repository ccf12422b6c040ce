/** safetensors reading/writing, float16/bfloat16 conversions, and every way a checkpoint can be bad. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Ptq4vitError } from '../src/errors.js';
import { decodeBFloat16, decodeFloat16, floatToBFloat16Bits, floatToHalfBits } from '../src/io/float16.js';
import { encodeSafetensors, SafeTensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { sharedDir } from './helpers.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'ptq4vit-st-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let tmpCount = 0;
function tmpFile(name = 'x.safetensors'): string {
  const dir = path.join(tmpRoot, String(tmpCount++));
  fs.mkdirSync(dir);
  return path.join(dir, name);
}

/** A file with this exact header (serialized as given) and data section. */
function craft(header: unknown, data: Uint8Array = new Uint8Array(0), rawHeader?: string): string {
  const json = new TextEncoder().encode(rawHeader ?? JSON.stringify(header));
  const bytes = new Uint8Array(8 + json.length + data.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
  bytes.set(json, 8);
  bytes.set(data, 8 + json.length);
  const file = tmpFile();
  fs.writeFileSync(file, bytes);
  return file;
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The read fails with a Ptq4vitError whose message names the file and matches `pattern`. */
function assertBad(fn: () => unknown, file: string, pattern: RegExp, tensor?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof Ptq4vitError, `expected a Ptq4vitError, got ${(e as Error)?.stack ?? e}`);
    assert.match(e.message, new RegExp(escape(file)), `message does not name the file: ${e.message}`);
    assert.match(e.message, pattern);
    if (tensor) assert.match(e.message, new RegExp(`'${escape(tensor)}'`), `message does not name tensor ${tensor}: ${e.message}`);
    return true;
  });
}

const f32 = (...v: number[]): Float32Array => Float32Array.from(v);

// ---------------------------------------------------------------------------------------------
describe('round trip', () => {
  test('F32, F16, BF16, I8, I32 with metadata', () => {
    const file = tmpFile();
    const a = f32(1, -2.5, 3.25, 0, -0, 1e-3, 65504, 7.5e-8);
    const tensors: Record<string, TensorToWrite> = {
      'a.f32': { dtype: 'F32', shape: [2, 4], data: a },
      'a.f16': { dtype: 'F16', shape: [8], data: a },
      'a.bf16': { dtype: 'BF16', shape: [2, 2, 2], data: a },
      'q.i8': { dtype: 'I8', shape: [5], data: Int8Array.from([-128, -1, 0, 1, 127]) },
      'q.i32': { dtype: 'I32', shape: [3], data: Int32Array.from([-(2 ** 31), 0, 2 ** 31 - 1]) },
      scalar: { dtype: 'F32', shape: [], data: f32(42) },
      empty: { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) },
    };
    const metadata = { format: 'pt', note: 'ünïcode ✓' };
    writeSafetensors(file, tensors, metadata);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['x.safetensors'], 'no temporary file left');

    const st = SafeTensors.read(file);
    assert.deepEqual(st.metadata, metadata);
    assert.deepEqual(st.names(), Object.keys(tensors), 'tensors keep their order');
    const bytes = fs.readFileSync(file);
    const headerSize = Number(bytes.readBigUInt64LE(0));
    assert.equal(headerSize % 8, 0, 'header padded so the data section is 8-byte aligned');

    const t32 = st.tensor('a.f32', [2, 4]);
    assert.deepEqual(t32.shape, [2, 4]);
    assert.deepEqual(t32.data, a);
    assert.ok(Object.is(t32.data[4], -0), '-0 survives F32');
    // F16: every value above is exactly representable in half (7.5e-8 rounds to the subnormal 2^-24 ≈ 5.96e-8).
    const t16 = st.tensor('a.f16');
    assert.deepEqual([...t16.data], [1, -2.5, 3.25, 0, -0, Math.fround(decodeFloat16(u16(floatToHalfBits(1e-3)))[0]), 65504, 2 ** -24]);
    assert.ok(Object.is(t16.data[4], -0), '-0 survives F16');
    assert.ok(Math.abs(t16.data[5] - 1e-3) <= 2 ** -11 * 1e-3, 'F16 rounding within half an ulp');
    const tb = st.tensor('a.bf16', [2, 2, 2]);
    assert.deepEqual(tb.shape, [2, 2, 2]);
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(tb.data[i] - a[i]) <= Math.abs(a[i]) * 2 ** -8, `bf16[${i}]`);
    assert.equal(tb.data[6], 65536, '65504 rounds to 65536 in bfloat16 (8-bit significand)');

    assert.deepEqual(st.ints('q.i8'), Int8Array.from([-128, -1, 0, 1, 127]));
    assert.deepEqual(st.ints('q.i32'), Int32Array.from([-(2 ** 31), 0, 2 ** 31 - 1]));
    assert.deepEqual([...st.tensor('scalar', []).data], [42]);
    assert.equal(st.tensor('empty', [0, 3]).size, 0);
    assert.deepEqual(st.info('q.i8'), { name: 'q.i8', dtype: 'I8', shape: [5], begin: st.info('q.i8').begin, end: st.info('q.i8').begin + 5 });
  });

  test('F32 data at an unaligned offset reads correctly (data is copied, not viewed)', () => {
    const file = craft({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] }, b: { dtype: 'F32', shape: [2], data_offsets: [1, 9] } },
      Uint8Array.from([7, ...new Uint8Array(f32(1.5, -3).buffer)]), undefined);
    const st = SafeTensors.read(file);
    assert.deepEqual([...st.tensor('b').data], [1.5, -3]);
    assert.deepEqual([...st.ints('a')], [7]);
  });

  test('no metadata: header has no __metadata__, metadata reads as {}', () => {
    const bytes = encodeSafetensors({ w: { dtype: 'F32', shape: [1], data: f32(1) } });
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true)))));
    assert.ok(!('__metadata__' in header));
    assert.deepEqual(SafeTensors.parse(bytes).metadata, {});
  });

  test('float accessors reject integer tensors and vice versa, naming file and tensor', () => {
    const file = tmpFile();
    writeSafetensors(file, { i: { dtype: 'I8', shape: [1], data: Int8Array.from([1]) }, f: { dtype: 'F16', shape: [1], data: f32(1) } });
    const st = SafeTensors.read(file);
    assertBad(() => st.tensor('i'), file, /dtype I8; expected a float type/, 'i');
    assertBad(() => st.ints('f'), file, /dtype F16; expected an integer type/, 'f');
  });

  test('the real float16 checkpoint loads: every tensor finite, metadata readable', () => {
    const st = SafeTensors.read(path.join(sharedDir, 'models', 'vit_tiny_c10.safetensors'));
    assert.ok(st.names().length > 100);
    assert.equal(st.info('patch_embed.proj.weight').dtype, 'F16');
    for (const name of st.names()) st.tensor(name);
    assert.deepEqual(st.tensor('patch_embed.proj.weight').shape, [192, 3, 4, 4]);
  });
});

// ---------------------------------------------------------------------------------------------
const u16 = (...bits: number[]): Uint8Array => new Uint8Array(Uint16Array.from(bits).buffer);
const half = (bits: number): number => decodeFloat16(u16(bits))[0];
const bf16 = (bits: number): number => decodeBFloat16(u16(bits))[0];

/** Round half to even of a non-negative double. */
function rint(x: number): number {
  const f = Math.floor(x), d = x - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}

/**
 * An independent reference: nearest value of a binary format with `mant` fraction bits, minimum normal
 * exponent `emin` and largest finite value `max`, ties to even (computed in exact double arithmetic).
 */
function roundTo(x: number, mant: number, emin: number, max: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  const s = x < 0 || Object.is(x, -0) ? -1 : 1;
  if (a === Infinity) return s * Infinity;
  if (a === 0) return s * 0;
  let e = Math.max(Math.floor(Math.log2(a)), emin);
  while (e > emin && 2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (e - mant);
  const r = rint(a / ulp) * ulp;
  const overflow = max + 2 ** (Math.floor(Math.log2(max)) - mant) / 2; // halfway to the next binade step: ties go to Inf (even)
  if (a >= overflow) return s * Infinity;
  return s * r;
}
const refHalf = (x: number): number => roundTo(Math.fround(x), 10, -14, 65504);
const BF16_MAX = (2 - 2 ** -7) * 2 ** 127;
const refBf16 = (x: number): number => roundTo(Math.fround(x), 7, -126, BF16_MAX);

function sameFloat(actual: number, expected: number, what: string): void {
  if (Number.isNaN(expected)) assert.ok(Number.isNaN(actual), `${what}: expected NaN, got ${actual}`);
  else assert.ok(Object.is(actual, expected), `${what}: expected ${Object.is(expected, -0) ? '-0' : expected}, got ${Object.is(actual, -0) ? '-0' : actual}`);
}

/** Deterministic float32 bit patterns covering every exponent. */
function* randomFloat32(n: number): Generator<number> {
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  let s = 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    u[0] = s;
    yield f[0];
  }
}

describe('float16', () => {
  test('decoding of special bit patterns', () => {
    sameFloat(half(0x0000), 0, '+0');
    sameFloat(half(0x8000), -0, '-0');
    sameFloat(half(0x0001), 2 ** -24, 'smallest subnormal');
    sameFloat(half(0x03ff), 1023 * 2 ** -24, 'largest subnormal');
    sameFloat(half(0x0400), 2 ** -14, 'smallest normal');
    sameFloat(half(0x3c00), 1, '1');
    sameFloat(half(0x3c01), 1 + 2 ** -10, '1 + ulp');
    sameFloat(half(0xc000), -2, '-2');
    sameFloat(half(0x7bff), 65504, 'max half');
    sameFloat(half(0xfbff), -65504, '-max half');
    sameFloat(half(0x7c00), Infinity, '+Inf');
    sameFloat(half(0xfc00), -Infinity, '-Inf');
    sameFloat(half(0x7e00), NaN, 'quiet NaN');
    sameFloat(half(0x7c01), NaN, 'signalling NaN');
    sameFloat(half(0xfe00), NaN, 'negative NaN');
    sameFloat(half(0x3555), 0.333251953125, '1/3 rounded');
  });

  test('all 65536 bit patterns: decode → encode is the identity (NaNs stay NaN)', () => {
    for (let h = 0; h < 65536; h++) {
      const v = half(h);
      const back = floatToHalfBits(v);
      // A NaN's sign and payload do not survive a JS number (V8 may canonicalize it): it only has to stay NaN.
      if (Number.isNaN(v)) assert.ok((back & 0x7c00) === 0x7c00 && (back & 0x3ff) !== 0, `NaN 0x${h.toString(16)} → 0x${back.toString(16)}`);
      else assert.equal(back, h, `0x${h.toString(16)} (${v}) re-encodes as 0x${back.toString(16)}`);
    }
  });

  test('encoding edge values', () => {
    const cases: [number, number][] = [
      [0, 0x0000], [-0, 0x8000], [Infinity, 0x7c00], [-Infinity, 0xfc00],
      [65504, 0x7bff], [-65504, 0xfbff],
      [65519.99, 0x7bff], // just below the halfway point to 65536: stays finite
      [65520, 0x7c00], // exactly halfway between 65504 and 65536: ties to even → Inf
      [65536, 0x7c00], [1e6, 0x7c00], [-1e6, 0xfc00], [3.4e38, 0x7c00],
      [2 ** -24, 0x0001], [-(2 ** -24), 0x8001],
      [2 ** -25, 0x0000], // halfway between 0 and the smallest subnormal: ties to even → 0
      [-(2 ** -25), 0x8000],
      [Math.fround(2 ** -25 * (1 + 2 ** -23)), 0x0001], // just above halfway
      [1.5 * 2 ** -24, 0x0002], // halfway between subnormals 1 and 2: ties to even → 2
      [2.5 * 2 ** -24, 0x0002], // halfway between 2 and 3 → 2
      [1e-10, 0x0000], [1.4e-45, 0x0000], // float32 subnormal → 0
      [1023.5 * 2 ** -24, 0x0400], // largest subnormal + half ulp rounds up into the smallest normal
      [1 + 2 ** -11, 0x3c00], // halfway 1 ↔ 1+ulp → 1 (even)
      [1 + 3 * 2 ** -11, 0x3c02], // halfway 1+ulp ↔ 1+2ulp → 1+2ulp (even)
      [Math.fround(1 + 2 ** -11 + 2 ** -23), 0x3c01], // just above halfway
      [2047.5 / 1024, 0x4000], // 1.999… rounds up to 2 (mantissa carry into the exponent)
      [0.1, 0x2e66], [-0.1, 0xae66], [1 / 3, 0x3555],
    ];
    for (const [x, bits] of cases) assert.equal(floatToHalfBits(x), bits, `${x} → 0x${floatToHalfBits(x).toString(16)}, expected 0x${bits.toString(16)}`);
    assert.equal(floatToHalfBits(NaN) & 0x7c00, 0x7c00);
    assert.notEqual(floatToHalfBits(NaN) & 0x3ff, 0, 'NaN stays NaN (not Inf)');
    assert.ok(Number.isNaN(half(floatToHalfBits(-NaN))));
  });

  test('encoding matches an exact reference on every halfway point and 200k random floats', () => {
    const check = (x: number): void => sameFloat(half(floatToHalfBits(x)), refHalf(x), `half(${x})`);
    for (let h = 0; h < 0x7c00; h++) {
      const lo = half(h), hi = half(h + 1); // hi = Inf for h = 0x7bff
      const mid = hi === Infinity ? 65520 : (lo + hi) / 2; // exact in float32
      for (const x of [mid, Math.fround(mid * (1 + 2 ** -23)), Math.fround(mid * (1 - 2 ** -24))]) {
        check(x);
        check(-x);
      }
    }
    for (const x of randomFloat32(200_000)) check(x);
  });
});

describe('bfloat16', () => {
  test('decoding special bit patterns', () => {
    sameFloat(bf16(0x0000), 0, '+0');
    sameFloat(bf16(0x8000), -0, '-0');
    sameFloat(bf16(0x3f80), 1, '1');
    sameFloat(bf16(0x0001), 2 ** -133, 'smallest subnormal');
    sameFloat(bf16(0x7f7f), BF16_MAX, 'max');
    sameFloat(bf16(0x7f80), Infinity, '+Inf');
    sameFloat(bf16(0xff80), -Infinity, '-Inf');
    sameFloat(bf16(0x7fc0), NaN, 'NaN');
  });

  test('encoding edge values and ties to even', () => {
    const cases: [number, number][] = [
      [0, 0x0000], [-0, 0x8000], [1, 0x3f80], [Infinity, 0x7f80], [-Infinity, 0xff80],
      [1 + 2 ** -8, 0x3f80], // halfway 1 ↔ 1+ulp → even (1)
      [1 + 3 * 2 ** -8, 0x3f82], // halfway 1+ulp ↔ 1+2ulp → even
      [Math.fround(1 + 2 ** -8 + 2 ** -23), 0x3f81],
      [BF16_MAX, 0x7f7f], [3.4e38, 0x7f80], [-3.4e38, 0xff80], // float32 max rounds past bf16 max → Inf
      [Math.fround((2 - 2 ** -8) * 2 ** 127), 0x7f80], // halfway to 2^128 → Inf (even)
      [2 ** -133, 0x0001], [2 ** -134, 0x0000], [3 * 2 ** -134, 0x0002],
      [65504, 0x4780],
    ];
    for (const [x, bits] of cases) assert.equal(floatToBFloat16Bits(x), bits, `${x} → 0x${floatToBFloat16Bits(x).toString(16)}, expected 0x${bits.toString(16)}`);
    for (const x of [NaN, -NaN]) assert.ok(Number.isNaN(bf16(floatToBFloat16Bits(x))), 'NaN stays NaN');
    // A NaN whose payload lives only in the low 16 bits must not truncate to Inf.
    const f = new Float32Array(1), u = new Uint32Array(f.buffer);
    u[0] = 0x7f800001;
    assert.ok(Number.isNaN(bf16(floatToBFloat16Bits(f[0]))));
  });

  test('all 65536 bit patterns re-encode to themselves; 200k random floats match the reference', () => {
    for (let h = 0; h < 65536; h++) {
      const v = bf16(h);
      if (!Number.isNaN(v)) assert.equal(floatToBFloat16Bits(v), h, `0x${h.toString(16)}`);
    }
    for (const x of randomFloat32(200_000)) sameFloat(bf16(floatToBFloat16Bits(x)), refBf16(x), `bf16(${x})`);
  });
});

// ---------------------------------------------------------------------------------------------
describe('bad files', () => {
  const w = (dtype: string, shape: number[], begin: number, end: number) => ({ dtype, shape, data_offsets: [begin, end] });

  test('nonexistent file', () => {
    const file = path.join(tmpRoot, 'no-such-dir', 'missing.safetensors');
    assertBad(() => SafeTensors.read(file), file, /^cannot read .*: no such file or directory/);
  });

  test('a directory', () => {
    assertBad(() => SafeTensors.read(tmpRoot), tmpRoot, /^cannot read .*: is a directory/);
  });

  test('file shorter than 8 bytes', () => {
    for (const n of [0, 1, 7]) {
      const file = tmpFile();
      fs.writeFileSync(file, new Uint8Array(n));
      assertBad(() => SafeTensors.read(file), file, new RegExp(`not a valid safetensors file: ${n} bytes is too short`));
    }
  });

  test('header length beyond the file (truncated header)', () => {
    const file = tmpFile();
    const bytes = new Uint8Array(20);
    new DataView(bytes.buffer).setBigUint64(0, 100n, true);
    fs.writeFileSync(file, bytes);
    assertBad(() => SafeTensors.read(file), file, /header claims 100 bytes but the file has only 12 .*truncated/);
  });

  test('absurd header length (e.g. not a safetensors file at all)', () => {
    const file = tmpFile();
    fs.writeFileSync(file, 'PK\x03\x04 this is a zip file, not safetensors');
    assertBad(() => SafeTensors.read(file), file, /header size \d+ is larger than the 100000000-byte limit/);
  });

  test('header not JSON / not UTF-8', () => {
    const file = craft(null, undefined, '{"a": {"dtype": "F32",');
    assertBad(() => SafeTensors.read(file), file, /header is not valid UTF-8 JSON/);
    const bin = tmpFile();
    fs.writeFileSync(bin, Uint8Array.from([2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe]));
    assertBad(() => SafeTensors.read(bin), bin, /header is not valid UTF-8 JSON/);
  });

  test('header not an object', () => {
    for (const header of [[1, 2], 'str', 42, null]) {
      const file = craft(header);
      assertBad(() => SafeTensors.read(file), file, /header is not a JSON object/);
    }
  });

  test('bad entries: not an object, bad shape, bad offsets, bad metadata', () => {
    let file = craft({ a: 5 });
    assertBad(() => SafeTensors.read(file), file, /entry 'a' is not an object/);
    file = craft({ a: w('F32', [-1], 0, 0) });
    assertBad(() => SafeTensors.read(file), file, /tensor 'a' has an invalid shape \[-1\]/, 'a');
    file = craft({ a: w('F32', [1.5], 0, 0) });
    assertBad(() => SafeTensors.read(file), file, /invalid shape/, 'a');
    file = craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0] } }, new Uint8Array(4));
    assertBad(() => SafeTensors.read(file), file, /tensor 'a' has invalid data_offsets \[0\]/, 'a');
    file = craft({ a: { dtype: 'F32', shape: [1] } }, new Uint8Array(4));
    assertBad(() => SafeTensors.read(file), file, /invalid data_offsets/, 'a');
    file = craft({ __metadata__: { n: 1 } });
    assertBad(() => SafeTensors.read(file), file, /__metadata__ must map strings to strings/);
  });

  test('unknown dtype', () => {
    const file = craft({ 'blocks.0.w': w('F8_E4M3', [4], 0, 4) }, new Uint8Array(4));
    assertBad(() => SafeTensors.read(file), file, /tensor 'blocks\.0\.w' has unknown dtype "F8_E4M3" \(supported: F32, F16/, 'blocks.0.w');
  });

  test('shape/offset size mismatch', () => {
    const file = craft({ w: w('F32', [2, 3], 0, 20) }, new Uint8Array(20));
    assertBad(() => SafeTensors.read(file), file, /tensor 'w' \(F32 \[2, 3\]\) needs 24 bytes but data_offsets \[0, 20\] give 20/, 'w');
    const reversed = craft({ w: w('F32', [0], 8, 4) }, new Uint8Array(8));
    assertBad(() => SafeTensors.read(reversed), reversed, /needs 0 bytes but data_offsets \[8, 4\]/, 'w');
  });

  test('tensor extending past the data (truncated file)', () => {
    const file = craft({ a: w('F32', [2], 0, 8), b: w('F32', [4], 8, 24) }, new Uint8Array(16));
    assertBad(() => SafeTensors.read(file), file, /tensor 'b' ends at byte 24 of a 16-byte data section \(truncated file\?\)/, 'b');
  });

  test('overlapping tensors', () => {
    const file = craft({ a: w('F32', [2], 0, 8), b: w('F32', [2], 4, 12) }, new Uint8Array(12));
    assertBad(() => SafeTensors.read(file), file, /tensor 'b' overlaps the tensor before it/, 'b');
    const same = craft({ a: w('F32', [2], 0, 8), b: w('F32', [2], 0, 8) }, new Uint8Array(8));
    assertBad(() => SafeTensors.read(same), same, /overlaps/);
  });

  test('a hole between tensors', () => {
    const file = craft({ a: w('F32', [1], 0, 4), b: w('F32', [1], 8, 12) }, new Uint8Array(12));
    assertBad(() => SafeTensors.read(file), file, /bytes 4\.\.8 of the data section belong to no tensor/);
    const leading = craft({ a: w('F32', [1], 4, 8) }, new Uint8Array(8));
    assertBad(() => SafeTensors.read(leading), leading, /bytes 0\.\.4 of the data section belong to no tensor/);
  });

  test('trailing bytes', () => {
    const file = craft({ a: w('F32', [1], 0, 4) }, new Uint8Array(7));
    assertBad(() => SafeTensors.read(file), file, /the data section has 3 trailing bytes that belong to no tensor/);
  });

  test('missing tensor', () => {
    const file = craft({ a: w('F32', [1], 0, 4) }, new Uint8Array(4));
    const st = SafeTensors.read(file);
    assertBad(() => st.tensor('blocks.3.attn.qkv.weight'), file, /tensor 'blocks\.3\.attn\.qkv\.weight' is missing/, 'blocks.3.attn.qkv.weight');
    assertBad(() => st.info('b'), file, /is missing/, 'b');
    assertBad(() => st.bytes('b'), file, /is missing/, 'b');
    assertBad(() => st.ints('b'), file, /is missing/, 'b');
    assert.equal(st.has('b'), false);
  });

  test('wrong shape via tensor(name, shape)', () => {
    const file = tmpFile();
    writeSafetensors(file, { 'head.weight': { dtype: 'F32', shape: [10, 192], data: new Float32Array(1920) } });
    const st = SafeTensors.read(file);
    assertBad(() => st.tensor('head.weight', [1000, 192]), file, /tensor 'head\.weight' has shape \[10, 192\], expected \[1000, 192\]/, 'head.weight');
    assertBad(() => st.tensor('head.weight', [10, 192, 1]), file, /expected \[10, 192, 1\]/, 'head.weight');
    assertBad(() => st.tensor('head.weight', [1920]), file, /expected \[1920\]/, 'head.weight');
    assert.deepEqual(st.tensor('head.weight', [10, 192]).shape, [10, 192]);
  });

  test('NaN and Inf in weights', () => {
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      for (const [bad, shown] of [[NaN, 'NaN'], [Infinity, 'Infinity'], [-Infinity, '-Infinity']] as const) {
        const file = tmpFile();
        writeSafetensors(file, { 'blocks.0.norm1.weight': { dtype, shape: [4], data: f32(1, 2, bad, 4) } });
        const st = SafeTensors.read(file); // the header is fine; values are checked when the tensor is read
        assertBad(() => st.tensor('blocks.0.norm1.weight'), file, new RegExp(`contains ${shown} at flat index 2`), 'blocks.0.norm1.weight');
      }
    }
    // Finite in float32 but beyond float16's range: written as Inf, so rejected on reading.
    const file = tmpFile();
    writeSafetensors(file, { big: { dtype: 'F16', shape: [1], data: f32(1e5) } });
    assertBad(() => SafeTensors.read(file).tensor('big'), file, /contains Infinity/, 'big');
  });

  test('a buffer without a file name is reported as <buffer>', () => {
    assert.throws(() => SafeTensors.parse(new Uint8Array(3)), /^Ptq4vitError: <buffer>: not a valid safetensors file/);
  });
});

describe('writing', () => {
  const tensors = { w: { dtype: 'F32', shape: [2], data: f32(1, 2) } as TensorToWrite };

  test('into a directory that does not exist → Ptq4vitError, nothing created', () => {
    const dir = path.join(tmpRoot, 'absent-dir');
    const file = path.join(dir, 'out.safetensors');
    assertBad(() => writeSafetensors(file, tensors), file, /^cannot write .*: no such file or directory/);
    assert.equal(fs.existsSync(dir), false);
  });

  test('onto an existing directory (rename fails after the temp file was written) → no temp file left', () => {
    const file = tmpFile('target');
    fs.mkdirSync(file);
    fs.writeFileSync(path.join(file, 'keep'), 'x'); // non-empty: rename over it fails even as root
    const parent = path.dirname(file);
    assertBad(() => writeSafetensors(file, tensors), file, /^cannot write .*: is a directory/);
    assert.deepEqual(fs.readdirSync(parent), ['target'], 'temp file removed');
    assert.deepEqual(fs.readdirSync(file), ['keep']);
  });

  test('overwrites an existing file atomically', () => {
    const file = tmpFile();
    fs.writeFileSync(file, 'old');
    writeSafetensors(file, tensors);
    assert.deepEqual([...SafeTensors.read(file).tensor('w').data], [1, 2]);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['x.safetensors']);
  });
});

// ---------------------------------------------------------------------------------------------
test('a real checkpoint truncated at many lengths always gives a clean Ptq4vitError', () => {
  const real = fs.readFileSync(path.join(sharedDir, 'models', 'vit_tiny_c10.safetensors'));
  const headerSize = Number(real.readBigUInt64LE(0));
  const lengths = [0, 4, 8, 9, 8 + (headerSize >> 1), 7 + headerSize, 8 + headerSize + 1, 8 + headerSize + 1000, real.length >> 1, real.length - 2, real.length - 1];
  const file = tmpFile('truncated.safetensors');
  for (const n of lengths) {
    fs.writeFileSync(file, real.subarray(0, n));
    assertBad(() => SafeTensors.read(file), file, /not a valid safetensors file: .*(too short|truncated)/);
  }
  // Cut exactly at the end of the header: every tensor is past the (empty) data section.
  fs.writeFileSync(file, real.subarray(0, 8 + headerSize));
  assertBad(() => SafeTensors.read(file), file, /ends at byte \d+ of a 0-byte data section \(truncated file\?\)/);
  fs.writeFileSync(file, real);
  assert.ok(SafeTensors.read(file).names().length > 0, 'the untruncated copy reads');
});
