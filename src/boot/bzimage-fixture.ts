// Test fixture: small synthetic bzImages with chosen header fields (boot.rst layout), for unit
// tests that must not depend on a downloaded kernel.

import { BOOT_PARAMS, LOADED_HIGH, XLF_CAN_BE_LOADED_ABOVE_4G, XLF_KERNEL_64 } from './bootparam-abi.js';

export interface FakeBzImageOptions {
  version?: number;
  setupSects?: number;
  loadflags?: number;
  xloadflags?: number;
  prefAddress?: number;
  initSizeBytes?: number;
  kernelAlignment?: number;
  initrdAddrMax?: number;
  cmdlineSize?: number;
  relocatable?: boolean;
  /** The payload placed after a 0x200-byte stub (startup_32/startup_64) in the protected-mode kernel. */
  payload?: Uint8Array;
  /** Overrides applied last, e.g. a wrong magic. */
  patch?: (image: Uint8Array) => void;
}

/** A minimal ELF64 x86-64 header: enough for detectCompression() to say 'elf'. */
export function fakeElf(sizeBytes = 64): Uint8Array {
  const elf = new Uint8Array(sizeBytes);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  elf[18] = 62; // e_machine = EM_X86_64
  return elf;
}

export function makeFakeBzImage(options: FakeBzImageOptions = {}): Uint8Array {
  const setupSects = options.setupSects ?? 4;
  const payload = options.payload ?? fakeElf();
  const stubBytes = 0x200;
  const setupBytes = ((setupSects || 4) + 1) * 512;
  const image = new Uint8Array(setupBytes + stubBytes + payload.length + 16);
  const set = (field: Parameters<typeof BOOT_PARAMS.set>[2], value: number) => BOOT_PARAMS.set(image, 0, field, value);
  set('setup_sects', setupSects);
  set('boot_flag', 0xaa55);
  set('jump', 0x6aeb); // "jmp short +0x6a": the header ends at 0x26c
  set('header', 0x53726448);
  set('version', options.version ?? 0x020f);
  set('loadflags', options.loadflags ?? LOADED_HIGH);
  set('code32_start', 0x100000);
  set('initrd_addr_max', options.initrdAddrMax ?? 0x7fffffff);
  set('kernel_alignment', options.kernelAlignment ?? 0x200000);
  set('relocatable_kernel', options.relocatable === false ? 0 : 1);
  set('min_alignment', 21);
  set('xloadflags', options.xloadflags ?? XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G);
  set('cmdline_size', options.cmdlineSize ?? 0x7ff);
  set('payload_offset', stubBytes);
  set('payload_length', payload.length);
  set('pref_address', options.prefAddress ?? 0x1000000);
  set('init_size', options.initSizeBytes ?? 0x3378000);
  image.fill(0xcc, setupBytes, setupBytes + stubBytes);
  image.set(payload, setupBytes + stubBytes);
  options.patch?.(image);
  return image;
}
