/**
 * torchvision's ImageFolder: class ids are the sorted names of root's subfolders; each class's images
 * are found recursively, directories visited in sorted path order and files sorted within each, so
 * item i is the same image as index i of the Python dataset.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { decodeImage, type RgbImage } from './decode.js';
import { checkIndex, type Dataset, type IgnoredFile } from './datasets.js';

/** The subset of torchvision's IMG_EXTENSIONS that we can decode (matched case-insensitively). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.bmp', '.webp'];

export function isImageFile(name: string): boolean {
  const lower = name.toLowerCase();
  return IMAGE_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

interface Listing {
  dirs: string[];
  files: string[];
}

class ImageFolderDataset implements Dataset {
  constructor(
    readonly source: string,
    readonly classes: readonly string[],
    private readonly files: readonly string[],
    private readonly labels: Int32Array,
    readonly ignored: readonly IgnoredFile[],
  ) {}

  get size(): number {
    return this.files.length;
  }

  label(i: number): number {
    checkIndex(this, i);
    return this.labels[i];
  }

  image(i: number): Promise<RgbImage> {
    checkIndex(this, i);
    return decodeImage(this.files[i]);
  }

  itemName(i: number): string {
    checkIndex(this, i);
    return this.files[i];
  }
}

export async function openImageFolder(root: string): Promise<Dataset> {
  const top = await list(root);
  const expected = `expected one subfolder per class, each holding images (${IMAGE_EXTENSIONS.join(' ')})`;
  if (top.dirs.length === 0 && top.files.length === 0) throw new Ptq4vitError(`image folder ${root} is empty: ${expected}`);
  if (top.dirs.length === 0) {
    throw new Ptq4vitError(`image folder ${root} has no class subfolders (only ${top.files.length} files): ${expected}`);
  }
  const classes = [...top.dirs].sort();
  const ignored: IgnoredFile[] = top.files.map((f) => ({ file: path.join(root, f), reason: 'not inside a class folder' }));
  const files: string[] = [];
  const labels: number[] = [];
  const empty: string[] = [];
  for (const [label, name] of classes.entries()) {
    const found = await findImages(path.join(root, name), ignored);
    if (found.length === 0) empty.push(name);
    for (const f of found) {
      files.push(f);
      labels.push(label);
    }
  }
  if (empty.length > 0) {
    throw new Ptq4vitError(`image folder ${root}: class folders with no images: ${empty.join(', ')} (${expected})`);
  }
  return new ImageFolderDataset(root, classes, files, Int32Array.from(labels), ignored);
}

/** Image files under dir in ImageFolder order; everything else goes to `ignored`. */
async function findImages(dir: string, ignored: IgnoredFile[]): Promise<string[]> {
  const walked: { dir: string; files: string[] }[] = [];
  const seen = new Set<string>(); // symbolic links may form a cycle
  const visit = async (d: string): Promise<void> => {
    const real = await fs.realpath(d);
    if (seen.has(real)) return;
    seen.add(real);
    const { dirs, files } = await list(d);
    walked.push({ dir: d, files });
    for (const sub of dirs) await visit(path.join(d, sub));
  };
  await visit(dir);
  // Python sorts os.walk's tuples, i.e. by directory path as a plain string, not depth-first.
  walked.sort((a, b) => (a.dir < b.dir ? -1 : a.dir > b.dir ? 1 : 0));
  const images: string[] = [];
  for (const { dir: d, files } of walked) {
    for (const f of [...files].sort()) {
      const file = path.join(d, f);
      if (isImageFile(f)) images.push(file);
      else ignored.push({ file, reason: `not an image extension (${path.extname(f) || 'none'})` });
    }
  }
  return images;
}

/** Subfolders and files of dir, following symbolic links as os.walk(followlinks=True) does. */
async function list(dir: string): Promise<Listing> {
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw new Ptq4vitError(`cannot read folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const dirs: string[] = [];
  const files: string[] = [];
  for (const entry of entries) {
    const isDir = entry.isSymbolicLink() ? await isDirectory(path.join(dir, entry.name)) : entry.isDirectory();
    (isDir ? dirs : files).push(entry.name);
  }
  return { dirs, files };
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory();
  } catch {
    return false; // a dangling link is listed as a file, and then ignored or fails to decode
  }
}
