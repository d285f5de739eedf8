import assert from 'node:assert/strict';
import test from 'node:test';
import { buildPvhElf } from '../guest/elf-image.js';
import { BootError } from './boot-error.js';
import { isElf, parseElf } from './elf.js';

const CODE = Uint8Array.of(0xf4, 0xeb, 0xfd);

test('ELF64 PVH image: segment and PVH entry read back as written', () => {
  const image = buildPvhElf({ loadGpa: 0x100000, segment: CODE, memSizeBytes: 0x2000, entryGpa: 0x100001 });
  assert.equal(isElf(image), true);
  const elf = parseElf(image);
  assert.equal(elf.class, 64);
  assert.equal(elf.pvhEntryGpa, 0x100001);
  assert.equal(elf.segments.length, 1);
  const s = elf.segments[0]!;
  assert.deepEqual([s.gpa, s.fileSizeBytes, s.memSizeBytes], [0x100000, 3, 0x2000]);
  assert.deepEqual(image.subarray(s.fileOffset, s.fileOffset + 3), CODE);
});

/** An ELF32 i386 image laid out by hand (Elf32_Ehdr 52 bytes, Elf32_Phdr 32 bytes), with no note. */
function elf32(): Uint8Array {
  const b = Buffer.alloc(0x100);
  b.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]);
  b.writeUInt16LE(2, 16); b.writeUInt16LE(3, 18); b.writeUInt32LE(1, 20); b.writeUInt32LE(0x200000, 24);
  b.writeUInt32LE(52, 28); b.writeUInt16LE(52, 40); b.writeUInt16LE(32, 42); b.writeUInt16LE(1, 44);
  b.writeUInt32LE(1, 52); b.writeUInt32LE(0x80, 56); b.writeUInt32LE(0x200000, 60); b.writeUInt32LE(0x200000, 64);
  b.writeUInt32LE(0x10, 68); b.writeUInt32LE(0x30, 72);
  return b;
}

test('ELF32 image: Elf32_Phdr field order (p_flags last) is read right; no note means no PVH entry', () => {
  const elf = parseElf(elf32());
  assert.equal(elf.class, 32);
  assert.equal(elf.entry, 0x200000n);
  assert.equal(elf.pvhEntryGpa, null);
  assert.deepEqual(elf.segments, [{ gpa: 0x200000, fileOffset: 0x80, fileSizeBytes: 0x10, memSizeBytes: 0x30 }]);
});

test('malformed ELF files are refused with a BootError naming the problem', () => {
  const cases: Array<[string, (b: Buffer) => void, RegExp]> = [
    ['not ELF', (b) => { b[0] = 0; }, /not an ELF file/],
    ['big-endian', (b) => { b[5] = 2; }, /big-endian/],
    ['not x86', (b) => { b.writeUInt16LE(40, 18); }, /machine 40 is not x86/],
    ['phdrs past the end', (b) => { b.writeUInt16LE(100, 44); }, /program headers run past the end/],
    ['segment past the end', (b) => { b.writeUInt32LE(0x1000, 68); b.writeUInt32LE(0x1000, 72); }, /segment 0 .* outside the file/],
  ];
  for (const [name, mutate, message] of cases) {
    const b = Buffer.from(elf32());
    mutate(b);
    assert.throws(() => parseElf(b, 'k'), (e: unknown) => e instanceof BootError && message.test(e.message), name);
  }
});
