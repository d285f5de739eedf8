import test from 'node:test';
import assert from 'node:assert/strict';
import { BootError } from './boot-error.js';
import { buildE820Map, buildPvhStartInfo, E820_TYPE_RAM, E820_TYPE_RESERVED, lowRamEndGpa, type E820Entry } from './e820.js';
import { ACPI_END_GPA, ACPI_START_GPA, PVH_MEMMAP_MAX_ENTRIES } from './layout.js';

const MiB = 1 << 20;
const GiB = 1 << 30;

const ram = (gpa: number, sizeBytes: number): E820Entry => ({ gpa, sizeBytes, type: E820_TYPE_RAM });
const reserved = (gpa: number, sizeBytes: number): E820Entry => ({ gpa, sizeBytes, type: E820_TYPE_RESERVED });

test('e820 map of a 512 MiB guest: low RAM, legacy hole, RAM from 1 MiB, KVM private pages', () => {
  assert.deepEqual(buildE820Map(512 * MiB), [
    ram(0, 0x9fc00),
    reserved(0x9fc00, 0x100000 - 0x9fc00),
    ram(0x100000, 512 * MiB - 0x100000),
    reserved(0xfffbc000, 0x4000),
  ]);
});

test('the ACPI tables lie in a reserved range', () => {
  const map = buildE820Map(64 * MiB);
  const holding = map.filter((e) => e.gpa <= ACPI_START_GPA && ACPI_END_GPA <= e.gpa + e.sizeBytes);
  assert.equal(holding.length, 1);
  assert.equal(holding[0].type, E820_TYPE_RESERVED);
});

test('RAM beyond the MMIO hole start continues at 4 GiB; a guest of exactly the hole size has none above', () => {
  const map = buildE820Map(4 * GiB);
  assert.deepEqual(map[2], ram(0x100000, 0xc000_0000 - 0x100000));
  assert.deepEqual(map[4], ram(0x1_0000_0000, 4 * GiB - 0xc000_0000));
  assert.equal(lowRamEndGpa(map), 0xc000_0000);
  assert.equal(buildE820Map(3 * GiB).length, 4);
  // Entries are sorted and do not overlap.
  for (let i = 1; i < map.length; i++) assert.ok(map[i - 1].gpa + map[i - 1].sizeBytes <= map[i].gpa);
});

test('impossible RAM sizes are refused', () => {
  for (const bad of [0, MiB, MiB + 100, -4096, 1.5]) {
    assert.throws(() => buildE820Map(bad), (e: unknown) => e instanceof BootError && e.kind === 'bad-config');
  }
});

test('hvm_start_info v1 with memmap and an initrd module (start_info.h offsets)', () => {
  const memmap = buildE820Map(256 * MiB);
  const { gpa, bytes } = buildPvhStartInfo({ cmdlineGpa: 0x20000, rsdpGpa: 0xe0000, memmap, initrd: { gpa: 0xf000000, sizeBytes: 0x123456 } });
  assert.equal(gpa, 0x6000);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (offset: number) => dv.getUint32(offset, true);
  const u64 = (offset: number) => Number(dv.getBigUint64(offset, true));
  assert.equal(u32(0), 0x336ec578, 'magic');
  assert.equal(u32(4), 1, 'version');
  assert.equal(u32(8), 0, 'flags');
  assert.equal(u32(12), 1, 'nr_modules');
  assert.equal(u64(16), 0x6f00, 'modlist_paddr');
  assert.equal(u64(24), 0x20000, 'cmdline_paddr');
  assert.equal(u64(32), 0xe0000, 'rsdp_paddr');
  assert.equal(u64(40), 0x6040, 'memmap_paddr');
  assert.equal(u32(48), memmap.length, 'memmap_entries');
  memmap.forEach((entry, i) => {
    const at = 0x40 + i * 24;
    assert.deepEqual([u64(at), u64(at + 8), u32(at + 16), u32(at + 20)], [entry.gpa, entry.sizeBytes, entry.type, 0]);
  });
  // hvm_modlist_entry { paddr, size, cmdline_paddr, reserved }
  assert.deepEqual([u64(0xf00), u64(0xf08), u64(0xf10), u64(0xf18)], [0xf000000, 0x123456, 0, 0]);
  assert.equal(bytes.length, 0xf20);
});

test('hvm_start_info without an initrd has no modules and stops after the memmap', () => {
  const memmap = buildE820Map(256 * MiB);
  const { bytes } = buildPvhStartInfo({ cmdlineGpa: 0x20000, rsdpGpa: 0xe0000, memmap });
  const dv = new DataView(bytes.buffer);
  assert.equal(dv.getUint32(12, true), 0);
  assert.equal(dv.getBigUint64(16, true), 0n);
  assert.equal(bytes.length, 0x40 + memmap.length * 24);
  assert.throws(() => buildPvhStartInfo({ cmdlineGpa: 0, rsdpGpa: 0, memmap: new Array(PVH_MEMMAP_MAX_ENTRIES + 1).fill(ram(0, 4096)) }), /1 to 157/);
});

test('reserved device ranges (the PCI ECAM) are merged in address order; one that overlaps RAM is refused', () => {
  const map = buildE820Map(512 * MiB, [{ gpa: 0xe000_0000, sizeBytes: MiB }]);
  assert.deepEqual(map, [
    ram(0, 0x9fc00),
    reserved(0x9fc00, 0x100000 - 0x9fc00),
    ram(0x100000, 512 * MiB - 0x100000),
    reserved(0xe000_0000, MiB),
    reserved(0xfffbc000, 0x4000),
  ]);
  assert.deepEqual(buildE820Map(4 * GiB, [{ gpa: 0xe000_0000, sizeBytes: MiB }]).map((e) => e.gpa), [0, 0x9fc00, 0x100000, 0xe000_0000, 0xfffbc000, 0x1_0000_0000]);
  assert.throws(() => buildE820Map(512 * MiB, [{ gpa: 256 * MiB, sizeBytes: MiB }]), (e: unknown) => e instanceof BootError && /overlaps the e820 entry at 0x100000/.test((e as Error).message));
});
