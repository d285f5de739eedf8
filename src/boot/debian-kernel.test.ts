import test from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { debianKernelPath, kernelCacheDir, repoRoot } from './debian-kernel.js';

test('repoRoot is the directory with package.json; the cache is .cache/kernels under it', () => {
  assert.ok(existsSync(join(repoRoot(), 'package.json')));
  assert.equal(kernelCacheDir(), join(repoRoot(), '.cache', 'kernels'));
});

test('debianKernelPath picks the highest 6.1.0 ABI number and ignores other kernels and partial fetches', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsvmm-kernels-'));
  try {
    assert.equal(debianKernelPath(join(dir, 'missing')), null);
    assert.equal(debianKernelPath(dir), null);
    for (const name of ['vmlinuz-6.1.0-9-cloud-amd64', 'vmlinuz-6.1.0-56-cloud-amd64', 'vmlinuz-6.1.0-47-cloud-amd64', 'vmlinuz-6.12.117+deb12-cloud-amd64', 'vmlinuz-6.1.0-99-amd64']) {
      writeFileSync(join(dir, name), '');
    }
    mkdirSync(join(dir, 'fetch-abc123'));
    assert.equal(debianKernelPath(dir), join(dir, 'vmlinuz-6.1.0-56-cloud-amd64'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
