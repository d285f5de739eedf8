// Paths shared by the integration tests, resolved from the compiled file's location (dist/tests/).
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cliPath = path.join(repoRoot, 'dist', 'src', 'cli.js');
export const cacheDir = path.join(repoRoot, '.cache');
