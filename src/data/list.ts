/**
 * A text file listing image paths, one per line, relative to the file (or absolute): a calibration
 * set without labels, chosen by hand or by a script. Blank lines are skipped; nothing else is
 * interpreted, so any file name can be listed. Files are not opened until an image is asked for.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import type { Dataset } from './datasets.js';
import { FileDataset, FileTable, isImageFile } from './folder.js';

const EXPECTED = 'expected a text file with one image path per line, relative to the list';

export async function openImageList(file: string): Promise<Dataset> {
  const bad = (why: string): never => {
    throw new Ptq4vitError(`image list ${file}: ${why}`);
  };
  if (isImageFile(file)) bad(`this is an image; give the folder that holds it, or a text file listing image paths`);
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(file);
  } catch (e) {
    return bad(`cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (bytes.includes(0)) bad(`it is a binary file, not text: ${EXPECTED}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return bad(`it is not UTF-8 text: ${EXPECTED}`);
  }
  const files = new FileTable(path.dirname(file));
  const dir = files.addDir('');
  for (const line of text.split('\n')) {
    const entry = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (entry.trim() !== '') files.add(dir, entry);
  }
  if (files.size === 0) bad(`it lists no image paths: ${EXPECTED}`);
  return new FileDataset(file, 'image-list', 'a list of image paths (no labels)', files, null, [], []);
}
