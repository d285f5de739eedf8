// The default guest's ELF image: well-formed headers, the PVH note, the entry inside the segment.
// (Booting it is tested with the VMM; by hand with QEMU: see the comment in default-guest.ts.)
import test from 'node:test';
import assert from 'node:assert/strict';
import { HIGH_MEMORY_GPA } from '../boot/layout.js';
import {
  DEFAULT_GUEST_EXIT, HVM_MEMMAP_ENTRY, HVM_MEMMAP_ENTRY_SIZE, HVM_START_INFO, HVM_START_INFO_SIZE,
  TRAMPOLINE_GPA, assembleDefaultGuest, buildDefaultGuest,
} from './default-guest.js';
import {
  EI_CLASS, EI_DATA, ELF64_EHDR, ELF64_EHDR_SIZE, ELF64_NHDR, ELF64_NHDR_SIZE, ELF64_PHDR, ELF64_PHDR_SIZE,
  ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, ET_EXEC, PT_LOAD, PT_NOTE, XEN_ELFNOTE_PHYS32_ENTRY, buildPvhElf,
} from './elf-image.js';

type Field = readonly [offset: number, sizeBytes: number];

/** Reads an ELF64 file the way a PVH loader does, with nothing taken from elf-image.ts but the tables. */
function readElf(file: Uint8Array) {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const get = (base: number, [offset, size]: Field): number => {
    const at = base + offset;
    if (size === 2) return view.getUint16(at, true);
    if (size === 4) return view.getUint32(at, true);
    if (size === 8) return Number(view.getBigUint64(at, true));
    throw new Error(`no reader for a ${size}-byte field`);
  };
  const phoff = get(0, ELF64_EHDR.e_phoff);
  const phnum = get(0, ELF64_EHDR.e_phnum);
  const phdrs = Array.from({ length: phnum }, (_, i) => {
    const base = phoff + i * ELF64_PHDR_SIZE;
    return {
      type: get(base, ELF64_PHDR.p_type),
      offset: get(base, ELF64_PHDR.p_offset),
      vaddr: get(base, ELF64_PHDR.p_vaddr),
      paddr: get(base, ELF64_PHDR.p_paddr),
      filesz: get(base, ELF64_PHDR.p_filesz),
      memsz: get(base, ELF64_PHDR.p_memsz),
      align: get(base, ELF64_PHDR.p_align),
    };
  });
  const notes: { name: string; type: number; desc: Uint8Array }[] = [];
  for (const ph of phdrs.filter((p) => p.type === PT_NOTE)) {
    for (let p = ph.offset; p + ELF64_NHDR_SIZE <= ph.offset + ph.filesz; ) {
      const namesz = get(p, ELF64_NHDR.n_namesz);
      const descsz = get(p, ELF64_NHDR.n_descsz);
      const nameAt = p + ELF64_NHDR_SIZE;
      const descAt = nameAt + ((namesz + 3) & ~3);
      notes.push({
        name: Buffer.from(file.subarray(nameAt, nameAt + namesz)).toString('latin1'),
        type: get(p, ELF64_NHDR.n_type),
        desc: file.subarray(descAt, descAt + descsz),
      });
      p = descAt + ((descsz + 3) & ~3);
    }
  }
  return {
    header: {
      type: get(0, ELF64_EHDR.e_type),
      machine: get(0, ELF64_EHDR.e_machine),
      entry: get(0, ELF64_EHDR.e_entry),
      ehsize: get(0, ELF64_EHDR.e_ehsize),
      phentsize: get(0, ELF64_EHDR.e_phentsize),
      shnum: get(0, ELF64_EHDR.e_shnum),
    },
    phdrs,
    notes,
  };
}

function pvhEntryOf(file: Uint8Array): number {
  const note = readElf(file).notes.find((n) => n.name === 'Xen\0' && n.type === XEN_ELFNOTE_PHYS32_ENTRY);
  assert.ok(note, 'the image has a Xen PHYS32_ENTRY note');
  assert.equal(note.desc.length, 4);
  return new DataView(note.desc.buffer, note.desc.byteOffset, 4).getUint32(0, true);
}

test('default guest: ELF64 header', () => {
  const file = buildDefaultGuest();
  assert.deepEqual([...file.subarray(0, 4)], [...ELFMAG]);
  assert.equal(file[EI_CLASS], ELFCLASS64);
  assert.equal(file[EI_DATA], ELFDATA2LSB);
  const { header, phdrs } = readElf(file);
  assert.equal(header.type, ET_EXEC);
  assert.equal(header.machine, EM_X86_64);
  assert.equal(header.ehsize, ELF64_EHDR_SIZE);
  assert.equal(header.phentsize, ELF64_PHDR_SIZE);
  assert.equal(header.shnum, 0);
  assert.deepEqual(phdrs.map((p) => p.type).sort(), [PT_LOAD, PT_NOTE]);
});

test('default guest: one PT_LOAD at 1 MiB, identity-mapped, inside the file, no BSS', () => {
  const file = buildDefaultGuest();
  const loads = readElf(file).phdrs.filter((p) => p.type === PT_LOAD);
  assert.equal(loads.length, 1);
  const [load] = loads;
  assert.equal(load.paddr, HIGH_MEMORY_GPA);
  assert.equal(load.vaddr, load.paddr);
  assert.equal(load.offset % load.align, load.vaddr % load.align);
  assert.ok(load.offset + load.filesz <= file.length);
  assert.equal(load.memsz, load.filesz, 'the stack is in the file, so loaders need not zero anything');
  assert.ok(load.filesz < 64 * 1024, `the image stays small (${load.filesz} bytes)`);
});

test('default guest: the PVH note points inside the segment, at the assembled entry', () => {
  const file = buildDefaultGuest();
  const entry = pvhEntryOf(file);
  const [load] = readElf(file).phdrs.filter((p) => p.type === PT_LOAD);
  assert.ok(entry >= load.paddr && entry < load.paddr + load.filesz, `entry 0x${entry.toString(16)} is in the segment`);
  assert.equal(readElf(file).header.entry, entry);
  assert.equal(entry, assembleDefaultGuest().entryGpa);
  // The first instruction reads the TSC: "time from start" counts from guest entry.
  const first = file.subarray(load.offset + (entry - load.paddr), load.offset + (entry - load.paddr) + 2);
  assert.deepEqual([...first], [0x0f, 0x31]);
});

test('default guest: the report strings are in the image', () => {
  const text = Buffer.from(buildDefaultGuest()).toString('latin1');
  for (const s of ['tsvmm default guest\n', 'vcpus started: ', 'memory: ', ' MiB\n', 'timer interrupts: ', 'time from start: ', ' ms\n']) {
    assert.ok(text.includes(s), JSON.stringify(s));
  }
});

test('default guest: building is deterministic', () => {
  assert.deepEqual(buildDefaultGuest(), buildDefaultGuest());
});

test('default guest: the AP trampoline page is one the VMM leaves free (0x1000-0x5fff)', () => {
  assert.equal(TRAMPOLINE_GPA % 0x1000, 0, 'a SIPI vector names a 4 KiB page');
  assert.ok(TRAMPOLINE_GPA >= 0x1000 && TRAMPOLINE_GPA + 0x1000 <= 0x6000);
});

test('default guest: exit statuses are distinct and 0 means success', () => {
  assert.equal(DEFAULT_GUEST_EXIT.ok, 0);
  assert.equal(new Set(Object.values(DEFAULT_GUEST_EXIT)).size, Object.values(DEFAULT_GUEST_EXIT).length);
});

test('hvm_start_info table matches start_info.h (cmdline at 24, memmap at 40)', () => {
  // Regression guard: an earlier brief put cmdline_paddr at 16, which is modlist_paddr.
  assert.equal(HVM_START_INFO.modlist_paddr, 16);
  assert.equal(HVM_START_INFO.cmdline_paddr, 24);
  assert.equal(HVM_START_INFO.rsdp_paddr, 32);
  assert.equal(HVM_START_INFO.memmap_paddr, 40);
  assert.equal(HVM_START_INFO.memmap_entries, 48);
  assert.equal(HVM_START_INFO.reserved + 4, HVM_START_INFO_SIZE);
  assert.equal(HVM_MEMMAP_ENTRY.reserved + 4, HVM_MEMMAP_ENTRY_SIZE);
});

test('buildPvhElf rejects an entry outside the segment and an unaligned load address', () => {
  const segment = new Uint8Array(16);
  assert.throws(() => buildPvhElf({ loadGpa: 0x100000, segment, entryGpa: 0x100010 }), /outside the segment/);
  assert.throws(() => buildPvhElf({ loadGpa: 0x100000, segment, entryGpa: 0xfffff }), /outside the segment/);
  assert.throws(() => buildPvhElf({ loadGpa: 0x100800, segment, entryGpa: 0x100800 }), /not 4 KiB aligned/);
  const file = buildPvhElf({ loadGpa: 0x200000, segment, entryGpa: 0x200004, memSizeBytes: 0x1000 });
  const [load] = readElf(file).phdrs.filter((p) => p.type === PT_LOAD);
  assert.equal(load.memsz, 0x1000);
  assert.equal(pvhEntryOf(file), 0x200004);
});
