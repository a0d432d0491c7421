// The repository root, wherever this module runs from: src/ under tsx, dist/src/ once compiled
// (scripts/build-ts.sh). The BPF objects, the native addon, the .proto files and the examples are found
// from here.
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

export const REPO_ROOT = basename(dirname(here)) === 'dist' ? join(here, '..', '..') : join(here, '..');
