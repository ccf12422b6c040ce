/**
 * Image folders, in two readings:
 *  - torchvision's ImageFolder (labeled): class ids are the sorted names of root's subfolders; each
 *    class's images are found recursively, directories visited in sorted path order and files sorted
 *    within each, so item i is the same image as index i of the Python dataset;
 *  - a folder of unlabeled images (calibration only): every image under root, recursively, in the same
 *    order. Chosen when root holds images itself (a flat folder of photos, possibly with subfolders).
 * Opening only lists directories: no image is read until it is asked for, so a million-file tree
 * (ImageNet's train/) opens in seconds and a calibration sample decodes only its own images.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Ptq4vitError } from '../errors.js';
import { decodeImage, type RgbImage } from './decode.js';
import { checkIndex, type Dataset, type DatasetKind, type IgnoredFile } from './datasets.js';

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

/**
 * Image paths relative to `base`, stored as a directory table plus file names: for a million images
 * this holds each directory name once instead of a million joined strings.
 */
export class FileTable {
  readonly dirs: string[] = [];
  readonly names: string[] = [];
  private readonly dirOf: number[] = [];

  constructor(readonly base: string) {}

  get size(): number {
    return this.names.length;
  }

  addDir(relative: string): number {
    this.dirs.push(relative);
    return this.dirs.length - 1;
  }

  add(dir: number, name: string): void {
    this.dirOf.push(dir);
    this.names.push(name);
  }

  /** Path of entry i relative to base (or absolute, when listed so). */
  relative(i: number): string {
    const dir = this.dirs[this.dirOf[i]];
    return dir === '' ? this.names[i] : path.join(dir, this.names[i]);
  }

  /** Path of entry i as a file name the process can open. */
  file(i: number): string {
    const rel = this.relative(i);
    return path.isAbsolute(rel) ? rel : path.join(this.base, rel);
  }
}

/** Images listed in a FileTable: an image folder (with or without labels) or an image list. */
export class FileDataset implements Dataset {
  readonly labeled: boolean;

  constructor(
    readonly source: string,
    readonly kind: DatasetKind,
    readonly description: string,
    private readonly files: FileTable,
    private readonly labels: Int32Array | null,
    readonly classes: readonly string[],
    readonly ignored: readonly IgnoredFile[],
  ) {
    this.labeled = labels !== null;
  }

  get size(): number {
    return this.files.size;
  }

  label(i: number): number {
    checkIndex(this, i);
    return this.labels ? this.labels[i] : -1;
  }

  image(i: number): Promise<RgbImage> {
    checkIndex(this, i);
    return decodeImage(this.files.file(i));
  }

  itemName(i: number): string {
    checkIndex(this, i);
    return this.files.file(i);
  }

  itemPath(i: number): string {
    checkIndex(this, i);
    return this.files.relative(i);
  }
}

export interface FolderOptions {
  /**
   * Read a folder that holds images at its top level (or whose subfolders cannot be classes) as
   * unlabeled images, recursively, instead of refusing it. Calibration needs no labels; evaluation does.
   */
  allowUnlabeled?: boolean;
}

const EXPECTED_CLASSES = `expected one subfolder per class, each holding images (${IMAGE_EXTENSIONS.join(' ')})`;

export async function openImageFolder(root: string, options: FolderOptions = {}): Promise<Dataset> {
  const top = await list(root);
  const expected = options.allowUnlabeled ? `expected images (${IMAGE_EXTENSIONS.join(' ')}), in it or in its subfolders` : EXPECTED_CLASSES;
  if (top.dirs.length === 0 && top.files.length === 0) throw new Ptq4vitError(`image folder ${root} is empty: ${expected}`);
  const topImages = top.files.filter(isImageFile).length;
  if (options.allowUnlabeled && topImages > 0) {
    return openUnlabeledFolder(root, `it has ${topImages} images at its top level, so its subfolders are not classes`);
  }
  if (top.dirs.length === 0) {
    if (options.allowUnlabeled) throw new Ptq4vitError(`image folder ${root} holds no images (only ${top.files.length} other files): ${expected}`);
    throw new Ptq4vitError(`image folder ${root} has no class subfolders (only ${top.files.length} files): ${expected}`);
  }
  const classes = [...top.dirs].sort();
  const ignored: IgnoredFile[] = top.files.map((f) => ({ file: path.join(root, f), reason: 'not inside a class folder' }));
  const files = new FileTable(root);
  const labels: number[] = [];
  const empty: string[] = [];
  for (const [label, name] of classes.entries()) {
    const before = files.size;
    await findImages(files, name, ignored);
    if (files.size === before) empty.push(name);
    for (let i = before; i < files.size; i++) labels.push(label);
  }
  if (empty.length > 0) {
    if (options.allowUnlabeled && empty.length < classes.length) {
      return openUnlabeledFolder(root, `its subfolders ${empty.join(', ')} hold no images, so they are not classes`);
    }
    throw new Ptq4vitError(`image folder ${root}: class folders with no images: ${empty.join(', ')} (${expected})`);
  }
  const description = `an image folder of ${classes.length} classes (one subfolder per class)`;
  return new FileDataset(root, 'class-folders', description, files, Int32Array.from(labels), classes, ignored);
}

/** Every image under root, recursively, without labels; `why` says why root was read this way. */
async function openUnlabeledFolder(root: string, why: string): Promise<Dataset> {
  const ignored: IgnoredFile[] = [];
  const files = new FileTable(root);
  await findImages(files, '', ignored);
  return new FileDataset(root, 'image-folder', `a folder of unlabeled images (${why})`, files, null, [], ignored);
}

/**
 * Adds the image files under base/start to `files` in ImageFolder order; everything else goes to
 * `ignored`. Directories are visited in sorted order, one at a time, so which of two symbolic links to
 * the same directory is followed does not depend on timing.
 */
async function findImages(files: FileTable, start: string, ignored: IgnoredFile[]): Promise<void> {
  const walked: { dir: string; files: string[] }[] = [];
  const seen = new Set<string>(); // symbolic links may form a cycle
  const visit = async (rel: string): Promise<void> => {
    const abs = rel === '' ? files.base : path.join(files.base, rel);
    const real = await realpath(abs);
    if (seen.has(real)) return;
    seen.add(real);
    const { dirs, files: names } = await list(abs);
    walked.push({ dir: rel, files: names });
    for (const sub of dirs.sort()) await visit(rel === '' ? sub : path.join(rel, sub));
  };
  await visit(start);
  // Python sorts os.walk's tuples, i.e. by directory path as a plain string, not depth-first.
  walked.sort((a, b) => (a.dir < b.dir ? -1 : a.dir > b.dir ? 1 : 0));
  for (const { dir, files: names } of walked) {
    let index = -1;
    for (const f of names.sort()) {
      if (isImageFile(f)) {
        if (index < 0) index = files.addDir(dir);
        files.add(index, f);
      } else {
        ignored.push({ file: path.join(files.base, dir, f), reason: `not an image extension (${path.extname(f) || 'none'})` });
      }
    }
  }
}

async function realpath(dir: string): Promise<string> {
  try {
    return await fs.realpath(dir);
  } catch (e) {
    throw new Ptq4vitError(`cannot read folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
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
