// The x86 Linux boot ABI: struct boot_params (the "zero page") with its embedded setup_header.
// Source header: arch/x86/include/uapi/asm/bootparam.h; offsets as in
// Documentation/arch/x86/zero-page.rst and Documentation/arch/x86/boot.rst ("THE REAL-MODE KERNEL HEADER").
//
// setup_header fields are declared at their absolute offsets (0x1f1...), the way boot.rst lists them:
// the same table then reads a bzImage's first sectors and writes the zero page, whose layout matches
// there by design.

import { struct } from './struct.js';

export const BOOT_PARAMS_SIZE_BYTES = 4096;

export const BOOT_PARAMS = struct('boot_params', BOOT_PARAMS_SIZE_BYTES, {
  screen_info: [0x000, { bytes: 0x40 }],
  apm_bios_info: [0x040, { bytes: 0x14 }],
  tboot_addr: [0x058, 'u64'],
  ist_info: [0x060, { bytes: 0x10 }],
  acpi_rsdp_addr: [0x070, 'u64'],
  hd0_info: [0x080, { bytes: 0x10 }],
  hd1_info: [0x090, { bytes: 0x10 }],
  sys_desc_table: [0x0a0, { bytes: 0x10 }],
  olpc_ofw_header: [0x0b0, { bytes: 0x10 }],
  ext_ramdisk_image: [0x0c0, 'u32'],
  ext_ramdisk_size: [0x0c4, 'u32'],
  ext_cmd_line_ptr: [0x0c8, 'u32'],
  cc_blob_address: [0x13c, 'u32'],
  edid_info: [0x140, { bytes: 0x80 }],
  efi_info: [0x1c0, { bytes: 0x20 }],
  alt_mem_k: [0x1e0, 'u32'],
  scratch: [0x1e4, 'u32'],
  e820_entries: [0x1e8, 'u8'],
  eddbuf_entries: [0x1e9, 'u8'],
  edd_mbr_sig_buf_entries: [0x1ea, 'u8'],
  kbd_status: [0x1eb, 'u8'],
  secure_boot: [0x1ec, 'u8'],
  sentinel: [0x1ef, 'u8'],
  // struct setup_header hdr, 0x1f1..0x26c
  setup_sects: [0x1f1, 'u8'],
  root_flags: [0x1f2, 'u16'],
  syssize: [0x1f4, 'u32'],
  ram_size: [0x1f8, 'u16'],
  vid_mode: [0x1fa, 'u16'],
  root_dev: [0x1fc, 'u16'],
  boot_flag: [0x1fe, 'u16'],
  jump: [0x200, 'u16'],
  header: [0x202, 'u32'],
  version: [0x206, 'u16'],
  realmode_swtch: [0x208, 'u32'],
  start_sys_seg: [0x20c, 'u16'],
  kernel_version: [0x20e, 'u16'],
  type_of_loader: [0x210, 'u8'],
  loadflags: [0x211, 'u8'],
  setup_move_size: [0x212, 'u16'],
  code32_start: [0x214, 'u32'],
  ramdisk_image: [0x218, 'u32'],
  ramdisk_size: [0x21c, 'u32'],
  bootsect_kludge: [0x220, 'u32'],
  heap_end_ptr: [0x224, 'u16'],
  ext_loader_ver: [0x226, 'u8'],
  ext_loader_type: [0x227, 'u8'],
  cmd_line_ptr: [0x228, 'u32'],
  initrd_addr_max: [0x22c, 'u32'],
  kernel_alignment: [0x230, 'u32'],
  relocatable_kernel: [0x234, 'u8'],
  min_alignment: [0x235, 'u8'],
  xloadflags: [0x236, 'u16'],
  cmdline_size: [0x238, 'u32'],
  hardware_subarch: [0x23c, 'u32'],
  hardware_subarch_data: [0x240, 'u64'],
  payload_offset: [0x248, 'u32'],
  payload_length: [0x24c, 'u32'],
  setup_data: [0x250, 'u64'],
  pref_address: [0x258, 'u64'],
  init_size: [0x260, 'u32'],
  handover_offset: [0x264, 'u32'],
  kernel_info_offset: [0x268, 'u32'],
  // end of setup_header
  edd_mbr_sig_buffer: [0x290, { bytes: 0x40 }],
  e820_table: [0x2d0, { bytes: 0xa00 }],
  eddbuf: [0xd00, { bytes: 0x1ec }],
});

/** struct setup_header spans [SETUP_HEADER_OFFSET, SETUP_HEADER_END) of both the bzImage and the zero page. */
export const SETUP_HEADER_OFFSET = 0x1f1;
export const SETUP_HEADER_END = BOOT_PARAMS.offsetOf('kernel_info_offset') + 4;

/** struct boot_e820_entry: packed, 20 bytes. */
export const BOOT_E820_ENTRY = struct('boot_e820_entry', 20, {
  addr: [0, 'u64'],
  size: [8, 'u64'],
  type: [16, 'u32'],
});
/** E820_MAX_ENTRIES_ZEROPAGE: how many entries e820_table holds. */
export const E820_MAX_ENTRIES_ZEROPAGE = 128;
if (E820_MAX_ENTRIES_ZEROPAGE * BOOT_E820_ENTRY.sizeBytes !== BOOT_PARAMS.sizeOf('e820_table')) {
  throw new Error('boot_params.e820_table does not hold E820_MAX_ENTRIES_ZEROPAGE entries');
}

/** boot_flag and header magic values (boot.rst). */
export const BOOT_FLAG_MAGIC = 0xaa55;
export const HDRS_MAGIC = 0x53726448; // "HdrS" read little-endian

/** loadflags bits. */
export const LOADED_HIGH = 1 << 0;
export const KASLR_FLAG = 1 << 1;
export const QUIET_FLAG = 1 << 5;
export const KEEP_SEGMENTS = 1 << 6;
export const CAN_USE_HEAP = 1 << 7;

/** xloadflags bits. */
export const XLF_KERNEL_64 = 1 << 0;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1;
export const XLF_EFI_HANDOVER_32 = 1 << 2;
export const XLF_EFI_HANDOVER_64 = 1 << 3;
export const XLF_EFI_KEXEC = 1 << 4;
export const XLF_5LEVEL = 1 << 5;
export const XLF_5LEVEL_ENABLED = 1 << 6;

/** type_of_loader value for a boot loader without an assigned id. */
export const LOADER_TYPE_UNDEFINED = 0xff;

/** The 64-bit entry point is 0x200 bytes into the protected-mode kernel (boot.rst, "64-bit BOOT PROTOCOL"). */
export const STARTUP_64_OFFSET = 0x200;

/** Boot protocol versions as the `version` field encodes them (major << 8 | minor). */
export const BOOT_PROTOCOL_2_06 = 0x0206;
export const BOOT_PROTOCOL_2_08 = 0x0208;
export const BOOT_PROTOCOL_2_10 = 0x020a;
export const BOOT_PROTOCOL_2_12 = 0x020c;
export const BOOT_PROTOCOL_2_14 = 0x020e;

export function formatBootProtocol(version: number): string {
  return `${version >> 8}.${(version & 0xff).toString().padStart(2, '0')}`;
}
