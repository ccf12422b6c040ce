/**
 * `raw-uint8-hwc` manifests: a JSON file naming a uint8 image array [count, height, width, channels]
 * and a uint8 label array [count], both relative to the manifest. Everything is validated up front so a
 * wrong file fails at open with the field and the numbers, not as garbage pixels mid-evaluation.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { grayToRgb, type RgbImage } from './decode.js';
import { checkIndex, type Dataset, type IgnoredFile } from './datasets.js';

export const RAW_FORMAT = 'raw-uint8-hwc';

interface RawManifest {
  images: string;
  labels: string;
  count: number;
  height: number;
  width: number;
  channels: 1 | 3;
  classes: string[];
}

class RawDataset implements Dataset {
  readonly ignored: readonly IgnoredFile[] = [];
  readonly kind = 'raw-manifest';
  readonly labeled = true;

  constructor(
    readonly source: string,
    private readonly m: RawManifest,
    private readonly pixels: Uint8Array,
    private readonly labels: Uint8Array,
  ) {}

  get size(): number {
    return this.m.count;
  }

  get classes(): readonly string[] {
    return this.m.classes;
  }

  get description(): string {
    return `a ${RAW_FORMAT} manifest of ${this.m.classes.length} classes`;
  }

  label(i: number): number {
    checkIndex(this, i);
    return this.labels[i];
  }

  async image(i: number): Promise<RgbImage> {
    checkIndex(this, i);
    const { width, height, channels } = this.m;
    const bytes = width * height * channels;
    const slice = this.pixels.slice(i * bytes, (i + 1) * bytes);
    return { width, height, data: channels === 3 ? slice : grayToRgb(slice) };
  }

  itemName(i: number): string {
    checkIndex(this, i);
    return `${this.source}#${i}`;
  }

  itemPath(i: number): null {
    checkIndex(this, i);
    return null;
  }
}

export async function openRawManifest(file: string): Promise<Dataset> {
  const bad = (why: string): never => {
    throw new Ptq4vitError(`manifest ${file}: ${why}`);
  };
  const m = parseManifest(await readText(file, bad), bad);
  const dir = path.dirname(file);
  const imageBytes = m.count * m.height * m.width * m.channels;
  const pixels = await readExact(path.resolve(dir, m.images), 'images', imageBytes,
    `count ${m.count} × height ${m.height} × width ${m.width} × channels ${m.channels}`, bad);
  const labels = await readExact(path.resolve(dir, m.labels), 'labels', m.count, `one uint8 label per image, count ${m.count}`, bad);
  checkLabels(labels, m.classes.length, bad);
  return new RawDataset(file, m, pixels, labels);
}

async function readText(file: string, bad: (why: string) => never): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return bad(code === 'ENOENT' ? 'no such file' : `cannot read it (${code})`);
  }
}

function parseManifest(text: string, bad: (why: string) => never): RawManifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return bad(`not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return bad('expected a JSON object');
  const o = json as Record<string, unknown>;
  if (o.format !== RAW_FORMAT) bad(`field "format" is ${JSON.stringify(o.format)}, expected "${RAW_FORMAT}"`);
  const m: RawManifest = {
    images: fileField(o, 'images', bad),
    labels: fileField(o, 'labels', bad),
    count: positiveInt(o, 'count', bad),
    height: positiveInt(o, 'height', bad),
    width: positiveInt(o, 'width', bad),
    channels: 3,
    classes: classList(o.classes, bad),
  };
  if (o.channels !== 3 && o.channels !== 1) bad(`field "channels" is ${JSON.stringify(o.channels)}, expected 3 (RGB) or 1 (grayscale)`);
  m.channels = o.channels as 1 | 3;
  return m;
}

function fileField(o: Record<string, unknown>, field: string, bad: (why: string) => never): string {
  const v = o[field];
  if (typeof v !== 'string' || v === '') bad(`field "${field}" is ${JSON.stringify(v)}, expected a file name relative to the manifest`);
  return v as string;
}

function positiveInt(o: Record<string, unknown>, field: string, bad: (why: string) => never): number {
  const v = o[field];
  if (!Number.isSafeInteger(v) || (v as number) <= 0) bad(`field "${field}" is ${JSON.stringify(v)}, expected a positive integer`);
  return v as number;
}

function classList(v: unknown, bad: (why: string) => never): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.some((c) => typeof c !== 'string')) {
    bad(`field "classes" is ${JSON.stringify(v)?.slice(0, 80)}, expected a non-empty array of class names`);
  }
  if ((v as string[]).length > 256) bad(`field "classes" has ${(v as string[]).length} names, but uint8 labels can address at most 256`);
  return v as string[];
}

async function readExact(file: string, field: string, expected: number, layout: string, bad: (why: string) => never): Promise<Uint8Array> {
  let size: number;
  try {
    size = (await fs.stat(file)).size;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return bad(`${field} file ${file} (field "${field}") ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}`);
  }
  // Checked before reading, so a wrong multi-gigabyte file is rejected without loading it.
  if (size !== expected) bad(`${field} file ${file} has ${size} bytes, expected ${expected} (${layout})`);
  return fs.readFile(file);
}

function checkLabels(labels: Uint8Array, classCount: number, bad: (why: string) => never): void {
  let first = -1, outOfRange = 0;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= classCount) {
      if (first < 0) first = i;
      outOfRange++;
    }
  }
  if (first >= 0) {
    bad(`label ${labels[first]} at index ${first} is out of range: ${classCount} classes, so labels must be 0..${classCount - 1} (${outOfRange} labels out of range)`);
  }
}
