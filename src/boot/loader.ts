// Puts a kernel into guest RAM with everything its boot protocol needs, and says what CPU state
// to start it in: PVH ELF images (test guests, vmlinux) and bzImages (Linux 64-bit boot protocol).
import type { Regs, Sregs } from '../hypervisor/types.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { BootError } from './boot-error.js';
import { pvhBootState, writeBootGdt } from './cpu-state.js';
import { isElf, parseElf } from './elf.js';
import * as layout from './layout.js';

export interface GuestImage {
  kernel: Uint8Array;
  kernelName: string;
  initrd: Uint8Array | null;
  cmdline: string;
  cpus: number;
  memoryBytes: number;
}

export interface LoadedGuest {
  protocol: 'pvh' | 'linux64';
  entryGpa: number;
  bootState(current: Sregs): { regs: Regs; sregs: Sregs };
}

export function loadGuest(mem: GuestMemory, image: GuestImage): LoadedGuest {
  writeBootGdt(mem);
  if (isElf(image.kernel)) return loadPvhElf(mem, image);
  throw new BootError('not-a-kernel', `${image.kernelName}: not an ELF image or bzImage; give a bzImage, a vmlinux or a PVH ELF`);
}

function loadPvhElf(mem: GuestMemory, image: GuestImage): LoadedGuest {
  const elf = parseElf(image.kernel, image.kernelName);
  if (elf.pvhEntryGpa === null) {
    throw new BootError('no-entry', `${image.kernelName}: ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build the kernel with CONFIG_PVH or give its bzImage`);
  }
  let endGpa = 0;
  for (const s of elf.segments) {
    if (!mem.contains(s.gpa, s.memSizeBytes)) {
      throw new BootError('does-not-fit', `${image.kernelName}: segment at 0x${s.gpa.toString(16)} (0x${s.memSizeBytes.toString(16)} bytes) is outside guest RAM; raise --memory`);
    }
    mem.write(s.gpa, image.kernel.subarray(s.fileOffset, s.fileOffset + s.fileSizeBytes));
    mem.fill(s.gpa + s.fileSizeBytes, s.memSizeBytes - s.fileSizeBytes, 0);
    endGpa = Math.max(endGpa, s.gpa + s.memSizeBytes);
  }
  writeCmdline(mem, image);
  // TEMPORARY: replaced by src/boot/e820.ts buildPvhStartInfo once it lands.
  mem.fill(layout.PVH_START_INFO_GPA, 0x1000, 0);
  mem.writeU32(layout.PVH_START_INFO_GPA, 0x336ec578);
  mem.writeU32(layout.PVH_START_INFO_GPA + 4, 1);
  mem.writeU64(layout.PVH_START_INFO_GPA + 16, BigInt(layout.CMDLINE_GPA));
  const entry = elf.pvhEntryGpa;
  return {
    protocol: 'pvh',
    entryGpa: entry,
    bootState: (current) => pvhBootState(current, entry, layout.PVH_START_INFO_GPA),
  };
}

function writeCmdline(mem: GuestMemory, image: GuestImage): void {
  const bytes = Buffer.from(image.cmdline + '\0', 'latin1');
  if (bytes.length > layout.CMDLINE_MAX_BYTES) {
    throw new BootError('cmdline-too-long', `--append: command line is ${bytes.length - 1} bytes, more than the ${layout.CMDLINE_MAX_BYTES - 1} tsvmm allows; shorten it`);
  }
  mem.write(layout.CMDLINE_GPA, bytes);
}
