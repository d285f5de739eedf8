// Builds the benchmark baselines (the bare C KVM loop) into .cache/bench/ with the system gcc.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const benchCache = path.join(repoRoot, '.cache', 'bench');

export function buildKvmLoop(): string {
  const src = path.join(repoRoot, 'bench', 'kvm-loop.c');
  const out = path.join(benchCache, 'kvm-loop');
  fs.mkdirSync(benchCache, { recursive: true });
  if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(src).mtimeMs) {
    try {
      execFileSync('gcc', ['-O2', '-Wall', '-o', out, src], { stdio: 'inherit' });
    } catch (e) {
      throw new Error(`building the C baseline failed (${(e as Error).message}); install gcc (Debian package gcc)`);
    }
  }
  return out;
}
