/**
 * An image collection, opened from a path. Labeled: a class-per-subfolder image folder (torchvision's
 * ImageFolder) or a `.json` manifest pointing at raw uint8 arrays. Unlabeled, when the caller allows
 * it (calibration): a folder holding images itself, read recursively, or a text file listing images.
 */
import fs from 'node:fs/promises';
import { Ptq4vitError } from '../errors.js';
import type { RgbImage } from './decode.js';
import { openImageFolder } from './folder.js';
import { openImageList } from './list.js';
import { openRawManifest } from './manifest.js';

/** A file found while scanning that is not part of the dataset, and why. */
export interface IgnoredFile {
  file: string;
  reason: string;
}

/** How a dataset was read: labeled class folders or manifest, unlabeled image folder or image list. */
export type DatasetKind = 'class-folders' | 'raw-manifest' | 'image-folder' | 'image-list';

export interface Dataset {
  /** The path the dataset was opened from. */
  readonly source: string;
  readonly kind: DatasetKind;
  /** What the data is, for messages: e.g. "an image folder of 10 classes (one subfolder per class)". */
  readonly description: string;
  readonly size: number;
  /** Whether items carry labels; without them `classes` is empty and label(i) is −1. */
  readonly labeled: boolean;
  /** Class names; a label is an index into this list. */
  readonly classes: readonly string[];
  /** Files seen but not used (non-image extensions, files outside class folders). */
  readonly ignored: readonly IgnoredFile[];
  label(i: number): number;
  /** Decoded pixels of item i; throws ImageDecodeError (a Ptq4vitError) if the file is unreadable. */
  image(i: number): Promise<RgbImage>;
  /** Where item i comes from, for messages: its file, or `${manifest}#${i}` for raw arrays. */
  itemName(i: number): string;
  /** Item i's file relative to the folder or list (as listed), for records; null for raw arrays. */
  itemPath(i: number): string | null;
}

export interface OpenOptions {
  /**
   * Also accept data without labels (calibration): a folder holding images at its top level (read
   * recursively) and any non-.json file as a list of image paths.
   */
  allowUnlabeled?: boolean;
}

export async function openDataset(path: string, options: OpenOptions = {}): Promise<Dataset> {
  let stat;
  try {
    stat = await fs.stat(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Ptq4vitError(`cannot open dataset ${path}: ${code === 'ENOENT' ? 'no such file or directory' : code}`);
  }
  if (stat.isDirectory()) return openImageFolder(path, options);
  if (path.toLowerCase().endsWith('.json')) return openRawManifest(path);
  if (options.allowUnlabeled) return openImageList(path);
  throw new Ptq4vitError(`cannot open dataset ${path}: expected an image folder (one subfolder per class) or a .json manifest (a list of image paths has no labels)`);
}

/** Shared by both kinds of dataset: an out-of-range index is a caller's mistake, reported plainly. */
export function checkIndex(ds: { source: string; size: number }, i: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= ds.size) {
    throw new Ptq4vitError(`${ds.source}: image index ${i} is out of range (the dataset has ${ds.size} images)`);
  }
}

// The batch loader lives in batch.ts; re-exported so callers need only this module.
export { loadBatch, readImageOrSkip, type Batch, type SkippedImage } from './batch.js';
