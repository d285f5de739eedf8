// checkGuest: every refusal of loadGuest, found from the RAM layout alone (no guest RAM, no KVM),
// so the CLI reports bad kernels, initrds and command lines on any machine.
import assert from 'node:assert/strict';
import test from 'node:test';
import { buildPvhElf } from '../guest/elf-image.js';
import { GuestMemory, GuestMemoryError, RamLayout } from '../memory/guest-memory.js';
import { BootError } from './boot-error.js';
import { makeFakeBzImage } from './bzimage-fixture.js';
import * as layout from './layout.js';
import { checkGuest, loadGuest, type GuestImage } from './loader.js';

const MiB = 1 << 20;
const hlt = buildPvhElf({ loadGpa: 0x100000, segment: Uint8Array.of(0xf4), entryGpa: 0x100000 });

function image(over: Partial<GuestImage>): GuestImage {
  return { kernel: hlt, kernelName: 'test kernel', initrd: null, cmdline: '', cpus: 1, memoryBytes: 32 * MiB, ...over };
}

function refusal(fn: () => void): BootError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof BootError, `a BootError, got ${(e as Error).name}: ${(e as Error).message}`);
    return e;
  }
  assert.fail('expected a refusal');
}

test('checkGuest accepts what loadGuest loads: a PVH ELF, and a bzImage with an initrd', () => {
  checkGuest(image({}));
  checkGuest(image({ kernel: makeFakeBzImage(), initrd: new Uint8Array(MiB), memoryBytes: 128 * MiB }));
  // and the real load of the same image into real memory succeeds too
  const ram = new ArrayBuffer(32 * MiB);
  const mem = new GuestMemory([{ gpa: 0, sizeBytes: 32 * MiB, hva: 1n }], () => ram);
  assert.equal(loadGuest(mem, image({})).entryGpa, 0x100000);
});

test('checkGuest refuses, with loadGuest\'s words: not a kernel, kernel outside RAM, initrd too large, command line too long', () => {
  assert.equal(refusal(() => checkGuest(image({ kernel: new Uint8Array(4096).fill(0x41) }))).kind, 'not-a-kernel');
  const high = buildPvhElf({ loadGpa: 0x4000000, segment: Uint8Array.of(0xf4), entryGpa: 0x4000000 });
  const e = refusal(() => checkGuest(image({ kernel: high, memoryBytes: 16 * MiB })));
  assert.equal(e.kind, 'does-not-fit');
  assert.match(e.message, /outside guest RAM.*--memory/);
  assert.match(refusal(() => checkGuest(image({ initrd: new Uint8Array(40 * MiB) }))).message, /--initrd.*--memory/);
  assert.match(refusal(() => checkGuest(image({ cmdline: 'x'.repeat(layout.CMDLINE_MAX_BYTES + 1) }))).message, /shorten/);
});

test('RamLayout bounds-checks exactly as GuestMemory does and keeps no bytes', () => {
  const regions = layout.ramRegions(4 * 1024 * MiB);
  assert.deepEqual(regions, [
    { gpa: 0, sizeBytes: layout.MMIO_HOLE_START_GPA },
    { gpa: layout.HIGH_RAM_START_GPA, sizeBytes: 4 * 1024 * MiB - layout.MMIO_HOLE_START_GPA },
  ]);
  const r = new RamLayout(regions);
  assert.equal(r.contains(layout.MMIO_HOLE_START_GPA - 8, 8), true);
  assert.equal(r.contains(layout.MMIO_HOLE_START_GPA - 4, 8), false, 'straddles the hole');
  assert.throws(() => r.writeU64(layout.MMIO_HOLE_START_GPA, 0n), GuestMemoryError);
  assert.throws(() => r.write(layout.HIGH_RAM_START_GPA + regions[1]!.sizeBytes - 1, Uint8Array.of(1, 2)), GuestMemoryError);
  r.fill(layout.HIGH_RAM_START_GPA, 4096, 0);
});
