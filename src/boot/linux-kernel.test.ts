// The boot tables built for the real Debian cloud kernel, checked field by field against
// Documentation/arch/x86/boot.rst and zero-page.rst. Offsets are typed in from those documents (not
// taken from bootparam-abi.ts) so the tables are checked, not restated.
// Needs .cache/kernels/vmlinuz-6.1.0-*-cloud-amd64 (`node dist/src/boot/debian-kernel.js` fetches it);
// skips with that advice when the kernel is not cached.

import test from 'node:test';
import assert from 'node:assert/strict';
import { leReader } from './le-reader.js';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { buildAcpiTables } from './acpi.js';
import { buildBootParams, chooseInitrdGpa, checkKernelFits } from './bootparams.js';
import { extractVmlinux, kernelEndGpa, parseBzImage } from './bzimage.js';
import { debianKernelPath } from './debian-kernel.js';
import { buildE820Map } from './e820.js';

const kernelPath = debianKernelPath();
const skip = kernelPath ? false : 'Debian cloud kernel not in .cache/kernels; run `node dist/src/boot/debian-kernel.js` to fetch it';
const image = kernelPath ? new Uint8Array(readFileSync(kernelPath)) : new Uint8Array(0);
const name = kernelPath ? basename(kernelPath) : '';

const MiB = 1 << 20;
const RAM_BYTES = 512 * MiB;
const INITRD_BYTES = 8 * MiB + 123;
const CMDLINE = 'console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 reboot=k tsvmm.test=1';


test('Debian bzImage: setup header as boot.rst describes it', { skip }, () => {
  const file = leReader(image);
  assert.equal(file.u16(0x1fe), 0xaa55, 'boot_flag');
  assert.equal(file.ascii(0x202, 4), 'HdrS', 'header');
  const bz = parseBzImage(image, name);
  const h = bz.header;
  assert.ok(h.version >= 0x020f, `protocol 2.15+ (Linux 6.1), got ${h.version.toString(16)}`);
  assert.equal(h.loadflags & 1, 1, 'LOADED_HIGH: a bzImage');
  assert.equal(h.xloadflags & 0b11, 0b11, 'XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G');
  assert.equal(h.relocatable_kernel, 1);
  assert.equal(h.kernel_alignment, 2 * MiB, 'CONFIG_PHYSICAL_ALIGN');
  assert.equal(h.pref_address, 16 * MiB, 'CONFIG_PHYSICAL_START');
  assert.equal(bz.loadGpa, 16 * MiB);
  assert.equal(h.cmdline_size, 2047, 'COMMAND_LINE_SIZE - 1');
  assert.equal(h.initrd_addr_max, 0x7fffffff);
  assert.ok(h.init_size > bz.kernel.length, 'init_size covers the decompressed kernel');
  assert.equal(bz.entry64Offset, 0x200);
  // syssize (0x1f4) is the protected-mode code size in 16-byte paragraphs, rounded up.
  assert.equal(file.u32(0x1f4), Math.ceil(bz.kernel.length / 16));
  assert.equal(bz.kernel.length, image.length - (file.u8(0x1f1) + 1) * 512);
  // The header ends where the jump at 0x200 lands.
  assert.equal(file.u8(0x200), 0xeb);
  assert.equal(bz.setupHeaderBytes.length, 0x202 + file.u8(0x201) - 0x1f1);
  // payload_offset/length (0x248/0x24c) locate an LZ4 legacy frame.
  assert.deepEqual([...bz.payload.subarray(0, 4)], [0x02, 0x21, 0x4c, 0x18]);
});

test('Debian bzImage: zero page, e820 and command line for a 512 MiB guest with an initrd', { skip }, () => {
  const bz = parseBzImage(image, name);
  checkKernelFits(bz, RAM_BYTES);
  const initrdGpa = chooseInitrdGpa(bz, RAM_BYTES, INITRD_BYTES);
  const e820 = buildE820Map(RAM_BYTES);
  const acpi = buildAcpiTables({ cpus: 2 });
  const { zeroPage, cmdline, cmdlineGpa } = buildBootParams({ kernel: bz, cmdline: CMDLINE, e820, initrd: { gpa: initrdGpa, sizeBytes: INITRD_BYTES }, rsdpGpa: acpi.rsdpGpa });
  const z = leReader(zeroPage);

  // boot.rst "64-bit BOOT PROTOCOL": the setup header is the kernel's, at 0x1f1.
  const loaderFields = new Map<number, number>([
    [0x210, 1], // type_of_loader
    [0x211, 1], // loadflags
    [0x214, 4], // code32_start
    [0x218, 4], // ramdisk_image
    [0x21c, 4], // ramdisk_size
    [0x224, 2], // heap_end_ptr
    [0x228, 4], // cmd_line_ptr
  ]);
  const owned = new Set([...loaderFields].flatMap(([offset, size]) => Array.from({ length: size }, (_, i) => offset + i)));
  for (let offset = 0x1f1; offset < 0x202 + image[0x201]; offset++) {
    if (!owned.has(offset)) assert.equal(zeroPage[offset], image[offset], `setup_header byte 0x${offset.toString(16)} copied`);
  }
  // boot.rst, "DETAILS OF HEADER FIELDS":
  assert.equal(z.u8(0x210), 0xff, 'type_of_loader: 0xFF, no assigned id');
  assert.equal(z.u8(0x211) & 0x01, 0x01, 'loadflags: LOADED_HIGH');
  assert.equal(z.u8(0x211) & 0x80, 0x80, 'loadflags: CAN_USE_HEAP');
  assert.equal(z.u8(0x211) & 0x20, image[0x211] & 0x20, 'loadflags: QUIET_FLAG as the kernel had it');
  assert.equal(z.u16(0x224), 0xfe00, 'heap_end_ptr');
  assert.equal(z.u32(0x214), 16 * MiB, 'code32_start = where the kernel is loaded');
  assert.equal(z.u32(0x228), 0x20000, 'cmd_line_ptr = CMDLINE_GPA');
  assert.equal(cmdlineGpa, 0x20000);
  assert.equal(z.u32(0x0c8), 0, 'ext_cmd_line_ptr');
  // Command line: NUL-terminated, within cmdline_size (0x238, excludes the NUL).
  assert.equal(new TextDecoder().decode(cmdline.subarray(0, -1)), CMDLINE);
  assert.equal(cmdline[cmdline.length - 1], 0);
  assert.ok(cmdline.length - 1 <= z.u32(0x238));
  // Initrd: ramdisk_image/size (0x218/0x21c) + ext_* (0x0c0/0x0c4); page-aligned, above the
  // kernel's init_size area, its last byte at most initrd_addr_max (0x22c), inside RAM.
  const ramdiskImage = z.u32(0x218) + z.u32(0x0c0) * 2 ** 32;
  const ramdiskSize = z.u32(0x21c) + z.u32(0x0c4) * 2 ** 32;
  assert.equal(ramdiskImage, initrdGpa);
  assert.equal(ramdiskSize, INITRD_BYTES);
  assert.equal(ramdiskImage % 4096, 0);
  assert.ok(ramdiskImage >= kernelEndGpa(bz) && ramdiskImage >= z.u32(0x258) + z.u32(0x260), 'above pref_address + init_size');
  assert.ok(ramdiskImage + ramdiskSize - 1 <= z.u32(0x22c), 'initrd_addr_max');
  assert.ok(ramdiskImage + ramdiskSize <= RAM_BYTES);
  assert.ok(RAM_BYTES - (ramdiskImage + ramdiskSize) < 4096, 'as high as possible');
  // zero-page.rst: acpi_rsdp_addr (0x070) for protocol 2.14+.
  assert.equal(z.u64(0x070), acpi.rsdpGpa);
  assert.equal(z.u8(0x1ef), 0, 'sentinel');
  // zero-page.rst: e820_entries (0x1e8), e820_table (0x2d0) of 20-byte {u64 addr, u64 size, u32 type}.
  assert.equal(z.u8(0x1e8), 4);
  const table = Array.from({ length: z.u8(0x1e8) }, (_, i) => {
    const at = 0x2d0 + 20 * i;
    return [z.u64(at), z.u64(at + 8), z.u32(at + 16)];
  });
  assert.deepEqual(table, [
    [0, 0x9fc00, 1],
    [0x9fc00, 0x60400, 2],
    [0x100000, RAM_BYTES - 0x100000, 1],
    [0xfffbc000, 0x4000, 2],
  ]);
  // The kernel, the initrd and every boot structure sit in RAM, apart from one another.
  const usable = (gpa: number, size: number) => table.some(([addr, len, type]) => type === 1 && gpa >= addr && gpa + size <= addr + len);
  assert.ok(usable(bz.loadGpa, kernelEndGpa(bz) - bz.loadGpa), 'kernel in RAM');
  assert.ok(usable(ramdiskImage, ramdiskSize), 'initrd in RAM');
  assert.ok(usable(0x7000, 4096), 'zero page in RAM');
  assert.ok(usable(cmdlineGpa, cmdline.length), 'command line in RAM');
});

test('Debian bzImage: extractVmlinux gives the ELF64 x86-64 vmlinux with a PVH entry note', { skip }, (t) => {
  const bz = parseBzImage(image, name);
  const started = performance.now();
  const vmlinux = extractVmlinux(bz, name);
  const elapsedMs = performance.now() - started;
  const payloadView = new DataView(bz.payload.buffer, bz.payload.byteOffset, bz.payload.byteLength);
  assert.equal(vmlinux.length, payloadView.getUint32(bz.payload.length - 4, true), 'size the build appended');
  const r = leReader(vmlinux);
  assert.equal(r.ascii(0, 4), '\x7fELF');
  assert.equal(r.u8(4), 2, 'ELFCLASS64');
  assert.equal(r.u8(5), 1, 'little-endian');
  assert.equal(r.u16(18), 62, 'EM_X86_64');
  // Walk PT_NOTE segments for the Xen note XEN_ELFNOTE_PHYS32_ENTRY (type 18).
  const phoff = r.u64(32);
  const phentsize = r.u16(54);
  const phnum = r.u16(56);
  let loadStart = Infinity;
  let loadEnd = 0;
  let pvhEntry: number | null = null;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = r.u32(ph);
    const offset = r.u64(ph + 8);
    const paddr = r.u64(ph + 24);
    const filesz = r.u64(ph + 32);
    const memsz = r.u64(ph + 40);
    if (type === 1) {
      loadStart = Math.min(loadStart, paddr);
      loadEnd = Math.max(loadEnd, paddr + memsz);
    }
    if (type !== 4) continue;
    for (let n = offset; n < offset + filesz; ) {
      const namesz = r.u32(n);
      const descsz = r.u32(n + 4);
      const noteType = r.u32(n + 8);
      const noteName = r.ascii(n + 12, namesz - 1);
      const desc = n + 12 + Math.ceil(namesz / 4) * 4;
      if (noteName === 'Xen' && noteType === 18) pvhEntry = r.u32(desc);
      n = desc + Math.ceil(descsz / 4) * 4;
    }
  }
  assert.notEqual(pvhEntry, null, 'XEN_ELFNOTE_PHYS32_ENTRY present (CONFIG_PVH)');
  assert.ok((pvhEntry as number) >= loadStart && (pvhEntry as number) < loadEnd, 'PVH entry inside the loaded image');
  assert.equal(loadStart, bz.header.pref_address, 'vmlinux is linked at pref_address');
  t.diagnostic(`extractVmlinux: ${(vmlinux.length / MiB).toFixed(1)} MiB in ${elapsedMs.toFixed(0)} ms`);
});
