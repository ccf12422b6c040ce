import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (dist/src/cli → ../../..): where bundled assets live. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
