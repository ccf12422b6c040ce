/** Editing safetensors files at the byte level for tests (header JSON, metadata, data section), and image builders. */
import zlib from 'node:zlib';

export interface Parts {
  header: Record<string, unknown>;
  data: Uint8Array;
}

/** Split a well-formed safetensors file into its header object and its data section. */
export function splitSafetensors(bytes: Uint8Array): Parts {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  return { header, data: bytes.subarray(8 + n) };
}

/** Reassemble (the header is written as given: no validation, any JSON value). */
export function joinSafetensors(header: unknown, data: Uint8Array, rawHeader?: string): Uint8Array {
  const json = new TextEncoder().encode(rawHeader ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

export type Metadata = Record<string, string>;

/** The same file with its __metadata__ replaced by mutate(copy of it). */
export function withMetadata(bytes: Uint8Array, mutate: (m: Metadata) => void): Uint8Array {
  const { header, data } = splitSafetensors(bytes);
  const m = { ...(header.__metadata__ as Metadata) };
  mutate(m);
  return joinSafetensors({ ...header, __metadata__: m }, data);
}

/** Edit one JSON metadata value in place: mutate receives the parsed value and may return a replacement. */
export function editJson(m: Metadata, key: string, mutate: (v: any) => unknown): void {
  const v = JSON.parse(m[key]);
  const r = mutate(v);
  m[key] = JSON.stringify(r === undefined ? v : r);
}

/** A valid 1-bit palette PNG of w×h (small on disk: rows of zeros deflate to almost nothing). */
export function bigPng(w: number, h: number): Buffer {
  const chunk = (type: string, data: Buffer): Buffer => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 3; // palette
  const raw = Buffer.alloc(h * (1 + Math.ceil(w / 8))); // filter byte 0 + zero bits per row
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('PLTE', Buffer.from([10, 20, 30, 200, 210, 220])),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
