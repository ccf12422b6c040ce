/**
 * Building one ONNX graph node by node: unique value names, constants as initializers (each tensor
 * stored once), and the finished GraphSpec for `encodeModel`. Used by the tracer (src/export/trace.ts),
 * which turns one run of the model code into a whole-model graph, and by the ONNX translations of the
 * named layout ops (src/tensor/layout.ts).
 */
import { OnnxType, type AttributeValue, type GraphSpec, type Initializer, type NodeSpec, type ValueInfo } from './proto.js';

export type TypedData = Float32Array | Int8Array | Uint8Array | Int32Array | BigInt64Array;

function bytesOf(data: TypedData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export class GraphBuilder {
  readonly nodes: NodeSpec[] = [];
  readonly initializers: Initializer[] = [];
  private readonly taken = new Set<string>();
  /** Constants already stored, by identity of their source array, so a shared tensor is stored once. */
  private readonly stored = new WeakMap<object, string>();
  /** Shapes known from reshapes (−1: the one dynamic dimension) and the transposes of such values. */
  private readonly knownShapes = new Map<string, readonly number[]>();
  /** The node that produced each value. */
  private readonly producers = new Map<string, NodeSpec>();
  /** Reshape outputs → their input, so a chain of reshapes becomes one. */
  private readonly reshapeInputs = new Map<string, string>();
  /** Values whose producer can make any block of their last axis alone: value → (rank, the block rebuilt). */
  private readonly sliceable = new Map<string, { rank: number; rebuild: (start: number, end: number) => string }>();
  /** Values whose producer can absorb an exact power-of-two factor: value → the value rebuilt with it. */
  private readonly scalable = new Map<string, (factor: number) => string>();

  /** A fresh value name starting with `hint`. */
  fresh(hint: string): string {
    const base = hint.replace(/[^A-Za-z0-9_.]/g, '_');
    let name = base;
    for (let i = 1; this.taken.has(name); i++) name = `${base}_${i}`;
    this.taken.add(name);
    return name;
  }

  /** Reserve an exact name (graph inputs and outputs). */
  reserve(name: string): string {
    if (this.taken.has(name)) throw new Error(`GraphBuilder: '${name}' is taken`);
    this.taken.add(name);
    return name;
  }

  /** One node with one output; returns the output's name. */
  op(op: string, inputs: string[], attributes?: Record<string, AttributeValue>, hint = op.toLowerCase(), domain?: string): string {
    const out = this.fresh(hint);
    const node: NodeSpec = { op, inputs, outputs: [out], attributes, domain };
    this.nodes.push(node);
    this.producers.set(out, node);
    return out;
  }

  /** One node with several outputs (e.g. DynamicQuantizeLinear's codes, scale, zero point); returns their names. */
  opOutputs(op: string, inputs: string[], count: number, attributes?: Record<string, AttributeValue>, hint = op.toLowerCase()): string[] {
    const outputs = Array.from({ length: count }, (_, i) => this.fresh(`${hint}.${i}`));
    const node: NodeSpec = { op, inputs, outputs, attributes };
    this.nodes.push(node);
    for (const out of outputs) this.producers.set(out, node);
    return outputs;
  }

  /** The shape of `x` as far as reshapes and transposes tell (−1: the one dynamic dimension), if known. */
  shapeOf(x: string): readonly number[] | undefined {
    return this.knownShapes.get(x);
  }

  /** The input and permutation of the Transpose that produced `x`, if one did. */
  transposeOf(x: string): { input: string; perm: number[] } | null {
    const node = this.producers.get(x);
    return node?.op === 'Transpose' ? { input: node.inputs[0], perm: node.attributes!.perm as number[] } : null;
  }

  /** Declare that `rebuild(f)` makes x·f for an exact power of two f without a Mul (e.g. folded into a rescale). */
  markScalable(x: string, rebuild: (factor: number) => string): void {
    this.scalable.set(x, rebuild);
  }

  /**
   * x·factor without a Mul pass, when x (or the value x reshapes) was marked scalable and factor is an exact
   * power of two — scaling by 2^e commutes with every f32 rounding (barring overflow and subnormals), so the
   * folded value has the same bits as Mul(x, factor). Else null (the caller emits the Mul). x's old producer is
   * then unused and finish() drops it.
   */
  foldScale(x: string, factor: number): string | null {
    const e = Math.log2(Math.abs(factor));
    if (!(factor > 0) || !Number.isInteger(e) || Math.abs(e) > 60) return null;
    const direct = this.scalable.get(x);
    if (direct) return direct(factor);
    const source = this.reshapeInputs.get(x);
    const rebuild = source !== undefined ? this.scalable.get(source) : undefined;
    const shape = this.knownShapes.get(x);
    return rebuild && shape ? this.reshape(rebuild(factor), shape) : null;
  }

  /** A node whose single output gets an exact name (e.g. the graph output). */
  opInto(output: string, op: string, inputs: string[], attributes?: Record<string, AttributeValue>): string {
    this.nodes.push({ op, inputs, outputs: [output], attributes });
    return output;
  }

  private constant(hint: string, elemType: number, dims: readonly number[], data: TypedData, key?: object): string {
    if (key) {
      const known = this.stored.get(key);
      if (known) return known;
    }
    const name = this.fresh(hint);
    this.initializers.push({ name, elemType, dims: [...dims], data: bytesOf(data) });
    if (key) this.stored.set(key, name);
    return name;
  }

  /** A float32 constant; `key` (e.g. the source Float32Array) stores it once however often it is used. */
  floats(hint: string, data: Float32Array, dims: readonly number[], key?: object): string {
    return this.constant(hint, OnnxType.FLOAT, dims, data, key);
  }

  float(hint: string, value: number): string {
    return this.constant(hint, OnnxType.FLOAT, [], Float32Array.of(value));
  }

  int64s(hint: string, values: readonly number[]): string {
    return this.constant(hint, OnnxType.INT64, [values.length], BigInt64Array.from(values.map((v) => BigInt(v))));
  }

  int64(hint: string, value: number): string {
    return this.constant(hint, OnnxType.INT64, [], BigInt64Array.of(BigInt(value)));
  }

  int8s(hint: string, data: Int8Array, dims: readonly number[]): string {
    return this.constant(hint, OnnxType.INT8, dims, data);
  }

  /** A uint8 tensor constant (e.g. packed sub-8-bit weight codes, src/export/packed.ts). */
  uint8Tensor(hint: string, data: Uint8Array, dims: readonly number[]): string {
    return this.constant(hint, OnnxType.UINT8, dims, data);
  }

  uint8(hint: string, value: number): string {
    return this.constant(hint, OnnxType.UINT8, [], Uint8Array.of(value));
  }

  uint8s(hint: string, values: readonly number[]): string {
    return this.constant(hint, OnnxType.UINT8, [values.length], Uint8Array.from(values));
  }

  int8(hint: string, value: number): string {
    return this.constant(hint, OnnxType.INT8, [], Int8Array.of(value));
  }

  int32(hint: string, value: number): string {
    return this.constant(hint, OnnxType.INT32, [], Int32Array.of(value));
  }

  /**
   * Reshape to `shape`, where −1 stands for the (dynamic) batch-like leading dimension. A reshape of a
   * reshape reshapes the original, and a reshape back to a value's known shape is that value: the model's
   * head split ends in [B·H, N, d] and the integer products view it as [B, H, N, d] again, and a Reshape
   * pair left between the head transpose and QuantizeLinear would stop onnxruntime from moving the
   * transpose onto the 1-byte codes (and merging it with kᵀ's).
   */
  reshape(x: string, shape: readonly number[], hint = 'reshape'): string {
    // Only a target without 0 (copy an input dimension) and with at most one −1 says the whole shape.
    const definite = !shape.includes(0) && shape.filter((d) => d === -1).length <= 1;
    if (!definite) return this.op('Reshape', [x, this.int64s(`${hint}_shape`, shape)], undefined, hint);
    let source = x;
    while (this.reshapeInputs.has(source)) source = this.reshapeInputs.get(source)!;
    const known = this.knownShapes.get(source);
    if (known && known.length === shape.length && known.every((d, i) => d === shape[i])) return source;
    const out = this.op('Reshape', [source, this.int64s(`${hint}_shape`, shape)], undefined, hint);
    this.knownShapes.set(out, [...shape]);
    this.reshapeInputs.set(out, source);
    return out;
  }

  /** Transpose; a transpose of a transpose is one transpose (by the composed permutation), or none. */
  transpose(x: string, perm: readonly number[], hint = 'transpose'): string {
    const inner = this.transposeOf(x);
    if (inner) {
      const composed = perm.map((axis) => inner.perm[axis]);
      return composed.every((axis, i) => axis === i) ? inner.input : this.transpose(inner.input, composed, hint);
    }
    const out = this.op('Transpose', [x], { perm: [...perm] }, hint);
    const known = this.knownShapes.get(x);
    if (known) this.knownShapes.set(out, perm.map((p) => known[p]));
    return out;
  }

  /**
   * Declare that `rebuild(start, end)` makes x[..., start:end] (last axis of a rank-`rank` value) by itself, with
   * the same numbers: e.g. a linear layer's output columns from a product with those weight columns only.
   */
  markSliceable(x: string, rank: number, rebuild: (start: number, end: number) => string): void {
    this.sliceable.set(x, { rank, rebuild });
  }

  /**
   * x[start:end] along `axis` (static bounds). A slice of the last axis of a value marked sliceable is that
   * block made by its producer (qkv's q, k, v as three products instead of one product and a float Split).
   */
  slice(x: string, axis: number, start: number, end: number, hint = 'slice'): string {
    const block = this.sliceable.get(x);
    if (block && (axis === block.rank - 1 || axis === -1)) return block.rebuild(start, end);
    return this.op('Slice', [x, this.int64s(`${hint}_start`, [start]), this.int64s(`${hint}_end`, [end]), this.int64s(`${hint}_axis`, [axis])], undefined, hint);
  }

  /** The graph, without nodes and constants nothing reaches (e.g. a reshape the chain rule above bypassed). */
  finish(name: string, inputs: ValueInfo[], outputs: ValueInfo[], opset: number): GraphSpec {
    const needed = new Set(outputs.map((o) => o.name));
    const live: NodeSpec[] = [];
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const node = this.nodes[i];
      if (!node.outputs.some((o) => needed.has(o))) continue;
      live.push(node);
      for (const input of node.inputs) if (input) needed.add(input);
    }
    return { name, inputs, outputs, nodes: live.reverse(), initializers: this.initializers.filter((c) => needed.has(c.name)), opset };
  }
}
