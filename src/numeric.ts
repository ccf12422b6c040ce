/** Round half to even (banker's rounding), as Python's round(), torch.round and ONNX Round. */
export function roundHalfEven(v: number): number {
  const floor = Math.floor(v);
  const frac = v - floor;
  if (frac < 0.5) return floor;
  if (frac > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** max |x| over data[start, end). */
export function maxAbs(data: Float32Array, start = 0, end = data.length): number {
  let m = 0;
  for (let i = start; i < end; i++) {
    const v = Math.abs(data[i]);
    if (v > m) m = v;
  }
  return m;
}
