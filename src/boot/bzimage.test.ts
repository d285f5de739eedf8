import test from 'node:test';
import assert from 'node:assert/strict';
import { BootError } from './boot-error.js';
import { fakeElf, makeFakeBzImage } from './bzimage-fixture.js';
import { detectCompression, extractVmlinux, kernelEndGpa, parseBzImage } from './bzimage.js';
import { LZ4_LEGACY_MAGIC } from './lz4.js';

function u32le(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24];
}

/** An LZ4 legacy frame holding `data` as one literal-only block, plus the kernel's size trailer. */
function lz4Payload(data: Uint8Array): Uint8Array {
  const block: number[] = [Math.min(data.length, 15) << 4];
  if (data.length >= 15) {
    let rest = data.length - 15;
    while (rest >= 255) {
      block.push(255);
      rest -= 255;
    }
    block.push(rest);
  }
  block.push(...data);
  return Uint8Array.from([...u32le(LZ4_LEGACY_MAGIC), ...u32le(block.length), ...block, ...u32le(data.length)]);
}

function assertBootError(fn: () => unknown, kind: string, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof BootError, `expected a BootError, got ${String(error)}`);
    assert.equal(error.kind, kind);
    assert.match(error.message, message);
    assert.ok(!error.message.includes('\n'), 'messages are one line');
    return true;
  });
}

test('parseBzImage reads the setup header fields and splits off the protected-mode kernel', () => {
  const image = makeFakeBzImage({ setupSects: 6 });
  const bz = parseBzImage(image);
  assert.equal(bz.header.setup_sects, 6);
  assert.equal(bz.header.version, 0x020f);
  assert.equal(bz.header.boot_flag, 0xaa55);
  assert.equal(bz.header.cmdline_size, 0x7ff);
  assert.equal(bz.header.initrd_addr_max, 0x7fffffff);
  assert.equal(bz.header.kernel_alignment, 0x200000);
  assert.equal(bz.header.relocatable_kernel, 1);
  assert.equal(bz.header.pref_address, 0x1000000);
  assert.equal(bz.header.init_size, 0x3378000);
  assert.equal(bz.header.payload_offset, 0x200);
  assert.equal(bz.header.payload_length, 64);
  assert.equal(bz.kernel.byteOffset - image.byteOffset, 7 * 512, 'kernel starts after (setup_sects + 1) sectors');
  assert.equal(bz.kernel[0], 0xcc);
  assert.equal(bz.entry64Offset, 0x200);
  assert.equal(bz.loadGpa, 0x1000000, 'loads at pref_address');
  assert.deepEqual(bz.payload, fakeElf());
  assert.equal(bz.setupHeaderBytes.length, 0x26c - 0x1f1);
  assert.deepEqual(bz.setupHeaderBytes, image.subarray(0x1f1, 0x26c));
});

test('setup_sects 0 means 4; the header copy follows the jump at 0x200 but never passes 0x26c', () => {
  assert.equal(parseBzImage(makeFakeBzImage({ setupSects: 0 })).kernel[0], 0xcc);
  const short = parseBzImage(makeFakeBzImage({ patch: (image) => (image[0x201] = 0x62) }));
  assert.equal(short.setupHeaderBytes.length, 0x264 - 0x1f1);
  const long = parseBzImage(makeFakeBzImage({ patch: (image) => (image[0x201] = 0x7e) }));
  assert.equal(long.setupHeaderBytes.length, 0x26c - 0x1f1);
});

test('load address: pref_address when usable, else 1 MiB; no XLF_KERNEL_64 means no 64-bit entry', () => {
  assert.equal(parseBzImage(makeFakeBzImage({ prefAddress: 0 })).loadGpa, 0x100000);
  assert.equal(parseBzImage(makeFakeBzImage({ prefAddress: 0x1000800 })).loadGpa, 0x100000, 'misaligned');
  assert.equal(parseBzImage(makeFakeBzImage({ version: 0x0209 })).loadGpa, 0x100000, 'pref_address is 2.10+');
  assert.equal(parseBzImage(makeFakeBzImage({ xloadflags: 0 })).entry64Offset, null);
  assert.equal(parseBzImage(makeFakeBzImage({ version: 0x020b })).header.xloadflags, 0, 'xloadflags is 2.12+');
});

test('kernelEndGpa covers init_size from where the kernel decompresses', () => {
  const bz = parseBzImage(makeFakeBzImage({ prefAddress: 0x1000000, initSizeBytes: 0x3378000 }));
  assert.equal(kernelEndGpa(bz), 0x1000000 + 0x3378000);
  // Loaded at 1 MiB, a relocatable kernel still decompresses at max(align(1 MiB), LOAD_PHYSICAL_ADDR = pref_address).
  const low = parseBzImage(makeFakeBzImage({ prefAddress: 0x1000800, initSizeBytes: 0x100000 }));
  assert.equal(kernelEndGpa(low), 0x1000800 + 0x100000);
});

test('not a bzImage: one-line BootErrors that name the file and say what to give instead', () => {
  assertBootError(() => parseBzImage(new Uint8Array(100), 'vmlinuz'), 'not-a-kernel', /^vmlinuz: not a bzImage: only 100 bytes.*give a bzImage or an ELF vmlinux$/);
  assertBootError(
    () => parseBzImage(makeFakeBzImage({ patch: (image) => (image[0x1fe] = 0) }), 'k'),
    'not-a-kernel',
    /^k: not a bzImage: boot_flag at 0x1fe is 0xaa00, not 0xaa55/,
  );
  assertBootError(
    () => parseBzImage(makeFakeBzImage({ patch: (image) => (image[0x202] = 0x68) }), 'k'),
    'not-a-kernel',
    /^k: not a bzImage: no HdrS magic at 0x202; give a bzImage or an ELF vmlinux$/,
  );
  assertBootError(() => parseBzImage(makeFakeBzImage({ loadflags: 0 }), 'k'), 'not-a-kernel', /zImage/);
  const truncated = makeFakeBzImage({ payload: fakeElf(4096) }).subarray(0, 5 * 512 + 1000);
  assertBootError(() => parseBzImage(truncated, 'k'), 'not-a-kernel', /payload .* runs past .*truncated file/);
});

test('boot protocols older than 2.06 are refused, naming the version found', () => {
  assertBootError(() => parseBzImage(makeFakeBzImage({ version: 0x0204 }), 'old'), 'unsupported-kernel', /^old: boot protocol 2\.04 is too old: tsvmm needs 2\.06 or later/);
  assert.equal(parseBzImage(makeFakeBzImage({ version: 0x0206 })).header.version, 0x0206);
});

test('extractVmlinux decompresses an LZ4 payload and passes an uncompressed ELF through', () => {
  const elf = fakeElf(1000);
  elf[500] = 0x5a;
  assert.deepEqual(extractVmlinux(makeFakeBzImage({ payload: lz4Payload(elf) })), elf);
  assert.deepEqual(extractVmlinux(parseBzImage(makeFakeBzImage({ payload: elf }))), elf);
});

test('extractVmlinux names the compressions it does not handle', () => {
  const magics: [string, number[]][] = [
    ['gzip', [0x1f, 0x8b, 8, 0]],
    ['bzip2', [0x42, 0x5a, 0x68, 0x39]],
    ['lzma', [0x5d, 0, 0, 0x80]],
    ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]],
    ['lzo', [0x89, 0x4c, 0x5a, 0x4f]],
    ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ];
  for (const [name, magic] of magics) {
    const payload = Uint8Array.from([...magic, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(detectCompression(payload), name);
    assertBootError(
      () => extractVmlinux(makeFakeBzImage({ payload }), 'vmlinuz'),
      'unsupported-compression',
      new RegExp(`^vmlinuz: the payload is ${name}-compressed and tsvmm only decompresses LZ4; give the ELF vmlinux`),
    );
  }
  assertBootError(() => extractVmlinux(makeFakeBzImage({ payload: new Uint8Array(16).fill(7) })), 'unsupported-compression', /unrecognised payload compression \(first bytes 07 07/);
});

test('extractVmlinux refuses a damaged LZ4 payload or one that is not an ELF', () => {
  const payload = lz4Payload(fakeElf(100));
  payload[8] = 0xf0; // literal length now needs more bytes than the block has
  payload[9] = 0xff;
  assertBootError(() => extractVmlinux(makeFakeBzImage({ payload }), 'k'), 'corrupt-payload', /^k: the LZ4 payload is damaged: .*download the kernel again$/);
  assertBootError(() => extractVmlinux(makeFakeBzImage({ payload: lz4Payload(new Uint8Array(40).fill(1)) })), 'corrupt-payload', /not an ELF file/);
});
