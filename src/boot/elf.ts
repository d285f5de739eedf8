// ELF images: the loadable segments and the PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY).
// Spec: System V gABI (ELF header, program headers, notes); xen/include/public/elfnote.h.
import { BootError } from './boot-error.js';

export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
const PT_LOAD = 1;
const PT_NOTE = 4;
const EM_386 = 3;
const EM_X86_64 = 62;
const ELFCLASS32 = 1;
const ELFCLASS64 = 2;

export interface ElfSegment {
  /** physical load address (p_paddr) */
  readonly gpa: number;
  readonly fileOffset: number;
  readonly fileSizeBytes: number;
  readonly memSizeBytes: number;
}

export interface ElfImage {
  readonly class: 32 | 64;
  readonly entry: bigint;
  readonly segments: readonly ElfSegment[];
  /** the 32-bit physical PVH entry, when the image carries the note */
  readonly pvhEntryGpa: number | null;
}

export function isElf(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46;
}

export function parseElf(bytes: Uint8Array, what = 'kernel'): ElfImage {
  if (!isElf(bytes)) throw new BootError('bad-elf', `${what}: not an ELF file`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const cls = bytes[4];
  if (bytes[5] !== 1) throw new BootError('bad-elf', `${what}: big-endian ELF; give an x86 image`);
  const is64 = cls === ELFCLASS64;
  if (!is64 && cls !== ELFCLASS32) throw new BootError('bad-elf', `${what}: unknown ELF class ${cls}`);
  const need = is64 ? 64 : 52;
  if (bytes.length < need) throw new BootError('bad-elf', `${what}: truncated ELF header`);
  const machine = dv.getUint16(18, true);
  if (machine !== EM_X86_64 && machine !== EM_386) {
    throw new BootError('bad-elf', `${what}: ELF machine ${machine} is not x86; give an x86-64 or i386 image`);
  }
  const u = (off: number) => (is64 ? Number(dv.getBigUint64(off, true)) : dv.getUint32(off, true));
  const entry = is64 ? dv.getBigUint64(24, true) : BigInt(dv.getUint32(24, true));
  const phoff = u(is64 ? 32 : 28);
  const phentsize = dv.getUint16(is64 ? 54 : 42, true);
  const phnum = dv.getUint16(is64 ? 56 : 44, true);
  if (phoff + phnum * phentsize > bytes.length || phentsize < (is64 ? 56 : 32)) {
    throw new BootError('bad-elf', `${what}: program headers run past the end of the file`);
  }
  const segments: ElfSegment[] = [];
  let pvhEntryGpa: number | null = null;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = dv.getUint32(ph, true);
    const offset = u(ph + (is64 ? 8 : 4));
    const paddr = u(ph + (is64 ? 24 : 12));
    const filesz = u(ph + (is64 ? 32 : 16));
    const memsz = u(ph + (is64 ? 40 : 20));
    if (type === PT_LOAD) {
      if (offset + filesz > bytes.length || filesz > memsz) {
        throw new BootError('bad-elf', `${what}: segment ${i} (offset 0x${offset.toString(16)}, size 0x${filesz.toString(16)}) is outside the file`);
      }
      segments.push({ gpa: paddr, fileOffset: offset, fileSizeBytes: filesz, memSizeBytes: memsz });
    } else if (type === PT_NOTE) {
      const found = findPvhNote(bytes, dv, offset, Math.min(filesz, bytes.length - offset));
      if (found !== null) pvhEntryGpa = found;
    }
  }
  if (segments.length === 0) throw new BootError('bad-elf', `${what}: ELF has no loadable segment`);
  return { class: is64 ? 64 : 32, entry, segments, pvhEntryGpa };
}

function findPvhNote(bytes: Uint8Array, dv: DataView, start: number, len: number): number | null {
  const align4 = (n: number) => (n + 3) & ~3;
  let p = start;
  const end = start + len;
  while (p + 12 <= end) {
    const namesz = dv.getUint32(p, true);
    const descsz = dv.getUint32(p + 4, true);
    const type = dv.getUint32(p + 8, true);
    const nameOff = p + 12;
    const descOff = nameOff + align4(namesz);
    if (descOff + descsz > end) break;
    const name = Buffer.from(bytes.subarray(nameOff, nameOff + Math.max(0, namesz - 1))).toString('latin1');
    if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY && descsz >= 4) {
      return dv.getUint32(descOff, true);
    }
    p = descOff + align4(descsz);
  }
  return null;
}
