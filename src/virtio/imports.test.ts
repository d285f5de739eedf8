// Pins STYLE.md's layering for virtio: device models and transports import no KVM, no koffi and
// no hypervisor backend; only guest memory, the bus interface, the struct tables and node builtins.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

// Compiled to dist/src/virtio/; the sources are in src/virtio/ at the repo root.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const dir = path.join(repoRoot, 'src', 'virtio');
const ALLOWED_OUTSIDE = new Set(['memory/guest-memory.ts', 'bus/bus.ts', 'boot/struct.ts']);

function imports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1] ?? m[2]!);
}

test('src/virtio imports only node builtins, itself, guest memory, the bus interface and struct tables', () => {
  const sources = fs.readdirSync(dir).filter((f) => f.endsWith('.ts'));
  assert.ok(sources.includes('virtqueue.ts') && sources.includes('mmio.ts'), `sources found in ${dir}`);
  const offenders: string[] = [];
  for (const f of sources) {
    for (const spec of imports(path.join(dir, f))) {
      if (spec.startsWith('node:')) continue;
      if (!spec.startsWith('.')) {
        offenders.push(`${f}: ${spec}`);
        continue;
      }
      const target = path.relative(path.join(repoRoot, 'src'), path.resolve(dir, spec)).split(path.sep).join('/').replace(/\.js$/, '.ts');
      if (!target.startsWith('virtio/') && !ALLOWED_OUTSIDE.has(target)) offenders.push(`${f}: ${spec}`);
    }
  }
  assert.deepEqual(offenders, []);
});
