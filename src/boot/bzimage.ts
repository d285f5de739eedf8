// Reads a Linux bzImage: its setup_header, the protected-mode kernel to load, and the vmlinux ELF
// inside its compressed payload. Does not load anything into guest memory.
// Spec: Documentation/arch/x86/boot.rst; header source arch/x86/boot/header.S,
// structs arch/x86/include/uapi/asm/bootparam.h (see bootparam-abi.ts).

import {
  BOOT_FLAG_MAGIC,
  BOOT_PARAMS,
  BOOT_PROTOCOL_2_06,
  BOOT_PROTOCOL_2_08,
  BOOT_PROTOCOL_2_10,
  BOOT_PROTOCOL_2_12,
  formatBootProtocol,
  HDRS_MAGIC,
  LOADED_HIGH,
  SETUP_HEADER_END,
  SETUP_HEADER_OFFSET,
  STARTUP_64_OFFSET,
  XLF_KERNEL_64,
} from './bootparam-abi.js';
import { BootError } from './boot-error.js';
import { HIGH_MEMORY_GPA } from './layout.js';
import { decodeLz4Legacy, LZ4_LEGACY_MAGIC } from './lz4.js';
import { alignUp, hex } from './struct.js';

/** The setup_header fields a loader acts on, named as in boot.rst. */
export interface SetupHeader {
  readonly setup_sects: number;
  readonly boot_flag: number;
  readonly version: number;
  readonly loadflags: number;
  readonly code32_start: number;
  readonly initrd_addr_max: number;
  readonly kernel_alignment: number;
  readonly relocatable_kernel: number;
  readonly xloadflags: number;
  readonly cmdline_size: number;
  readonly pref_address: number;
  readonly init_size: number;
  readonly payload_offset: number;
  readonly payload_length: number;
}

export interface BzImage {
  readonly header: SetupHeader;
  /** The image's bytes [0x1f1, end of setup_header): what a loader copies into the zero page. */
  readonly setupHeaderBytes: Uint8Array;
  /** The protected-mode kernel: everything after the (setup_sects + 1) * 512 real-mode bytes. A view into the image. */
  readonly kernel: Uint8Array;
  /** Where to load `kernel`: pref_address when the kernel gives one, else 1 MiB. */
  readonly loadGpa: number;
  /** Offset of startup_64 in `kernel` (0x200) when xloadflags has XLF_KERNEL_64, else null (a 32-bit kernel). */
  readonly entry64Offset: number | null;
  /** The compressed vmlinux inside `kernel` (payload_offset/payload_length). */
  readonly payload: Uint8Array;
}

/** Boot protocols before 2.06 lack cmdline_size and a usable initrd_addr_max; tsvmm does not handle them. */
export const MIN_BOOT_PROTOCOL = BOOT_PROTOCOL_2_06;

const SECTOR_BYTES = 512;
/** setup_sects == 0 means 4 for compatibility with ancient kernels (boot.rst). */
const SETUP_SECTS_DEFAULT = 4;

/**
 * Parses a bzImage. `source` names the file in error messages.
 * Throws BootError 'not-a-kernel' for anything that is not one, 'unsupported-kernel' for too-old protocols.
 */
export function parseBzImage(image: Uint8Array, source = 'kernel image'): BzImage {
  const notBzImage = (what: string) =>
    new BootError('not-a-kernel', `${source}: not a bzImage: ${what}; give a bzImage or an ELF vmlinux`);
  if (image.length < SETUP_HEADER_END) {
    throw notBzImage(`only ${image.length} bytes, shorter than the ${SETUP_HEADER_END}-byte boot sector and setup header`);
  }
  const get = (field: Parameters<typeof BOOT_PARAMS.get>[2]) => BOOT_PARAMS.get(image, 0, field);
  if (get('boot_flag') !== BOOT_FLAG_MAGIC) {
    throw notBzImage(`boot_flag at 0x1fe is ${hex(get('boot_flag'))}, not 0xaa55`);
  }
  if (get('header') !== HDRS_MAGIC) {
    throw notBzImage('no HdrS magic at 0x202');
  }
  const version = get('version');
  if (version < MIN_BOOT_PROTOCOL) {
    throw new BootError(
      'unsupported-kernel',
      `${source}: boot protocol ${formatBootProtocol(version)} is too old: tsvmm needs 2.06 or later (Linux 2.6.22+); use a newer kernel`,
    );
  }
  const loadflags = get('loadflags');
  if ((loadflags & LOADED_HIGH) === 0) {
    throw notBzImage('loadflags lacks LOADED_HIGH, so this is a zImage loaded at 0x10000, which tsvmm does not load');
  }

  const header: SetupHeader = {
    setup_sects: get('setup_sects'),
    boot_flag: get('boot_flag'),
    version,
    loadflags,
    code32_start: get('code32_start'),
    initrd_addr_max: get('initrd_addr_max'),
    kernel_alignment: get('kernel_alignment'),
    relocatable_kernel: get('relocatable_kernel'),
    // Fields newer than the kernel's protocol are not part of its header (those bytes are code): read them as 0.
    xloadflags: version >= BOOT_PROTOCOL_2_12 ? get('xloadflags') : 0,
    cmdline_size: get('cmdline_size'),
    pref_address: version >= BOOT_PROTOCOL_2_10 ? get('pref_address') : 0,
    init_size: version >= BOOT_PROTOCOL_2_10 ? get('init_size') : 0,
    payload_offset: version >= BOOT_PROTOCOL_2_08 ? get('payload_offset') : 0,
    payload_length: version >= BOOT_PROTOCOL_2_08 ? get('payload_length') : 0,
  };

  const setupBytes = ((header.setup_sects || SETUP_SECTS_DEFAULT) + 1) * SECTOR_BYTES;
  if (setupBytes >= image.length) {
    throw notBzImage(`setup_sects says the real-mode code takes ${setupBytes} bytes, but the file has only ${image.length}`);
  }
  const kernel = image.subarray(setupBytes);

  // The header ends where the 2-byte `jmp short rel8` at 0x200 lands, 0x202 + rel8 (boot.rst); clamp
  // to the struct we know, so a newer kernel's fields beyond it are not copied over other boot_params fields.
  const jumpTarget = BOOT_PARAMS.offsetOf('header') + image[BOOT_PARAMS.offsetOf('jump') + 1];
  const setupHeaderBytes = image.subarray(SETUP_HEADER_OFFSET, Math.min(jumpTarget, SETUP_HEADER_END));

  if (header.payload_offset + header.payload_length > kernel.length) {
    throw notBzImage(
      `payload [${hex(header.payload_offset)}, +${hex(header.payload_length)}) runs past the ${kernel.length}-byte protected-mode kernel (truncated file?)`,
    );
  }
  const payload = kernel.subarray(header.payload_offset, header.payload_offset + header.payload_length);

  return {
    header,
    setupHeaderBytes,
    kernel,
    loadGpa: chooseLoadGpa(header),
    entry64Offset: (header.xloadflags & XLF_KERNEL_64) !== 0 ? STARTUP_64_OFFSET : null,
    payload,
  };
}

/**
 * pref_address is where the kernel was linked to run (LOAD_PHYSICAL_ADDR, 16 MiB for Debian): loading
 * there lets the decompressor work in place. Any kernel can be loaded at 1 MiB (a relocatable one then
 * decompresses to max(its load address aligned, LOAD_PHYSICAL_ADDR); a non-relocatable one moves to
 * pref_address), so 1 MiB is the fallback when pref_address is absent or odd.
 */
function chooseLoadGpa(header: SetupHeader): number {
  const alignment = header.kernel_alignment || 1;
  if (header.pref_address >= HIGH_MEMORY_GPA && header.pref_address % alignment === 0) {
    return header.pref_address;
  }
  return HIGH_MEMORY_GPA;
}

/**
 * The lowest guest-physical address above everything the kernel uses before it reads the e820 map:
 * its image where loaded, and init_size bytes from where it decompresses itself (boot.rst, init_size).
 * Nothing (initrd) may be placed below this and above `image.loadGpa`.
 */
export function kernelEndGpa(image: BzImage): number {
  const { header } = image;
  const alignment = header.kernel_alignment || 1;
  const runStartGpa = Math.max(alignUp(image.loadGpa, alignment), header.pref_address);
  return Math.max(image.loadGpa + image.kernel.length, runStartGpa + header.init_size);
}

export type PayloadCompression = 'gzip' | 'bzip2' | 'lzma' | 'xz' | 'lzo' | 'lz4' | 'zstd' | 'elf' | 'unknown';

/** Identifies the payload by its magic bytes (the kernel's own list: lib/decompress.c). */
export function detectCompression(payload: Uint8Array): PayloadCompression {
  const starts = (...magic: number[]) => magic.every((byte, i) => payload[i] === byte);
  if (starts(0x1f, 0x8b)) return 'gzip';
  if (starts(0x42, 0x5a, 0x68)) return 'bzip2';
  if (starts(0x5d, 0x00, 0x00)) return 'lzma';
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz';
  if (starts(0x89, 0x4c, 0x5a, 0x4f)) return 'lzo';
  if (starts(LZ4_LEGACY_MAGIC & 0xff, (LZ4_LEGACY_MAGIC >>> 8) & 0xff, (LZ4_LEGACY_MAGIC >>> 16) & 0xff, LZ4_LEGACY_MAGIC >>> 24)) return 'lz4';
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  if (starts(0x7f, 0x45, 0x4c, 0x46)) return 'elf';
  return 'unknown';
}

/**
 * The vmlinux ELF inside a bzImage. Handles LZ4 payloads (Debian's 6.1 cloud kernels) and, trivially,
 * uncompressed ones; other compressions are refused by name.
 */
export function extractVmlinux(bzImage: Uint8Array | BzImage, source = 'kernel image'): Uint8Array {
  const image = bzImage instanceof Uint8Array ? parseBzImage(bzImage, source) : bzImage;
  const { payload } = image;
  if (payload.length === 0) {
    throw new BootError('unsupported-kernel', `${source}: the bzImage has no payload (boot protocol < 2.08); give the ELF vmlinux instead`);
  }
  const compression = detectCompression(payload);
  let vmlinux: Uint8Array;
  switch (compression) {
    case 'elf':
      vmlinux = payload;
      break;
    case 'lz4': {
      // The x86 build appends the decompressed size (u32 LE) after the compressed stream (arch/x86/boot/compressed/Makefile, size_append).
      if (payload.length < 12) {
        throw new BootError('corrupt-payload', `${source}: the LZ4 payload is only ${payload.length} bytes; download the kernel again`);
      }
      const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
      const sizeBytes = view.getUint32(payload.length - 4, true);
      try {
        vmlinux = decodeLz4Legacy(payload, { expectedSizeBytes: sizeBytes, trailerBytes: 4 });
      } catch (error) {
        throw new BootError('corrupt-payload', `${source}: the LZ4 payload is damaged: ${(error as Error).message}; download the kernel again`, {
          cause: error,
        });
      }
      break;
    }
    case 'unknown':
      throw new BootError(
        'unsupported-compression',
        `${source}: unrecognised payload compression (first bytes ${hexBytes(payload.subarray(0, 6))}); give the ELF vmlinux instead`,
      );
    default:
      throw new BootError(
        'unsupported-compression',
        `${source}: the payload is ${compression}-compressed and tsvmm only decompresses LZ4; give the ELF vmlinux (e.g. from scripts/extract-vmlinux) instead`,
      );
  }
  if (detectCompression(vmlinux) !== 'elf') {
    throw new BootError('corrupt-payload', `${source}: the decompressed payload is not an ELF file (starts ${hexBytes(vmlinux.subarray(0, 4))})`);
  }
  return vmlinux;
}

function hexBytes(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}
