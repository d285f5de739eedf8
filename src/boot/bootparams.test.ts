import test from 'node:test';
import assert from 'node:assert/strict';
import { leReader } from './le-reader.js';
import { BootError } from './boot-error.js';
import { makeFakeBzImage } from './bzimage-fixture.js';
import { parseBzImage } from './bzimage.js';
import { buildBootParams, checkKernelFits, chooseInitrdGpa, encodeCmdline } from './bootparams.js';
import { buildE820Map } from './e820.js';

const MiB = 1 << 20;

// Offsets below are typed in from Documentation/arch/x86/zero-page.rst and boot.rst, independently
// of the BOOT_PARAMS table, so a typo in the table shows up here.

function assertBootError(fn: () => unknown, kind: string, message: RegExp): void {
  assert.throws(fn, (error: unknown) => error instanceof BootError && error.kind === kind && message.test(error.message));
}

test('zero page: setup header copied, loader fields set, everything else zero', () => {
  const image = makeFakeBzImage();
  const kernel = parseBzImage(image);
  const e820 = buildE820Map(512 * MiB);
  const { zeroPage, cmdline, cmdlineGpa } = buildBootParams({
    kernel,
    cmdline: 'console=ttyS0 panic=-1',
    e820,
    initrd: { gpa: 0x1f000000, sizeBytes: 0x345678 },
    rsdpGpa: 0xe0000,
  });
  const r = leReader(zeroPage);
  assert.equal(zeroPage.length, 4096);
  assert.equal(r.u8(0x210), 0xff, 'type_of_loader');
  assert.equal(r.u8(0x211) & 0x81, 0x81, 'loadflags LOADED_HIGH | CAN_USE_HEAP');
  assert.equal(r.u16(0x224), 0xfe00, 'heap_end_ptr');
  assert.equal(r.u32(0x214), 0x1000000, 'code32_start = load address');
  assert.equal(r.u32(0x228), 0x20000, 'cmd_line_ptr');
  assert.equal(r.u32(0x0c8), 0, 'ext_cmd_line_ptr');
  assert.equal(cmdlineGpa, 0x20000);
  assert.deepEqual(cmdline, new TextEncoder().encode('console=ttyS0 panic=-1\0'));
  assert.equal(r.u32(0x218), 0x1f000000, 'ramdisk_image');
  assert.equal(r.u32(0x21c), 0x345678, 'ramdisk_size');
  assert.equal(r.u32(0x0c0), 0, 'ext_ramdisk_image');
  assert.equal(r.u32(0x0c4), 0, 'ext_ramdisk_size');
  assert.equal(r.u64(0x070), 0xe0000, 'acpi_rsdp_addr');
  assert.equal(r.u8(0x1e8), e820.length, 'e820_entries');
  e820.forEach((entry, i) => {
    const at = 0x2d0 + 20 * i;
    assert.deepEqual([r.u64(at), r.u64(at + 8), r.u32(at + 16)], [entry.gpa, entry.sizeBytes, entry.type], `e820_table[${i}]`);
  });
  assert.equal(r.u8(0x1ef), 0, 'sentinel stays 0: we did not copy sector 0');

  // Header bytes that the loader does not own are the kernel's.
  const loaderOwned = new Set<number>();
  for (const [offset, size] of [[0x210, 2], [0x214, 4], [0x218, 8], [0x224, 2], [0x228, 4]]) {
    for (let i = 0; i < size; i++) loaderOwned.add(offset + i);
  }
  for (let offset = 0x1f1; offset < 0x26c; offset++) {
    if (!loaderOwned.has(offset)) assert.equal(zeroPage[offset], image[offset], `setup_header byte ${offset.toString(16)}`);
  }
  // Outside what we wrote, the page is zero.
  const written = (offset: number) =>
    (offset >= 0x1f1 && offset < 0x26c) || (offset >= 0x2d0 && offset < 0x2d0 + 20 * e820.length) || offset === 0x1e8 || (offset >= 0x070 && offset < 0x078);
  for (let offset = 0; offset < 4096; offset++) {
    if (!written(offset)) assert.equal(zeroPage[offset], 0, `byte 0x${offset.toString(16)}`);
  }
});

test('addresses above 4 GiB go to the ext_* high halves', () => {
  const kernel = parseBzImage(makeFakeBzImage());
  const { zeroPage } = buildBootParams({
    kernel,
    cmdline: '',
    e820: buildE820Map(8 * 1024 * MiB),
    initrd: { gpa: 0x1_2345_6000, sizeBytes: 0x1_0000_1000 },
    cmdlineGpa: 0x2_0000_1000,
  });
  const r = leReader(zeroPage);
  assert.equal(r.u32(0x218), 0x2345_6000);
  assert.equal(r.u32(0x0c0), 1);
  assert.equal(r.u32(0x21c), 0x1000);
  assert.equal(r.u32(0x0c4), 1);
  assert.equal(r.u32(0x228), 0x1000);
  assert.equal(r.u32(0x0c8), 2);
});

test('acpi_rsdp_addr is written only for boot protocol 2.14+; no initrd leaves ramdisk fields 0', () => {
  const old = parseBzImage(makeFakeBzImage({ version: 0x020d }));
  const { zeroPage } = buildBootParams({ kernel: old, cmdline: 'x', e820: buildE820Map(64 * MiB), rsdpGpa: 0xe0000 });
  const r = leReader(zeroPage);
  assert.equal(r.u64(0x070), 0);
  assert.equal(r.u32(0x218), 0);
  assert.equal(r.u32(0x21c), 0);
});

test('e820 tables beyond 128 entries are refused', () => {
  const kernel = parseBzImage(makeFakeBzImage());
  const e820 = new Array(129).fill({ gpa: 0, sizeBytes: 4096, type: 1 });
  assertBootError(() => buildBootParams({ kernel, cmdline: '', e820 }), 'does-not-fit', /129 entries; the zero page holds 1 to 128/);
});

test("command line: checked against the kernel's cmdline_size (which excludes the NUL)", () => {
  const header = { cmdline_size: 10 };
  assert.equal(encodeCmdline('0123456789', header).length, 11);
  assertBootError(() => encodeCmdline('0123456789a', header), 'cmdline-too-long', /^kernel command line \(--append\) is 11 bytes, more than the 10 allowed by the kernel's cmdline_size; shorten it$/);
  assertBootError(() => encodeCmdline('a\0b'), 'bad-config', /NUL/);
  assert.deepEqual(encodeCmdline('é'), Uint8Array.from([0xc3, 0xa9, 0]), 'UTF-8');
  assertBootError(() => encodeCmdline('x'.repeat(0x10000), { cmdline_size: 0x100000 }), 'cmdline-too-long', /tsvmm's command-line area/);
});

test('initrd goes page-aligned as high as possible below min(initrd_addr_max + 1, end of low RAM)', () => {
  const kernel = parseBzImage(makeFakeBzImage({ initrdAddrMax: 0x7fffffff }));
  assert.equal(chooseInitrdGpa(kernel, 512 * MiB, 10 * MiB), 502 * MiB);
  assert.equal(chooseInitrdGpa(kernel, 512 * MiB, 10 * MiB + 1), 502 * MiB - 4096);
  // 4 GiB guest: low RAM ends at the 3 GiB hole, but initrd_addr_max (2 GiB - 1) is lower.
  assert.equal(chooseInitrdGpa(kernel, 4096 * MiB, 4096), 0x8000_0000 - 4096);
  const capped = parseBzImage(makeFakeBzImage({ initrdAddrMax: 0x37ffffff }));
  assert.equal(chooseInitrdGpa(capped, 2048 * MiB, 8 * MiB), 0x3800_0000 - 8 * MiB);
});

test('initrd or kernel that does not fit is refused with the memory to ask for', () => {
  const kernel = parseBzImage(makeFakeBzImage({ prefAddress: 0x1000000, initSizeBytes: 0x3000000 })); // ends at 64 MiB
  assertBootError(() => checkKernelFits(kernel, 32 * MiB), 'does-not-fit', /needs RAM up to 0x4000000 .*give it at least --memory 64M$/);
  checkKernelFits(kernel, 64 * MiB);
  assertBootError(() => chooseInitrdGpa(kernel, 80 * MiB, 20 * MiB), 'does-not-fit', /^initrd of 20 MiB does not fit between the kernel \(up to 0x4000000\) and 0x5000000; give the guest at least 84 MiB$/);
  assert.equal(chooseInitrdGpa(kernel, 84 * MiB, 20 * MiB), 64 * MiB);
  const capped = parseBzImage(makeFakeBzImage({ initrdAddrMax: 0x4ffffff, initSizeBytes: 0x3000000 }));
  assertBootError(() => chooseInitrdGpa(capped, 512 * MiB, 20 * MiB), 'does-not-fit', /initrd_addr_max is 0x4ffffff: use a smaller initrd/);
  assertBootError(() => chooseInitrdGpa(kernel, 512 * MiB, 0), 'bad-config', /non-empty/);
});
