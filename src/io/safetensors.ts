/**
 * safetensors (https://github.com/huggingface/safetensors) reading and writing.
 * Layout: u64 little-endian header size N, N bytes of JSON header, then the raw tensor bytes;
 * each header entry is {dtype, shape, data_offsets: [begin, end)} relative to the byte after the header.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { Tensor, numel, shapeString } from '../tensor/tensor.js';
import { decodeBFloat16, decodeFloat16, floatToBFloat16Bits, floatToHalfBits } from './float16.js';

export type Dtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I8' | 'U8' | 'I16' | 'I32' | 'I64' | 'BOOL';

const ITEM_SIZE: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I8: 1, U8: 1, I16: 2, I32: 4, I64: 8, BOOL: 1 };

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Byte range within the data section. */
  begin: number;
  end: number;
}

/** A file-system error in words ("no such file or directory (ENOENT)"), for one-line CLI messages. */
export function describeFsError(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const words: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EISDIR: 'is a directory',
    ENOTDIR: 'a path component is not a directory',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    ENOSPC: 'no space left on device',
  };
  if (err.code && words[err.code]) return `${words[err.code]} (${err.code})`;
  return err.code ?? err.message;
}

/** Largest header we accept (the reference implementation's limit is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

export class SafeTensors {
  readonly file: string;
  readonly metadata: Readonly<Record<string, string>>;
  private readonly entries: Map<string, TensorInfo>;
  private readonly data: Uint8Array;

  private constructor(file: string, metadata: Record<string, string>, entries: Map<string, TensorInfo>, data: Uint8Array) {
    this.file = file;
    this.metadata = metadata;
    this.entries = entries;
    this.data = data;
  }

  /** Parse and validate a whole file (header, offsets, sizes) before any tensor is read. */
  static read(file: string): SafeTensors {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(file);
    } catch (e) {
      throw new Ptq4vitError(`cannot read ${file}: ${describeFsError(e)}`);
    }
    return SafeTensors.parse(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), file);
  }

  static parse(bytes: Uint8Array, file = '<buffer>'): SafeTensors {
    const bad = (why: string): never => {
      throw new Ptq4vitError(`${file}: not a valid safetensors file: ${why}`);
    };
    if (bytes.length < 8) bad(`${bytes.length} bytes is too short for the 8-byte header size`);
    const headerSize = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
    if (headerSize > MAX_HEADER_BYTES) bad(`header size ${headerSize} is larger than the ${MAX_HEADER_BYTES}-byte limit`);
    if (8 + headerSize > bytes.length) bad(`header claims ${headerSize} bytes but the file has only ${bytes.length - 8} after the size (truncated?)`);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerSize)));
    } catch (e) {
      return bad(`header is not valid UTF-8 JSON (${(e as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) return bad('header is not a JSON object');
    const data = bytes.subarray(8 + headerSize);
    const entries = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof value !== 'object' || value === null || Object.values(value).some((v) => typeof v !== 'string')) {
          bad('__metadata__ must map strings to strings');
        }
        metadata = value as Record<string, string>;
        continue;
      }
      entries.set(name, parseEntry(name, value, data.length, bad));
    }
    checkCoverage([...entries.values()], data.length, bad);
    return new SafeTensors(file, metadata, entries, data);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const entry = this.entries.get(name);
    if (!entry) throw new Ptq4vitError(`${this.file}: tensor '${name}' is missing`);
    return entry;
  }

  /** Raw bytes of a tensor (a view, not a copy). */
  bytes(name: string): Uint8Array {
    const e = this.info(name);
    return this.data.subarray(e.begin, e.end);
  }

  /**
   * A float tensor as float32. With `shape`, the stored shape must match exactly. Non-finite values are
   * rejected: a NaN in a checkpoint would silently turn every logit into NaN.
   */
  tensor(name: string, shape?: readonly number[]): Tensor {
    const e = this.info(name);
    if (shape && (shape.length !== e.shape.length || shape.some((d, i) => d !== e.shape[i]))) {
      throw new Ptq4vitError(`${this.file}: tensor '${name}' has shape ${shapeString(e.shape)}, expected ${shapeString(shape)}`);
    }
    const values = this.floats(e);
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i])) {
        throw new Ptq4vitError(`${this.file}: tensor '${name}' contains ${values[i]} at flat index ${i}`);
      }
    }
    return new Tensor(values, e.shape);
  }

  private floats(e: TensorInfo): Float32Array {
    const raw = this.data.subarray(e.begin, e.end);
    switch (e.dtype) {
      case 'F32': {
        const copy = new Uint8Array(raw); // aligned copy
        return new Float32Array(copy.buffer);
      }
      case 'F16':
        return decodeFloat16(raw);
      case 'BF16':
        return decodeBFloat16(raw);
      case 'F64':
        return Float32Array.from(new Float64Array(new Uint8Array(raw).buffer));
      default:
        throw new Ptq4vitError(`${this.file}: tensor '${e.name}' has dtype ${e.dtype}; expected a float type (F32, F16, BF16)`);
    }
  }

  /** An integer tensor (I8, U8, I16, I32) as stored. */
  ints(name: string): Int8Array | Uint8Array | Int16Array | Int32Array {
    const e = this.info(name);
    const copy = new Uint8Array(this.data.subarray(e.begin, e.end)).buffer;
    switch (e.dtype) {
      case 'I8': return new Int8Array(copy);
      case 'U8': return new Uint8Array(copy);
      case 'I16': return new Int16Array(copy);
      case 'I32': return new Int32Array(copy);
      default:
        throw new Ptq4vitError(`${this.file}: tensor '${name}' has dtype ${e.dtype}; expected an integer type (I8, U8, I16, I32)`);
    }
  }
}

function parseEntry(name: string, value: unknown, dataBytes: number, bad: (why: string) => never): TensorInfo {
  if (typeof value !== 'object' || value === null) bad(`entry '${name}' is not an object`);
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string' || !(dtype in ITEM_SIZE)) {
    bad(`tensor '${name}' has unknown dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(ITEM_SIZE).join(', ')})`);
  }
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    bad(`tensor '${name}' has an invalid shape ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || offsets.some((o) => !Number.isSafeInteger(o) || o < 0)) {
    bad(`tensor '${name}' has invalid data_offsets ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as number[];
  const expected = numel(shape as number[]) * ITEM_SIZE[dtype as Dtype];
  if (end < begin || end - begin !== expected) {
    bad(`tensor '${name}' (${dtype} ${shapeString(shape as number[])}) needs ${expected} bytes but data_offsets [${begin}, ${end}] give ${end - begin}`);
  }
  if (end > dataBytes) bad(`tensor '${name}' ends at byte ${end} of a ${dataBytes}-byte data section (truncated file?)`);
  return { name, dtype: dtype as Dtype, shape: shape as number[], begin, end };
}

/** Tensors must not overlap, and (as the format requires) must cover the data section without holes. */
function checkCoverage(entries: TensorInfo[], dataBytes: number, bad: (why: string) => never): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of sorted) {
    if (e.begin < cursor) bad(`tensor '${e.name}' overlaps the tensor before it`);
    if (e.begin > cursor) bad(`bytes ${cursor}..${e.begin} of the data section belong to no tensor`);
    cursor = e.end;
  }
  if (cursor !== dataBytes) bad(`the data section has ${dataBytes - cursor} trailing bytes that belong to no tensor`);
}

/** A tensor to write: float data is converted to `dtype`; integer data is written as is. */
export interface TensorToWrite {
  dtype: Dtype;
  shape: readonly number[];
  data: Float32Array | Int8Array | Uint8Array | Int16Array | Int32Array;
}

function encodeTensor(name: string, t: TensorToWrite): Uint8Array {
  const n = numel(t.shape);
  if (t.data.length !== n) throw new Error(`safetensors: '${name}' has ${t.data.length} values for shape ${shapeString(t.shape)}`);
  const asBytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  switch (t.dtype) {
    case 'F32':
      return asBytes(t.data instanceof Float32Array ? t.data : Float32Array.from(t.data));
    case 'F16':
    case 'BF16': {
      const bits = new Uint16Array(n);
      const convert = t.dtype === 'F16' ? floatToHalfBits : floatToBFloat16Bits;
      for (let i = 0; i < n; i++) bits[i] = convert(t.data[i]);
      return asBytes(bits);
    }
    case 'I8': return asBytes(t.data instanceof Int8Array ? t.data : Int8Array.from(t.data));
    case 'U8': return asBytes(t.data instanceof Uint8Array ? t.data : Uint8Array.from(t.data));
    case 'I16': return asBytes(t.data instanceof Int16Array ? t.data : Int16Array.from(t.data));
    case 'I32': return asBytes(t.data instanceof Int32Array ? t.data : Int32Array.from(t.data));
    default:
      throw new Error(`safetensors: writing dtype ${t.dtype} is not supported`);
  }
}

/** Serialize tensors (in the given order) and string metadata into safetensors bytes. */
export function encodeSafetensors(tensors: Record<string, TensorToWrite>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const blob = encodeTensor(name, t);
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + blob.length] };
    blobs.push(blob);
    offset += blob.length;
  }
  // Pad with spaces to keep tensor data 8-byte aligned, as the reference writer does. The padding is
  // counted in UTF-8 bytes, not UTF-16 code units: a non-ASCII name or metadata value would misalign it.
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = new Uint8Array(json.length + ((8 - (json.length % 8)) % 8)).fill(0x20);
  headerBytes.set(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const b of blobs) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/** Temporary files being written right now: removed if the process is interrupted. */
const pendingTemps = new Set<string>();
let cleanupInstalled = false;

function removePendingTemps(): void {
  for (const tmp of pendingTemps) fs.rmSync(tmp, { force: true });
  pendingTemps.clear();
}

/**
 * On SIGINT/SIGTERM/SIGHUP remove our temporary files, then die of the signal as if we had no handler
 * (unless the application has handlers of its own, which then decide). Installed on the first atomic
 * write and kept: a listener removed again right after a write could swallow a Ctrl-C pressed during it.
 * While a listener exists Node delivers the signal between JavaScript tasks, so a synchronous write +
 * rename always completes or has not started when the handler runs.
 */
function installSignalCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      removePendingTemps();
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, onSignal);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, onSignal);
  }
  process.on('exit', removePendingTemps);
}

const tempName = (file: string, pid: number): string => path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${pid}.tmp`);

/** Temporaries of this file left by a process that no longer runs (killed by SIGKILL, or a power cut). */
function removeStaleTemps(file: string): void {
  const dir = path.dirname(path.resolve(file));
  const prefix = `.${path.basename(file)}.`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = name.startsWith(prefix) ? /^(\d+)\.tmp$/.exec(name.slice(prefix.length)) : null;
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') fs.rmSync(path.join(dir, name), { force: true });
    }
  }
}

/**
 * Write atomically: a temporary file in the same directory, flushed to disk, then renamed over the
 * destination, so readers never see half a file — not after an error, a signal or a SIGKILL.
 */
export function writeFileAtomic(file: string, bytes: Uint8Array): void {
  installSignalCleanup();
  removeStaleTemps(file);
  const tmp = tempName(file, process.pid);
  pendingTemps.add(tmp);
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(fd, bytes);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new Ptq4vitError(`cannot write ${file}: ${describeFsError(e)}`);
  } finally {
    pendingTemps.delete(tmp);
  }
}

export function writeSafetensors(file: string, tensors: Record<string, TensorToWrite>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}
