import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ptq4vitError } from '../errors.js';

/** The package root (dist/src/cli → ../../..): where bundled assets live. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** An input the command reads, and what to call it in a message ("input checkpoint", "--calib file"). */
export interface InputPath {
  what: string;
  path: string;
}

function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch {
    return null;
  }
}

function realOrNull(p: string): string | null {
  try {
    return fs.realpathSync(p);
  } catch {
    return null;
  }
}

/**
 * The files behind a dataset path: the folder itself; a manifest and the raw arrays it names; or an
 * image list and, with `listEntries`, every image it lists (only worth reading when the output already
 * exists, since only an existing file can be one of them). Read loosely: a manifest or list that does
 * not parse fails later, when the dataset is opened.
 */
export function datasetInputs(flag: string, p: string, options: { listEntries?: boolean } = {}): InputPath[] {
  const stat = statOrNull(p);
  const inputs: InputPath[] = [{ what: `--${flag} ${stat?.isDirectory() ? 'folder' : 'file'}`, path: p }];
  if (!stat || stat.isDirectory()) return inputs;
  try {
    const text = fs.readFileSync(p, 'utf8');
    if (p.toLowerCase().endsWith('.json')) {
      const m = JSON.parse(text) as Record<string, unknown>;
      for (const field of ['images', 'labels']) {
        const f = m[field];
        if (typeof f === 'string' && f !== '') inputs.push({ what: `--${flag} manifest's ${field} file`, path: path.resolve(path.dirname(p), f) });
      }
    } else if (options.listEntries) {
      for (const line of text.split('\n')) {
        const entry = line.endsWith('\r') ? line.slice(0, -1) : line;
        if (entry.trim() !== '') inputs.push({ what: `image listed in --${flag}`, path: path.resolve(path.dirname(p), entry) });
      }
    }
  } catch {
    // not readable or not JSON: nothing more to protect here
  }
  return inputs;
}

/**
 * Refuse an output path that would replace one of the inputs. Paths are compared as the file system
 * sees them, not as strings: `--out` may reach an input through a symbolic link (a linked directory or
 * a linked file) or a hard link, so an existing output is compared by device + inode with every input
 * file, and by real path with every input folder (an output inside an image folder replaces an image).
 */
export function checkOutputNotInput(out: string, inputs: readonly InputPath[], flag = '--out'): void {
  const refuse = (input: InputPath, inside: boolean): never => {
    const what = inside ? `a file inside the ${input.what}` : `the ${input.what}`;
    throw new Ptq4vitError(`${flag} ${out} would overwrite ${what} (${input.path})`);
  };
  for (const input of inputs) {
    if (path.resolve(out) === path.resolve(input.path)) refuse(input, false);
  }
  const outStat = statOrNull(out);
  const outReal = realOrNull(out) ?? path.join(realOrNull(path.dirname(path.resolve(out))) ?? path.dirname(path.resolve(out)), path.basename(out));
  for (const input of inputs) {
    const s = statOrNull(input.path);
    if (!s) continue;
    if (s.isDirectory()) {
      const dir = realOrNull(input.path);
      if (dir && outStat && (outReal === dir || outReal.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep))) refuse(input, true);
      continue;
    }
    if (outStat && outStat.dev === s.dev && outStat.ino === s.ino) refuse(input, false);
    // A dangling --out symlink or a not-yet-existing path cannot be an input; a link to one is caught above.
    if (realOrNull(input.path) === outReal) refuse(input, false);
  }
}
