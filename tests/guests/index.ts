// The test guests: their names, their sources, and where the built ELF images are.
// Spec: Xen PVH boot ABI (the images carry XEN_ELFNOTE_PHYS32_ENTRY); see common/entry.S.
//
// Each guest NAME is built from tests/guests/NAME.c (plus any extra sources below) and the
// shared runtime in tests/guests/common/, into .cache/guests/NAME.elf under the repo root, by
// `node dist/tests/guests/build.js` (npm's pretest runs it). What each guest prints and its
// exit status are in the header comment of its source.

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const GUEST_NAMES = [
  'hello',
  'serial-flood',
  'exit-status',
  'pio-mmio',
  'timer',
  'smp',
  'spin',
  'bench-exits',
  'reset',
  'bad-insn',
  'memmap',
  'kick-storm',
  'virtio',
  'virtio-qemu',
  'irqchip',
  'idle',
  'virtio-pci',
  'virtio-pci-qemu',
  'mwait',
  'fpu-probe',
] as const;

export type GuestName = (typeof GUEST_NAMES)[number];

/** The runtime every guest links, relative to tests/guests/. */
export const COMMON_SOURCES = ['common/entry.S', 'common/lib.c', 'common/ap64.S', 'common/smp.c'] as const;
/** Inputs that are not compiled on their own but change every image. */
export const COMMON_INPUTS = ['common/guest.h', 'common/guest.ld', 'common/long-mode.h'] as const;
/** Sources beyond NAME.c, relative to tests/guests/. */
const EXTRA_SOURCES: Partial<Record<GuestName, readonly string[]>> = {
  smp: ['smp-trampoline.S'],
  virtio: ['common/virtio-mmio.c', 'common/virtq.c'],
  'virtio-qemu': ['common/virtio-mmio.c', 'common/virtq.c'],
  'virtio-pci': ['common/virtio-pci.c', 'common/virtq.c'],
  'virtio-pci-qemu': ['common/virtq.c'],
};
/** Headers beyond COMMON_INPUTS that one guest's image depends on, relative to tests/guests/. */
const EXTRA_INPUTS: Partial<Record<GuestName, readonly string[]>> = {
  virtio: ['common/virtio-mmio.h', 'common/virtio.h', 'virtio-checks.c'],
  'virtio-qemu': ['common/virtio-mmio.h', 'common/virtio.h', 'virtio-checks.c', 'virtio.c'],
  'virtio-pci': ['common/virtio-pci.h', 'common/virtio.h', 'virtio-checks.c'],
  'virtio-pci-qemu': ['common/virtio-pci.h', 'common/virtio-pci.c', 'common/virtio.h', 'virtio-checks.c', 'virtio-pci.c'],
};

export type GuestErrorKind = 'unknown-guest' | 'missing-tool' | 'build-failed';

export class GuestBuildError extends Error {
  constructor(
    readonly kind: GuestErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'GuestBuildError';
  }
}

export function isGuestName(name: string): name is GuestName {
  return (GUEST_NAMES as readonly string[]).includes(name);
}

function checkedName(name: string): GuestName {
  if (!isGuestName(name)) {
    throw new GuestBuildError('unknown-guest', `unknown test guest "${name}"; known: ${GUEST_NAMES.join(', ')}`);
  }
  return name;
}

let cachedRoot: string | undefined;

/** The repository root: the nearest directory above this module with a package.json
 *  (this file runs as dist/tests/guests/index.js). */
export function repoRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return (cachedRoot = dir);
    const parent = dirname(dir);
    if (parent === dir) {
      throw new GuestBuildError('build-failed', `no package.json above ${fileURLToPath(import.meta.url)}; cannot find the repo root`);
    }
    dir = parent;
  }
}

/** Absolute path of tests/guests/ (the sources). */
export function guestSourceDir(): string {
  return join(repoRoot(), 'tests', 'guests');
}

/** Absolute path of .cache/guests/ (the built images). */
export function guestCacheDir(): string {
  return join(repoRoot(), '.cache', 'guests');
}

/** Sources compiled into the guest, relative to tests/guests/ (common runtime first). */
export function guestSources(name: string): string[] {
  const guest = checkedName(name);
  return [...COMMON_SOURCES, `${guest}.c`, ...(EXTRA_SOURCES[guest] ?? [])];
}

/** Files that change the guest's image without being compiled on their own (headers, linker script). */
export function guestInputs(name: string): string[] {
  const guest = checkedName(name);
  return [...COMMON_INPUTS, ...(EXTRA_INPUTS[guest] ?? [])];
}

/**
 * Linux user programs (tests/guests/linux/NAME.c, static, no libc), built by build.ts into
 * .cache/guests/linux-NAME; `init` is also packed as the initramfs linuxInitrdPath() for the
 * Linux boot test.
 */
export const LINUX_PROGRAMS = ['init'] as const;

/** Absolute path of a built Linux program. */
export function linuxProgramPath(name: (typeof LINUX_PROGRAMS)[number]): string {
  return join(guestCacheDir(), `linux-${name}`);
}

/** Absolute path of the initramfs holding linux/init.c as /init (built by build.ts). */
export function linuxInitrdPath(): string {
  return join(guestCacheDir(), 'linux-initrd.cpio');
}

/** Absolute path of the built ELF image of the named guest (built by build.ts; not checked here). */
export function guestPath(name: string): string {
  return join(guestCacheDir(), `${checkedName(name)}.elf`);
}
