// The guest's physical memory map, as an e820 table (Linux zero page) and as the PVH memmap, plus the
// PVH hvm_start_info that carries it.
// Sources: arch/x86/include/asm/e820/types.h (E820_TYPE_*), ACPI 6.5 §15 "System Address Map
// Interfaces" (the same type numbers), xen/include/public/arch-x86/hvm/start_info.h.

import { BootError } from './boot-error.js';
import {
  EBDA_START_GPA,
  HIGH_MEMORY_GPA,
  HIGH_RAM_START_GPA,
  KVM_IDENTITY_MAP_GPA,
  KVM_TSS_GPA,
  MMIO_HOLE_START_GPA,
  PVH_MEMMAP_GPA,
  PVH_MEMMAP_MAX_ENTRIES,
  PVH_MODLIST_GPA,
  PVH_START_INFO_GPA,
} from './layout.js';
import { hex, struct } from './struct.js';

export const E820_TYPE_RAM = 1;
export const E820_TYPE_RESERVED = 2;
export const E820_TYPE_ACPI = 3;
export const E820_TYPE_NVS = 4;
export const E820_TYPE_UNUSABLE = 5;

export interface E820Entry {
  readonly gpa: number;
  readonly sizeBytes: number;
  readonly type: number;
}

const PAGE_BYTES = 4096;
/** KVM_SET_IDENTITY_MAP_ADDR takes one page, KVM_SET_TSS_ADDR three; they sit back to back. */
const KVM_PRIVATE_END_GPA = KVM_TSS_GPA + 3 * PAGE_BYTES;

/**
 * The memory map of a guest with `ramBytes` of RAM:
 * - [0, EBDA_START_GPA) RAM: boot data (GDT, zero page, page tables, command line) lives here; Linux
 *   copies what it keeps and reserves the low 1 MiB itself.
 * - [EBDA_START_GPA, 1 MiB) reserved, as on a PC (EBDA, VGA hole, BIOS ROM). The ACPI tables at
 *   ACPI_START_GPA are inside it and stay plain "reserved" rather than E820_TYPE_ACPI: type 3 means
 *   "reclaimable once the tables are read", but Linux keeps the DSDT mapped and interprets it for
 *   the VM's lifetime, and the RSDP must stay in the BIOS area Linux scans (0xE0000-0xFFFFF).
 * - [1 MiB, min(ramBytes, MMIO_HOLE_START_GPA)) RAM.
 * - The pages KVM uses for its real-mode TSS and identity map (inside the MMIO hole) reserved, so
 *   nothing in the guest is ever placed there.
 * - Above 4 GiB, the RAM that did not fit below the hole.
 * - `reserved`: device ranges the guest must not use as RAM or hand out (the PCI ECAM window),
 *   merged in address order; none leaves the map as it always was.
 */
export function buildE820Map(ramBytes: number, reserved: readonly { gpa: number; sizeBytes: number }[] = []): E820Entry[] {
  if (!Number.isSafeInteger(ramBytes) || ramBytes % PAGE_BYTES !== 0 || ramBytes <= HIGH_MEMORY_GPA) {
    throw new BootError('bad-config', `guest RAM of ${ramBytes} bytes: it must be a whole number of 4 KiB pages above 1 MiB; raise --memory`);
  }
  const lowRamEndGpa = Math.min(ramBytes, MMIO_HOLE_START_GPA);
  const map: E820Entry[] = [
    { gpa: 0, sizeBytes: EBDA_START_GPA, type: E820_TYPE_RAM },
    { gpa: EBDA_START_GPA, sizeBytes: HIGH_MEMORY_GPA - EBDA_START_GPA, type: E820_TYPE_RESERVED },
    { gpa: HIGH_MEMORY_GPA, sizeBytes: lowRamEndGpa - HIGH_MEMORY_GPA, type: E820_TYPE_RAM },
    { gpa: KVM_IDENTITY_MAP_GPA, sizeBytes: KVM_PRIVATE_END_GPA - KVM_IDENTITY_MAP_GPA, type: E820_TYPE_RESERVED },
  ];
  if (ramBytes > MMIO_HOLE_START_GPA) {
    map.push({ gpa: HIGH_RAM_START_GPA, sizeBytes: ramBytes - MMIO_HOLE_START_GPA, type: E820_TYPE_RAM });
  }
  if (reserved.length === 0) return map;
  for (const r of reserved) {
    const clash = map.find((e) => r.gpa < e.gpa + e.sizeBytes && e.gpa < r.gpa + r.sizeBytes);
    if (clash) throw new BootError('bad-config', `reserved range ${hex(r.gpa)}+${hex(r.sizeBytes)} overlaps the e820 entry at ${hex(clash.gpa)}; move the device`);
    map.push({ gpa: r.gpa, sizeBytes: r.sizeBytes, type: E820_TYPE_RESERVED });
  }
  return map.sort((a, b) => a.gpa - b.gpa);
}

/** The highest RAM address below the MMIO hole (exclusive): where low RAM ends. */
export function lowRamEndGpa(map: readonly E820Entry[]): number {
  let end = 0;
  for (const entry of map) {
    if (entry.type === E820_TYPE_RAM && entry.gpa < MMIO_HOLE_START_GPA) end = Math.max(end, entry.gpa + entry.sizeBytes);
  }
  return end;
}

// ---- PVH (start_info.h) ----

export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;

/** struct hvm_start_info, version 1 (with the memmap fields). */
export const HVM_START_INFO = struct('hvm_start_info', 56, {
  magic: [0, 'u32'],
  version: [4, 'u32'],
  flags: [8, 'u32'],
  nr_modules: [12, 'u32'],
  modlist_paddr: [16, 'u64'],
  cmdline_paddr: [24, 'u64'],
  rsdp_paddr: [32, 'u64'],
  memmap_paddr: [40, 'u64'],
  memmap_entries: [48, 'u32'],
  reserved: [52, 'u32'],
});

export const HVM_MODLIST_ENTRY = struct('hvm_modlist_entry', 32, {
  paddr: [0, 'u64'],
  size: [8, 'u64'],
  cmdline_paddr: [16, 'u64'],
  reserved: [24, 'u64'],
});

export const HVM_MEMMAP_TABLE_ENTRY = struct('hvm_memmap_table_entry', 24, {
  addr: [0, 'u64'],
  size: [8, 'u64'],
  type: [16, 'u32'],
  reserved: [20, 'u32'],
});

if (PVH_MEMMAP_GPA < PVH_START_INFO_GPA + HVM_START_INFO.sizeBytes) {
  throw new Error('layout: PVH_MEMMAP_GPA overlaps hvm_start_info');
}

export interface PvhStartInfoInput {
  readonly cmdlineGpa: number;
  readonly rsdpGpa: number;
  readonly memmap: readonly E820Entry[];
  /** The initrd, passed as the first (only) module, as Linux's PVH entry expects. */
  readonly initrd?: { readonly gpa: number; readonly sizeBytes: number };
}

/**
 * hvm_start_info at PVH_START_INFO_GPA, its memmap at PVH_MEMMAP_GPA and the module list at
 * PVH_MODLIST_GPA, as one block of bytes to write at `gpa`. Linux's PVH entry needs the memmap:
 * without it, it asks Xen for the map with a hypercall.
 */
export function buildPvhStartInfo(input: PvhStartInfoInput): { gpa: number; bytes: Uint8Array } {
  const { memmap, initrd } = input;
  if (memmap.length === 0 || memmap.length > PVH_MEMMAP_MAX_ENTRIES) {
    throw new BootError('does-not-fit', `PVH memory map has ${memmap.length} entries; it must have 1 to ${PVH_MEMMAP_MAX_ENTRIES}`);
  }
  const endGpa = initrd ? PVH_MODLIST_GPA + HVM_MODLIST_ENTRY.sizeBytes : PVH_MEMMAP_GPA + memmap.length * HVM_MEMMAP_TABLE_ENTRY.sizeBytes;
  const bytes = new Uint8Array(endGpa - PVH_START_INFO_GPA);

  HVM_START_INFO.encode(
    {
      magic: XEN_HVM_START_MAGIC_VALUE,
      version: 1,
      nr_modules: initrd ? 1 : 0,
      modlist_paddr: initrd ? PVH_MODLIST_GPA : 0,
      cmdline_paddr: input.cmdlineGpa,
      rsdp_paddr: input.rsdpGpa,
      memmap_paddr: PVH_MEMMAP_GPA,
      memmap_entries: memmap.length,
    },
    bytes,
    0,
  );
  memmap.forEach((entry, i) => {
    HVM_MEMMAP_TABLE_ENTRY.encode(
      { addr: entry.gpa, size: entry.sizeBytes, type: entry.type },
      bytes,
      PVH_MEMMAP_GPA - PVH_START_INFO_GPA + i * HVM_MEMMAP_TABLE_ENTRY.sizeBytes,
    );
  });
  if (initrd) {
    if (initrd.sizeBytes <= 0) throw new BootError('bad-config', `initrd at ${hex(initrd.gpa)} is empty; give a non-empty initrd or none`);
    HVM_MODLIST_ENTRY.encode({ paddr: initrd.gpa, size: initrd.sizeBytes }, bytes, PVH_MODLIST_GPA - PVH_START_INFO_GPA);
  }
  return { gpa: PVH_START_INFO_GPA, bytes };
}
