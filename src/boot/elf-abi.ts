// The ELF ABI as tsvmm reads it (src/boot/elf.ts) and writes it (src/guest/elf-image.ts): header
// layouts as tables checked against their C sizeof at load, and the constants both sides name.
// Spec: System V gABI ch. 4-5; include/uapi/linux/elf.h; xen/include/public/elfnote.h.

/** A field: [offset, size in bytes]. Tables below are checked against their C sizeof at load. */
export type FieldSpec = readonly [offset: number, sizeBytes: 1 | 2 | 4 | 8 | 16];

function checkLayout(name: string, sizeBytes: number, fields: Record<string, FieldSpec>): void {
  let end = 0;
  for (const [field, [offset, size]] of Object.entries(fields)) {
    if (offset !== end) throw new Error(`${name}.${field} is at ${offset}, expected ${end}: the table has a hole or overlap`);
    end = offset + size;
  }
  if (end !== sizeBytes) throw new Error(`${name} tables ${end} bytes but sizeof is ${sizeBytes}`);
}

/** Elf64_Ehdr (include/uapi/linux/elf.h), 64 bytes. */
export const ELF64_EHDR = {
  e_ident: [0, 16],
  e_type: [16, 2],
  e_machine: [18, 2],
  e_version: [20, 4],
  e_entry: [24, 8],
  e_phoff: [32, 8],
  e_shoff: [40, 8],
  e_flags: [48, 4],
  e_ehsize: [52, 2],
  e_phentsize: [54, 2],
  e_phnum: [56, 2],
  e_shentsize: [58, 2],
  e_shnum: [60, 2],
  e_shstrndx: [62, 2],
} as const satisfies Record<string, FieldSpec>;
export const ELF64_EHDR_SIZE = 64;

/** Elf64_Phdr (include/uapi/linux/elf.h), 56 bytes. */
export const ELF64_PHDR = {
  p_type: [0, 4],
  p_flags: [4, 4],
  p_offset: [8, 8],
  p_vaddr: [16, 8],
  p_paddr: [24, 8],
  p_filesz: [32, 8],
  p_memsz: [40, 8],
  p_align: [48, 8],
} as const satisfies Record<string, FieldSpec>;
export const ELF64_PHDR_SIZE = 56;

/** Elf64_Nhdr (include/uapi/linux/elf.h), 12 bytes; the name and then the descriptor follow, each padded to 4. */
export const ELF64_NHDR = {
  n_namesz: [0, 4],
  n_descsz: [4, 4],
  n_type: [8, 4],
} as const satisfies Record<string, FieldSpec>;
export const ELF64_NHDR_SIZE = 12;

checkLayout('Elf64_Ehdr', ELF64_EHDR_SIZE, ELF64_EHDR);
checkLayout('Elf64_Phdr', ELF64_PHDR_SIZE, ELF64_PHDR);
checkLayout('Elf64_Nhdr', ELF64_NHDR_SIZE, ELF64_NHDR);

export const ELFMAG = [0x7f, 0x45, 0x4c, 0x46] as const; // "\x7fELF"
export const EI_CLASS = 4;
export const EI_DATA = 5;
export const EI_VERSION = 6;
export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const EV_CURRENT = 1;
export const ET_EXEC = 2;
export const EM_X86_64 = 62;
export const PT_LOAD = 1;
export const PT_NOTE = 4;
export const PF_X = 1;
export const PF_W = 2;
export const PF_R = 4;
/** The note whose descriptor is the 32-bit physical PVH entry point (xen/include/public/elfnote.h). */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
export const XEN_NOTE_NAME = 'Xen';

/** Elf32_Ehdr (include/uapi/linux/elf.h), 52 bytes. */
export const ELF32_EHDR = {
  e_ident: [0, 16],
  e_type: [16, 2],
  e_machine: [18, 2],
  e_version: [20, 4],
  e_entry: [24, 4],
  e_phoff: [28, 4],
  e_shoff: [32, 4],
  e_flags: [36, 4],
  e_ehsize: [40, 2],
  e_phentsize: [42, 2],
  e_phnum: [44, 2],
  e_shentsize: [46, 2],
  e_shnum: [48, 2],
  e_shstrndx: [50, 2],
} as const satisfies Record<string, FieldSpec>;
export const ELF32_EHDR_SIZE = 52;

/** Elf32_Phdr (include/uapi/linux/elf.h), 32 bytes: note p_flags moves after p_memsz. */
export const ELF32_PHDR = {
  p_type: [0, 4],
  p_offset: [4, 4],
  p_vaddr: [8, 4],
  p_paddr: [12, 4],
  p_filesz: [16, 4],
  p_memsz: [20, 4],
  p_flags: [24, 4],
  p_align: [28, 4],
} as const satisfies Record<string, FieldSpec>;
export const ELF32_PHDR_SIZE = 32;

checkLayout('Elf32_Ehdr', ELF32_EHDR_SIZE, ELF32_EHDR);
checkLayout('Elf32_Phdr', ELF32_PHDR_SIZE, ELF32_PHDR);

export const ELFCLASS32 = 1;
export const EM_386 = 3;
