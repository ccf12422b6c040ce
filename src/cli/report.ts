/** Human-readable result blocks on stdout, and the machine-readable JSON line that ends them. */
export interface Report {
  title: string;
  rows: [string, string][];
  notes?: string[];
  /** When given, printed as one JSON line after the human report (always the last stdout line). */
  json?: Record<string, unknown>;
}

export function printReport(r: Report): void {
  const width = Math.max(...r.rows.map(([k]) => k.length));
  const lines = [`\n  ${r.title}`, `  ${'─'.repeat(Math.max(r.title.length, 20))}`];
  for (const [k, val] of r.rows) lines.push(`  ${k.padEnd(width)}  ${val}`);
  for (const n of r.notes ?? []) lines.push(`  · ${n}`);
  process.stdout.write(lines.join('\n') + '\n');
  if (r.json) process.stdout.write(JSON.stringify(r.json) + '\n');
}
