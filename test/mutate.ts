/** Editing safetensors files at the byte level for tests: header JSON, metadata, data section. */

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
