// The Linux zero page (struct boot_params) for the 64-bit boot protocol, the kernel command line,
// and where the initrd goes. Pure: returns bytes for the loader to write.
// Spec: Documentation/arch/x86/boot.rst ("64-bit BOOT PROTOCOL", "DETAILS OF HEADER FIELDS"),
// Documentation/arch/x86/zero-page.rst; header arch/x86/include/uapi/asm/bootparam.h (bootparam-abi.ts).

import {
  BOOT_E820_ENTRY,
  BOOT_PARAMS,
  BOOT_PARAMS_SIZE_BYTES,
  BOOT_PROTOCOL_2_14,
  CAN_USE_HEAP,
  E820_MAX_ENTRIES_ZEROPAGE,
  LOADED_HIGH,
  LOADER_TYPE_UNDEFINED,
  SETUP_HEADER_OFFSET,
} from './bootparam-abi.js';
import { BootError } from './boot-error.js';
import { kernelEndGpa, type BzImage, type SetupHeader } from './bzimage.js';
import type { E820Entry } from './e820.js';
import { CMDLINE_GPA, CMDLINE_MAX_BYTES, MMIO_HOLE_START_GPA } from './layout.js';
import { alignDown, alignUp, hex } from './struct.js';

const PAGE_BYTES = 4096;
const MIB = 1 << 20;
/**
 * heap_end_ptr: end of the setup heap as an offset from the real-mode code, minus 0x200 (boot.rst).
 * The 64-bit entry skips the real-mode code that uses it; 0xfe00 is the conventional full-segment
 * value (QEMU, linux-loader), so a kernel that looks at it sees a sane heap.
 */
const HEAP_END_PTR = 0xfe00;

export interface InitrdPlacement {
  readonly gpa: number;
  readonly sizeBytes: number;
}

export interface BootParamsInput {
  readonly kernel: BzImage;
  readonly cmdline: string;
  readonly e820: readonly E820Entry[];
  readonly initrd?: InitrdPlacement;
  /** Written to acpi_rsdp_addr for kernels of boot protocol 2.14+; older ones scan 0xE0000-0xFFFFF. */
  readonly rsdpGpa?: number;
  readonly cmdlineGpa?: number;
}

export interface BootParams {
  /** struct boot_params, 4096 bytes, for ZERO_PAGE_GPA (passed to the kernel in RSI). */
  readonly zeroPage: Uint8Array;
  /** The NUL-terminated command line, for `cmdlineGpa`. */
  readonly cmdline: Uint8Array;
  readonly cmdlineGpa: number;
}

/** Builds the zero page a loader hands to startup_64, and the command line it points to. */
export function buildBootParams(input: BootParamsInput): BootParams {
  const { kernel, e820, initrd } = input;
  const cmdlineGpa = input.cmdlineGpa ?? CMDLINE_GPA;
  const cmdline = encodeCmdline(input.cmdline, kernel.header);
  const zeroPage = new Uint8Array(BOOT_PARAMS_SIZE_BYTES);
  const set = (field: Parameters<typeof BOOT_PARAMS.set>[2], value: number) => BOOT_PARAMS.set(zeroPage, 0, field, value);

  // boot.rst, 64-bit protocol: "load the setup header from the kernel image at offset 0x01f1 into
  // boot_params". Everything else starts zeroed (sentinel included: we never copy sector 0).
  zeroPage.set(kernel.setupHeaderBytes, SETUP_HEADER_OFFSET);

  set('type_of_loader', LOADER_TYPE_UNDEFINED);
  set('loadflags', (kernel.header.loadflags | LOADED_HIGH | CAN_USE_HEAP) & 0xff);
  set('heap_end_ptr', HEAP_END_PTR);
  // Only the 32-bit entry reads code32_start; set it anyway so the header tells the truth.
  set('code32_start', kernel.loadGpa);

  set('cmd_line_ptr', low32(cmdlineGpa));
  set('ext_cmd_line_ptr', high32(cmdlineGpa));

  if (initrd) {
    set('ramdisk_image', low32(initrd.gpa));
    set('ext_ramdisk_image', high32(initrd.gpa));
    set('ramdisk_size', low32(initrd.sizeBytes));
    set('ext_ramdisk_size', high32(initrd.sizeBytes));
  }

  if (e820.length === 0 || e820.length > E820_MAX_ENTRIES_ZEROPAGE) {
    throw new BootError('does-not-fit', `memory map has ${e820.length} entries; the zero page holds 1 to ${E820_MAX_ENTRIES_ZEROPAGE}`);
  }
  set('e820_entries', e820.length);
  const tableOffset = BOOT_PARAMS.offsetOf('e820_table');
  e820.forEach((entry, i) => {
    BOOT_E820_ENTRY.encode({ addr: entry.gpa, size: entry.sizeBytes, type: entry.type }, zeroPage, tableOffset + i * BOOT_E820_ENTRY.sizeBytes);
  });

  if (input.rsdpGpa !== undefined && kernel.header.version >= BOOT_PROTOCOL_2_14) {
    set('acpi_rsdp_addr', input.rsdpGpa);
  }
  return { zeroPage, cmdline, cmdlineGpa };
}

/**
 * The command line as the kernel reads it: UTF-8, NUL-terminated. Refuses one longer than the
 * kernel's cmdline_size (which excludes the NUL) or than tsvmm's CMDLINE_MAX_BYTES area.
 */
export function encodeCmdline(cmdline: string, header?: Pick<SetupHeader, 'cmdline_size'>): Uint8Array {
  if (cmdline.includes('\0')) {
    throw new BootError('bad-config', 'kernel command line contains a NUL character; remove it');
  }
  const text = new TextEncoder().encode(cmdline);
  const limit = Math.min(header ? header.cmdline_size : Infinity, CMDLINE_MAX_BYTES - 1);
  if (text.length > limit) {
    const whose = header && header.cmdline_size <= CMDLINE_MAX_BYTES - 1 ? "the kernel's cmdline_size" : "tsvmm's command-line area";
    throw new BootError('cmdline-too-long', `kernel command line (--append) is ${text.length} bytes, more than the ${limit} allowed by ${whose}; shorten it`);
  }
  const bytes = new Uint8Array(text.length + 1);
  bytes.set(text);
  return bytes;
}

/** Refuses a guest whose low RAM cannot hold the kernel's image and its init_size working area. */
export function checkKernelFits(kernel: BzImage, ramBytes: number): void {
  const lowRamEnd = Math.min(ramBytes, MMIO_HOLE_START_GPA);
  const kernelEnd = kernelEndGpa(kernel);
  if (kernelEnd > lowRamEnd) {
    throw new BootError(
      'does-not-fit',
      `the kernel needs RAM up to ${hex(kernelEnd)} (loaded at ${hex(kernel.loadGpa)}, init_size ${mib(kernel.header.init_size)}) but the guest has ${mib(ramBytes)}; give it at least --memory ${Math.ceil(kernelEnd / MIB)}M`,
    );
  }
}

/**
 * Where to put an initrd of `initrdSizeBytes`: page-aligned, as high as possible below both
 * initrd_addr_max (the highest address its last byte may have) and the end of low RAM, as boot.rst
 * advises (the kernel's own allocations grow up from its image). Refuses when it would overlap
 * the kernel's image or init_size area.
 */
export function chooseInitrdGpa(kernel: BzImage, ramBytes: number, initrdSizeBytes: number): number {
  if (!Number.isSafeInteger(initrdSizeBytes) || initrdSizeBytes <= 0) {
    throw new BootError('bad-config', `initrd of ${initrdSizeBytes} bytes: give a non-empty initrd or none`);
  }
  checkKernelFits(kernel, ramBytes);
  const lowRamEnd = Math.min(ramBytes, MMIO_HOLE_START_GPA);
  const limitGpa = Math.min(kernel.header.initrd_addr_max + 1, lowRamEnd);
  const gpa = alignDown(limitGpa - initrdSizeBytes, PAGE_BYTES);
  const kernelEnd = kernelEndGpa(kernel);
  if (gpa < kernelEnd) {
    const neededEnd = alignUp(kernelEnd, PAGE_BYTES) + alignUp(initrdSizeBytes, PAGE_BYTES);
    const advice =
      neededEnd > kernel.header.initrd_addr_max + 1
        ? `the kernel's initrd_addr_max is ${hex(kernel.header.initrd_addr_max)}: use a smaller initrd`
        : `give the guest at least ${Math.ceil(neededEnd / MIB)} MiB`;
    throw new BootError(
      'does-not-fit',
      `initrd of ${mib(initrdSizeBytes)} does not fit between the kernel (up to ${hex(kernelEnd)}) and ${hex(limitGpa)}; ${advice}`,
    );
  }
  return gpa;
}

function low32(value: number): number {
  return value % 0x1_0000_0000;
}

function high32(value: number): number {
  return Math.floor(value / 0x1_0000_0000);
}

function mib(bytes: number): string {
  return `${(bytes / MIB).toFixed(bytes % MIB === 0 ? 0 : 1)} MiB`;
}
