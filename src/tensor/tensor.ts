/** A dense, row-major float32 tensor. Kernels treat `data` as contiguous in `shape` order. */
export class Tensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];

  constructor(data: Float32Array, shape: readonly number[]) {
    const n = numel(shape);
    if (data.length !== n) {
      throw new Error(`Tensor: data has ${data.length} elements, shape [${shape.join(', ')}] needs ${n}`);
    }
    this.data = data;
    this.shape = shape;
  }

  static zeros(shape: readonly number[]): Tensor {
    return new Tensor(new Float32Array(numel(shape)), shape);
  }

  get size(): number {
    return this.data.length;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** Size of the last dimension (features of an activation, input features of a weight). */
  get lastDim(): number {
    return this.shape[this.shape.length - 1];
  }

  /** Same data, new shape (no copy). */
  reshape(shape: readonly number[]): Tensor {
    return new Tensor(this.data, shape);
  }

  /** Rows [start, end) of the leading axis — images of a batch — as a view (no copy). */
  rows(start: number, end: number): Tensor {
    const per = this.shape[0] === 0 ? 0 : this.data.length / this.shape[0];
    return new Tensor(this.data.subarray(start * per, end * per), [end - start, ...this.shape.slice(1)]);
  }

  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape);
  }
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Concatenate float arrays end to end (returns the only part itself when there is one). */
export function concatFloat32(parts: readonly Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
