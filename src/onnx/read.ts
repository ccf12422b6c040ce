/**
 * Just enough ONNX protobuf reading to open a model file we (or anyone) exported: the opset, the graph's
 * input and output names, and ModelProto.metadata_props. Every length is checked against the buffer, so a
 * truncated or foreign file ends in a clear error, never an out-of-range read.
 */
export class OnnxReadError extends Error {}

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array, readonly end = buf.length) {}

  varint(): number {
    let result = 0, shift = 0;
    for (;;) {
      if (this.pos >= this.end) throw new OnnxReadError('truncated varint');
      const b = this.buf[this.pos++];
      if (shift < 49) result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
      if (shift > 63) throw new OnnxReadError('varint too long');
    }
  }

  /** Iterate the fields of the message in [pos, end): calls `field` with a sub-reader for length-delimited ones. */
  fields(field: (num: number, wire: number, sub: Reader | null, value: number) => void): void {
    while (this.pos < this.end) {
      const key = this.varint();
      const num = Math.floor(key / 8), wire = key % 8;
      switch (wire) {
        case 0: field(num, wire, null, this.varint()); break;
        case 1: this.skip(8); break;
        case 5: this.skip(4); break;
        case 2: {
          const len = this.varint();
          if (len > this.end - this.pos) throw new OnnxReadError(`field ${num} runs past the end of the file`);
          const sub = new Reader(this.buf.subarray(this.pos, this.pos + len));
          this.pos += len;
          field(num, wire, sub, len);
          break;
        }
        default: throw new OnnxReadError(`unknown wire type ${wire}`);
      }
    }
  }

  skip(n: number): void {
    if (n > this.end - this.pos) throw new OnnxReadError('truncated field');
    this.pos += n;
  }

  string(): string {
    return new TextDecoder('utf-8', { fatal: false }).decode(this.buf.subarray(this.pos, this.end));
  }
}

export interface OnnxInfo {
  irVersion: number;
  opset: number | null;
  inputs: string[];
  outputs: string[];
  /** Operator of every node, `domain::op` outside the default domain (e.g. `com.microsoft::MatMulIntegerToFloat`). */
  ops: string[];
  metadata: Record<string, string>;
}

/** ModelProto fields: 1 ir_version, 7 graph, 8 opset_import, 14 metadata_props. GraphProto: 1 node, 11 input, 12 output. */
export function readOnnxInfo(bytes: Uint8Array): OnnxInfo {
  const info: OnnxInfo = { irVersion: 0, opset: null, inputs: [], outputs: [], ops: [], metadata: {} };
  let sawGraph = false;
  new Reader(bytes).fields((num, wire, sub, value) => {
    if (num === 1 && wire === 0) info.irVersion = value;
    else if (num === 7 && sub) {
      sawGraph = true;
      sub.fields((gnum, _w, gsub) => {
        if (gnum === 1 && gsub) {
          let op = '', domain = '';
          gsub.fields((nnum, _nw, nsub) => {
            if (nnum === 4 && nsub) op = nsub.string();
            if (nnum === 7 && nsub) domain = nsub.string();
          });
          info.ops.push(domain && domain !== 'ai.onnx' ? `${domain}::${op}` : op);
        }
        if ((gnum === 11 || gnum === 12) && gsub) {
          let name = '';
          gsub.fields((vnum, _vw, vsub) => {
            if (vnum === 1 && vsub) name = vsub.string();
          });
          (gnum === 11 ? info.inputs : info.outputs).push(name);
        }
      });
    } else if (num === 8 && sub) {
      let domain = '', version = 0;
      sub.fields((onum, _ow, osub, ovalue) => {
        if (onum === 1 && osub) domain = osub.string();
        if (onum === 2) version = ovalue;
      });
      if (domain === '' || domain === 'ai.onnx') info.opset = version;
    } else if (num === 14 && sub) {
      let key = '', value = '';
      sub.fields((enum_, _ew, esub) => {
        if (enum_ === 1 && esub) key = esub.string();
        if (enum_ === 2 && esub) value = esub.string();
      });
      info.metadata[key] = value;
    }
  });
  if (!sawGraph || info.irVersion === 0) throw new OnnxReadError('no ONNX model (ir_version and graph missing)');
  return info;
}
