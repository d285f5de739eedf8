// Pins STYLE.md's layering for virtio and PCI: device models and transports import no KVM, no koffi
// and no hypervisor backend; only guest memory, the bus interface, the struct tables, the PCI
// device layer (src/pci/, itself held to the same rule) and node builtins.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

// Compiled to dist/src/virtio/; the sources are in src/virtio/ at the repo root.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const ALLOWED_OUTSIDE = new Set(['memory/guest-memory.ts', 'bus/bus.ts', 'boot/struct.ts']);

function imports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1] ?? m[2]!);
}

/** Imports of files in src/<layer>/ that reach outside the layers it may use. */
function offenders(layer: string, mayUse: readonly string[], expected: readonly string[]): string[] {
  const dir = path.join(repoRoot, 'src', layer);
  const sources = fs.readdirSync(dir).filter((f) => f.endsWith('.ts'));
  for (const f of expected) assert.ok(sources.includes(f), `${f} found in ${dir}`);
  const out: string[] = [];
  for (const f of sources) {
    for (const spec of imports(path.join(dir, f))) {
      if (spec.startsWith('node:')) continue;
      if (!spec.startsWith('.')) {
        out.push(`${layer}/${f}: ${spec}`);
        continue;
      }
      const target = path.relative(path.join(repoRoot, 'src'), path.resolve(dir, spec)).split(path.sep).join('/').replace(/\.js$/, '.ts');
      if (!mayUse.some((l) => target.startsWith(`${l}/`)) && !ALLOWED_OUTSIDE.has(target)) out.push(`${layer}/${f}: ${spec}`);
    }
  }
  return out;
}

test('src/virtio imports only node builtins, itself, src/pci, guest memory, the bus interface and struct tables', () => {
  assert.deepEqual(offenders('virtio', ['virtio', 'pci'], ['virtqueue.ts', 'mmio.ts', 'pci.ts']), []);
});

test('src/pci imports only node builtins, itself, the bus interface and struct tables (no virtio, no KVM)', () => {
  assert.deepEqual(offenders('pci', ['pci'], ['config-space.ts', 'bus.ts', 'msix.ts']), []);
});
