// Pins the layering rules of STYLE.md: only src/kvm/ imports koffi; only the KVM backend
// (src/hypervisor/kvm/) imports src/kvm/; devices import neither.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';
import { repoRoot } from './repo.js';

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function imports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)]
    .map((m) => m[1] ?? m[2]!);
}

const src = path.join(repoRoot, 'src');
const rel = (f: string) => path.relative(src, f).split(path.sep).join('/');
const resolveImport = (file: string, spec: string) => rel(path.resolve(path.dirname(file), spec));

test('only src/kvm/ imports koffi', () => {
  const offenders = sources(src).filter((f) => !rel(f).startsWith('kvm/') && imports(f).includes('koffi'));
  assert.deepEqual(offenders.map(rel), []);
});

test('only the KVM backend imports src/kvm/', () => {
  const offenders = sources(src).filter((f) => {
    const r = rel(f);
    if (r.startsWith('kvm/') || r.startsWith('hypervisor/kvm/')) return false;
    return imports(f).some((i) => i.startsWith('.') && resolveImport(f, i).startsWith('kvm/'));
  });
  assert.deepEqual(offenders.map(rel), []);
});

test('devices (legacy, PCI and virtio) import neither KVM nor the hypervisor backend', () => {
  const offenders = [...sources(path.join(src, 'devices')), ...sources(path.join(src, 'pci')), ...sources(path.join(src, 'virtio'))].filter((f) => imports(f).some((i) => {
    if (i === 'koffi') return true;
    if (!i.startsWith('.')) return false;
    const r = resolveImport(f, i);
    return r.startsWith('kvm/') || r.startsWith('hypervisor/');
  }));
  assert.deepEqual(offenders.map(rel), []);
});

test('the checker sees imports (a rule that matches nothing would pass vacuously)', () => {
  const backend = path.join(src, 'hypervisor', 'kvm', 'backend.ts');
  assert.ok(imports(backend).some((i) => resolveImport(backend, i).startsWith('kvm/')));
  assert.ok(imports(path.join(src, 'kvm', 'libc.ts')).includes('koffi'));
});
