// The repository root, wherever this module runs from: src/ under tsx, dist/src/ once compiled
// (scripts/build-ts.sh). The BPF objects, the native addon, the .proto files and the examples are found
// from here.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** Compiled (dist/src/root.js) or not (src/root.ts): told by this module's own name, not by a folder's. */
export const REPO_ROOT = import.meta.url.endsWith('.js') ? join(here, '..', '..') : join(here, '..');
