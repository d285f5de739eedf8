// Puts a kernel into guest RAM with everything its boot protocol needs, and says what CPU state
// to start it in: PVH ELF images (test guests, vmlinux with a PVH note) and bzImages (Linux
// 64-bit boot protocol). Specs: Documentation/arch/x86/boot.rst; Xen docs/misc/pvh.pandoc.
import type { Regs, Sregs } from '../hypervisor/types.js';
import { RamLayout, type BootMemory } from '../memory/guest-memory.js';
import { buildAcpiTables, type PciHostBridgeAcpi, type VirtioMmioAcpiDevice } from './acpi.js';
import { BootError } from './boot-error.js';
import { buildBootParams, chooseInitrdGpa, checkKernelFits, encodeCmdline } from './bootparams.js';
import { parseBzImage } from './bzimage.js';
import { linux64BootState, pvhBootState, writeBootGdt, writeIdentityPageTables } from './cpu-state.js';
import { buildE820Map, buildPvhStartInfo, type E820Entry } from './e820.js';
import { isElf, parseElf } from './elf.js';
import * as layout from './layout.js';

export interface GuestImage {
  kernel: Uint8Array;
  kernelName: string;
  initrd: Uint8Array | null;
  cmdline: string;
  cpus: number;
  memoryBytes: number;
  /** virtio-mmio devices for the DSDT (LNRO0005 entries); none leaves the tables as without virtio. */
  virtioMmio?: readonly VirtioMmioAcpiDevice[];
  /** A PCI host bridge (MCFG, PNP0A08, its ECAM reserved in e820); absent, tables and map are as without PCI. */
  pci?: PciHostBridgeAcpi;
}

export interface LoadedGuest {
  protocol: 'pvh' | 'linux64';
  entryGpa: number;
  e820: readonly E820Entry[];
  rsdpGpa: number;
  initrd: { gpa: number; sizeBytes: number } | null;
  bootState(current: Sregs): { regs: Regs; sregs: Sregs };
}

/** Stack for the 64-bit entry: below the zero page, in low RAM the kernel does not claim early. */
const BOOT_STACK_GPA = 0x8ff0;
const PAGE_BYTES = 4096;
const BZIMAGE_SIGNATURE_OFFSET = 0x202; // "HdrS"

export function isBzImage(bytes: Uint8Array): boolean {
  return bytes.length > BZIMAGE_SIGNATURE_OFFSET + 4
    && Buffer.from(bytes.subarray(BZIMAGE_SIGNATURE_OFFSET, BZIMAGE_SIGNATURE_OFFSET + 4)).toString('latin1') === 'HdrS';
}

/**
 * Everything loadGuest would refuse (not a kernel, no PVH note, kernel, initrd or command line
 * that do not fit), found without guest RAM: the CLI calls it before it opens /dev/kvm.
 */
export function checkGuest(image: GuestImage): void {
  loadGuest(new RamLayout(layout.ramRegions(image.memoryBytes)), image);
}

export function loadGuest(mem: BootMemory, image: GuestImage): LoadedGuest {
  const pci = image.pci;
  const e820 = buildE820Map(image.memoryBytes, pci ? [{ gpa: pci.ecamGpa, sizeBytes: (pci.busCount ?? 1) * layout.PCI_ECAM_SIZE_BYTES }] : []);
  const acpi = buildAcpiTables({ cpus: image.cpus, virtioMmio: image.virtioMmio ?? [], ...(pci ? { pci } : {}) });
  writeBootGdt(mem);
  mem.write(acpi.baseGpa, acpi.bytes);
  if (isElf(image.kernel)) return loadPvhElf(mem, image, e820, acpi.rsdpGpa);
  if (isBzImage(image.kernel)) return loadBzImage(mem, image, e820, acpi.rsdpGpa);
  throw new BootError('not-a-kernel', `${image.kernelName}: not a bzImage or an ELF image (no "HdrS" at 0x202, no ELF magic); give a bzImage, a vmlinux or a PVH ELF`);
}

function loadPvhElf(mem: BootMemory, image: GuestImage, e820: readonly E820Entry[], rsdpGpa: number): LoadedGuest {
  const elf = parseElf(image.kernel, image.kernelName);
  if (elf.pvhEntryGpa === null) {
    throw new BootError('no-entry', `${image.kernelName}: ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build the kernel with CONFIG_PVH or give its bzImage`);
  }
  let kernelEndGpa = 0;
  for (const s of elf.segments) {
    if (s.gpa < layout.HIGH_MEMORY_GPA || !mem.contains(s.gpa, s.memSizeBytes)) {
      throw new BootError('does-not-fit', `${image.kernelName}: segment at 0x${s.gpa.toString(16)} (0x${s.memSizeBytes.toString(16)} bytes) is outside guest RAM above 1 MiB; raise --memory or relink the image`);
    }
    mem.write(s.gpa, image.kernel.subarray(s.fileOffset, s.fileOffset + s.fileSizeBytes));
    mem.fill(s.gpa + s.fileSizeBytes, s.memSizeBytes - s.fileSizeBytes, 0);
    kernelEndGpa = Math.max(kernelEndGpa, s.gpa + s.memSizeBytes);
  }
  const cmdline = encodeCmdline(image.cmdline);
  mem.write(layout.CMDLINE_GPA, cmdline);
  const initrd = image.initrd ? placeInitrdHigh(mem, image, kernelEndGpa) : null;
  const startInfo = buildPvhStartInfo({ cmdlineGpa: layout.CMDLINE_GPA, rsdpGpa, memmap: e820, initrd: initrd ?? undefined });
  mem.write(startInfo.gpa, startInfo.bytes);
  const entry = elf.pvhEntryGpa;
  return {
    protocol: 'pvh', entryGpa: entry, e820, rsdpGpa, initrd,
    bootState: (current) => pvhBootState(current, entry, startInfo.gpa),
  };
}

/** Initrd for a PVH kernel: page-aligned, as high as possible in low RAM, above the kernel. */
function placeInitrdHigh(mem: BootMemory, image: GuestImage, kernelEndGpa: number): { gpa: number; sizeBytes: number } {
  const initrd = image.initrd!;
  const lowEnd = Math.min(image.memoryBytes, layout.MMIO_HOLE_START_GPA);
  const gpa = Math.floor((lowEnd - initrd.length) / PAGE_BYTES) * PAGE_BYTES;
  if (gpa < kernelEndGpa) {
    const needMiB = Math.ceil((kernelEndGpa + initrd.length) / 2 ** 20) + 1;
    throw new BootError('does-not-fit', `--initrd: ${initrd.length} bytes do not fit between the kernel (ends at 0x${kernelEndGpa.toString(16)}) and the end of RAM; give at least --memory ${needMiB}M or a smaller initrd`);
  }
  mem.write(gpa, initrd);
  return { gpa, sizeBytes: initrd.length };
}

function loadBzImage(mem: BootMemory, image: GuestImage, e820: readonly E820Entry[], rsdpGpa: number): LoadedGuest {
  const bz = parseBzImage(image.kernel, image.kernelName);
  if (bz.entry64Offset === null) {
    throw new BootError('unsupported-kernel', `${image.kernelName}: a 32-bit-only kernel (no XLF_KERNEL_64); tsvmm boots 64-bit kernels`);
  }
  checkKernelFits(bz, image.memoryBytes);
  mem.write(bz.loadGpa, bz.kernel);
  let initrd: { gpa: number; sizeBytes: number } | null = null;
  if (image.initrd) {
    const gpa = chooseInitrdGpa(bz, image.memoryBytes, image.initrd.length);
    mem.write(gpa, image.initrd);
    initrd = { gpa, sizeBytes: image.initrd.length };
  }
  const params = buildBootParams({ kernel: bz, cmdline: image.cmdline, e820, initrd: initrd ?? undefined, rsdpGpa });
  mem.write(params.cmdlineGpa, params.cmdline);
  mem.write(layout.ZERO_PAGE_GPA, params.zeroPage);
  writeIdentityPageTables(mem);
  const entry = bz.loadGpa + bz.entry64Offset;
  return {
    protocol: 'linux64', entryGpa: entry, e820, rsdpGpa, initrd,
    bootState: (current) => linux64BootState(current, entry, layout.ZERO_PAGE_GPA, BOOT_STACK_GPA),
  };
}
