/** One-line descriptions of a quantized model for reports. */
export function describeQuantization(provenance: Record<string, unknown>): string {
  const method = provenance.method === 'base' ? 'Base PTQ' : 'PTQ4ViT';
  return `${method} W${provenance.w_bits}A${provenance.a_bits}`;
}

export function percent(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}
