/**
 * The validation layer for JSON read from files (quantized-model metadata; cards share the field
 * naming): a zod schema checks the on-disk (snake_case) shape, and the first problem becomes one
 * Ptq4vitError naming the file, the field path and what was expected, with the value found.
 */
import type { z } from 'zod';
import { Ptq4vitError } from './errors.js';

/** `points[3].a.deltas[0]`: a zod issue path as the user would write it. */
export function fieldPath(root: string, path: readonly PropertyKey[]): string {
  let out = root;
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : `${out ? '.' : ''}${String(key)}`;
  return out;
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const key of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function shown(v: unknown): string {
  if (v === undefined) return 'nothing';
  const text = typeof v === 'number' && !Number.isFinite(v) ? String(v) : JSON.stringify(v);
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

/** Parse `value` with `schema`, or throw `${where}: ${field}: ${what was expected} (got …)`. */
export function parseWith<T extends z.ZodType>(schema: T, value: unknown, where: string, root = ''): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = fieldPath(root, issue.path);
  const got = issue.code === 'unrecognized_keys' ? '' : ` (got ${shown(valueAt(value, issue.path))})`;
  throw new Ptq4vitError(`${where}: ${field || 'value'}: ${issue.message.replace(/^Invalid input: /, '')}${got}`);
}
