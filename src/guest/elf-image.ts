// Wraps a flat guest program in the smallest ELF64 executable that PVH loaders boot (tsvmm's, and
// QEMU's `-M microvm -kernel`): one PT_LOAD segment and one PT_NOTE carrying the PVH entry.
// Spec: System V gABI ch. 4-5 and include/uapi/linux/elf.h (Elf64_Ehdr, Elf64_Phdr, Elf64_Nhdr);
// xen/include/public/elfnote.h (XEN_ELFNOTE_PHYS32_ENTRY).
//
// It will not: emit section headers or symbols (loaders only read program headers), or more than
// one segment. The file's layout is: ELF header, 2 program headers, the note, zero padding to
// SEGMENT_FILE_OFFSET, then the segment's bytes.

import { GuestBuildError } from './guest-error.js';

import {
  ELF64_EHDR, ELF64_EHDR_SIZE, ELF64_NHDR, ELF64_NHDR_SIZE, ELF64_PHDR, ELF64_PHDR_SIZE, ELFCLASS64, ELFDATA2LSB, ELFMAG,
  EI_CLASS, EI_DATA, EI_VERSION, EM_X86_64, ET_EXEC, EV_CURRENT, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE,
  XEN_ELFNOTE_PHYS32_ENTRY, XEN_NOTE_NAME, type FieldSpec,
} from '../boot/elf-abi.js';

export * from '../boot/elf-abi.js';

/** Program header order in the images built here. */
export const LOAD_PHDR_INDEX = 0;
export const NOTE_PHDR_INDEX = 1;
const PHDR_COUNT = 2;
/** Where the note starts: right after the program headers. */
export const NOTE_FILE_OFFSET = ELF64_EHDR_SIZE + PHDR_COUNT * ELF64_PHDR_SIZE;
/** The segment is page-aligned in the file, so p_offset ≡ p_vaddr (mod p_align) for any page-aligned load address. */
export const SEGMENT_FILE_OFFSET = 0x1000;
const SEGMENT_ALIGN_BYTES = 0x1000;

export interface PvhElfSpec {
  /** Guest-physical address of the segment's first byte (p_paddr, and p_vaddr: identity). */
  readonly loadGpa: number;
  /** The segment's contents (p_filesz bytes). */
  readonly segment: Uint8Array;
  /** Bytes the segment occupies in memory; the loader zeroes past `segment`. Default: segment.length. */
  readonly memSizeBytes?: number;
  /** Guest-physical PVH entry point: 32-bit protected mode, EBX = struct hvm_start_info. */
  readonly entryGpa: number;
}

/** Builds the ELF file. Throws if the entry is not inside the segment or the addresses do not fit 32 bits. */
export function buildPvhElf(spec: PvhElfSpec): Uint8Array {
  const memSizeBytes = spec.memSizeBytes ?? spec.segment.length;
  if (spec.loadGpa % SEGMENT_ALIGN_BYTES !== 0) {
    throw new GuestBuildError('layout', `PVH ELF: load address 0x${spec.loadGpa.toString(16)} is not 4 KiB aligned`);
  }
  if (memSizeBytes < spec.segment.length) throw new GuestBuildError('layout', 'PVH ELF: memSizeBytes is smaller than the segment');
  const endGpa = spec.loadGpa + memSizeBytes;
  if (endGpa > 2 ** 32) throw new GuestBuildError('layout', `PVH ELF: the segment ends at 0x${endGpa.toString(16)}, above 4 GiB (PVH entry is 32-bit)`);
  if (spec.entryGpa < spec.loadGpa || spec.entryGpa >= spec.loadGpa + spec.segment.length) {
    throw new GuestBuildError('layout', `PVH ELF: entry 0x${spec.entryGpa.toString(16)} is outside the segment's file bytes`);
  }

  const name = XEN_NOTE_NAME + '\0';
  const noteBytes = ELF64_NHDR_SIZE + align4(name.length) + align4(4);
  if (NOTE_FILE_OFFSET + noteBytes > SEGMENT_FILE_OFFSET) throw new GuestBuildError('layout', 'PVH ELF: headers overflow the first page');

  const file = new Uint8Array(SEGMENT_FILE_OFFSET + spec.segment.length);
  const view = new DataView(file.buffer);
  const put = (base: number, [offset, size]: FieldSpec, value: number): void => {
    const at = base + offset;
    if (size === 1) view.setUint8(at, value);
    else if (size === 2) view.setUint16(at, value, true);
    else if (size === 4) view.setUint32(at, value, true);
    else if (size === 8) view.setBigUint64(at, BigInt(value), true);
    else throw new GuestBuildError('layout', 'PVH ELF: byte-array fields are written directly');
  };

  // ELF header.
  file.set(ELFMAG, 0);
  file[EI_CLASS] = ELFCLASS64;
  file[EI_DATA] = ELFDATA2LSB;
  file[EI_VERSION] = EV_CURRENT; // EI_OSABI (ELFOSABI_NONE) and the padding stay 0
  put(0, ELF64_EHDR.e_type, ET_EXEC);
  put(0, ELF64_EHDR.e_machine, EM_X86_64);
  put(0, ELF64_EHDR.e_version, EV_CURRENT);
  put(0, ELF64_EHDR.e_entry, spec.entryGpa); // unused by PVH loaders (they take the note), but keep it truthful
  put(0, ELF64_EHDR.e_phoff, ELF64_EHDR_SIZE);
  put(0, ELF64_EHDR.e_ehsize, ELF64_EHDR_SIZE);
  put(0, ELF64_EHDR.e_phentsize, ELF64_PHDR_SIZE);
  put(0, ELF64_EHDR.e_phnum, PHDR_COUNT);
  put(0, ELF64_EHDR.e_shentsize, 64); // sizeof(Elf64_Shdr), though there are none (e_shoff = e_shnum = 0)

  // PT_LOAD: the whole program, identity-mapped (p_vaddr = p_paddr; paging is off at PVH entry).
  const load = ELF64_EHDR_SIZE + LOAD_PHDR_INDEX * ELF64_PHDR_SIZE;
  put(load, ELF64_PHDR.p_type, PT_LOAD);
  put(load, ELF64_PHDR.p_flags, PF_R | PF_W | PF_X);
  put(load, ELF64_PHDR.p_offset, SEGMENT_FILE_OFFSET);
  put(load, ELF64_PHDR.p_vaddr, spec.loadGpa);
  put(load, ELF64_PHDR.p_paddr, spec.loadGpa);
  put(load, ELF64_PHDR.p_filesz, spec.segment.length);
  put(load, ELF64_PHDR.p_memsz, memSizeBytes);
  put(load, ELF64_PHDR.p_align, SEGMENT_ALIGN_BYTES);

  // PT_NOTE: "Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, u32 entry.
  const note = ELF64_EHDR_SIZE + NOTE_PHDR_INDEX * ELF64_PHDR_SIZE;
  put(note, ELF64_PHDR.p_type, PT_NOTE);
  put(note, ELF64_PHDR.p_flags, PF_R);
  put(note, ELF64_PHDR.p_offset, NOTE_FILE_OFFSET);
  put(note, ELF64_PHDR.p_filesz, noteBytes);
  put(note, ELF64_PHDR.p_memsz, 0); // not loaded
  put(note, ELF64_PHDR.p_align, 4);
  put(NOTE_FILE_OFFSET, ELF64_NHDR.n_namesz, name.length);
  put(NOTE_FILE_OFFSET, ELF64_NHDR.n_descsz, 4);
  put(NOTE_FILE_OFFSET, ELF64_NHDR.n_type, XEN_ELFNOTE_PHYS32_ENTRY);
  for (let i = 0; i < name.length; i++) file[NOTE_FILE_OFFSET + ELF64_NHDR_SIZE + i] = name.charCodeAt(i);
  view.setUint32(NOTE_FILE_OFFSET + ELF64_NHDR_SIZE + align4(name.length), spec.entryGpa, true);

  file.set(spec.segment, SEGMENT_FILE_OFFSET);
  return file;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
