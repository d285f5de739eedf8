// ELF images: the loadable segments and the PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY).
// Spec: System V gABI (ELF header, program headers, notes); xen/include/public/elfnote.h.
import { BootError } from './boot-error.js';
import {
  EI_CLASS, EI_DATA, ELF32_EHDR, ELF32_EHDR_SIZE, ELF32_PHDR, ELF32_PHDR_SIZE, ELF64_EHDR, ELF64_EHDR_SIZE, ELF64_NHDR,
  ELF64_NHDR_SIZE, ELF64_PHDR, ELF64_PHDR_SIZE, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_386, EM_X86_64, PT_LOAD,
  PT_NOTE, XEN_ELFNOTE_PHYS32_ENTRY, XEN_NOTE_NAME,
} from './elf-abi.js';

export { XEN_ELFNOTE_PHYS32_ENTRY };

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
  return bytes.length >= ELFMAG.length && ELFMAG.every((b, i) => bytes[i] === b);
}

export function parseElf(bytes: Uint8Array, what = 'kernel'): ElfImage {
  if (!isElf(bytes)) throw new BootError('bad-elf', `${what}: not an ELF file`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const cls = bytes[EI_CLASS];
  if (bytes[EI_DATA] !== ELFDATA2LSB) throw new BootError('bad-elf', `${what}: big-endian ELF; give an x86 image`);
  const is64 = cls === ELFCLASS64;
  if (!is64 && cls !== ELFCLASS32) throw new BootError('bad-elf', `${what}: unknown ELF class ${cls}`);
  const E = is64 ? ELF64_EHDR : ELF32_EHDR;
  const P = is64 ? ELF64_PHDR : ELF32_PHDR;
  if (bytes.length < (is64 ? ELF64_EHDR_SIZE : ELF32_EHDR_SIZE)) throw new BootError('bad-elf', `${what}: truncated ELF header`);
  const machine = dv.getUint16(E.e_machine[0], true);
  if (machine !== EM_X86_64 && machine !== EM_386) {
    throw new BootError('bad-elf', `${what}: ELF machine ${machine} is not x86; give an x86-64 or i386 image`);
  }
  // Address-sized fields are 8 bytes in ELF64 and 4 in ELF32; the tables say which.
  const u = (field: readonly [number, number]) =>
    (field[1] === 8 ? Number(dv.getBigUint64(field[0], true)) : field[1] === 4 ? dv.getUint32(field[0], true) : dv.getUint16(field[0], true));
  const uAt = (base: number, field: readonly [number, number]) => u([base + field[0], field[1]]);
  const entry = BigInt(u(E.e_entry));
  const phoff = u(E.e_phoff);
  const phentsize = u(E.e_phentsize);
  const phnum = u(E.e_phnum);
  if (phoff + phnum * phentsize > bytes.length || phentsize < (is64 ? ELF64_PHDR_SIZE : ELF32_PHDR_SIZE)) {
    throw new BootError('bad-elf', `${what}: program headers run past the end of the file`);
  }
  const segments: ElfSegment[] = [];
  let pvhEntryGpa: number | null = null;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = uAt(ph, P.p_type);
    const offset = uAt(ph, P.p_offset);
    const paddr = uAt(ph, P.p_paddr);
    const filesz = uAt(ph, P.p_filesz);
    const memsz = uAt(ph, P.p_memsz);
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
  // Elf32_Nhdr and Elf64_Nhdr are the same three u32s.
  while (p + ELF64_NHDR_SIZE <= end) {
    const namesz = dv.getUint32(p + ELF64_NHDR.n_namesz[0], true);
    const descsz = dv.getUint32(p + ELF64_NHDR.n_descsz[0], true);
    const type = dv.getUint32(p + ELF64_NHDR.n_type[0], true);
    const nameOff = p + ELF64_NHDR_SIZE;
    const descOff = nameOff + align4(namesz);
    if (descOff + descsz > end) break;
    const name = Buffer.from(bytes.subarray(nameOff, nameOff + Math.max(0, namesz - 1))).toString('latin1');
    if (name === XEN_NOTE_NAME && type === XEN_ELFNOTE_PHYS32_ENTRY && descsz >= 4) {
      return dv.getUint32(descOff, true);
    }
    p = descOff + align4(descsz);
  }
  return null;
}
